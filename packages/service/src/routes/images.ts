/**
 * Images: create, list, show, update (JSON patch), delete, deactivate and reactivate.
 * Parses and renders only; what is allowed and what it does is the image domain's.
 */
import type { FastifyInstance } from 'fastify';
import { HttpError, PATCH_TYPES, badRequest, isObject, jsonBody, mediaTypeOf, replyEmpty, replyJson, searchParams, type Authenticate } from '../http.js';
import { imageView, type ImageRecord } from '../images-model.js';
import type { AuthContext } from '../identity.js';
import type { ImageChange, ImageService } from '../domain/images.js';
import { IMPORT_METHODS } from '../domain/image-data.js';

export interface ImageRouteDeps {
  auth: Authenticate;
  images: ImageService;
  /** The configured stores' ids, comma-separated (OpenStack-image-store-ids). */
  storeIds: string;
  /** Glance's show_image_direct_url and show_multiple_locations. */
  showImageDirectUrl: boolean;
  showMultipleLocations: boolean;
  /** Largest page a list returns (Glance's api_limit_max) and the default page size. */
  limitMax: number;
  limitDefault: number;
}

export function imageRoutes(app: FastifyInstance, deps: ImageRouteDeps): void {
  const { auth, images } = deps;
  const importHeaders = { 'OpenStack-image-import-methods': IMPORT_METHODS.join(','), 'OpenStack-image-store-ids': deps.storeIds };
  /** The image as `a` sees it: its locations only where configured and the policy lets `a` see them. */
  const view = (a: AuthContext, img: ImageRecord) => {
    const visible = (deps.showImageDirectUrl || deps.showMultipleLocations) && images.locationsVisible(a, img);
    return imageView(img, { directUrl: visible && deps.showImageDirectUrl, locations: visible && deps.showMultipleLocations });
  };
  const unsupported = (type: string, headers?: Record<string, string>) =>
    new HttpError(415, `The request media type ${type || '(none)'} is not supported by this server.`, headers);

  app.post('/v2/images', async (request, reply) => {
    const a = await auth(request);
    if (mediaTypeOf(request) !== 'application/json') throw unsupported(mediaTypeOf(request));
    const body = await jsonBody(request);
    if (!isObject(body)) throw badRequest('Body must be a JSON object describing the image.');
    const img = await images.create(a, body);
    return replyJson(reply, 201, view(a, img), { Location: `${request.baseUrl}/v2/images/${img.id}`, ...importHeaders });
  });

  app.get('/v2/images', async (request, reply) => {
    const a = await auth(request);
    const sp = searchParams(request);
    let limit = deps.limitDefault;
    if (sp.has('limit')) {
      const raw = sp.get('limit')!;
      if (!/^-?\d+$/.test(raw)) throw badRequest('limit param must be an integer');
      limit = Number(raw);
      if (limit < 0) throw badRequest('limit param must be positive');
      limit = Math.min(limit, deps.limitMax);
    }
    const page = await images.list(a, sp, limit);
    const body: Record<string, unknown> = { images: page.images.map((i) => view(a, i)), first: `/v2/images${sp.toString() ? `?${sp}` : ''}`, schema: '/v2/schemas/images' };
    if (page.more && page.last) {
      const next = new URLSearchParams(sp);
      next.delete('marker');
      next.set('marker', page.last);
      body.next = `/v2/images?${next}`;
    }
    return replyJson(reply, 200, body);
  });

  app.get<{ Params: { id: string } }>('/v2/images/:id', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, view(a, await images.get(a, request.params.id)));
  });

  app.patch<{ Params: { id: string } }>('/v2/images/:id', async (request, reply) => {
    const a = await auth(request);
    const type = mediaTypeOf(request);
    if (!PATCH_TYPES.includes(type)) throw unsupported(type, { 'Accept-Patch': PATCH_TYPES.join(', ') });
    const ops = await jsonBody(request);
    if (!Array.isArray(ops)) throw badRequest('Request body must be a JSON array of operation objects.');
    const changes = ops.map((raw) => parseChange(raw, type));
    return replyJson(reply, 200, view(a, await images.update(a, request.params.id, changes)));
  });

  app.delete<{ Params: { id: string } }>('/v2/images/:id', async (request, reply) => {
    const a = await auth(request);
    await images.delete(a, request.params.id);
    return replyEmpty(reply, 204);
  });

  for (const action of ['deactivate', 'reactivate'] as const) {
    app.post<{ Params: { id: string } }>(`/v2/images/:id/actions/${action}`, async (request, reply) => {
      const a = await auth(request);
      await images.setActivation(a, request.params.id, action);
      return replyEmpty(reply, 204);
    });
  }
}

/** One JSON-patch operation in either of Glance's two media types, its pointer resolved to an attribute name. */
function parseChange(raw: unknown, type: string): ImageChange {
  if (!isObject(raw)) throw badRequest('Operations must be JSON objects.');
  let op: unknown;
  let path: unknown;
  if (type.endsWith('v2.0-json-patch') && !('op' in raw)) {
    // The v2.0 media type spells an operation as {"replace": "/name", "value": ...}.
    op = ['add', 'replace', 'remove'].find((o) => o in raw);
    path = op ? raw[op as string] : undefined;
    if (!op) throw badRequest('Operation objects must contain exactly one member named "add", "remove", or "replace".');
  } else {
    op = raw.op;
    path = raw.path;
    if (typeof op !== 'string') throw badRequest('Operation objects must contain a string member named "op".');
    if (!['add', 'replace', 'remove'].includes(op)) throw badRequest(`Invalid operation: \`${op}\`. It must be one of the following: add, remove, replace.`);
  }
  if (typeof path !== 'string') throw badRequest('Unable to find `path` in operation.');
  // RFC 6901: ~1 is '/', ~0 is '~'; an image's attributes are one level deep, except the
  // locations list: /locations/N (or /locations/-) for add and remove, /locations for replace.
  const parts = path.slice(1).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const key = parts[0]!;
  const invalid = () => badRequest(`Invalid JSON pointer for this resource: '${path}'`);
  if (!path.startsWith('/') || key === '') throw invalid();
  if (key === 'locations') {
    if (parts.length !== (op === 'replace' ? 1 : 2)) throw invalid();
    return { op: op as ImageChange['op'], key, path, value: raw.value, hasValue: 'value' in raw, position: parts[1] };
  }
  if (parts.length !== 1) throw invalid();
  return { op: op as ImageChange['op'], key, path, value: raw.value, hasValue: 'value' in raw };
}
