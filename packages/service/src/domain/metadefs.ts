/**
 * The metadata definitions domain, as Glance has it: namespaces with their properties,
 * objects, tags and resource type associations; visibility (a private namespace exists only
 * for its owner and admins), protection (a protected namespace, and what is in it, cannot be
 * deleted), and Glance's metadef policy rules (get_metadef_namespace, add_metadef_tag, ...;
 * writes are metadef_admin by default). HTTP-free: routes hand in parsed bodies; the
 * repository does the SQL. The standard set (metadefs-catalog.ts) is loaded at the first start.
 */
import { badRequest, conflict, forbidden, notFound } from '../http.js';
import { now, type AuthContext } from '../identity.js';
import { PolicyNotAuthorized, type Policy } from '../policy/index.js';
import type { MetadefRepo, NamespaceRow } from '../repo/metadefs.js';
import { credentials } from './images.js';
import { NAMESPACES, RESOURCE_TYPES } from './metadefs-catalog.js';

export type Json = Record<string, unknown>;
export interface Stamped { created_at: string; updated_at: string }
export type MetadefObject = Json & Stamped & { name: string };
export type MetadefTag = { name: string } & Stamped;
export type Association = { name: string; prefix?: string; properties_target?: string } & Stamped;
/** A namespace's contents, stored as one JSON document. */
export interface NamespaceDoc {
  properties: Record<string, Json>;
  objects: MetadefObject[];
  tags: MetadefTag[];
  resource_type_associations: Association[];
}
export type { NamespaceRow };

const NAME_MAX = 80;
const stamp = (ts: string): Stamped => ({ created_at: ts, updated_at: ts });
export const docOf = (r: NamespaceRow): NamespaceDoc => JSON.parse(r.document) as NamespaceDoc;

// --- the records (bodies valid against the schemas served at /v2/schemas/metadefs/*: the
// routes checked types, enums, lengths and required members; what is left here are the rules
// beyond the schema)

/** A string member of a valid body (null: not given). */
const text = (body: Json, key: string): string | undefined => (body[key] ?? undefined) as string | undefined;

/** A name the record is found by: not blank. */
function nameOf(body: Json, key: string): string {
  const v = text(body, key) ?? '';
  if (!v.trim()) throw badRequest(`'${key}' must not be empty`);
  return v;
}

/** A property definition as a client sent it (its name is the map key or the URL's). */
export function propertyDef(body: Json, name: string): Json {
  if (!name || name.length > NAME_MAX) throw badRequest(`Property name '${name}' must be 1 to ${NAME_MAX} characters`);
  const { name: _n, ...def } = body;
  return def;
}

function propertyMap(v: unknown): Record<string, Json> {
  return Object.fromEntries(Object.entries((v ?? {}) as Record<string, Json>).map(([k, d]) => [k, propertyDef(d, k)]));
}

function objectDef(body: Json, ts: string, created = ts): MetadefObject {
  return { name: nameOf(body, 'name'), description: text(body, 'description') ?? '', required: (body.required ?? []) as string[], properties: propertyMap(body.properties), created_at: created, updated_at: ts };
}

/** A tag name (from a body, or from the URL, which no schema checks). */
export function tagName(v: unknown): string {
  if (typeof v !== 'string' || !v.trim() || v.length > NAME_MAX) throw badRequest(`A tag name must be 1 to ${NAME_MAX} characters`);
  return v;
}

function association(body: Json, ts: string): Association {
  const prefix = text(body, 'prefix');
  const target = text(body, 'properties_target');
  return { name: nameOf(body, 'name'), ...(prefix !== undefined ? { prefix } : {}), ...(target !== undefined ? { properties_target: target } : {}), ...stamp(ts) };
}

export interface NamespaceQuery { resourceTypes?: string[]; visibility?: string; limit: number; sortKey: string; sortDir: string; marker?: string }
type Part = 'properties' | 'objects' | 'tags';
/** The rule that guards emptying a part of a namespace (Glance's namespaces controller asks these). */
const EMPTY_RULE: Record<Part, string> = { properties: 'remove_metadef_property', objects: 'delete_metadef_object', tags: 'delete_metadef_tags' };

export class MetadefService {
  constructor(private readonly repo: MetadefRepo, private readonly policy: Policy) {}

  /** Load the standard definitions once per database (every node may try; one wins). */
  async seed(): Promise<void> {
    if (await this.repo.isSeeded()) return;
    const ts = now();
    for (const name of RESOURCE_TYPES) await this.repo.ensureResourceType(name, true, ts);
    for (const ns of NAMESPACES) {
      const doc: NamespaceDoc = {
        properties: ns.properties as unknown as Record<string, Json>, objects: [],
        tags: (ns.tags ?? []).map((name) => ({ name, ...stamp(ts) })),
        resource_type_associations: ns.resource_types.map((r) => ({ ...r, ...stamp(ts) })),
      };
      await this.repo.ensureNamespace({
        namespace: ns.namespace, owner: 'admin', visibility: 'public', protected: 1, display_name: ns.display_name,
        description: ns.description, document: JSON.stringify(doc), created_at: ts, updated_at: ts, revision: 0,
      });
    }
    await this.repo.markSeeded(ts);
  }

  /**
   * Glance's MetadefAPIPolicy: the rule on the namespace (its owner as project_id, its
   * visibility) or on the caller's project; a refusal on a namespace the caller may not even
   * get is a 404, as if it did not exist.
   */
  private authorize(a: AuthContext, rule: string, ns: NamespaceRow | null): void {
    const creds = credentials(a);
    const target = ns ? { project_id: ns.owner, visibility: ns.visibility } : { project_id: a.projectId };
    if (this.policy.enforce(rule, target, creds)) return;
    if (ns && (rule === 'get_metadef_namespace' || !this.policy.enforce('get_metadef_namespace', target, creds))) throw this.missing(ns.namespace);
    throw new PolicyNotAuthorized(rule);
  }

  private missing(name: string) { return notFound(`Metadata definition namespace=${name} was not found.`); }

  /** Glance's database layer: public namespaces, the caller's project's, and all for admins. */
  private visible(a: AuthContext, r: NamespaceRow): boolean {
    return r.visibility === 'public' || a.isAdmin || (!!a.projectId && r.owner === a.projectId);
  }

  /** A namespace the caller may see, after `rule` allowed reading it. */
  async namespace(a: AuthContext, name: string, rule = 'get_metadef_namespace'): Promise<NamespaceRow> {
    const r = await this.repo.namespace(name);
    if (!r || !this.visible(a, r)) {
      // Scope and role failures show as such even when the name does not exist.
      this.authorize(a, rule, null);
      throw this.missing(name);
    }
    this.authorize(a, rule, r);
    return r;
  }

  async list(a: AuthContext, q: NamespaceQuery): Promise<{ page: NamespaceRow[]; more: boolean }> {
    this.authorize(a, 'get_metadef_namespaces', null);
    let rows = (await this.repo.namespaces()).filter((r) => this.visible(a, r));
    if (q.visibility) rows = rows.filter((r) => r.visibility === q.visibility);
    if (q.resourceTypes?.length) rows = rows.filter((r) => docOf(r).resource_type_associations.some((x) => q.resourceTypes!.includes(x.name)));
    const key = (r: NamespaceRow) => `${(r as unknown as Record<string, string>)[q.sortKey]}\u0000${r.namespace}`;
    rows.sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0) * (q.sortDir === 'asc' ? 1 : -1));
    if (q.marker !== undefined) {
      const at = rows.findIndex((r) => r.namespace === q.marker);
      if (at < 0) throw this.missing(q.marker);
      rows = rows.slice(at + 1);
    }
    return { page: rows.slice(0, q.limit), more: rows.length > q.limit };
  }

  async create(a: AuthContext, b: Json): Promise<NamespaceRow> {
    this.authorize(a, 'add_metadef_namespace', null);
    const name = nameOf(b, 'namespace');
    const visibility = text(b, 'visibility') ?? 'private';
    const ts = now();
    const doc: NamespaceDoc = {
      properties: propertyMap(b.properties),
      objects: ((b.objects ?? []) as Json[]).map((o) => objectDef(o, ts)),
      tags: ((b.tags ?? []) as Json[]).map((t) => ({ name: tagName(t.name), ...stamp(ts) })),
      resource_type_associations: ((b.resource_type_associations ?? []) as Json[]).map((x) => association(x, ts)),
    };
    const row: NamespaceRow = {
      namespace: name, owner: text(b, 'owner') ?? a.projectId ?? null, visibility, protected: b.protected ? 1 : 0,
      display_name: text(b, 'display_name') ?? null, description: text(b, 'description') ?? null,
      document: JSON.stringify(doc), created_at: ts, updated_at: ts, revision: 0,
    };
    if (!(await this.repo.insertNamespace(row))) throw conflict(`Namespace ${name} already exists.`);
    for (const x of doc.resource_type_associations) await this.repo.ensureResourceType(x.name, false, ts);
    return row;
  }

  async update(a: AuthContext, current: string, b: Json): Promise<NamespaceRow> {
    const row = await this.namespace(a, current, 'modify_metadef_namespace');
    const name = nameOf(b, 'namespace');
    const visibility = text(b, 'visibility') ?? row.visibility;
    if (name !== row.namespace && await this.repo.namespace(name)) throw conflict(`Namespace ${name} already exists.`);
    const set = {
      namespace: name, visibility, protected: b.protected === undefined ? row.protected : b.protected ? 1 : 0,
      display_name: b.display_name === undefined ? row.display_name : text(b, 'display_name') ?? null,
      description: b.description === undefined ? row.description : text(b, 'description') ?? null,
      owner: b.owner === undefined ? row.owner : text(b, 'owner') ?? null, updated_at: now(),
    };
    if (!(await this.repo.updateNamespace(row.namespace, row.revision, set))) throw conflict(`Metadata definition namespace=${row.namespace} was changed concurrently; try again.`);
    return { ...row, ...set, revision: row.revision + 1 };
  }

  async delete(a: AuthContext, name: string): Promise<void> {
    const row = await this.namespace(a, name, 'delete_metadef_namespace');
    if (row.protected) throw forbidden(`Namespace ${row.namespace} is protected and cannot be deleted.`);
    await this.repo.deleteNamespace(row.namespace);
  }

  /** Change a namespace's document under its revision (retried on a concurrent change). */
  private async change<T>(a: AuthContext, name: string, rule: string, edit: (doc: NamespaceDoc, row: NamespaceRow, ts: string) => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const row = await this.namespace(a, name, rule);
      const doc = docOf(row);
      const ts = now();
      const out = edit(doc, row, ts);
      if (await this.repo.updateNamespace(name, row.revision, { document: JSON.stringify(doc), updated_at: ts })) return out;
      if (attempt >= 2) throw conflict(`Metadata definition namespace=${name} was changed concurrently; try again.`);
    }
  }

  private unprotected(row: NamespaceRow, what: string): void {
    if (row.protected) throw forbidden(`Namespace ${row.namespace} is protected and its ${what} cannot be deleted.`);
  }

  /** DELETE …/properties, …/objects, …/tags: empty that part. */
  async empty(a: AuthContext, name: string, part: Part): Promise<void> {
    await this.change(a, name, EMPTY_RULE[part], (doc, row) => {
      this.unprotected(row, part);
      if (part === 'properties') doc.properties = {}; else doc[part] = [];
    });
  }

  // --- properties
  private findProperty(doc: NamespaceDoc, ns: string, name: string): Json {
    const p = doc.properties[name];
    if (!p) throw notFound(`Could not find property ${name} in namespace ${ns}.`);
    return p;
  }
  async properties(a: AuthContext, ns: string): Promise<Record<string, Json>> { return docOf(await this.namespace(a, ns, 'get_metadef_properties')).properties; }
  async property(a: AuthContext, ns: string, name: string): Promise<Json> {
    return this.findProperty(docOf(await this.namespace(a, ns, 'get_metadef_property')), ns, name);
  }
  async addProperty(a: AuthContext, ns: string, b: Json): Promise<{ name: string; def: Json }> {
    const name = nameOf(b, 'name');
    const def = propertyDef(b, name);
    await this.change(a, ns, 'add_metadef_property', (doc) => {
      if (doc.properties[name]) throw conflict(`A metadata definition property with name=${name} already exists in namespace=${ns}.`);
      doc.properties[name] = def;
    });
    return { name, def };
  }
  async updateProperty(a: AuthContext, ns: string, current: string, b: Json): Promise<{ name: string; def: Json }> {
    const name = nameOf(b, 'name');
    const def = propertyDef(b, name);
    await this.change(a, ns, 'modify_metadef_property', (doc) => {
      this.findProperty(doc, ns, current);
      if (name !== current && doc.properties[name]) throw conflict(`A metadata definition property with name=${name} already exists in namespace=${ns}.`);
      delete doc.properties[current];
      doc.properties[name] = def;
    });
    return { name, def };
  }
  async removeProperty(a: AuthContext, ns: string, name: string): Promise<void> {
    await this.change(a, ns, 'remove_metadef_property', (doc, row) => {
      this.findProperty(doc, ns, name);
      this.unprotected(row, 'properties');
      delete doc.properties[name];
    });
  }

  // --- objects
  private findObject(doc: NamespaceDoc, ns: string, name: string): number {
    const i = doc.objects.findIndex((o) => o.name === name);
    if (i < 0) throw notFound(`Could not find metadata definition object ${name} in namespace ${ns}.`);
    return i;
  }
  async objects(a: AuthContext, ns: string): Promise<MetadefObject[]> { return docOf(await this.namespace(a, ns, 'get_metadef_objects')).objects; }
  async object(a: AuthContext, ns: string, name: string): Promise<MetadefObject> {
    const doc = docOf(await this.namespace(a, ns, 'get_metadef_object'));
    return doc.objects[this.findObject(doc, ns, name)]!;
  }
  addObject(a: AuthContext, ns: string, b: Json): Promise<MetadefObject> {
    return this.change(a, ns, 'add_metadef_object', (doc, _row, ts) => {
      const o = objectDef(b, ts);
      if (doc.objects.some((x) => x.name === o.name)) throw conflict(`A metadata definition object with name=${o.name} already exists in namespace=${ns}.`);
      doc.objects.push(o);
      return o;
    });
  }
  updateObject(a: AuthContext, ns: string, current: string, b: Json): Promise<MetadefObject> {
    return this.change(a, ns, 'modify_metadef_object', (doc, _row, ts) => {
      const i = this.findObject(doc, ns, current);
      const o = objectDef(b, ts, doc.objects[i]!.created_at);
      if (o.name !== current && doc.objects.some((x) => x.name === o.name)) throw conflict(`A metadata definition object with name=${o.name} already exists in namespace=${ns}.`);
      doc.objects[i] = o;
      return o;
    });
  }
  async deleteObject(a: AuthContext, ns: string, name: string): Promise<void> {
    await this.change(a, ns, 'delete_metadef_object', (doc, row) => {
      const i = this.findObject(doc, ns, name);
      this.unprotected(row, 'objects');
      doc.objects.splice(i, 1);
    });
  }

  // --- tags
  private findTag(doc: NamespaceDoc, ns: string, name: string): number {
    const i = doc.tags.findIndex((t) => t.name === name);
    if (i < 0) throw notFound(`Could not find metadata definition tag ${name} in namespace ${ns}.`);
    return i;
  }
  async tags(a: AuthContext, ns: string): Promise<MetadefTag[]> { return docOf(await this.namespace(a, ns, 'get_metadef_tags')).tags; }
  async tag(a: AuthContext, ns: string, name: string): Promise<MetadefTag> {
    const doc = docOf(await this.namespace(a, ns, 'get_metadef_tag'));
    return doc.tags[this.findTag(doc, ns, name)]!;
  }
  /** POST …/tags: Glance replaces the namespace's tags, unless `append` (X-Openstack-Append) adds to them. */
  addTags(a: AuthContext, ns: string, b: Json, append: boolean): Promise<MetadefTag[]> {
    const names = ((b.tags ?? []) as Json[]).map((t) => tagName(t.name));
    if (new Set(names).size !== names.length) throw conflict('Duplicate tag names in the request.');
    return this.change(a, ns, 'add_metadef_tags', (doc, _row, ts) => {
      if (append && names.some((n) => doc.tags.some((t) => t.name === n))) throw conflict('A tag with one of these names already exists in the namespace.');
      const added = names.map((name) => ({ name, ...stamp(ts) }));
      doc.tags = append ? [...doc.tags, ...added] : added;
      return added;
    });
  }
  addTag(a: AuthContext, ns: string, tag: string): Promise<MetadefTag> {
    const name = tagName(tag);
    return this.change(a, ns, 'add_metadef_tag', (doc, _row, ts) => {
      if (doc.tags.some((t) => t.name === name)) throw conflict(`A metadata tag with name=${name} already exists in namespace=${ns}.`);
      const t = { name, ...stamp(ts) };
      doc.tags.push(t);
      return t;
    });
  }
  updateTag(a: AuthContext, ns: string, current: string, b: Json): Promise<MetadefTag> {
    const name = tagName(b.name);
    return this.change(a, ns, 'modify_metadef_tag', (doc, _row, ts) => {
      const i = this.findTag(doc, ns, current);
      if (name !== current && doc.tags.some((t) => t.name === name)) throw conflict(`A metadata tag with name=${name} already exists in namespace=${ns}.`);
      doc.tags[i] = { ...doc.tags[i]!, name, updated_at: ts };
      return doc.tags[i]!;
    });
  }
  async deleteTag(a: AuthContext, ns: string, name: string): Promise<void> {
    await this.change(a, ns, 'delete_metadef_tag', (doc, row) => {
      const i = this.findTag(doc, ns, name);
      this.unprotected(row, 'tags');
      doc.tags.splice(i, 1);
    });
  }

  // --- resource types and their associations
  async resourceTypes(a: AuthContext) {
    this.authorize(a, 'list_metadef_resource_types', null);
    return this.repo.resourceTypes();
  }
  async associations(a: AuthContext, ns: string): Promise<Association[]> {
    return docOf(await this.namespace(a, ns, 'get_metadef_resource_type')).resource_type_associations;
  }
  async associate(a: AuthContext, ns: string, b: Json): Promise<Association> {
    const ts = now();
    const x = association(b, ts);
    await this.change(a, ns, 'add_metadef_resource_type_association', (doc) => {
      if (doc.resource_type_associations.some((y) => y.name === x.name)) throw conflict(`The metadata definition resource-type association of resource-type=${x.name} to namespace=${ns} already exists.`);
      doc.resource_type_associations.push(x);
    });
    await this.repo.ensureResourceType(x.name, false, ts);
    return x;
  }
  async dissociate(a: AuthContext, ns: string, resourceType: string): Promise<void> {
    await this.change(a, ns, 'remove_metadef_resource_type_association', (doc, row) => {
      const i = doc.resource_type_associations.findIndex((y) => y.name === resourceType);
      if (i < 0) throw notFound(`The metadata definition resource-type association of resource-type=${resourceType} to namespace=${ns}, was not found.`);
      if (row.protected) throw forbidden(`Namespace ${row.namespace} is protected and its resource type associations cannot be deleted.`);
      doc.resource_type_associations.splice(i, 1);
    });
  }
}
