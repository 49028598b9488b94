/**
 * The HTTP plumbing of the service on node:http: a small path router, request context,
 * JSON bodies with a size cap, and errors rendered the way the OpenStack service that owns
 * the path does (Glance: webob's JSON or HTML body; Keystone: {"error": {...}}).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';

export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

export const badRequest = (m: string) => new HttpError(400, m);
export const forbidden = (m: string) => new HttpError(403, m);
export const notFound = (m: string) => new HttpError(404, m);
export const conflict = (m: string) => new HttpError(409, m);

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: Record<string, string>;
  requestId: string;
  /** Base URL clients reached us at (scheme://host[:port]), for links and the catalog. */
  baseUrl: string;
  /** Which API's error shape to use. */
  api: 'image' | 'identity' | 'other';
  /** The route pattern that matched (metrics label). */
  route: string;
}

export type Handler = (ctx: Ctx) => Promise<void> | void;

interface Route { method: string; parts: string[]; pattern: string; handler: Handler }

export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler): this {
    this.routes.push({ method, parts: pattern.split('/').filter(Boolean), pattern, handler });
    return this;
  }

  /** The handler and path parameters, or the methods the path allows (405), or null (404). */
  match(method: string, path: string): { handler: Handler; params: Record<string, string>; pattern: string } | { allowed: string[] } | null {
    const segs = path.split('/').filter(Boolean);
    const allowed: string[] = [];
    for (const r of this.routes) {
      if (r.parts.length !== segs.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segs.length; i++) {
        const p = r.parts[i]!;
        if (p.startsWith(':')) {
          try { params[p.slice(1)] = decodeURIComponent(segs[i]!); } catch { ok = false; break; }
        } else if (p !== segs[i]) { ok = false; break; }
      }
      if (!ok) continue;
      if (r.method === method || (method === 'HEAD' && r.method === 'GET')) return { handler: r.handler, params, pattern: r.pattern };
      allowed.push(r.method);
    }
    return allowed.length ? { allowed } : null;
  }
}

export function sendJson(ctx: Ctx, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  ctx.res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    ...headers,
  });
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : text);
}

export function sendEmpty(ctx: Ctx, status: number, headers: Record<string, string> = {}): void {
  ctx.res.writeHead(status, { 'Content-Length': '0', ...headers });
  ctx.res.end();
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Render an error as the API owning the path does. */
export function sendError(ctx: Ctx, status: number, message: string, headers: Record<string, string> = {}): void {
  const title = STATUS_CODES[status] ?? 'Error';
  const res = ctx.res;
  if (res.headersSent) { res.destroy(); return; }
  let body: string;
  let type: string;
  if (ctx.api === 'identity') {
    body = JSON.stringify({ error: { code: status, message, title } });
    type = 'application/json';
  } else if (errorFlavor(ctx.req) === 'json') {
    // webob's JSON error body, which Glance (and its clients' error parsers) use.
    body = JSON.stringify({ message, code: `${status} ${title}`, title });
    type = 'application/json';
  } else if (errorFlavor(ctx.req) === 'plain') {
    body = `${status} ${title}\n\n${message}\n\n   `;
    type = 'text/plain; charset=UTF-8';
  } else {
    body = `<html>\n <head>\n  <title>${status} ${title}</title>\n </head>\n <body>\n  <h1>${status} ${title}</h1>\n  ${escapeHtml(message)}<br /><br />\n\n\n\n </body>\n</html>`;
    type = 'text/html; charset=UTF-8';
  }
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

/**
 * webob's choice, which Glance inherits: HTML when the client accepts it (or anything, or
 * says nothing), JSON only when it asks for JSON and not for HTML, plain text otherwise.
 * glanceclient (Accept: *\/*) parses HTML errors; the SDK (application/json) parses JSON.
 */
function errorFlavor(req: IncomingMessage): 'html' | 'json' | 'plain' {
  const accept = (req.headers.accept ?? '').toLowerCase();
  if (!accept || /text\/html|\*\/\*|text\/\*/.test(accept)) return 'html';
  if (/application\/json|application\/\*/.test(accept)) return 'json';
  return 'plain';
}

export const JSON_BODY_LIMIT = 1 << 20;

/** Read a whole (small) request body; 413 past `limit`. */
export async function readBody(req: IncomingMessage, limit = JSON_BODY_LIMIT): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) throw new HttpError(413, `Request body is larger than ${limit} bytes.`);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new HttpError(413, `Request body is larger than ${limit} bytes.`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** The media type of a request (no parameters, lower case). */
export function mediaType(req: IncomingMessage): string {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Parse a JSON request body; malformed JSON is Glance's 400, not a crash. */
export async function readJson(ctx: Ctx, limit = JSON_BODY_LIMIT): Promise<unknown> {
  const raw = await readBody(ctx.req, limit);
  if (raw.length === 0) throw badRequest('Body expected in request.');
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw badRequest('Malformed JSON in request body.');
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
