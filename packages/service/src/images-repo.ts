/**
 * Image records in the database: load with properties and tags, visibility rules as SQL,
 * listing with Glance's filters, sorting and keyset pagination.
 */
import { sql, type ExpressionBuilder, type Expression, type SqlBool } from 'kysely';
import type { Db } from './db/connect.js';
import type { Database } from './db/schema.js';
import type { AuthContext } from './identity.js';
import type { ImageRecord } from './images-model.js';
import { badRequest } from './http.js';

type EB = ExpressionBuilder<Database, 'images'>;

export async function loadImage(db: Db, id: string): Promise<ImageRecord | undefined> {
  const k = db.kysely;
  const row = await k.selectFrom('images').selectAll().where('id', '=', id).where('deleted', '=', 0).executeTakeFirst();
  if (!row) return undefined;
  const [props, tags] = await Promise.all([
    k.selectFrom('image_properties').select(['name', 'value']).where('image_id', '=', id).execute(),
    k.selectFrom('image_tags').select('value').where('image_id', '=', id).execute(),
  ]);
  return { ...row, properties: Object.fromEntries(props.map((p) => [p.name, p.value])), tags: tags.map((t) => t.value) };
}

/** Attach properties and tags to many rows with two queries. */
export async function hydrate(db: Db, rows: Database['images'][]): Promise<ImageRecord[]> {
  if (rows.length === 0) return [];
  const ids = rows.map((r) => r.id);
  const [props, tags] = await Promise.all([
    db.kysely.selectFrom('image_properties').select(['image_id', 'name', 'value']).where('image_id', 'in', ids).execute(),
    db.kysely.selectFrom('image_tags').select(['image_id', 'value']).where('image_id', 'in', ids).execute(),
  ]);
  const byId = new Map(rows.map((r) => [r.id, { ...r, properties: {} as Record<string, string>, tags: [] as string[] }]));
  for (const p of props) byId.get(p.image_id)!.properties[p.name] = p.value;
  for (const t of tags) byId.get(t.image_id)!.tags.push(t.value);
  return ids.map((id) => byId.get(id)!);
}

/** Can this caller see the image at all (show, download)? Members see it whatever their status. */
export async function canSee(db: Db, auth: AuthContext, img: ImageRecord): Promise<boolean> {
  if (auth.isAdmin || img.visibility === 'public' || img.visibility === 'community') return true;
  if (auth.projectId && img.owner === auth.projectId) return true;
  if (img.visibility === 'shared' && auth.projectId) {
    const m = await db.kysely.selectFrom('image_members').select('status').where('image_id', '=', img.id).where('member', '=', auth.projectId).executeTakeFirst();
    return !!m;
  }
  return false;
}

export const SORT_KEYS = ['name', 'status', 'container_format', 'disk_format', 'size', 'id', 'created_at', 'updated_at'] as const;
type SortKey = typeof SORT_KEYS[number];
export interface SortSpec { key: SortKey; dir: 'asc' | 'desc' }

/** sort_key/sort_dir (repeatable, comma lists) or sort=key:dir,key2 — Glance's two syntaxes. */
export function parseSort(sp: URLSearchParams): SortSpec[] {
  const check = (k: string): SortKey => {
    if (!(SORT_KEYS as readonly string[]).includes(k)) throw badRequest(`Invalid sort key: ${k}. It must be one of the following: ${SORT_KEYS.join(', ')}.`);
    return k as SortKey;
  };
  const checkDir = (d: string): 'asc' | 'desc' => {
    if (d !== 'asc' && d !== 'desc') throw badRequest(`Invalid sort direction: ${d}. It must be one of the following: asc, desc.`);
    return d;
  };
  const specs: SortSpec[] = [];
  if (sp.has('sort')) {
    if (sp.has('sort_key') || sp.has('sort_dir')) throw badRequest('The "sort" parameter cannot be combined with "sort_key" or "sort_dir".');
    for (const part of sp.getAll('sort').join(',').split(',').map((s) => s.trim()).filter(Boolean)) {
      const [k, d] = part.split(':');
      specs.push({ key: check(k!), dir: d ? checkDir(d) : 'desc' });
    }
  } else {
    const keys = sp.getAll('sort_key').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    const dirs = sp.getAll('sort_dir').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    if (dirs.length > 1 && dirs.length !== keys.length) throw badRequest('Number of sort dirs does not match the number of sort keys');
    keys.forEach((k, i) => specs.push({ key: check(k), dir: checkDir(dirs[i] ?? dirs[0] ?? 'desc') }));
    if (keys.length === 0 && dirs.length) specs.push({ key: 'created_at', dir: checkDir(dirs[0]!) });
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

function parseTimeFilter(name: string, raw: string): { op: '>' | '>=' | '<' | '<=' | '=' | '<>'; value: string } {
  const m = /^(gt|gte|lt|lte|eq|neq):(.+)$/.exec(raw);
  const bad = () => badRequest(`Bad "${name}" query filter format. Use ISO 8601 DateTime notation.`);
  if (!m) throw bad();
  const t = Date.parse(m[2]!);
  if (!/^\d{4}-\d{2}-\d{2}/.test(m[2]!) || Number.isNaN(t)) throw bad();
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

function parseBool(name: string, raw: string): number {
  const v = raw.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return 1;
  if (['false', '0', 'no', 'off'].includes(v)) return 0;
  throw badRequest(`Invalid value '${raw}' for parameter '${name}'.`);
}

function parseSizeFilter(name: string, raw: string): number {
  if (!/^\d+$/.test(raw)) throw badRequest(`Invalid value for ${name}: ${raw}. It must be an integer.`);
  return Number(raw);
}

/**
 * diskhub extension: a case-insensitive substring match on the name (Glance has only exact
 * names), so a dashboard can search thousands of images without listing them all.
 */
export const NAME_CONTAINS_PARAM = 'x-diskhub-name-contains';

const CONTROL_PARAMS = new Set([NAME_CONTAINS_PARAM, 'limit', 'marker', 'sort_key', 'sort_dir', 'sort', 'member_status', 'visibility', 'tag', 'size_min', 'size_max', 'created_at', 'updated_at', 'os_hidden', 'protected']);
const COLUMN_FILTERS = new Set(['name', 'status', 'owner', 'disk_format', 'container_format', 'id', 'checksum', 'os_hash_value', 'min_ram', 'min_disk']);

export interface ListResult { rows: Database['images'][]; more: boolean }

export async function listImages(db: Db, auth: AuthContext, sp: URLSearchParams, limit: number): Promise<ListResult> {
  const k = db.kysely;
  const project = auth.projectId ?? '';
  const visibility = sp.get('visibility');
  if (visibility !== null && !['public', 'private', 'shared', 'community', 'all'].includes(visibility)) {
    throw badRequest(`Invalid visibility value: ${visibility}`);
  }
  const memberStatus = sp.get('member_status') ?? 'accepted';
  if (!['accepted', 'pending', 'rejected', 'all'].includes(memberStatus)) throw badRequest(`Invalid status value: ${memberStatus}`);
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
      if (name === 'min_ram' || name === 'min_disk') {
        if (!/^\d+$/.test(raw)) throw badRequest(`Invalid value for ${name}: ${raw}.`);
        q = q.where(col as 'images.min_ram', '=', Number(raw));
      } else if (list) q = q.where(col as 'images.name', 'in', list.length ? list : ['']);
      else q = q.where(col as 'images.name', '=', raw);
      continue;
    }
    // Any other parameter filters on an extra property's exact value.
    if (name.length > 255) throw badRequest('Filter name too long.');
    q = q.where((eb) => eb.exists(eb.selectFrom('image_properties').select('image_properties.image_id')
      .whereRef('image_properties.image_id', '=', 'images.id').where('image_properties.name', '=', name).where('image_properties.value', '=', raw)));
  }
  const contains = sp.get(NAME_CONTAINS_PARAM);
  if (contains) {
    if (contains.length > 255) throw badRequest('Filter name too long.');
    // '!' escapes LIKE's wildcards the same way in SQLite, PostgreSQL and MariaDB.
    const pattern = `%${contains.toLowerCase().replace(/[!%_]/g, (c) => `!${c}`)}%`;
    q = q.where(sql<SqlBool>`lower(images.name) like ${pattern} escape '!'`);
  }
  for (const tag of sp.getAll('tag')) {
    q = q.where((eb) => eb.exists(eb.selectFrom('image_tags').select('image_tags.image_id')
      .whereRef('image_tags.image_id', '=', 'images.id').where('image_tags.value', '=', tag)));
  }
  if (sp.has('size_min')) q = q.where('images.size', '>=', parseSizeFilter('size_min', sp.get('size_min')!));
  if (sp.has('size_max')) q = q.where('images.size', '<=', parseSizeFilter('size_max', sp.get('size_max')!));
  for (const col of ['created_at', 'updated_at'] as const) {
    for (const raw of sp.getAll(col)) {
      const f = parseTimeFilter(col, raw);
      q = q.where(`images.${col}`, f.op, f.value);
    }
  }
  if (sp.has('protected')) q = q.where('images.protected', '=', parseBool('protected', sp.get('protected')!));
  // Hidden images are left out unless asked for (os_hidden=true lists only them).
  q = q.where('images.os_hidden', '=', sp.has('os_hidden') ? parseBool('os_hidden', sp.get('os_hidden')!) : 0);

  const marker = sp.get('marker');
  if (marker !== null) {
    const m = await k.selectFrom('images').selectAll().where('id', '=', marker).where('deleted', '=', 0).executeTakeFirst();
    if (!m) throw badRequest(`No image found with ID ${marker}`);
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
