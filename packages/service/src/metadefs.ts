/**
 * The metadata definitions API (/v2/metadefs), read-only over the built-in catalogue in
 * metadefs-catalog.ts: namespaces (filtered by resource type), their properties, objects,
 * tags and resource type associations, in Glance's response shapes.
 */
import { notFound, sendJson, type Ctx, type Router } from './http.js';
import type { AuthContext } from './identity.js';
import { NAMESPACES, RESOURCE_TYPES, type NamespaceDef } from './metadefs-catalog.js';
import { metadefSchemas } from './schemas.js';

const CREATED = '2026-01-01T00:00:00Z';

function associations(ns: NamespaceDef) {
  return ns.resource_types.map((r) => ({ ...r, created_at: CREATED, updated_at: CREATED }));
}

function namespaceView(ns: NamespaceDef, full: boolean): Record<string, unknown> {
  const v: Record<string, unknown> = {
    namespace: ns.namespace, display_name: ns.display_name, description: ns.description,
    visibility: 'public', protected: true, owner: 'admin',
    resource_type_associations: associations(ns),
    created_at: CREATED, updated_at: CREATED,
    schema: '/v2/schemas/metadefs/namespace', self: `/v2/metadefs/namespaces/${ns.namespace}`,
  };
  if (full) {
    v.properties = ns.properties;
    v.objects = [];
    if (ns.tags) v.tags = ns.tags.map((name) => ({ name }));
  }
  return v;
}

export function metadefsRoutes(router: Router, auth: (ctx: Ctx) => Promise<AuthContext>): void {
  const find = (name: string): NamespaceDef => {
    const ns = NAMESPACES.find((n) => n.namespace === name);
    if (!ns) throw notFound(`Metadata definition namespace=${name} was not found.`);
    return ns;
  };
  const schemas = metadefSchemas();
  router.add('GET', '/v2/schemas/metadefs/:name', async (ctx) => {
    await auth(ctx);
    const schema = schemas[ctx.params.name!];
    if (!schema) throw notFound('The resource could not be found.');
    sendJson(ctx, 200, schema);
  });
  router.add('GET', '/v2/metadefs/namespaces', async (ctx) => {
    await auth(ctx);
    const sp = ctx.url.searchParams;
    const types = sp.get('resource_types')?.split(',').map((s) => s.trim()).filter(Boolean);
    let list = NAMESPACES;
    if (types?.length) list = list.filter((n) => n.resource_types.some((r) => types.includes(r.name)));
    const vis = sp.get('visibility');
    if (vis && vis !== 'public') list = [];
    sendJson(ctx, 200, { namespaces: list.map((n) => namespaceView(n, false)), first: '/v2/metadefs/namespaces', schema: '/v2/schemas/metadefs/namespaces' });
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, namespaceView(find(ctx.params.ns!), true));
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/properties', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, { properties: find(ctx.params.ns!).properties });
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/properties/:name', async (ctx) => {
    await auth(ctx);
    const ns = find(ctx.params.ns!);
    const p = ns.properties[ctx.params.name!];
    if (!p) throw notFound(`Could not find property ${ctx.params.name}`);
    sendJson(ctx, 200, { name: ctx.params.name, ...p });
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/objects', async (ctx) => {
    await auth(ctx);
    find(ctx.params.ns!);
    sendJson(ctx, 200, { objects: [], schema: 'v2/schemas/metadefs/objects' });
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/tags', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, { tags: (find(ctx.params.ns!).tags ?? []).map((name) => ({ name, created_at: CREATED, updated_at: CREATED })) });
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/resource_types', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, { resource_type_associations: associations(find(ctx.params.ns!)) });
  });
  router.add('GET', '/v2/metadefs/resource_types', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, { resource_types: RESOURCE_TYPES.map((name) => ({ name, created_at: CREATED, updated_at: CREATED })) });
  });
}
