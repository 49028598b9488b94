/**
 * The dashboard's files (a built single-page app) served by the service itself, so a browser
 * pointed at the service gets the dashboard while API clients get the API: only requests no
 * API route takes reach here, and `/` serves the app only to clients that ask for HTML.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.svg': 'image/svg+xml', '.png': 'image/png',
  '.ico': 'image/x-icon', '.woff2': 'font/woff2', '.txt': 'text/plain; charset=utf-8',
};

/**
 * The dashboard loads only its own files and talks only to this service: no inline script,
 * no other origin, and no page may frame it (clickjacking an image delete or a share).
 */
export const DASHBOARD_CSP = [
  "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

export function wantsHtml(req: IncomingMessage): boolean {
  return /text\/html/.test(req.headers.accept ?? '');
}

export interface StaticFile { path: string; size: number }

/** The file that serves `path` from `dir` (or index.html for an HTML navigation), or null when there is nothing to serve. */
export async function findStatic(dir: string, path: string, req: IncomingMessage): Promise<StaticFile | null> {
  if (req.method !== 'GET' && req.method !== 'HEAD') return null;
  let rel: string;
  try { rel = decodeURIComponent(path); } catch { return null; }
  // The build's source maps stay on the build machine: they would hand out the app's sources.
  if (extname(rel) === '.map') return null;
  const file = normalize(join(dir, rel));
  if (file !== dir && !file.startsWith(dir.endsWith(sep) ? dir : dir + sep)) return null;
  let target = file;
  let st = await stat(target).catch(() => null);
  if (st?.isDirectory()) { target = join(target, 'index.html'); st = await stat(target).catch(() => null); }
  if (!st?.isFile()) {
    // Client-side routes of the app: any other page a browser navigates to gets the app.
    if (!wantsHtml(req) || extname(rel)) return null;
    target = join(dir, 'index.html');
    st = await stat(target).catch(() => null);
    if (!st?.isFile()) return null;
  }
  return { path: target, size: st.size };
}

/** Send a file findStatic found. */
export async function sendStatic(file: StaticFile, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const isIndex = file.path.endsWith(`${sep}index.html`);
  res.writeHead(200, {
    'Content-Type': TYPES[extname(file.path)] ?? 'application/octet-stream',
    'Content-Length': file.size,
    // Hashed asset names can be cached for good; the page itself must be revalidated.
    'Cache-Control': isIndex ? 'no-cache' : 'public, max-age=3600',
    'X-Content-Type-Options': 'nosniff',
    'Content-Security-Policy': DASHBOARD_CSP,
    'X-Frame-Options': 'DENY',
  });
  if (req.method === 'HEAD') { res.end(); return; }
  await new Promise<void>((resolve) => {
    const s = createReadStream(file.path);
    s.on('error', () => { res.destroy(); resolve(); });
    s.on('end', () => resolve());
    s.pipe(res);
  });
}
