/**
 * The HTTP plumbing shared by the route modules: typed HTTP errors, errors rendered the way
 * the OpenStack service that owns the path does (Glance: webob's HTML, JSON or plain body
 * chosen from Accept; Keystone: {"error": {...}}), JSON bodies with a size cap, and the
 * reply helpers of the Fastify routes.
 *
 * `Router` and `Ctx` are the hand-written router's interface that modules not yet converted
 * to Fastify route modules still use; server.ts mounts them on Fastify unchanged.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuthContext } from './identity.js';

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
  api: ApiFlavor;
  /** The route pattern that matched (metrics label). */
  route: string;
}

export type Handler = (ctx: Ctx) => Promise<void> | void;

export interface Route { method: string; parts: string[]; pattern: string; handler: Handler }

export class Router {
  readonly routes: Route[] = [];

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
  const res = ctx.res;
  if (res.headersSent) { res.destroy(); return; }
  const { body, type } = renderError(ctx.api, ctx.req.headers.accept, status, message);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

/** Which API owns a path, and so which error shape it answers with. */
export type ApiFlavor = 'image' | 'identity' | 'other';
export const apiOf = (path: string): ApiFlavor => (path.startsWith('/identity') ? 'identity' : path.startsWith('/v2') ? 'image' : 'other');

/** An error body as the API owning the path writes it. */
export function renderError(api: ApiFlavor, accept: string | undefined, status: number, message: string): { body: string; type: string } {
  const title = STATUS_CODES[status] ?? 'Error';
  if (api === 'identity') return { body: JSON.stringify({ error: { code: status, message, title } }), type: 'application/json' };
  switch (errorFlavor(accept)) {
    // webob's JSON error body, which Glance (and its clients' error parsers) use.
    case 'json': return { body: JSON.stringify({ message, code: `${status} ${title}`, title }), type: 'application/json' };
    case 'plain': return { body: `${status} ${title}\n\n${message}\n\n   `, type: 'text/plain; charset=UTF-8' };
    default: return {
      body: `<html>\n <head>\n  <title>${status} ${title}</title>\n </head>\n <body>\n  <h1>${status} ${title}</h1>\n  ${escapeHtml(message)}<br /><br />\n\n\n\n </body>\n</html>`,
      type: 'text/html; charset=UTF-8',
    };
  }
}

/**
 * webob's choice, which Glance inherits: HTML when the client accepts it (or anything, or
 * says nothing), JSON only when it asks for JSON and not for HTML, plain text otherwise.
 * glanceclient (Accept: *\/*) parses HTML errors; the SDK (application/json) parses JSON.
 */
function errorFlavor(acceptHeader: string | undefined): 'html' | 'json' | 'plain' {
  const accept = (acceptHeader ?? '').toLowerCase();
  if (!accept || /text\/html|\*\/\*|text\/\*/.test(accept)) return 'html';
  if (/application\/json|application\/\*/.test(accept)) return 'json';
  return 'plain';
}

/**
 * An error of the database or the file system that means the disk is full: a clear answer
 * instead of a 500 (SQLite's SQLITE_FULL, PostgreSQL's disk_full 53100, MariaDB's 1021/1114,
 * ENOSPC). A transaction SQLite aborted by itself (full disk, I/O error) surfaces as the
 * failed ROLLBACK after it: nothing was written either way.
 */
export function storageError(e: unknown): HttpError | null {
  const err = e as { code?: unknown; errno?: unknown; message?: unknown } | null;
  const code = err?.code;
  if (code === 'SQLITE_FULL' || code === 'ENOSPC' || code === 'EDQUOT' || code === '53100' || code === 'ER_DISK_FULL' || code === 'ER_RECORD_FILE_FULL' || err?.errno === 1021 || err?.errno === 1114) {
    return new HttpError(507, 'The service is out of disk space for its database or data; nothing was changed. Free space on the server and retry.');
  }
  if (typeof err?.message === 'string' && /cannot rollback - no transaction is active/.test(err.message)) {
    return new HttpError(503, 'The database aborted the change (out of disk space or an I/O error); nothing was changed. Retry later.');
  }
  return null;
}

/**
 * A request whose body was not read (an error before the upload started) is drained, so
 * the client sees the answer rather than a reset; huge bodies get cut.
 */
export function drainUnread(req: IncomingMessage): void {
  if (req.complete || req.readableEnded || req.destroyed) return;
  let seen = 0;
  req.on('data', (c: Buffer) => { seen += c.length; if (seen > 64 << 20) req.destroy(); });
  req.resume();
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

// --- Fastify route modules

/** Authentication as route modules get it: the caller's identity, or a 401 (503 when an external Keystone is down). */
export type Authenticate = (request: FastifyRequest | Ctx) => Promise<AuthContext>;

declare module 'fastify' {
  interface FastifyRequest {
    /** Which API's error shape applies (from the path). */
    api: ApiFlavor;
    /** The service's own base URL (configured, or the bound address): never the client's Host header. */
    baseUrl: string;
    /** The authenticated user, for the access log. */
    user: string | undefined;
    /** Set when a JSON parser has consumed the body (`body` is its value, undefined when empty). */
    bodyRead: boolean;
  }
}

/** The JSON media types: plain JSON and Glance's two JSON-patch flavours. */
export const PATCH_TYPES = ['application/openstack-images-v2.0-json-patch', 'application/openstack-images-v2.1-json-patch'];
const JSON_TYPES = ['application/json', ...PATCH_TYPES];

/**
 * The body parsers of a route module's scope: JSON (and JSON patch) up to JSON_BODY_LIMIT,
 * malformed JSON a 400 in Glance's words. Every other media type is left unread for the
 * route (an upload's stream, or a 415 the route decides), as the server's root parser does.
 */
export function acceptJson(scope: FastifyInstance): void {
  scope.addContentTypeParser(JSON_TYPES, { parseAs: 'buffer', bodyLimit: JSON_BODY_LIMIT }, (request, raw, done) => {
    request.bodyRead = true;
    const buf = raw as Buffer;
    if (buf.length === 0) { done(null, undefined); return; }
    try { done(null, JSON.parse(buf.toString('utf8'))); } catch { done(badRequest('Malformed JSON in request body.')); }
  });
}

/** The JSON body of a request: parsed by acceptJson's parser, or read here whatever its media type (as Glance's deserializer does). */
export async function jsonBody(request: FastifyRequest): Promise<unknown> {
  if (request.bodyRead) {
    if (request.body === undefined) throw badRequest('Body expected in request.');
    return request.body;
  }
  const raw = await readBody(request.raw);
  if (raw.length === 0) throw badRequest('Body expected in request.');
  try { return JSON.parse(raw.toString('utf8')); } catch { throw badRequest('Malformed JSON in request body.'); }
}

/** The query string as URLSearchParams (repeatable parameters, in order). */
export function searchParams(request: FastifyRequest): URLSearchParams {
  const url = request.raw.url ?? '';
  const q = url.indexOf('?');
  return new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
}

/** The media type of a request (no parameters, lower case). */
export const mediaTypeOf = (request: FastifyRequest) => mediaType(request.raw);

/**
 * A JSON answer, typed as Glance and Keystone type it (application/json, no charset: a
 * Buffer, since Fastify adds a charset to string payloads).
 */
export function replyJson(reply: FastifyReply, status: number, body: unknown, headers: Record<string, string> = {}): FastifyReply {
  return reply.code(status).headers(headers).header('content-type', 'application/json').send(Buffer.from(JSON.stringify(body)));
}

/** An answer without a body. */
export function replyEmpty(reply: FastifyReply, status: number, headers: Record<string, string> = {}): FastifyReply {
  return reply.code(status).headers({ 'content-length': '0', ...headers }).send();
}
