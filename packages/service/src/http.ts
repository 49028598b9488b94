/**
 * The HTTP plumbing shared by the route modules: typed HTTP errors, errors rendered the way
 * the OpenStack service that owns the path does (Glance: webob's HTML, JSON or plain body
 * chosen from Accept; Keystone: {"error": {...}}), JSON bodies with a size cap, and the
 * reply helpers of the Fastify routes.
 */
import type { IncomingMessage } from 'node:http';
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

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
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



export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// --- Fastify route modules

/** Authentication as route modules get it: the caller's identity, or a 401 (503 when an external Keystone is down). */
export type Authenticate = (request: FastifyRequest) => Promise<AuthContext>;

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
export const mediaTypeOf = (request: FastifyRequest) => (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();

/**
 * A JSON answer, typed as Glance and Keystone type it (application/json, no charset). The
 * reply's own serializer writes it: Fastify adds a charset to a JSON string sent without one,
 * and a Buffer made here first is a second copy of every list (the string goes to the socket
 * as it is, headers and body in one write).
 */
export function replyJson(reply: FastifyReply, status: number, body: unknown, headers: Record<string, string> = {}): FastifyReply {
  return reply.code(status).headers(headers).header('content-type', 'application/json').serializer(JSON.stringify).send(body);
}

/** An answer without a body. */
export function replyEmpty(reply: FastifyReply, status: number, headers: Record<string, string> = {}): FastifyReply {
  return reply.code(status).headers({ 'content-length': '0', ...headers }).send();
}
