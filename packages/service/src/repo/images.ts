/**
 * The image repository: all SQL of the Images API — images with their properties and tags,
 * members, and the `uploads` rows crash recovery works from — in one place, written once
 * for SQLite, PostgreSQL and MariaDB (Kysely). Listing has Glance's filters, sorting and
 * keyset pagination. No HTTP and no policy here: callers pass who is asking only where the
 * visibility rules are SQL.
 */
import { sql, type CompiledQuery, type ExpressionBuilder, type Expression, type SqlBool, type Transaction } from 'kysely';
import type { Db } from '../db/connect.js';
import { randomUUID } from 'node:crypto';
import type { Database, ImageMembersTable, ImagesTable } from '../db/schema.js';
import type { ImageLocation, ImageRecord } from '../images-model.js';
import { badRequest } from '../http.js';
import { insertIgnore, now } from '../identity.js';

type EB = ExpressionBuilder<Database, 'images'>;

/** Who is asking, as far as which images exist for them. */
export interface Viewer { projectId: string | null; isAdmin: boolean }

/** An upload in progress, recorded with the status change that starts it. */
export interface UploadClaim { node: string; tempKey: string }

/** A location to keep or add (`id` absent: a new one). */
export interface LocationInput { id?: string; url: string; store_id: string | null; metadata: Record<string, unknown> }

/** What a location change may also set on the image (a queued image becoming active with data). */
export type LocationImageChanges = Partial<Pick<ImagesTable, 'status' | 'size' | 'checksum' | 'os_hash_algo' | 'os_hash_value'>>;

/** The data an upload leaves: the image's checksums and sizes, and where it was stored. */
export type UploadedData = Pick<ImagesTable, 'size' | 'virtual_size' | 'checksum' | 'os_hash_algo' | 'os_hash_value'> & {
  locations: { url: string; store_id: string }[];
  /** Properties the image takes as it becomes active (an import's: the remote image's, the injected ones). */
  properties?: Record<string, string>;
};

/**
 * An `uploads` row's temp_key names the temporary data of every store one transfer writes to
 * (an import into several stores, copy-image), space-separated: store keys never hold a space.
 */
export const joinTempKeys = (keys: string[]): string => keys.join(' ');
export const splitTempKeys = (column: string): string[] => column.split(' ').filter(Boolean);

/** Columns a client may change (PATCH). */
export type ImageChanges = Pick<ImagesTable, 'name' | 'visibility' | 'protected' | 'os_hidden' | 'owner' | 'container_format' | 'disk_format' | 'min_ram' | 'min_disk'>;

/** The properties of an image that has none (shared, so frozen: a record's properties are never changed in place). */
const NO_PROPERTIES: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>);

export class ImageRepo {
  /** hydrate's queries, compiled once per kind and number of ids (see forImages). */
  private readonly compiledForImages = new Map<string, CompiledQuery<unknown>>();
  constructor(private readonly db: Db) {}
  private get k() { return this.db.kysely; }

  /**
   * One image with its properties, tags and active locations, in one statement: the row joined
   * to its children (a row per child, or one row with no child). A show was four statements;
   * on PostgreSQL and MariaDB this is also three round trips fewer.
   */
  async load(id: string): Promise<ImageRecord | undefined> {
    const joined = await this.forImages('load', [id], () => this.k.selectFrom('images')
      .leftJoin(this.children(id).as('c'), 'c.image_id', 'images.id')
      .selectAll('images')
      .select(['c.kind as c_kind', 'c.a as c_a', 'c.b as c_b', 'c.c as c_c', 'c.d as c_d', 'c.position as c_position', 'c.created_at as c_created_at'])
      .where('images.id', '=', id).where('images.deleted', '=', sql.lit(0)));
    if (joined.length === 0) return undefined;
    const { c_kind, c_a, c_b, c_c, c_d, c_position, c_created_at, ...row } = joined[0]!;
    const children: Children = { properties: [], tags: [], locations: [] };
    if (c_kind !== null) {
      for (const j of joined) {
        const kind = Number(j.c_kind);
        if (kind === 0) children.properties.push({ image_id: id, name: j.c_a!, value: j.c_b! });
        else if (kind === 1) children.tags.push({ image_id: id, value: j.c_a! });
        else children.locations.push({ image_id: id, id: j.c_a!, url: j.c_b!, store_id: j.c_c, metadata: j.c_d!, position: Number(j.c_position), created_at: j.c_created_at! });
      }
    }
    return attachChildren([row], children)[0];
  }

  /** An image's row alone (no properties, tags or locations). */
  row(id: string): Promise<Database['images'] | undefined> {
    return this.forImages('row', [id], () => this.k.selectFrom('images').selectAll().where('id', '=', id).where('deleted', '=', sql.lit(0))).then((r) => r[0]);
  }

  /**
   * Attach properties, tags and active locations to many rows: three queries. (One UNION ALL
   * of the three, as load's, costs SQLite twice the time for a page of 100 ids: 380 against
   * 160 µs.)
   */
  async hydrate(rows: Database['images'][]): Promise<ImageRecord[]> {
    if (rows.length === 0) return [];
    const ids = rows.map((r) => r.id);
    const [properties, tags, locations] = await Promise.all([
      this.forImages('properties', ids, () => this.k.selectFrom('image_properties').select(['image_id', 'name', 'value']).where('image_id', 'in', ids)),
      this.forImages('tags', ids, () => this.k.selectFrom('image_tags').select(['image_id', 'value']).where('image_id', 'in', ids)),
      this.forImages('locations', ids, () => this.k.selectFrom('image_locations').select(['image_id', 'id', 'url', 'store_id', 'metadata', 'position', 'created_at'])
        .where('image_id', 'in', ids).where('status', '=', sql.lit('active'))),
    ]);
    return attachChildren(rows, { properties, tags, locations });
  }

  /**
   * The properties, tags and active locations of one image, the three child tables' rows in
   * one UNION ALL told apart by `kind` (a property: a = name, b = value; a tag: a; a location:
   * a = id, b = url, c = store, d = metadata).
   */
  private children(id: string) {
    return this.k
      .selectFrom('image_properties').where('image_id', '=', id)
      .select([sql<number>`0`.as('kind'), 'image_id', 'name as a', 'value as b', sql<string | null>`null`.as('c'), sql<string | null>`null`.as('d'), sql<number>`0`.as('position'), sql<string>`''`.as('created_at')])
      .unionAll(this.k.selectFrom('image_tags').where('image_id', '=', id)
        .select([sql<number>`1`.as('kind'), 'image_id', 'value as a', sql<string>`''`.as('b'), sql<string | null>`null`.as('c'), sql<string | null>`null`.as('d'), sql<number>`0`.as('position'), sql<string>`''`.as('created_at')]))
      .unionAll(this.k.selectFrom('image_locations').where('image_id', '=', id).where('status', '=', sql.lit('active'))
        .select([sql<number>`2`.as('kind'), 'image_id', 'id as a', 'url as b', 'store_id as c', 'metadata as d', 'position', 'created_at']));
  }

  /**
   * Runs a query whose only parameters are `ids` (each `in` list of it): Kysely builds and
   * compiles it once per kind and list length, and later calls reuse the SQL with other ids.
   * Building the `in` lists of a 100-image page was about a tenth of a list request's CPU.
   */
  private async forImages<R>(kind: string, ids: string[], build: () => { compile(): CompiledQuery<R> }): Promise<R[]> {
    const key = `${kind}:${ids.length}`;
    let compiled = this.compiledForImages.get(key) as CompiledQuery<R> | undefined;
    if (!compiled) {
      compiled = build().compile();
      // Only a query whose parameters are the ids, in order, once per list, can take other ids.
      const params = compiled.parameters;
      if (params.length % ids.length !== 0 || params.some((v, i) => v !== ids[i % ids.length])) return (await this.k.executeQuery(compiled)).rows;
      if (this.compiledForImages.size >= 256) this.compiledForImages.clear();
      this.compiledForImages.set(key, compiled);
    }
    const lists = compiled.parameters.length / ids.length;
    return (await this.k.executeQuery<R>({ ...compiled, parameters: lists === 1 ? ids : Array.from({ length: lists }, () => ids).flat() })).rows;
  }

  exists(id: string): Promise<boolean> {
    return this.k.selectFrom('images').select('id').where('id', '=', id).executeTakeFirst().then((r) => !!r);
  }

  /** A new image with its properties and tags, in one transaction. */
  async insert(row: ImagesTable, props: Record<string, string>, tags: string[]): Promise<void> {
    await this.k.transaction().execute(async (tx) => {
      await tx.insertInto('images').values(row).execute();
      await writeChildren(tx, row.id, props, tags);
    });
  }

  /** Compare-and-set on the revision: false when another request changed the image first. */
  async update(img: ImageRecord, changes: ImageChanges, props: Record<string, string>, tags: string[]): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      const r = await tx.updateTable('images').set({ ...changes, updated_at: now(), revision: img.revision + 1 })
        .where('id', '=', img.id).where('revision', '=', img.revision).where('deleted', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      await tx.deleteFrom('image_properties').where('image_id', '=', img.id).execute();
      await tx.deleteFrom('image_tags').where('image_id', '=', img.id).execute();
      await writeChildren(tx, img.id, props, tags);
      return true;
    });
  }

  /** Mark deleted (unless protected meanwhile) and drop members, tags and properties; false when it was not there to delete. */
  async softDelete(img: ImageRecord): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      const ts = now();
      const r = await tx.updateTable('images').set({ status: 'deleted', deleted: 1, deleted_at: ts, updated_at: ts, revision: img.revision + 1 })
        .where('id', '=', img.id).where('deleted', '=', 0).where('protected', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      await tx.deleteFrom('image_members').where('image_id', '=', img.id).execute();
      await tx.deleteFrom('image_tags').where('image_id', '=', img.id).execute();
      await tx.deleteFrom('image_properties').where('image_id', '=', img.id).execute();
      await tx.deleteFrom('uploads').where('image_id', '=', img.id).execute();
      return true;
    });
  }

  /** The image's data at `ids` was removed from its stores: its location rows say so. */
  async markLocationsDeleted(imageId: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.k.updateTable('image_locations').set({ status: 'deleted', updated_at: now() }).where('image_id', '=', imageId).where('id', 'in', ids).execute();
  }

  /**
   * Make `next` the image's active locations, in that order, in one transaction with a
   * compare-and-set of its revision (and `changes` to the image): rows not in `next` become
   * deleted, new ones are added. False when the image changed meanwhile.
   */
  async setLocations(img: Pick<ImageRecord, 'id' | 'revision'>, next: LocationInput[], changes: LocationImageChanges = {}): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      const ts = now();
      const r = await tx.updateTable('images').set({ ...changes, updated_at: ts, revision: img.revision + 1 })
        .where('id', '=', img.id).where('revision', '=', img.revision).where('deleted', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      const current = await tx.selectFrom('image_locations').select('id').where('image_id', '=', img.id).where('status', '=', 'active').execute();
      const kept = new Set(next.map((l) => l.id).filter(Boolean));
      const gone = current.map((c) => c.id).filter((id) => !kept.has(id));
      if (gone.length) await tx.updateTable('image_locations').set({ status: 'deleted', updated_at: ts }).where('id', 'in', gone).execute();
      for (const [position, l] of next.entries()) {
        if (l.id) {
          await tx.updateTable('image_locations').set({ position, metadata: JSON.stringify(l.metadata), updated_at: ts }).where('id', '=', l.id).execute();
        } else {
          await tx.insertInto('image_locations').values({
            id: randomUUID(), image_id: img.id, url: l.url, store_id: l.store_id, status: 'active',
            metadata: JSON.stringify(l.metadata), position, created_at: ts, updated_at: ts,
          }).execute();
        }
      }
      return true;
    });
  }

  /**
   * Delayed delete: the image is deleted for the API (404, not listed) but keeps its data,
   * properties, tags and members until a scrubber removes the data (or an admin restores
   * it); deleted_at starts the scrub_time delay. False when it was not there to delete.
   */
  async markPendingDelete(img: ImageRecord): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      const ts = now();
      const r = await tx.updateTable('images').set({ status: 'pending_delete', deleted: 1, deleted_at: ts, updated_at: ts, revision: sql`revision + 1` })
        .where('id', '=', img.id).where('status', '=', img.status).where('deleted', '=', 0).where('protected', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      await tx.deleteFrom('uploads').where('image_id', '=', img.id).execute();
      return true;
    });
  }

  /**
   * Move the status from `img`'s (at its revision) to `to`, in one transaction with the
   * `uploads` rows: `claim` records this node's upload (replacing any earlier row of the
   * image), `release` drops the image's rows. False when the image changed meanwhile.
   */
  async setStatus(img: Pick<ImageRecord, 'id' | 'revision'>, to: string, rows: { claim?: UploadClaim; release?: boolean } = {}): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      const r = await tx.updateTable('images').set({ status: to, updated_at: now(), revision: img.revision + 1 })
        .where('id', '=', img.id).where('revision', '=', img.revision).where('deleted', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      if (rows.claim || rows.release) await tx.deleteFrom('uploads').where('image_id', '=', img.id).execute();
      if (rows.claim) await tx.insertInto('uploads').values({ image_id: img.id, node: rows.claim.node, temp_key: rows.claim.tempKey, started_at: now() }).execute();
      return true;
    });
  }

  /** Whatever its revision, move an image in one of `from` to `to` and drop its upload rows (an upload that ends, or recovery). */
  async revertStatus(id: string, from: string[], to: string): Promise<void> {
    await this.k.transaction().execute(async (tx) => {
      await tx.updateTable('images').set({ status: to, updated_at: now() }).where('id', '=', id).where('status', 'in', from).execute();
      await tx.deleteFrom('uploads').where('image_id', '=', id).execute();
    });
  }

  /**
   * The upload is whole and verified: the image becomes active with its data at its first
   * locations (one per store written), its upload rows dropped, in one transaction; false when it was deleted or
   * changed meanwhile (nothing is written then).
   */
  async activate(id: string, from: string[], data: UploadedData): Promise<boolean> {
    const { locations, properties, ...columns } = data;
    return this.k.transaction().execute(async (tx) => {
      const ts = now();
      const r = await tx.updateTable('images').set({ ...columns, status: 'active', updated_at: ts })
        .where('id', '=', id).where('deleted', '=', 0).where('status', 'in', from).executeTakeFirst();
      await tx.deleteFrom('uploads').where('image_id', '=', id).execute();
      if (Number(r.numUpdatedRows) !== 1) return false;
      if (properties) await setProperties(tx, id, properties);
      // (after any location the image already has: an upload gives a queued image its first)
      const last = await tx.selectFrom('image_locations').select((eb) => eb.fn.max('position').as('p')).where('image_id', '=', id).where('status', '=', 'active').executeTakeFirst();
      const first = last?.p === null || last?.p === undefined ? 0 : Number(last.p) + 1;
      for (const [i, location] of locations.entries()) {
        await tx.insertInto('image_locations').values({
          id: randomUUID(), image_id: id, url: location.url, store_id: location.store_id, status: 'active',
          metadata: JSON.stringify({ store: location.store_id }), position: first + i, created_at: ts, updated_at: ts,
        }).execute();
      }
      return true;
    });
  }

  /** Images a project owns (quota): pending_delete ones count until scrubbed, as in Glance. */
  countOwned(owner: string): Promise<number> {
    return this.k.selectFrom('images').select((eb) => eb.fn.countAll().as('n')).where('owner', '=', owner).where(notGone)
      .executeTakeFirstOrThrow().then((r) => Number(r.n));
  }

  /** Bytes of image data a project stores (quota): pending_delete data counts until scrubbed, as in Glance. */
  storageUsed(owner: string): Promise<number> {
    return this.k.selectFrom('images').select((eb) => eb.fn.sum<number | string | null>('size').as('used')).where('owner', '=', owner).where(notGone)
      .executeTakeFirstOrThrow().then((r) => Number(r.used ?? 0));
  }

  /** Set (or with null, remove) one property the service itself keeps (os_glance_*). */
  async setProperty(id: string, name: string, value: string | null): Promise<void> {
    await this.k.transaction().execute((tx) => setProperties(tx, id, { [name]: value }));
  }

  // --- tags

  async addTag(id: string, tag: string): Promise<void> {
    await insertIgnore(this.db, 'image_tags', { image_id: id, value: tag });
    await this.k.updateTable('images').set({ updated_at: now() }).where('id', '=', id).execute();
  }

  /** False when the image had no such tag. */
  async removeTag(id: string, tag: string): Promise<boolean> {
    const r = await this.k.deleteFrom('image_tags').where('image_id', '=', id).where('value', '=', tag).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) return false;
    await this.k.updateTable('images').set({ updated_at: now() }).where('id', '=', id).execute();
    return true;
  }

  // --- members

  member(imageId: string, member: string): Promise<ImageMembersTable | undefined> {
    return this.k.selectFrom('image_members').selectAll().where('image_id', '=', imageId).where('member', '=', member).executeTakeFirst();
  }

  /** The image's members, or only `only`'s membership. */
  members(imageId: string, only?: string): Promise<ImageMembersTable[]> {
    let q = this.k.selectFrom('image_members').selectAll().where('image_id', '=', imageId);
    if (only !== undefined) q = q.where('member', '=', only);
    return q.orderBy('created_at').execute();
  }

  countMembers(imageId: string): Promise<number> {
    return this.k.selectFrom('image_members').select((eb) => eb.fn.countAll().as('n')).where('image_id', '=', imageId)
      .executeTakeFirstOrThrow().then((r) => Number(r.n));
  }

  async addMember(row: ImageMembersTable): Promise<void> {
    await this.k.insertInto('image_members').values(row).execute();
  }

  async setMemberStatus(imageId: string, member: string, status: string, ts: string): Promise<void> {
    await this.k.updateTable('image_members').set({ status, updated_at: ts }).where('image_id', '=', imageId).where('member', '=', member).execute();
  }

  async removeMember(imageId: string, member: string): Promise<void> {
    await this.k.deleteFrom('image_members').where('image_id', '=', imageId).where('member', '=', member).execute();
  }

  // --- uploads (crash recovery)

  /** Upload rows of `node`: transfers into the store (`temp_key` names their data) and stagings (`temp_key` = stageKey). */
  uploadsOf(node: string): Promise<{ image_id: string; temp_key: string }[]> {
    return this.k.selectFrom('uploads').select(['image_id', 'temp_key']).where('node', '=', node).execute();
  }

  /** The temporary data keys some node is still writing (any node: they share the store). */
  liveTempKeys(): Promise<Set<string>> {
    return this.k.selectFrom('uploads').select('temp_key').execute().then((rows) => new Set(rows.flatMap((r) => splitTempKeys(r.temp_key))));
  }

  /**
   * Locations written before stores had URLs were bare keys of the `file` store (its file
   * name): rewrite them as that store's URLs. Returns how many were rewritten.
   */
  async upgradeBareLocations(storeId: string, urlOf: (key: string) => string): Promise<number> {
    const rows = await this.k.selectFrom('image_locations').select(['id', 'url']).where('store_id', '=', storeId).where('url', 'not like', '%:%').execute();
    for (const r of rows) await this.k.updateTable('image_locations').set({ url: urlOf(r.url) }).where('id', '=', r.id).where('url', '=', r.url).execute();
    return rows.length;
  }

  /**
   * Upload rows (a PUT /file into a store, or a staging) of images still saving or uploading
   * whose node's heartbeat ran out before `nowMs` — never `self`'s, nor of a node that has no heartbeat row
   * (one that never beat is not known dead). An import's rows are its task's (the claim
   * replaces them when another node takes the task over).
   */
  deadUploads(nowMs: number, self: string): Promise<{ image_id: string; node: string; temp_key: string }[]> {
    return this.k.selectFrom('uploads')
      .innerJoin('api_nodes', 'api_nodes.node', 'uploads.node')
      .innerJoin('images', 'images.id', 'uploads.image_id')
      .select(['uploads.image_id', 'uploads.node', 'uploads.temp_key'])
      .where('api_nodes.alive_until', '<', nowMs).where('images.status', 'in', ['saving', 'uploading'])
      // (never the asking node's own: it runs, whatever its last heartbeat write did; its restart recovers its own)
      .where('uploads.node', '!=', self).execute();
  }

  /** The dead node's upload row taken and its image put back to queued, in one transaction; false when the row was gone (another node did it, or the upload ended). */
  async revertDeadUpload(row: { image_id: string; node: string; temp_key: string }): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      const r = await tx.deleteFrom('uploads').where('image_id', '=', row.image_id).where('node', '=', row.node).where('temp_key', '=', row.temp_key).executeTakeFirst();
      if (Number(r.numDeletedRows) !== 1) return false;
      await tx.updateTable('images').set({ status: 'queued', updated_at: now() }).where('id', '=', row.image_id).where('status', 'in', ['saving', 'uploading']).execute();
      return true;
    });
  }

  async dropUploads(id: string): Promise<void> {
    await this.k.deleteFrom('uploads').where('image_id', '=', id).execute();
  }

  /** Can this viewer see the image at all (show, download)? Members see it whatever their status. */
  async canSee(viewer: Viewer, img: Pick<ImagesTable, 'id' | 'visibility' | 'owner'>): Promise<boolean> {
    if (viewer.isAdmin || img.visibility === 'public' || img.visibility === 'community') return true;
    if (viewer.projectId && img.owner === viewer.projectId) return true;
    if (img.visibility === 'shared' && viewer.projectId) return !!(await this.member(img.id, viewer.projectId));
    return false;
  }

  list(viewer: Viewer, sp: URLSearchParams, limit: number): Promise<ListResult> {
    return listImages(this, this.db, viewer, sp, limit);
  }
}

function parseMetadata(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : {};
  } catch {
    return {};
  }
}

/**
 * Images that still count against a project's quotas: not deleted, or deleted with the data
 * still kept (pending_delete), as Glance's usage queries count every status but killed and
 * deleted.
 */
const notGone = (eb: EB) => eb.or([eb('deleted', '=', 0), eb('status', '=', 'pending_delete')]);

/** The child rows of images: properties, tags and active locations. */
interface Children {
  properties: { image_id: string; name: string; value: string }[];
  tags: { image_id: string; value: string }[];
  locations: { image_id: string; id: string; url: string; store_id: string | null; metadata: string; position: number; created_at: string }[];
}

/** Image records from image rows and their children, in the rows' order. */
function attachChildren(rows: Database['images'][], children: Children): ImageRecord[] {
  const byId = new Map<string, ImageRecord>();
  for (const r of rows) byId.set(r.id, { ...r, properties: NO_PROPERTIES, tags: [], locations: [] });
  for (const p of children.properties) {
    const img = byId.get(p.image_id)!;
    // (a null-prototype object: a property named __proto__ is a property like any other;
    // made only for an image that has properties, as most in a list have none)
    if (img.properties === NO_PROPERTIES) img.properties = Object.create(null) as Record<string, string>;
    img.properties[p.name] = p.value;
  }
  for (const t of children.tags) byId.get(t.image_id)!.tags.push(t.value);
  // Locations in the order downloads try them, position then age (not ordered in SQL: load's
  // UNION ALL would then order the properties, whose order the API shows, as well).
  const locations = children.locations.length > 1
    ? [...children.locations].sort((x, y) => Number(x.position) - Number(y.position) || (x.created_at < y.created_at ? -1 : x.created_at > y.created_at ? 1 : 0))
    : children.locations;
  for (const l of locations) byId.get(l.image_id)!.locations.push({ id: l.id, url: l.url, store_id: l.store_id, metadata: parseMetadata(l.metadata) });
  return rows.map((r) => byId.get(r.id)!);
}

/** Set (or, null, remove) the image's properties `props` inside `tx`. */
export async function setProperties(tx: Transaction<Database>, id: string, props: Record<string, string | null>): Promise<void> {
  for (const [name, value] of Object.entries(props)) {
    await tx.deleteFrom('image_properties').where('image_id', '=', id).where('name', '=', name).execute();
    if (value !== null) await tx.insertInto('image_properties').values({ image_id: id, name, value }).execute();
  }
}

async function writeChildren(tx: Transaction<Database>, id: string, props: Record<string, string>, tags: string[]): Promise<void> {
  const entries = Object.entries(props);
  if (entries.length) await tx.insertInto('image_properties').values(entries.map(([name, value]) => ({ image_id: id, name, value }))).execute();
  if (tags.length) await tx.insertInto('image_tags').values(tags.map((value) => ({ image_id: id, value }))).execute();
}

export const SORT_KEYS = ['name', 'status', 'container_format', 'disk_format', 'size', 'id', 'created_at', 'updated_at'] as const;
type SortKey = typeof SORT_KEYS[number];
export interface SortSpec { key: SortKey; dir: 'asc' | 'desc' }

/**
 * sort_key/sort_dir (repeatable, comma lists) or sort=key:dir,key2 — Glance's two syntaxes,
 * already valid against the list route's query schema (keys, directions, not both syntaxes).
 */
export function parseSort(sp: URLSearchParams): SortSpec[] {
  // The keys become SQL identifiers: one that the route's schema did not let through is a bug.
  const check = (k: string): SortKey => {
    if (!(SORT_KEYS as readonly string[]).includes(k)) throw new Error(`unvalidated sort key reached the repository: ${k}`);
    return k as SortKey;
  };
  const dir = (d: string | undefined) => (d === 'asc' ? 'asc' : 'desc');
  const specs: SortSpec[] = [];
  if (sp.has('sort')) {
    for (const part of sp.getAll('sort').join(',').split(',').map((s) => s.trim()).filter(Boolean)) {
      const [k, d] = part.split(':');
      specs.push({ key: check(k!), dir: dir(d) });
    }
  } else {
    const keys = sp.getAll('sort_key').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    const dirs = sp.getAll('sort_dir').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    if (dirs.length > 1 && dirs.length !== keys.length) throw badRequest('Number of sort dirs does not match the number of sort keys');
    keys.forEach((k, i) => specs.push({ key: check(k), dir: dir(dirs[i] ?? dirs[0]) }));
    if (keys.length === 0 && dirs.length) specs.push({ key: 'created_at', dir: dir(dirs[0]) });
  }
  if (specs.length === 0) specs.push({ key: 'created_at', dir: 'desc' });
  if (!specs.some((s) => s.key === 'created_at')) specs.push({ key: 'created_at', dir: specs[0]!.dir });
  if (!specs.some((s) => s.key === 'id')) specs.push({ key: 'id', dir: specs[0]!.dir });
  return specs;
}

/** Sort keys through COALESCE so NULLs order the same on all three databases. */
function sortExpr(eb: EB, key: SortKey): Expression<any> {
  if (key === 'size') return eb.fn.coalesce('images.size', sql.lit(-1));
  if (key === 'name' || key === 'container_format' || key === 'disk_format') return eb.fn.coalesce(`images.${key}`, sql.lit(''));
  return eb.ref(`images.${key}`);
}
function sortValue(row: Database['images'], key: SortKey): unknown {
  const v = row[key];
  if (key === 'size') return v === null ? -1 : Number(v);
  if (v === null) return '';
  return v;
}

const TIME_OPS: Record<string, '>' | '>=' | '<' | '<=' | '=' | '<>'> = { gt: '>', gte: '>=', lt: '<', lte: '<=', eq: '=', neq: '<>' };

/** A created_at/updated_at filter (op:date, its shape checked by the route's schema), the date as a time. */
function parseTimeFilter(name: string, raw: string): { op: '>' | '>=' | '<' | '<=' | '=' | '<>'; value: string } {
  const m = /^(gt|gte|lt|lte|eq|neq):(.+)$/.exec(raw)!;
  const t = Date.parse(m[2]!);
  if (Number.isNaN(t)) throw badRequest(`Bad "${name}" query filter format. Use ISO 8601 DateTime notation.`);
  return { op: TIME_OPS[m[1]!]!, value: new Date(t).toISOString() };
}

function inList(raw: string): string[] | null {
  if (!raw.startsWith('in:')) return null;
  const body = raw.slice(3);
  // Values may be quoted to hold commas: in:"a,b",c
  const out: string[] = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|([^,]*))\s*(?:,|$)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(body)) && m[0] !== '') out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!.trim());
  return out;
}

/** os_hidden and protected filters: true or false in any case (the route's schema allows nothing else). */
const isTrue = (raw: string) => (raw.toLowerCase() === 'true' ? 1 : 0);

/**
 * diskhub extension: a case-insensitive substring match on the name (Glance has only exact
 * names), so a dashboard can search thousands of images without listing them all.
 */
export const NAME_CONTAINS_PARAM = 'x-diskhub-name-contains';

const CONTROL_PARAMS = new Set([NAME_CONTAINS_PARAM, 'limit', 'marker', 'sort_key', 'sort_dir', 'sort', 'member_status', 'visibility', 'tag', 'size_min', 'size_max', 'created_at', 'updated_at', 'os_hidden', 'protected']);
const COLUMN_FILTERS = new Set(['name', 'status', 'owner', 'disk_format', 'container_format', 'id', 'checksum', 'os_hash_value', 'min_ram', 'min_disk', 'size', 'virtual_size']);

export interface ListResult { rows: Database['images'][]; more: boolean }

async function listImages(repo: ImageRepo, db: Db, auth: Viewer, sp: URLSearchParams, limit: number): Promise<ListResult> {
  const k = db.kysely;
  const project = auth.projectId ?? '';
  // (parameters valid against the list route's query schema)
  const visibility = sp.get('visibility');
  const memberStatus = sp.get('member_status') ?? 'accepted';
  const sort = parseSort(sp);
  const memberOf = (eb: EB, status: string | null) => {
    let q = eb.selectFrom('image_members').select('image_members.image_id')
      .whereRef('image_members.image_id', '=', 'images.id').where('image_members.member', '=', project);
    if (status && status !== 'all') q = q.where('image_members.status', '=', status);
    return eb.exists(q);
  };

  let q = k.selectFrom('images').selectAll('images').where('images.deleted', '=', 0);
  q = q.where((eb) => {
    const conds: Expression<SqlBool>[] = [];
    const own = eb('images.owner', '=', project);
    const sharedWithMe = eb.and([eb('images.visibility', '=', 'shared'), memberOf(eb, memberStatus)]);
    switch (visibility) {
      case 'public': conds.push(eb('images.visibility', '=', 'public')); break;
      case 'community': conds.push(eb('images.visibility', '=', 'community')); break;
      case 'private':
        conds.push(eb('images.visibility', '=', 'private'));
        if (!auth.isAdmin) conds.push(own);
        break;
      case 'shared':
        conds.push(eb('images.visibility', '=', 'shared'));
        if (!auth.isAdmin || sp.has('member_status')) conds.push(sp.has('member_status') ? memberOf(eb, memberStatus) : eb.or([own, memberOf(eb, memberStatus)]));
        break;
      case 'all':
        if (!auth.isAdmin) conds.push(eb.or([eb('images.visibility', 'in', ['public', 'community']), own, sharedWithMe]));
        break;
      default:
        // Default listing: public, owned, and shared-with-me (accepted); community only when owned.
        if (auth.isAdmin) conds.push(eb.or([eb('images.visibility', '<>', 'community'), own]));
        else conds.push(eb.or([eb('images.visibility', '=', 'public'), own, sharedWithMe]));
    }
    return eb.and(conds);
  });

  for (const [name, raw] of sp.entries()) {
    if (CONTROL_PARAMS.has(name)) continue;
    if (COLUMN_FILTERS.has(name)) {
      const col = `images.${name}` as const;
      const list = inList(raw);
      if (name === 'min_ram' || name === 'min_disk' || name === 'size' || name === 'virtual_size') {
        q = q.where(col as 'images.min_ram', '=', Number(raw));
      } else if (list) q = q.where(col as 'images.name', 'in', list.length ? list : ['']);
      else q = q.where(col as 'images.name', '=', raw);
      continue;
    }
    // Any other parameter filters on an extra property's exact value.
    q = q.where((eb) => eb.exists(eb.selectFrom('image_properties').select('image_properties.image_id')
      .whereRef('image_properties.image_id', '=', 'images.id').where('image_properties.name', '=', name).where('image_properties.value', '=', raw)));
  }
  const contains = sp.get(NAME_CONTAINS_PARAM);
  if (contains) {
    // '!' escapes LIKE's wildcards the same way in SQLite, PostgreSQL and MariaDB.
    const pattern = `%${contains.toLowerCase().replace(/[!%_]/g, (c) => `!${c}`)}%`;
    q = q.where(sql<SqlBool>`lower(images.name) like ${pattern} escape '!'`);
  }
  for (const tag of sp.getAll('tag')) {
    q = q.where((eb) => eb.exists(eb.selectFrom('image_tags').select('image_tags.image_id')
      .whereRef('image_tags.image_id', '=', 'images.id').where('image_tags.value', '=', tag)));
  }
  if (sp.has('size_min')) q = q.where('images.size', '>=', Number(sp.get('size_min')));
  if (sp.has('size_max')) q = q.where('images.size', '<=', Number(sp.get('size_max')));
  for (const col of ['created_at', 'updated_at'] as const) {
    for (const raw of sp.getAll(col)) {
      const f = parseTimeFilter(col, raw);
      q = q.where(`images.${col}`, f.op, f.value);
    }
  }
  if (sp.has('protected')) q = q.where('images.protected', '=', isTrue(sp.get('protected')!));
  // Hidden images are left out unless asked for (os_hidden=true lists only them).
  q = q.where('images.os_hidden', '=', sp.has('os_hidden') ? isTrue(sp.get('os_hidden')!) : 0);

  const marker = sp.get('marker');
  if (marker !== null) {
    // A marker the caller cannot see is no marker (Glance: 400): a private image of another
    // project would otherwise reveal that it exists and where its name sorts.
    // (the row alone: its sort keys and who may see it, not its properties, tags and locations)
    const m = await repo.row(marker);
    if (!m || !(await repo.canSee(auth, m))) throw badRequest(`No image found with ID ${marker}`);
    // Keyset: rows strictly after the marker in the sort order.
    q = q.where((eb) => {
      const ors: Expression<SqlBool>[] = [];
      for (let i = 0; i < sort.length; i++) {
        const ands: Expression<SqlBool>[] = [];
        for (let j = 0; j < i; j++) ands.push(eb(sortExpr(eb, sort[j]!.key), '=', sortValue(m, sort[j]!.key)));
        ands.push(eb(sortExpr(eb, sort[i]!.key), sort[i]!.dir === 'asc' ? '>' : '<', sortValue(m, sort[i]!.key)));
        ors.push(eb.and(ands));
      }
      return eb.or(ors);
    });
  }
  for (const s of sort) q = q.orderBy((eb) => sortExpr(eb as EB, s.key), s.dir);
  const rows = await q.limit(limit + 1).execute();
  return { rows: rows.slice(0, limit), more: rows.length > limit };
}
