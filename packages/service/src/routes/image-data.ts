/**
 * Image data: upload (PUT /file), staging (PUT /stage), import, download (GET /file, with
 * Range). Upload bodies are never buffered: the scope leaves application/octet-stream
 * unparsed and the domain streams `request.raw` into the store.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpError, badRequest, mediaTypeOf, replyEmpty, searchParams, type Authenticate } from '../http.js';
import { checkedBody, pyStr, topKey, valueAt, type SchemaError } from './validation.js';
import type { ImageRecord } from '../images-model.js';
import { IMPORT_METHODS, type ImageDataService } from '../domain/image-data.js';
import { SIGNATURE_PARAM } from '../download-urls.js';
import type { Store } from '../store.js';

export interface ImageDataRouteDeps { auth: Authenticate; data: ImageDataService; store: Store }

type IdParams = { Params: { id: string } };

export function imageDataRoutes(app: FastifyInstance, { auth, data, store }: ImageDataRouteDeps): void {
  const requireOctets = (request: FastifyRequest) => {
    const t = mediaTypeOf(request);
    if (t !== 'application/octet-stream') throw new HttpError(415, `The request media type ${t || '(none)'} is not supported by this server.`);
  };
  const contentLength = (request: FastifyRequest): number | null => {
    const cl = request.headers['content-length'];
    return cl === undefined ? null : Number(cl);
  };

  app.put<IdParams>('/v2/images/:id/file', async (request, reply) => {
    const a = await auth(request);
    requireOctets(request);
    await data.upload(a, request.params.id, request.raw, contentLength(request), () => request.raw.complete);
    return replyEmpty(reply, 204);
  });

  app.put<IdParams>('/v2/images/:id/stage', async (request, reply) => {
    const a = await auth(request);
    requireOctets(request);
    await data.stage(a, request.params.id, request.raw, () => request.raw.complete);
    return replyEmpty(reply, 204);
  });

  app.post<IdParams>('/v2/images/:id/import', { schema: { body: IMPORT }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const { body, error } = await checkedBody(request);
    if (error) throw importError(error, body);
    await data.import(a, request.params.id, (body as { method: { name: string } }).method.name);
    return replyEmpty(reply, 202, { 'OpenStack-image-import-methods': IMPORT_METHODS.join(','), 'OpenStack-image-store-ids': store.id });
  });

  app.get<IdParams>('/v2/images/:id/file', async (request, reply) => {
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    const sp = searchParams(request);
    let img: ImageRecord;
    if (sp.has(SIGNATURE_PARAM)) {
      img = await data.downloadable(null, request.params.id, sp);
      // A signed URL is for a browser: it saves the file under the image's name.
      headers['Content-Disposition'] = `attachment; filename="${downloadName(img)}"`;
    } else {
      img = await data.downloadable(await auth(request), request.params.id, null);
    }
    if (!img.location || img.status !== 'active' && img.status !== 'deactivated') return replyEmpty(reply, 204);
    const size = Number(img.size);
    if (img.checksum) headers['Content-MD5'] = img.checksum;
    const range = parseRange(request.headers.range, size);
    reply.hijack();
    const res = reply.raw;
    if (range) {
      headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
      headers['Content-Length'] = String(range.end - range.start + 1);
      res.writeHead(206, headers);
    } else {
      headers['Content-Length'] = String(size);
      res.writeHead(200, headers);
    }
    if (request.method === 'HEAD') { res.end(); return; }
    await store.send(img.location, res, range ?? undefined).catch(() => { res.destroy(); });
  });
}

/** POST /v2/images/{id}/import: Glance's body (the method, and the stores it copies to). */
const IMPORT = {
  type: 'object',
  required: ['method'],
  properties: {
    method: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, uri: { type: 'string' }, glance_image_id: { type: 'string' }, glance_region: { type: 'string' }, glance_service_interface: { type: 'string' } } },
    stores: { type: 'array', items: { type: 'string' }, maxItems: 64 },
    all_stores: { type: 'boolean' },
    all_stores_must_succeed: { type: 'boolean' },
  },
};

/** Glance's answer to an invalid import body. */
function importError(e: SchemaError, body: unknown): HttpError {
  const field = topKey(e);
  if (e.instancePath === '' && e.keyword === 'type' || field === 'method' && e.keyword === 'required' && e.instancePath === '') return badRequest("Import request requires a 'method' field.");
  if (field === 'method') return badRequest(`Unknown import method name '${pyStr(valueAt(body, '/method/name') ?? valueAt(body, '/method'))}'.`);
  if (field === 'stores') return badRequest("'stores' must be a list of store identifiers.");
  return badRequest(`'${field}' must be boolean value only`);
}

/**
 * One byte range (bytes=a-b, a-, -n), or null to send the whole body; 416 when it cannot be
 * satisfied. A request for several ranges, or in another unit, gets the whole body: RFC 9110
 * §14.2 lets a server ignore Range, and a multipart/byteranges answer would only serve
 * clients that download images in pieces, which ask one range at a time.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (!header) return null;
  const spec = header.trim();
  if (!/^bytes=/i.test(spec) || spec.includes(',')) return null;
  const m = /^bytes=(\d*)-(\d*)$/i.exec(spec);
  const unsatisfiable = () => new HttpError(416, `The Range requested is not available: valid byte positions are 0 to ${size - 1}.`, { 'Content-Range': `bytes */${size}` });
  if (!m || (m[1] === '' && m[2] === '')) throw unsatisfiable();
  let start: number;
  let end: number;
  if (m[1] === '') { const n = Number(m[2]); start = Math.max(0, size - n); end = size - 1; if (n === 0) throw unsatisfiable(); }
  else { start = Number(m[1]); end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1); }
  if (start >= size || start > end) throw unsatisfiable();
  return { start, end };
}

/** A file name for a download: the image name (or id) with the disk format as extension, safe in a header. */
function downloadName(img: ImageRecord): string {
  const base = (img.name || img.id).replace(/[^A-Za-z0-9._ -]+/g, '_').slice(0, 200);
  const ext = img.disk_format && !base.toLowerCase().endsWith(`.${img.disk_format}`) ? `.${img.disk_format}` : '';
  return base + ext;
}
