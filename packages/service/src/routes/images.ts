/**
 * Images: create, list, show, update (JSON patch), delete, deactivate and reactivate.
 * Parses and renders only; what is allowed and what it does is the image domain's.
 */
import type { FastifyInstance } from 'fastify';
import { HttpError, PATCH_TYPES, badRequest, mediaTypeOf, replyEmpty, replyJson, searchParams, type Authenticate } from '../http.js';
import { MAX_TAGS, checkWritable, imageView, type ImageRecord } from '../images-model.js';
import type { AuthContext } from '../identity.js';
import type { ImageChange, ImageService } from '../domain/images.js';
import { NAME_CONTAINS_PARAM, SORT_KEYS } from '../repo/images.js';
import { imageSchema } from '../schemas.js';
import { checkedBody, firstError, jsonschemaMessage, oneOrMany, pyStr, requestSchema, topKey, valueAt, type SchemaError } from './validation.js';
import { PROXIED_HEADER } from '../domain/import/stage-host.js';

export interface ImageRouteDeps {
  auth: Authenticate;
  images: ImageService;
  /** The configured stores' ids, comma-separated (OpenStack-image-store-ids). */
  storeIds: string;
  /** Glance's enabled_import_methods (the OpenStack-image-import-methods header). */
  importMethods: string[];
  /** Glance's show_image_direct_url and show_multiple_locations. */
  showImageDirectUrl: boolean;
  showMultipleLocations: boolean;
  /** Largest page a list returns (Glance's api_limit_max) and the default page size. */
  limitMax: number;
  limitDefault: number;
}

export function imageRoutes(app: FastifyInstance, deps: ImageRouteDeps): void {
  const { auth, images } = deps;
  const importHeaders = { 'OpenStack-image-import-methods': deps.importMethods.join(','), 'OpenStack-image-store-ids': deps.storeIds };
  /** The image as `a` sees it: its locations only where configured and the policy lets `a` see them. */
  const view = (a: AuthContext, img: ImageRecord) => {
    const visible = (deps.showImageDirectUrl || deps.showMultipleLocations) && images.locationsVisible(a, img);
    return imageView(img, { directUrl: visible && deps.showImageDirectUrl, locations: visible && deps.showMultipleLocations });
  };
  const unsupported = (type: string, headers?: Record<string, string>) =>
    new HttpError(415, `The request media type ${type || '(none)'} is not supported by this server.`, headers);

  app.post('/v2/images', { schema: { body: IMAGE }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    if (mediaTypeOf(request) !== 'application/json') throw unsupported(mediaTypeOf(request));
    const { body, error } = await checkedBody(request);
    if (error?.instancePath === '' && error.keyword === 'type') throw badRequest('Unexpected body type. Expected list/dict.');
    if (error) throw imageSchemaError(error, body);
    // (Glance refuses read-only and reserved attributes after the schema: {"status": "active"} is valid there.)
    for (const key of Object.keys(body as object)) checkWritable(key, true);
    const img = await images.create(a, body as Record<string, unknown>);
    return replyJson(reply, 201, view(a, img), { Location: `${request.baseUrl}/v2/images/${img.id}`, ...importHeaders });
  });

  app.get('/v2/images', { schema: { querystring: LIST_QUERY }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const invalid = firstError(request, 'querystring');
    if (invalid) throw listQueryError(invalid, request.query);
    const sp = searchParams(request);
    const limit = sp.has('limit') ? Math.min(Number(sp.get('limit')), deps.limitMax) : deps.limitDefault;
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

  app.patch<{ Params: { id: string } }>('/v2/images/:id', { schema: { body: PATCH }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const type = mediaTypeOf(request);
    if (!PATCH_TYPES.includes(type)) throw unsupported(type, { 'Accept-Patch': PATCH_TYPES.join(', ') });
    const { body: ops, error } = await checkedBody(request);
    // Operations are taken in order, as Glance takes them: the first invalid one answers.
    const failing = error ? Number(error.instancePath.split('/')[1] ?? -1) : -1;
    if (error && !(failing >= 0)) throw patchError(error, ops, type);
    const changes = (ops as Record<string, unknown>[]).map((raw, i) => {
      if (i === failing && !isValueError(error!)) throw patchError(error!, ops, type);
      const change = parseChange(raw, type);
      // (the locations list is the locations domain's: its policy and validation)
      if (change.key !== 'locations') checkWritable(change.key, false);
      if (i === failing) throw patchError(error!, ops, type);
      return change;
    });
    return replyJson(reply, 200, view(a, await images.update(a, request.params.id, changes)));
  });

  app.delete<{ Params: { id: string } }>('/v2/images/:id', async (request, reply) => {
    const a = await auth(request);
    // (the token: an image staged on another node is deleted there, as the user)
    const token = request.headers['x-auth-token'];
    const proxiedBy = request.headers[PROXIED_HEADER];
    await images.delete(a, request.params.id, typeof token === 'string' ? token : undefined, typeof proxiedBy === 'string' ? proxiedBy : undefined);
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

// --- request schemas (Fastify validates; the routes turn the first error into Glance's words)

/** The image schema served at /v2/schemas/image, as Glance validates requests against it. */
const IMAGE = requestSchema(imageSchema()) as { properties: Record<string, object>; additionalProperties: object };
const OPS = ['add', 'remove', 'replace'];

/**
 * The value of an operation on `/key` checked against the image schema's `key` (an extra
 * property's against additionalProperties), as Glance validates {key: value} for each
 * change. `pathIs` says how an operation names its path in the media type.
 */
function valueChecks(pathIs: (path: object) => object): object[] {
  const pointers = Object.keys(IMAGE.properties).map((k) => ({ const: `/${k}` }));
  // One item of the locations list (/locations/N, /locations/-) is checked by the domain.
  const locationItem = { type: 'string', pattern: '^/locations/' };
  return [
    ...Object.entries(IMAGE.properties).map(([k, schema]) => ({ if: pathIs({ const: `/${k}` }), then: { properties: { value: schema } } })),
    { if: { not: { anyOf: [...pointers, locationItem].map(pathIs) } }, then: { properties: { value: IMAGE.additionalProperties } } },
  ];
}
const PATH = { type: 'string', pattern: '^/' };

/**
 * JSON patch bodies in Glance's two media types: v2.1 is RFC 6902's {"op", "path", "value"};
 * v2.0 names the operation by its key ({"replace": "/name", "value": ...}).
 */
const PATCH = {
  content: {
    'application/openstack-images-v2.1-json-patch': {
      schema: {
        type: 'array',
        items: {
          type: 'object',
          // (allOf: in the order Glance checks an operation)
          allOf: [
            { required: ['op'] },
            { properties: { op: { enum: OPS } } },
            { required: ['path'] },
            { properties: { path: PATH } },
            { if: { properties: { op: { const: 'remove' } } }, else: { required: ['value'] } },
            ...valueChecks((p) => ({ properties: { path: p }, required: ['path'] })),
          ],
        },
      },
    },
    'application/openstack-images-v2.0-json-patch': {
      schema: {
        type: 'array',
        items: {
          type: 'object',
          properties: { add: PATH, remove: PATH, replace: PATH },
          allOf: [
            { anyOf: OPS.map((o) => ({ required: [o] })) },
            { not: { anyOf: [['add', 'remove'], ['add', 'replace'], ['remove', 'replace']].map((r) => ({ required: r })) } },
            { if: { required: ['remove'] }, else: { required: ['value'] } },
            ...valueChecks((p) => ({ anyOf: OPS.map((o) => ({ properties: { [o]: p }, required: [o] })) })),
          ],
        },
      },
    },
  },
};

const isValueError = (e: SchemaError) => /^\/\d+\/value(\/|$)/.test(e.instancePath);

export function imageSchemaError(e: SchemaError, root: unknown): HttpError {
  return badRequest(`Provided object does not match schema 'image': ${jsonschemaMessage(e, root)}`);
}

/** Glance's answer to the first invalid part of a JSON patch body. */
function patchError(e: SchemaError, ops: unknown, type: string): HttpError {
  if (e.instancePath === '') return badRequest('Request body must be a JSON array of operation objects.');
  const [, index, member] = e.instancePath.split('/');
  const op = (ops as Record<string, unknown>[])[Number(index)]!;
  if (member === undefined && e.keyword === 'type') return badRequest('Operations must be JSON objects.');
  if (member === 'value') return imageSchemaError(e, ops);
  const opName = typeof op.op === 'string' ? op.op : OPS.find((o) => o in op);
  if (e.keyword === 'required' && e.params.missingProperty === 'value') return badRequest(`Operation "${opName}" requires a member named "value".`);
  if (type.endsWith('v2.0-json-patch') && member === undefined) {
    return badRequest(e.keyword === 'not'
      ? 'Operation objects must contain only one member named "add", "remove", or "replace".'
      : 'Operation objects must contain exactly one member named "add", "remove", or "replace".');
  }
  if (e.keyword === 'required' && e.params.missingProperty === 'op' || member === 'op') {
    return badRequest(op.op === undefined
      ? `Unable to find \`op\` in JSON Schema change. It must be one of the following: ${OPS.join(', ')}.`
      : `Invalid operation: \`${pyStr(op.op)}\`. It must be one of the following: ${OPS.join(', ')}.`);
  }
  if (e.keyword === 'required' && e.params.missingProperty === 'path') return badRequest("Unable to find 'path' in JSON Schema change");
  const path = valueAt(ops, e.instancePath);
  if (typeof path !== 'string') return badRequest(`Invalid JSON pointer for this resource: '${pyStr(path)}'`);
  return badRequest(`Pointer \`${path}\` does not start with "/".`);
}

/** One JSON-patch operation (valid against PATCH) in either media type, its pointer resolved to an attribute name. */
function parseChange(raw: Record<string, unknown>, type: string): ImageChange {
  const op = (type.endsWith('v2.0-json-patch') ? OPS.find((o) => o in raw)! : raw.op) as ImageChange['op'];
  const path = (type.endsWith('v2.0-json-patch') ? raw[op] : raw.path) as string;
  // RFC 6901: ~1 is '/', ~0 is '~'; an image's attributes are one level deep, except the
  // locations list: /locations/N (or /locations/-) for add and remove, /locations for replace.
  const parts = path.slice(1).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const key = parts[0]!;
  const invalid = () => badRequest(`Invalid JSON pointer for this resource: '${path}'`);
  if (key === '') throw invalid();
  if (key === 'locations') {
    if (parts.length !== (op === 'replace' ? 1 : 2)) throw invalid();
    return { op, key, path, value: raw.value, hasValue: 'value' in raw, position: parts[1] };
  }
  if (parts.length !== 1) throw invalid();
  return { op, key, path, value: raw.value, hasValue: 'value' in raw };
}

const SORT_KEY = `(${SORT_KEYS.join('|')})`;
/** A comma-separated list of `item` (blanks around items allowed, as Glance strips them). */
const listOf = (item: string) => `^\\s*(${item}\\s*(,\\s*${item}\\s*)*)?$`;
const BOOLEAN = { type: 'string', pattern: '^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$' };
const TIME = { type: 'string', pattern: '^(gt|gte|lt|lte|eq|neq):[0-9]{4}-[0-9]{2}-[0-9]{2}' };
const COUNT = { type: 'string', pattern: '^[0-9]+$' };

/** GET /v2/images: paging, sorting and filters (any other parameter filters on an extra property). */
const LIST_QUERY = {
  type: 'object',
  properties: {
    limit: oneOrMany({ type: 'string', allOf: [{ pattern: '^-?[0-9]+$' }, { pattern: '^[0-9]+$' }] }),
    marker: oneOrMany({ type: 'string' }),
    sort_key: oneOrMany({ type: 'string', pattern: listOf(SORT_KEY) }),
    sort_dir: oneOrMany({ type: 'string', pattern: listOf('(asc|desc)') }),
    sort: oneOrMany({ type: 'string', pattern: listOf(`${SORT_KEY}(:(asc|desc))?`) }),
    visibility: oneOrMany({ enum: ['public', 'private', 'shared', 'community', 'all'] }),
    member_status: oneOrMany({ enum: ['accepted', 'pending', 'rejected', 'all'] }),
    size_min: oneOrMany({ type: 'string', pattern: '^-?[0-9]+$' }),
    size_max: oneOrMany({ type: 'string', pattern: '^-?[0-9]+$' }),
    os_hidden: oneOrMany(BOOLEAN),
    protected: oneOrMany(BOOLEAN),
    created_at: oneOrMany(TIME),
    updated_at: oneOrMany(TIME),
    min_ram: oneOrMany(COUNT), min_disk: oneOrMany(COUNT), size: oneOrMany(COUNT), virtual_size: oneOrMany(COUNT),
    [NAME_CONTAINS_PARAM]: oneOrMany({ type: 'string', maxLength: 255 }),
    // No image has more tags than that, so more tag filters cannot match anything.
    tag: oneOrMany({ type: 'string', maxLength: 255 }, MAX_TAGS),
  },
  additionalProperties: oneOrMany({ type: 'string', maxLength: 65535 }),
  propertyNames: { maxLength: 255 },
  // Each filter is an SQL condition: a bounded number of them.
  maxProperties: 64,
  if: { required: ['sort'] },
  then: { not: { anyOf: [{ required: ['sort_key'] }, { required: ['sort_dir'] }] } },
};

/** Glance's answer to the first invalid parameter of an image list. */
function listQueryError(e: SchemaError, query: unknown): HttpError {
  if (e.keyword === 'not') return badRequest('Old and new sorting syntax cannot be combined');
  if (e.keyword === 'maxProperties') return badRequest('Too many query parameters: at most 64.');
  if (e.keyword === 'propertyNames' || e.instancePath === '' && e.keyword === 'maxLength') return badRequest('Filter name too long.');
  const name = topKey(e);
  const given = valueAt(query, `/${name.replace(/~/g, '~0').replace(/\//g, '~1')}`);
  const values = [given].flat() as string[];
  if (Array.isArray(given) && given.length > (name === 'tag' ? MAX_TAGS : 32)) return badRequest(`Too many '${name}' parameters: at most ${name === 'tag' ? MAX_TAGS : 32}.`);
  const bad = (ok: RegExp) => values.find((v) => !ok.test(v)) ?? values[0];
  switch (name) {
    case 'limit': return badRequest(values.every((v) => /^-?\d+$/.test(v)) ? 'limit param must be positive' : 'limit param must be an integer');
    case 'sort_key': return badRequest(`Invalid sort key: ${bad(new RegExp(listOf(SORT_KEY)))}. It must be one of the following: ${SORT_KEYS.join(', ')}.`);
    case 'sort_dir': return badRequest(`Invalid sort direction: ${bad(new RegExp(listOf('(asc|desc)')))}`);
    case 'sort': {
      for (const part of values.join(',').split(',').map((x) => x.trim()).filter(Boolean)) {
        const [k, d] = part.split(':');
        if (!(SORT_KEYS as readonly string[]).includes(k!)) return badRequest(`Invalid sort key: ${k}. It must be one of the following: ${SORT_KEYS.join(', ')}.`);
        if (d !== undefined && d !== 'asc' && d !== 'desc') return badRequest(`Invalid sort direction: ${d}`);
      }
      return badRequest(`Invalid sort parameter: ${values.join(',')}`);
    }
    case 'visibility': return badRequest(`Invalid visibility value: ${bad(/^(public|private|shared|community|all)$/)}`);
    case 'member_status': return badRequest(`Invalid status: ${bad(/^(accepted|pending|rejected|all)$/)}`);
    case 'size_min': case 'size_max': return badRequest('Unable to filter on a range with a non-numeric value.');
    case 'os_hidden': case 'protected': return badRequest(`Invalid value '${bad(/^(true|false)$/i)}' for '${name}' filter. Valid values are 'true' or 'false'.`);
    case 'created_at': case 'updated_at': return badRequest(`Bad "${name}" query filter format. Use ISO 8601 DateTime notation.`);
    case 'min_ram': case 'min_disk': case 'size': case 'virtual_size': return badRequest(`Invalid value for ${name}: ${bad(/^\d+$/)}.`);
    case NAME_CONTAINS_PARAM: case 'tag': return badRequest(`The '${name}' filter is longer than 255 characters.`);
    default: return badRequest(`The value of the '${name.slice(0, 255)}' filter is longer than 65535 characters.`);
  }
}
