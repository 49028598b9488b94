/**
 * The metadata definitions API (/v2/metadefs), as Glance has it: namespaces with their
 * properties, objects, tags and resource type associations; visibility (private namespaces
 * are seen by their owner and admins only) and protection (a protected namespace, and what is
 * in it, cannot be deleted); writes for admins (Glance's default policy). The standard set in
 * metadefs-catalog.ts is loaded once, at the first start.
 */
import type { Db } from './db/connect.js';
import { badRequest, conflict, forbidden, isObject, notFound, readJson, sendEmpty, sendJson, type Ctx, type Router } from './http.js';
import { insertIgnore, now, type AuthContext } from './identity.js';
import { NAMESPACES, RESOURCE_TYPES } from './metadefs-catalog.js';
import { metadefSchemas } from './schemas.js';

type Json = Record<string, unknown>;
interface Stamped { created_at: string; updated_at: string }
interface Doc {
  properties: Record<string, Json>;
  objects: (Json & Stamped & { name: string })[];
  tags: ({ name: string } & Stamped)[];
  resource_type_associations: ({ name: string; prefix?: string; properties_target?: string } & Stamped)[];
}
interface Row {
  namespace: string; owner: string | null; visibility: string; protected: number; display_name: string | null; description: string | null;
  document: string; created_at: string; updated_at: string; revision: number;
}

const NAME_MAX = 80;
const PROPERTY_TYPES = ['array', 'boolean', 'integer', 'number', 'object', 'string'];
const apiTime = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');
const stamp = (ts: string): Stamped => ({ created_at: ts, updated_at: ts });

function str(body: Json, key: string, max: number, required = false): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) { if (required) throw badRequest(`'${key}' is a required property`); return undefined; }
  if (typeof v !== 'string') throw badRequest(`Invalid type for '${key}': expected a string`);
  if (v.length > max) throw badRequest(`'${key}' is too long (at most ${max} characters)`);
  if (required && !v.trim()) throw badRequest(`'${key}' must not be empty`);
  return v;
}

/** A property definition as a client sent it: title and type required, as Glance's schema says. */
function propertyDef(body: Json, name: string): Json {
  if (!name || name.length > NAME_MAX) throw badRequest(`Property name '${name}' must be 1 to ${NAME_MAX} characters`);
  const { name: _n, ...def } = body;
  if (typeof def.title !== 'string') throw badRequest(`Property '${name}': 'title' is a required property`);
  if (typeof def.type !== 'string' || !PROPERTY_TYPES.includes(def.type)) throw badRequest(`Property '${name}': 'type' must be one of ${PROPERTY_TYPES.join(', ')}`);
  if (def.enum !== undefined && !Array.isArray(def.enum)) throw badRequest(`Property '${name}': 'enum' must be an array`);
  for (const k of ['minimum', 'maximum']) if (def[k] !== undefined && typeof def[k] !== 'number') throw badRequest(`Property '${name}': '${k}' must be a number`);
  return def;
}

function propertyMap(v: unknown): Record<string, Json> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw badRequest("'properties' must be an object");
  return Object.fromEntries(Object.entries(v).map(([k, d]) => {
    if (!isObject(d)) throw badRequest(`Property '${k}' must be an object`);
    return [k, propertyDef(d, k)];
  }));
}

function objectDef(body: Json, ts: string, created = ts): Doc['objects'][number] {
  const name = str(body, 'name', NAME_MAX, true)!;
  const required = body.required ?? [];
  if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) throw badRequest("'required' must be a list of property names");
  return { name, description: str(body, 'description', 2000) ?? '', required, properties: propertyMap(body.properties), created_at: created, updated_at: ts };
}

function tagName(v: unknown): string {
  if (typeof v !== 'string' || !v.trim() || v.length > NAME_MAX) throw badRequest(`A tag name must be 1 to ${NAME_MAX} characters`);
  return v;
}

function association(body: Json, ts: string): Doc['resource_type_associations'][number] {
  const name = str(body, 'name', NAME_MAX, true)!;
  const prefix = str(body, 'prefix', NAME_MAX);
  const target = str(body, 'properties_target', NAME_MAX);
  return { name, ...(prefix !== undefined ? { prefix } : {}), ...(target !== undefined ? { properties_target: target } : {}), ...stamp(ts) };
}

/** Load the standard definitions once per database (every node may try; one wins). */
async function seed(db: Db): Promise<void> {
  const k = db.kysely;
  if (await k.selectFrom('settings').select('name').where('name', '=', 'metadefs_seeded').executeTakeFirst()) return;
  const ts = now();
  for (const name of RESOURCE_TYPES) await insertIgnore(db, 'metadef_resource_types', { name, protected: 1, created_at: ts, updated_at: ts });
  for (const ns of NAMESPACES) {
    const doc: Doc = {
      properties: ns.properties as unknown as Record<string, Json>, objects: [],
      tags: (ns.tags ?? []).map((name) => ({ name, ...stamp(ts) })),
      resource_type_associations: ns.resource_types.map((r) => ({ ...r, ...stamp(ts) })),
    };
    await insertIgnore(db, 'metadef_namespaces', {
      namespace: ns.namespace, owner: 'admin', visibility: 'public', protected: 1, display_name: ns.display_name,
      description: ns.description, document: JSON.stringify(doc), created_at: ts, updated_at: ts, revision: 0,
    });
  }
  await insertIgnore(db, 'settings', { name: 'metadefs_seeded', value: ts });
}

export async function metadefsRoutes(router: Router, db: Db, auth: (ctx: Ctx) => Promise<AuthContext>): Promise<void> {
  await seed(db);
  const k = db.kysely;
  const schemas = metadefSchemas();

  const canSee = (a: AuthContext, r: Row) => r.visibility === 'public' || a.isAdmin || (!!a.projectId && r.owner === a.projectId);
  const mayWrite = (a: AuthContext, action: string) => {
    if (!a.isAdmin) throw forbidden(`You are not authorized to complete ${action} action.`);
  };
  const load = async (a: AuthContext, name: string): Promise<Row> => {
    const r = await k.selectFrom('metadef_namespaces').selectAll().where('namespace', '=', name).executeTakeFirst() as Row | undefined;
    if (!r || !canSee(a, r)) throw notFound(`Metadata definition namespace=${name} was not found.`);
    return r;
  };
  const docOf = (r: Row): Doc => JSON.parse(r.document) as Doc;
  const nsPath = (name: string) => `/v2/metadefs/namespaces/${name}`;

  function view(r: Row, full: boolean): Json {
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
  const assocView = (x: Doc['resource_type_associations'][number]) => ({ ...x, created_at: apiTime(x.created_at), updated_at: apiTime(x.updated_at) });
  const objectView = (ns: string, o: Doc['objects'][number], links = true): Json => ({
    ...o, created_at: apiTime(o.created_at), updated_at: apiTime(o.updated_at),
    ...(links ? { schema: '/v2/schemas/metadefs/object', self: `${nsPath(ns)}/objects/${o.name}` } : {}),
  });
  const tagView = (t: Doc['tags'][number]) => ({ name: t.name, created_at: apiTime(t.created_at), updated_at: apiTime(t.updated_at) });

  /** Change a namespace's document under its revision (one retry on a concurrent change). */
  async function change<T>(a: AuthContext, name: string, action: string, edit: (doc: Doc, row: Row, ts: string) => T): Promise<T> {
    mayWrite(a, action);
    for (let attempt = 0; ; attempt++) {
      const row = await load(a, name);
      const doc = docOf(row);
      const ts = now();
      const out = edit(doc, row, ts);
      const r = await k.updateTable('metadef_namespaces').set({ document: JSON.stringify(doc), updated_at: ts, revision: row.revision + 1 })
        .where('namespace', '=', name).where('revision', '=', row.revision).executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) return out;
      if (attempt >= 2) throw conflict(`Metadata definition namespace=${name} was changed concurrently; try again.`);
    }
  }
  const unprotected = (row: Row, what: string) => {
    if (row.protected) throw forbidden(`Namespace ${row.namespace} is protected and its ${what} cannot be deleted.`);
  };
  const body = async (ctx: Ctx): Promise<Json> => {
    const b = await readJson(ctx);
    if (!isObject(b)) throw badRequest('The request body must be a JSON object.');
    return b;
  };
  const ensureResourceType = (name: string, ts: string) => insertIgnore(db, 'metadef_resource_types', { name, protected: 0, created_at: ts, updated_at: ts });

  // --- schemas
  router.add('GET', '/v2/schemas/metadefs/:name', async (ctx) => {
    await auth(ctx);
    const schema = schemas[ctx.params.name!];
    if (!schema) throw notFound('The resource could not be found.');
    sendJson(ctx, 200, schema);
  });

  // --- namespaces
  router.add('GET', '/v2/metadefs/namespaces', async (ctx) => {
    const a = await auth(ctx);
    const sp = ctx.url.searchParams;
    const types = sp.get('resource_types')?.split(',').map((s) => s.trim()).filter(Boolean);
    const vis = sp.get('visibility');
    if (vis !== null && vis !== 'public' && vis !== 'private') throw badRequest(`Invalid visibility value: ${vis}`);
    const limit = Math.min(Number(sp.get('limit') ?? 1000), 1000);
    if (!Number.isInteger(limit) || limit < 1) throw badRequest(`Invalid limit: ${sp.get('limit')}`);
    const sortKey = sp.get('sort_key') ?? 'created_at';
    if (!['namespace', 'created_at', 'updated_at'].includes(sortKey)) throw badRequest(`Invalid sort key: ${sortKey}`);
    const dir = sp.get('sort_dir') ?? 'desc';
    if (dir !== 'asc' && dir !== 'desc') throw badRequest(`Invalid sort direction: ${dir}`);
    let rows = (await k.selectFrom('metadef_namespaces').selectAll().execute() as Row[]).filter((r) => canSee(a, r));
    if (vis) rows = rows.filter((r) => r.visibility === vis);
    if (types?.length) rows = rows.filter((r) => docOf(r).resource_type_associations.some((x) => types.includes(x.name)));
    const key = (r: Row) => `${(r as unknown as Record<string, string>)[sortKey]}\u0000${r.namespace}`;
    rows.sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0) * (dir === 'asc' ? 1 : -1));
    const marker = sp.get('marker');
    if (marker !== null) {
      const at = rows.findIndex((r) => r.namespace === marker);
      if (at < 0) throw notFound(`Metadata definition namespace=${marker} was not found.`);
      rows = rows.slice(at + 1);
    }
    const page = rows.slice(0, limit);
    const out: Json = { namespaces: page.map((r) => view(r, false)), first: '/v2/metadefs/namespaces', schema: '/v2/schemas/metadefs/namespaces' };
    if (rows.length > limit) {
      const q = new URLSearchParams(sp);
      q.set('marker', page[page.length - 1]!.namespace);
      out.next = `/v2/metadefs/namespaces?${q}`;
    }
    sendJson(ctx, 200, out);
  });
  router.add('POST', '/v2/metadefs/namespaces', async (ctx) => {
    const a = await auth(ctx);
    mayWrite(a, 'add_metadef_namespace');
    const b = await body(ctx);
    const name = str(b, 'namespace', NAME_MAX, true)!;
    const visibility = str(b, 'visibility', 16) ?? 'private';
    if (visibility !== 'public' && visibility !== 'private') throw badRequest(`Invalid visibility value: ${visibility}`);
    if (b.protected !== undefined && typeof b.protected !== 'boolean') throw badRequest("'protected' must be a boolean");
    const ts = now();
    const doc: Doc = {
      properties: propertyMap(b.properties),
      objects: (Array.isArray(b.objects) ? b.objects : []).map((o) => { if (!isObject(o)) throw badRequest('An object must be a JSON object'); return objectDef(o, ts); }),
      tags: (Array.isArray(b.tags) ? b.tags : []).map((t) => ({ name: tagName(isObject(t) ? t.name : t), ...stamp(ts) })),
      resource_type_associations: (Array.isArray(b.resource_type_associations) ? b.resource_type_associations : []).map((x) => { if (!isObject(x)) throw badRequest('A resource type association must be an object'); return association(x, ts); }),
    };
    const row: Row = {
      namespace: name, owner: str(b, 'owner', 255) ?? a.projectId ?? null, visibility, protected: b.protected ? 1 : 0,
      display_name: str(b, 'display_name', NAME_MAX) ?? null, description: str(b, 'description', 500) ?? null,
      document: JSON.stringify(doc), created_at: ts, updated_at: ts, revision: 0,
    };
    if (await k.selectFrom('metadef_namespaces').select('namespace').where('namespace', '=', name).executeTakeFirst()) throw conflict(`Namespace ${name} already exists.`);
    try { await k.insertInto('metadef_namespaces').values(row).execute(); } catch { throw conflict(`Namespace ${name} already exists.`); }
    for (const x of doc.resource_type_associations) await ensureResourceType(x.name, ts);
    sendJson(ctx, 201, view(row, true));
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns', async (ctx) => {
    const a = await auth(ctx);
    sendJson(ctx, 200, view(await load(a, ctx.params.ns!), true));
  });
  router.add('PUT', '/v2/metadefs/namespaces/:ns', async (ctx) => {
    const a = await auth(ctx);
    mayWrite(a, 'modify_metadef_namespace');
    const row = await load(a, ctx.params.ns!);
    const b = await body(ctx);
    const name = str(b, 'namespace', NAME_MAX, true)!;
    const visibility = str(b, 'visibility', 16) ?? row.visibility;
    if (visibility !== 'public' && visibility !== 'private') throw badRequest(`Invalid visibility value: ${visibility}`);
    if (b.protected !== undefined && typeof b.protected !== 'boolean') throw badRequest("'protected' must be a boolean");
    if (name !== row.namespace && await k.selectFrom('metadef_namespaces').select('namespace').where('namespace', '=', name).executeTakeFirst()) throw conflict(`Namespace ${name} already exists.`);
    const ts = now();
    const set = {
      namespace: name, visibility, protected: b.protected === undefined ? row.protected : b.protected ? 1 : 0,
      display_name: b.display_name === undefined ? row.display_name : str(b, 'display_name', NAME_MAX) ?? null,
      description: b.description === undefined ? row.description : str(b, 'description', 500) ?? null,
      owner: b.owner === undefined ? row.owner : str(b, 'owner', 255) ?? null, updated_at: ts, revision: row.revision + 1,
    };
    const r = await k.updateTable('metadef_namespaces').set(set).where('namespace', '=', row.namespace).where('revision', '=', row.revision).executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) throw conflict(`Metadata definition namespace=${row.namespace} was changed concurrently; try again.`);
    sendJson(ctx, 200, view({ ...row, ...set }, true));
  });
  router.add('DELETE', '/v2/metadefs/namespaces/:ns', async (ctx) => {
    const a = await auth(ctx);
    mayWrite(a, 'delete_metadef_namespace');
    const row = await load(a, ctx.params.ns!);
    if (row.protected) throw forbidden(`Namespace ${row.namespace} is protected and cannot be deleted.`);
    await k.deleteFrom('metadef_namespaces').where('namespace', '=', row.namespace).execute();
    sendEmpty(ctx, 204);
  });
  for (const part of ['properties', 'objects', 'tags'] as const) {
    router.add('DELETE', `/v2/metadefs/namespaces/:ns/${part}`, async (ctx) => {
      const a = await auth(ctx);
      await change(a, ctx.params.ns!, `delete_metadef_${part}`, (doc, row) => {
        unprotected(row, part);
        if (part === 'properties') doc.properties = {}; else doc[part] = [];
      });
      sendEmpty(ctx, 204);
    });
  }

  // --- properties
  router.add('GET', '/v2/metadefs/namespaces/:ns/properties', async (ctx) => {
    const a = await auth(ctx);
    sendJson(ctx, 200, { properties: docOf(await load(a, ctx.params.ns!)).properties });
  });
  router.add('POST', '/v2/metadefs/namespaces/:ns/properties', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    const name = str(b, 'name', NAME_MAX, true)!;
    const def = propertyDef(b, name);
    await change(a, ctx.params.ns!, 'add_metadef_property', (doc) => {
      if (doc.properties[name]) throw conflict(`A metadata definition property with name=${name} already exists in namespace=${ctx.params.ns}.`);
      doc.properties[name] = def;
    });
    sendJson(ctx, 201, { name, ...def });
  });
  const findProperty = (doc: Doc, ns: string, name: string): Json => {
    const p = doc.properties[name];
    if (!p) throw notFound(`Could not find property ${name} in namespace ${ns}.`);
    return p;
  };
  router.add('GET', '/v2/metadefs/namespaces/:ns/properties/:name', async (ctx) => {
    const a = await auth(ctx);
    sendJson(ctx, 200, { name: ctx.params.name, ...findProperty(docOf(await load(a, ctx.params.ns!)), ctx.params.ns!, ctx.params.name!) });
  });
  router.add('PUT', '/v2/metadefs/namespaces/:ns/properties/:name', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    const name = str(b, 'name', NAME_MAX, true)!;
    const def = propertyDef(b, name);
    await change(a, ctx.params.ns!, 'modify_metadef_property', (doc) => {
      findProperty(doc, ctx.params.ns!, ctx.params.name!);
      if (name !== ctx.params.name && doc.properties[name]) throw conflict(`A metadata definition property with name=${name} already exists in namespace=${ctx.params.ns}.`);
      delete doc.properties[ctx.params.name!];
      doc.properties[name] = def;
    });
    sendJson(ctx, 200, { name, ...def });
  });
  router.add('DELETE', '/v2/metadefs/namespaces/:ns/properties/:name', async (ctx) => {
    const a = await auth(ctx);
    await change(a, ctx.params.ns!, 'remove_metadef_property', (doc, row) => {
      findProperty(doc, ctx.params.ns!, ctx.params.name!);
      unprotected(row, 'properties');
      delete doc.properties[ctx.params.name!];
    });
    sendEmpty(ctx, 204);
  });

  // --- objects
  const findObject = (doc: Doc, ns: string, name: string) => {
    const i = doc.objects.findIndex((o) => o.name === name);
    if (i < 0) throw notFound(`Could not find metadata definition object ${name} in namespace ${ns}.`);
    return i;
  };
  router.add('GET', '/v2/metadefs/namespaces/:ns/objects', async (ctx) => {
    const a = await auth(ctx);
    const row = await load(a, ctx.params.ns!);
    sendJson(ctx, 200, { objects: docOf(row).objects.map((o) => objectView(row.namespace, o)), schema: 'v2/schemas/metadefs/objects' });
  });
  router.add('POST', '/v2/metadefs/namespaces/:ns/objects', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    const obj = await change(a, ctx.params.ns!, 'add_metadef_object', (doc, _row, ts) => {
      const o = objectDef(b, ts);
      if (doc.objects.some((x) => x.name === o.name)) throw conflict(`A metadata definition object with name=${o.name} already exists in namespace=${ctx.params.ns}.`);
      doc.objects.push(o);
      return o;
    });
    sendJson(ctx, 201, objectView(ctx.params.ns!, obj));
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/objects/:name', async (ctx) => {
    const a = await auth(ctx);
    const doc = docOf(await load(a, ctx.params.ns!));
    sendJson(ctx, 200, objectView(ctx.params.ns!, doc.objects[findObject(doc, ctx.params.ns!, ctx.params.name!)]!));
  });
  router.add('PUT', '/v2/metadefs/namespaces/:ns/objects/:name', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    const obj = await change(a, ctx.params.ns!, 'modify_metadef_object', (doc, _row, ts) => {
      const i = findObject(doc, ctx.params.ns!, ctx.params.name!);
      const o = objectDef(b, ts, doc.objects[i]!.created_at);
      if (o.name !== ctx.params.name && doc.objects.some((x) => x.name === o.name)) throw conflict(`A metadata definition object with name=${o.name} already exists in namespace=${ctx.params.ns}.`);
      doc.objects[i] = o;
      return o;
    });
    sendJson(ctx, 200, objectView(ctx.params.ns!, obj));
  });
  router.add('DELETE', '/v2/metadefs/namespaces/:ns/objects/:name', async (ctx) => {
    const a = await auth(ctx);
    await change(a, ctx.params.ns!, 'delete_metadef_object', (doc, row) => {
      const i = findObject(doc, ctx.params.ns!, ctx.params.name!);
      unprotected(row, 'objects');
      doc.objects.splice(i, 1);
    });
    sendEmpty(ctx, 204);
  });

  // --- tags
  const findTag = (doc: Doc, ns: string, name: string) => {
    const i = doc.tags.findIndex((t) => t.name === name);
    if (i < 0) throw notFound(`Could not find metadata definition tag ${name} in namespace ${ns}.`);
    return i;
  };
  router.add('GET', '/v2/metadefs/namespaces/:ns/tags', async (ctx) => {
    const a = await auth(ctx);
    sendJson(ctx, 200, { tags: docOf(await load(a, ctx.params.ns!)).tags.map(tagView) });
  });
  router.add('POST', '/v2/metadefs/namespaces/:ns/tags', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    if (!Array.isArray(b.tags)) throw badRequest("'tags' must be a list of {\"name\": ...}");
    const names = b.tags.map((t) => tagName(isObject(t) ? t.name : undefined));
    if (new Set(names).size !== names.length) throw conflict('Duplicate tag names in the request.');
    // Glance replaces the namespace's tags, unless X-Openstack-Append asks to add to them.
    const append = /^true$/i.test(String(ctx.req.headers['x-openstack-append'] ?? ''));
    const tags = await change(a, ctx.params.ns!, 'add_metadef_tags', (doc, _row, ts) => {
      if (append && names.some((n) => doc.tags.some((t) => t.name === n))) throw conflict('A tag with one of these names already exists in the namespace.');
      const added = names.map((name) => ({ name, ...stamp(ts) }));
      doc.tags = append ? [...doc.tags, ...added] : added;
      return added;
    });
    sendJson(ctx, 201, { tags: tags.map(tagView) });
  });
  router.add('POST', '/v2/metadefs/namespaces/:ns/tags/:tag', async (ctx) => {
    const a = await auth(ctx);
    const name = tagName(ctx.params.tag);
    const tag = await change(a, ctx.params.ns!, 'add_metadef_tag', (doc, _row, ts) => {
      if (doc.tags.some((t) => t.name === name)) throw conflict(`A metadata tag with name=${name} already exists in namespace=${ctx.params.ns}.`);
      const t = { name, ...stamp(ts) };
      doc.tags.push(t);
      return t;
    });
    sendJson(ctx, 201, tagView(tag));
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/tags/:tag', async (ctx) => {
    const a = await auth(ctx);
    const doc = docOf(await load(a, ctx.params.ns!));
    sendJson(ctx, 200, tagView(doc.tags[findTag(doc, ctx.params.ns!, ctx.params.tag!)]!));
  });
  router.add('PUT', '/v2/metadefs/namespaces/:ns/tags/:tag', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    const name = tagName(b.name);
    const tag = await change(a, ctx.params.ns!, 'modify_metadef_tag', (doc, _row, ts) => {
      const i = findTag(doc, ctx.params.ns!, ctx.params.tag!);
      if (name !== ctx.params.tag && doc.tags.some((t) => t.name === name)) throw conflict(`A metadata tag with name=${name} already exists in namespace=${ctx.params.ns}.`);
      doc.tags[i] = { ...doc.tags[i]!, name, updated_at: ts };
      return doc.tags[i]!;
    });
    sendJson(ctx, 200, tagView(tag));
  });
  router.add('DELETE', '/v2/metadefs/namespaces/:ns/tags/:tag', async (ctx) => {
    const a = await auth(ctx);
    await change(a, ctx.params.ns!, 'delete_metadef_tag', (doc, row) => {
      const i = findTag(doc, ctx.params.ns!, ctx.params.tag!);
      unprotected(row, 'tags');
      doc.tags.splice(i, 1);
    });
    sendEmpty(ctx, 204);
  });

  // --- resource types and their associations
  router.add('GET', '/v2/metadefs/resource_types', async (ctx) => {
    await auth(ctx);
    const rows = await k.selectFrom('metadef_resource_types').selectAll().orderBy('name').execute();
    sendJson(ctx, 200, { resource_types: rows.map((r) => ({ name: r.name, created_at: apiTime(r.created_at), updated_at: apiTime(r.updated_at) })) });
  });
  router.add('GET', '/v2/metadefs/namespaces/:ns/resource_types', async (ctx) => {
    const a = await auth(ctx);
    sendJson(ctx, 200, { resource_type_associations: docOf(await load(a, ctx.params.ns!)).resource_type_associations.map(assocView) });
  });
  router.add('POST', '/v2/metadefs/namespaces/:ns/resource_types', async (ctx) => {
    const a = await auth(ctx);
    const b = await body(ctx);
    const ts = now();
    const x = association(b, ts);
    await change(a, ctx.params.ns!, 'add_metadef_resource_type_association', (doc) => {
      if (doc.resource_type_associations.some((y) => y.name === x.name)) throw conflict(`The metadata definition resource-type association of resource-type=${x.name} to namespace=${ctx.params.ns} already exists.`);
      doc.resource_type_associations.push(x);
    });
    await ensureResourceType(x.name, ts);
    sendJson(ctx, 201, assocView(x));
  });
  router.add('DELETE', '/v2/metadefs/namespaces/:ns/resource_types/:rt', async (ctx) => {
    const a = await auth(ctx);
    await change(a, ctx.params.ns!, 'remove_metadef_resource_type_association', (doc, row) => {
      const i = doc.resource_type_associations.findIndex((y) => y.name === ctx.params.rt);
      if (i < 0) throw notFound(`The metadata definition resource-type association of resource-type=${ctx.params.rt} to namespace=${ctx.params.ns}, was not found.`);
      if (row.protected) throw forbidden(`Namespace ${row.namespace} is protected and its resource type associations cannot be deleted.`);
      doc.resource_type_associations.splice(i, 1);
    });
    sendEmpty(ctx, 204);
  });
}
