/**
 * The image record: its attributes as the API shows them, which of them a client may set,
 * and the limits on values beyond the image schema (which the routes validate requests
 * against: schemas.ts).
 */
import { HttpError, badRequest, forbidden } from './http.js';
import { num, type ImagesTable } from './db/schema.js';

/** Attributes stored as columns (everything else is an extra property). */
export const BASE_ATTRS = new Set([
  'id', 'name', 'status', 'visibility', 'protected', 'os_hidden', 'checksum', 'os_hash_algo', 'os_hash_value',
  'owner', 'size', 'virtual_size', 'container_format', 'disk_format', 'created_at', 'updated_at', 'tags',
  'min_ram', 'min_disk', 'self', 'file', 'schema', 'direct_url', 'locations', 'stores',
]);
/** Set by the service only. `id` may be given at create time. */
export const READ_ONLY = new Set(['created_at', 'updated_at', 'status', 'checksum', 'os_hash_algo', 'os_hash_value', 'size', 'virtual_size', 'direct_url', 'self', 'file', 'schema', 'stores']);
/** Never settable (Glance's reserved names and its os_glance_* namespace). */
// Glance 25's ImagesController._reserved_properties; owner_id and is_public are ordinary
// properties there (Nova sends owner_id with every snapshot it uploads).
export const RESERVED = new Set(['deleted', 'deleted_at', 'location']);
export const isReserved = (key: string) => RESERVED.has(key) || key.startsWith('os_glance');
/** The node holding an image's staged data (domain/import/stage-host.ts): kept, never shown (Glance's _hidden_properties). */
export const STAGE_HOST_PROPERTY = 'os_glance_stage_host';

export const MAX_PROPERTIES = 128;
export const MAX_TAGS = 128;

/** One place the image's data is (an image_locations row), as the domain works with it. */
export interface ImageLocation {
  id: string;
  url: string;
  /** The configured store holding it. */
  store_id: string | null;
  metadata: Record<string, unknown>;
}

export interface ImageRecord extends ImagesTable {
  properties: Record<string, string>;
  tags: string[];
  /** Active locations, in the order downloads try them. */
  locations: ImageLocation[];
}

/** Glance prints times to the second. */
export const apiTime = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');

/** What an image shows of its locations: Glance's show_image_direct_url and show_multiple_locations (and get_image_location). */
export interface LocationView { directUrl: boolean; locations: boolean }
export const NO_LOCATIONS: LocationView = { directUrl: false, locations: false };

export function imageView(img: ImageRecord, show: LocationView = NO_LOCATIONS): Record<string, unknown> {
  // One object literal, the properties spread first (a base attribute of the same name takes
  // its value, not its place): V8 keeps such an object in fast mode, where building it with
  // Object.assign made a dictionary, about 3x the time to build and 2x to serialise for a
  // page of 100 images (BENCHMARKS.md, issue 18).
  const out: Record<string, unknown> = {
    ...img.properties,
    name: img.name,
    disk_format: img.disk_format,
    container_format: img.container_format,
    visibility: img.visibility,
    size: num(img.size),
    virtual_size: num(img.virtual_size),
    status: img.status,
    checksum: img.checksum,
    protected: !!img.protected,
    min_ram: img.min_ram,
    min_disk: img.min_disk,
    owner: img.owner,
    os_hidden: !!img.os_hidden,
    os_hash_algo: img.os_hash_algo,
    os_hash_value: img.os_hash_value,
    id: img.id,
    created_at: apiTime(img.created_at),
    updated_at: apiTime(img.updated_at),
    // Glance's order: the locations, then direct_url (the first location's URL), then the links.
    // Shown only where configured and allowed; undefined is left out of the JSON (a delete
    // would turn the object into a dictionary again).
    locations: show.locations ? img.locations.map((l) => ({ url: l.url, metadata: l.metadata })) : undefined,
    direct_url: show.directUrl && img.locations.length ? img.locations[0]!.url : undefined,
    tags: [...img.tags].sort(),
    self: `/v2/images/${img.id}`,
    file: `/v2/images/${img.id}/file`,
    schema: '/v2/schemas/image',
  };
  // (undefined is left out of the JSON, and keeps the object's shape where a delete would not)
  if (STAGE_HOST_PROPERTY in img.properties) out[STAGE_HOST_PROPERTY] = undefined;
  // The stores holding the data, as Glance shows them with enabled_backends.
  if (img.locations.length) {
    const stores = img.locations.map((l) => l.metadata.store).filter((s): s is string => typeof s === 'string' && s !== '');
    if (stores.length) out.stores = stores.join(',');
  }
  return out;
}

/** Length in characters (code points), as Glance counts it, not UTF-16 units. */
const tooLong = (s: string, max: number) => s.length > max && [...s].length > max;

/**
 * The limits Glance's domain (not its schema) puts on a value that passed the image schema
 * (the route's JSON-schema validation): the int32 range of min_ram and min_disk, the tag
 * count, and the lengths the database columns hold.
 */
export function checkLimits(key: string, value: unknown): void {
  switch (key) {
    case 'min_ram':
    case 'min_disk': {
      const n = value as number;
      if (n < 0) throw badRequest(`Invalid value '${n}' for parameter '${key}': Cannot be a negative value`);
      if (n > 2 ** 31 - 1) throw badRequest(`'${key}' value out of range, must not exceed ${2 ** 31 - 1}.`);
      return;
    }
    case 'tags':
      if ((value as string[]).length > MAX_TAGS) throw new HttpError(413, `Maximum number of tags exceeded (${MAX_TAGS}).`);
      return;
    default:
      if (BASE_ATTRS.has(key) || typeof value !== 'string') return;
      if (tooLong(key, 255)) throw badRequest(`Property name '${key.slice(0, 40)}…' is longer than 255 characters.`);
      if (tooLong(value, 65535)) throw badRequest(`Property '${key}' value is longer than 65535 characters.`);
  }
}

/** What a client may write: 403 for read-only and reserved names, as Glance answers. */
export function checkWritable(key: string, creating: boolean): void {
  if (key === 'id' && creating) return;
  if (READ_ONLY.has(key) || key === 'id') throw forbidden(`Attribute '${key}' is read-only.`);
  if (isReserved(key)) throw forbidden(`Attribute '${key}' is reserved.`);
  if (key === 'locations' || key === 'direct_url') throw badRequest(`Invalid JSON pointer for this resource: '/${key}'`);
}
