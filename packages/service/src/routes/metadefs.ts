/**
 * The metadata definitions API (/v2/metadefs and /v2/schemas/metadefs/*): parsing queries and
 * bodies, rendering Glance's shapes. What may be done, and the records' rules, are the
 * metadef domain's (domain/metadefs.ts).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { badRequest, notFound, replyEmpty, replyJson, searchParams, type Authenticate } from '../http.js';
import { docOf, type Association, type Json, type MetadefObject, type MetadefService, type MetadefTag, type NamespaceRow } from '../domain/metadefs.js';
import { metadefSchemas } from '../schemas.js';
import { checkedBody, firstError, jsonschemaMessage, requestSchema, topKey, valueAt } from './validation.js';

export interface MetadefRouteDeps { auth: Authenticate; metadefs: MetadefService }

const apiTime = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');
const nsPath = (name: string) => `/v2/metadefs/namespaces/${name}`;
const assocView = (x: Association) => ({ ...x, created_at: apiTime(x.created_at), updated_at: apiTime(x.updated_at) });
const objectView = (ns: string, o: MetadefObject, links = true): Json => ({
  ...o, created_at: apiTime(o.created_at), updated_at: apiTime(o.updated_at),
  ...(links ? { schema: '/v2/schemas/metadefs/object', self: `${nsPath(ns)}/objects/${o.name}` } : {}),
});
const tagView = (t: MetadefTag) => ({ name: t.name, created_at: apiTime(t.created_at), updated_at: apiTime(t.updated_at) });

function namespaceView(r: NamespaceRow, full: boolean): Json {
  const d = docOf(r);
  const v: Json = {
    namespace: r.namespace, display_name: r.display_name ?? undefined, description: r.description ?? undefined,
    visibility: r.visibility, protected: !!r.protected, owner: r.owner ?? undefined,
    resource_type_associations: d.resource_type_associations.map(assocView),
    created_at: apiTime(r.created_at), updated_at: apiTime(r.updated_at),
    schema: '/v2/schemas/metadefs/namespace', self: nsPath(r.namespace),
  };
  if (full) {
    if (Object.keys(d.properties).length) v.properties = d.properties;
    if (d.objects.length) v.objects = d.objects.map((o) => objectView(r.namespace, o, false));
    if (d.tags.length) v.tags = d.tags.map((t) => ({ name: t.name }));
  }
  return JSON.parse(JSON.stringify(v)) as Json; // drop undefined keys
}

/** The schemas served at /v2/schemas/metadefs/*, which Glance validates these bodies against. */
const SERVED = metadefSchemas();
/** A route's body schema: the served schema `name`, checked by Fastify (attachValidation: authentication answers first). */
const bodyOf = (name: string) => ({ schema: { body: requestSchema(SERVED[name]!) }, attachValidation: true, config: { schemaName: SERVED[name]!.name as string } });

/** The body, valid against the route's served schema (Glance's 400 in its words otherwise). */
async function objectBody(request: FastifyRequest): Promise<Json> {
  const { body, error } = await checkedBody(request);
  if (error) {
    const { schemaName } = request.routeOptions.config as { schemaName?: string };
    throw badRequest(`Provided object does not match schema '${schemaName}': ${jsonschemaMessage(error, body)}`);
  }
  return body as Json;
}

/** GET /v2/metadefs/namespaces: paging, sorting, filters. */
const NAMESPACE_QUERY = {
  type: 'object',
  properties: {
    limit: { type: 'string', allOf: [{ pattern: '^[0-9]+$' }, { pattern: '[1-9]' }] },
    marker: { type: 'string', maxLength: 80 },
    sort_key: { enum: ['namespace', 'created_at', 'updated_at'] },
    sort_dir: { enum: ['asc', 'desc'] },
    visibility: { enum: ['public', 'private'] },
    resource_types: { type: 'string', maxLength: 4096 },
  },
};

type P = { Params: { ns: string; name: string; tag: string; rt: string } };

export function metadefRoutes(app: FastifyInstance, { auth, metadefs }: MetadefRouteDeps): void {
  const schemas = metadefSchemas();
  app.get<{ Params: { name: string } }>('/v2/schemas/metadefs/:name', async (request, reply) => {
    await auth(request);
    const schema = schemas[request.params.name];
    if (!schema) throw notFound('The resource could not be found.');
    return replyJson(reply, 200, schema);
  });

  // --- namespaces
  app.get('/v2/metadefs/namespaces', { schema: { querystring: NAMESPACE_QUERY }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const invalid = firstError(request, 'querystring');
    if (invalid) {
      const name = topKey(invalid);
      const given = valueAt(request.query, `/${name}`);
      if (name === 'limit') throw badRequest(/^\d+$/.test(String(given)) ? 'limit param must be positive' : 'limit param must be an integer');
      if (name === 'visibility') throw badRequest(`Invalid visibility value: ${String(given)}`);
      if (name === 'sort_key') throw badRequest(`Invalid sort key: ${String(given)}`);
      if (name === 'sort_dir') throw badRequest(`Invalid sort direction: ${String(given)}`);
      throw badRequest(`Invalid value for ${name}.`);
    }
    const sp = searchParams(request);
    const vis = sp.get('visibility');
    const limit = Math.min(Number(sp.get('limit') ?? 1000), 1000);
    const sortKey = sp.get('sort_key') ?? 'created_at';
    const sortDir = sp.get('sort_dir') ?? 'desc';
    const { page, more } = await metadefs.list(a, {
      resourceTypes: sp.get('resource_types')?.split(',').map((s) => s.trim()).filter(Boolean),
      visibility: vis ?? undefined, limit, sortKey, sortDir, marker: sp.get('marker') ?? undefined,
    });
    const out: Json = { namespaces: page.map((r) => namespaceView(r, false)), first: '/v2/metadefs/namespaces', schema: '/v2/schemas/metadefs/namespaces' };
    if (more) {
      const q = new URLSearchParams(sp);
      q.set('marker', page[page.length - 1]!.namespace);
      out.next = `/v2/metadefs/namespaces?${q}`;
    }
    return replyJson(reply, 200, out);
  });
  app.post('/v2/metadefs/namespaces', bodyOf('namespace'), async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 201, namespaceView(await metadefs.create(a, await objectBody(request)), true));
  });
  app.get<P>('/v2/metadefs/namespaces/:ns', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, namespaceView(await metadefs.namespace(a, request.params.ns), true));
  });
  app.put<P>('/v2/metadefs/namespaces/:ns', bodyOf('namespace'), async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, namespaceView(await metadefs.update(a, request.params.ns, await objectBody(request)), true));
  });
  app.delete<P>('/v2/metadefs/namespaces/:ns', async (request, reply) => {
    await metadefs.delete(await auth(request), request.params.ns);
    return replyEmpty(reply, 204);
  });
  for (const part of ['properties', 'objects', 'tags'] as const) {
    app.delete<P>(`/v2/metadefs/namespaces/:ns/${part}`, async (request, reply) => {
      await metadefs.empty(await auth(request), request.params.ns, part);
      return replyEmpty(reply, 204);
    });
  }

  // --- properties
  app.get<P>('/v2/metadefs/namespaces/:ns/properties', async (request, reply) => {
    return replyJson(reply, 200, { properties: await metadefs.properties(await auth(request), request.params.ns) });
  });
  app.post<P>('/v2/metadefs/namespaces/:ns/properties', bodyOf('property'), async (request, reply) => {
    const a = await auth(request);
    const { name, def } = await metadefs.addProperty(a, request.params.ns, await objectBody(request));
    return replyJson(reply, 201, { name, ...def });
  });
  app.get<P>('/v2/metadefs/namespaces/:ns/properties/:name', async (request, reply) => {
    const def = await metadefs.property(await auth(request), request.params.ns, request.params.name);
    return replyJson(reply, 200, { name: request.params.name, ...def });
  });
  app.put<P>('/v2/metadefs/namespaces/:ns/properties/:name', bodyOf('property'), async (request, reply) => {
    const a = await auth(request);
    const { name, def } = await metadefs.updateProperty(a, request.params.ns, request.params.name, await objectBody(request));
    return replyJson(reply, 200, { name, ...def });
  });
  app.delete<P>('/v2/metadefs/namespaces/:ns/properties/:name', async (request, reply) => {
    await metadefs.removeProperty(await auth(request), request.params.ns, request.params.name);
    return replyEmpty(reply, 204);
  });

  // --- objects
  app.get<P>('/v2/metadefs/namespaces/:ns/objects', async (request, reply) => {
    const objects = await metadefs.objects(await auth(request), request.params.ns);
    return replyJson(reply, 200, { objects: objects.map((o) => objectView(request.params.ns, o)), schema: 'v2/schemas/metadefs/objects' });
  });
  app.post<P>('/v2/metadefs/namespaces/:ns/objects', bodyOf('object'), async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 201, objectView(request.params.ns, await metadefs.addObject(a, request.params.ns, await objectBody(request))));
  });
  app.get<P>('/v2/metadefs/namespaces/:ns/objects/:name', async (request, reply) => {
    return replyJson(reply, 200, objectView(request.params.ns, await metadefs.object(await auth(request), request.params.ns, request.params.name)));
  });
  app.put<P>('/v2/metadefs/namespaces/:ns/objects/:name', bodyOf('object'), async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, objectView(request.params.ns, await metadefs.updateObject(a, request.params.ns, request.params.name, await objectBody(request))));
  });
  app.delete<P>('/v2/metadefs/namespaces/:ns/objects/:name', async (request, reply) => {
    await metadefs.deleteObject(await auth(request), request.params.ns, request.params.name);
    return replyEmpty(reply, 204);
  });

  // --- tags
  app.get<P>('/v2/metadefs/namespaces/:ns/tags', async (request, reply) => {
    return replyJson(reply, 200, { tags: (await metadefs.tags(await auth(request), request.params.ns)).map(tagView) });
  });
  app.post<P>('/v2/metadefs/namespaces/:ns/tags', bodyOf('tags'), async (request, reply) => {
    const a = await auth(request);
    const append = /^true$/i.test(String(request.headers['x-openstack-append'] ?? ''));
    const tags = await metadefs.addTags(a, request.params.ns, await objectBody(request), append);
    return replyJson(reply, 201, { tags: tags.map(tagView) });
  });
  app.post<P>('/v2/metadefs/namespaces/:ns/tags/:tag', async (request, reply) => {
    return replyJson(reply, 201, tagView(await metadefs.addTag(await auth(request), request.params.ns, request.params.tag)));
  });
  app.get<P>('/v2/metadefs/namespaces/:ns/tags/:tag', async (request, reply) => {
    return replyJson(reply, 200, tagView(await metadefs.tag(await auth(request), request.params.ns, request.params.tag)));
  });
  app.put<P>('/v2/metadefs/namespaces/:ns/tags/:tag', bodyOf('tag'), async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, tagView(await metadefs.updateTag(a, request.params.ns, request.params.tag, await objectBody(request))));
  });
  app.delete<P>('/v2/metadefs/namespaces/:ns/tags/:tag', async (request, reply) => {
    await metadefs.deleteTag(await auth(request), request.params.ns, request.params.tag);
    return replyEmpty(reply, 204);
  });

  // --- resource types and their associations
  app.get('/v2/metadefs/resource_types', async (request, reply) => {
    const rows = await metadefs.resourceTypes(await auth(request));
    return replyJson(reply, 200, { resource_types: rows.map((r) => ({ name: r.name, created_at: apiTime(r.created_at), updated_at: apiTime(r.updated_at) })) });
  });
  app.get<P>('/v2/metadefs/namespaces/:ns/resource_types', async (request, reply) => {
    return replyJson(reply, 200, { resource_type_associations: (await metadefs.associations(await auth(request), request.params.ns)).map(assocView) });
  });
  app.post<P>('/v2/metadefs/namespaces/:ns/resource_types', bodyOf('resource_type'), async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 201, assocView(await metadefs.associate(a, request.params.ns, await objectBody(request))));
  });
  app.delete<P>('/v2/metadefs/namespaces/:ns/resource_types/:rt', async (request, reply) => {
    await metadefs.dissociate(await auth(request), request.params.ns, request.params.rt);
    return replyEmpty(reply, 204);
  });
}
