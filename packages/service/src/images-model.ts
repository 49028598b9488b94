/**
 * The image record: its attributes as the API shows them, which of them a client may set,
 * and validation of values against the image schema (types, enums, patterns, lengths).
 */
import { HttpError, badRequest, forbidden } from './http.js';
import { CONTAINER_FORMATS, DISK_FORMATS, UUID_PATTERN, VISIBILITIES } from './schemas.js';
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
  const out: Record<string, unknown> = { ...img.properties };
  Object.assign(out, {
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
  });
  // Glance's order: the locations, then direct_url (the first location's URL), then the links.
  if (show.locations) out.locations = img.locations.map((l) => ({ url: l.url, metadata: l.metadata }));
  if (show.directUrl && img.locations.length) out.direct_url = img.locations[0]!.url;
  Object.assign(out, {
    tags: [...img.tags].sort(),
    self: `/v2/images/${img.id}`,
    file: `/v2/images/${img.id}/file`,
    schema: '/v2/schemas/image',
  });
  // The stores holding the data, as Glance shows them with enabled_backends.
  const stores = img.locations.map((l) => l.metadata.store).filter((s): s is string => typeof s === 'string' && s !== '');
  if (stores.length) out.stores = stores.join(',');
  return out;
}

const uuidRe = new RegExp(UUID_PATTERN);

/** Length in characters (code points), as Glance's schema validation counts it, not UTF-16 units. */
const tooLong = (s: string, max: number) => s.length > max && [...s].length > max;

function schemaError(detail: string): HttpError {
  return badRequest(`Provided object does not match schema 'image': ${detail}`);
}

/** Check one attribute's value against the image schema. */
export function validateAttr(key: string, value: unknown): void {
  const isStrOrNull = (max: number) => {
    if (value !== null && typeof value !== 'string') throw schemaError(`${JSON.stringify(value)} is not of type 'null', 'string'`);
    if (typeof value === 'string' && tooLong(value, max)) throw schemaError(`'${key}' is too long (maximum ${max})`);
  };
  const oneOf = (values: readonly (string | null)[]) => {
    if (!values.includes(value as string | null)) throw schemaError(`${JSON.stringify(value)} is not one of [${values.map((v) => (v === null ? 'None' : `'${v}'`)).join(', ')}]`);
  };
  switch (key) {
    case 'id':
      if (typeof value !== 'string' || !uuidRe.test(value)) throw schemaError(`${JSON.stringify(value)} does not match '${UUID_PATTERN}'`);
      return;
    case 'name': return isStrOrNull(255);
    case 'owner': return isStrOrNull(255);
    case 'visibility': return oneOf(VISIBILITIES);
    case 'container_format': return oneOf([null, ...CONTAINER_FORMATS]);
    case 'disk_format': return oneOf([null, ...DISK_FORMATS]);
    case 'protected':
    case 'os_hidden':
      if (typeof value !== 'boolean') throw schemaError(`${JSON.stringify(value)} is not of type 'boolean'`);
      return;
    case 'min_ram':
    case 'min_disk':
      if (typeof value !== 'number' || !Number.isInteger(value)) throw schemaError(`${JSON.stringify(value)} is not of type 'integer'`);
      if (value < 0 || value > 2 ** 31 - 1) throw badRequest(`'${key}' must be between 0 and ${2 ** 31 - 1}`);
      return;
    case 'tags':
      if (!Array.isArray(value)) throw schemaError(`${JSON.stringify(value)} is not of type 'array'`);
      for (const t of value) validateTag(t);
      if (value.length > MAX_TAGS) throw new HttpError(413, `Maximum number of tags exceeded (${MAX_TAGS}).`);
      return;
    case 'locations':
      // The image schema's locations: [{url (≤255), metadata (object), validation_data?}]
      if (!Array.isArray(value)) throw schemaError(`${JSON.stringify(value)} is not of type 'array'`);
      for (const loc of value) {
        if (typeof loc !== 'object' || loc === null || Array.isArray(loc)) throw schemaError(`${JSON.stringify(loc)} is not of type 'object'`);
        const l = loc as Record<string, unknown>;
        for (const req of ['url', 'metadata']) if (!(req in l)) throw schemaError(`'${req}' is a required property`);
        if (typeof l.url !== 'string') throw schemaError(`${JSON.stringify(l.url)} is not of type 'string'`);
        if (tooLong(l.url, 255)) throw schemaError(`'${l.url}' is too long`);
        if (typeof l.metadata !== 'object' || l.metadata === null || Array.isArray(l.metadata)) throw schemaError(`${JSON.stringify(l.metadata)} is not of type 'object'`);
        if (l.validation_data !== undefined) validateValidationData(l.validation_data);
      }
      return;
    case 'kernel_id':
    case 'ramdisk_id':
      if (value === null) return;
      if (typeof value !== 'string' || !uuidRe.test(value)) throw schemaError(`${JSON.stringify(value)} does not match '${UUID_PATTERN}'`);
      return;
    case 'cinder_encryption_key_deletion_policy':
      return oneOf(['on_image_deletion', 'do_not_delete']);
    default:
      if (typeof value !== 'string') throw schemaError(`${JSON.stringify(value)} is not of type 'string'`);
      if (tooLong(key, 255)) throw badRequest(`Property name '${key.slice(0, 40)}…' is longer than 255 characters.`);
      if (tooLong(value, 65535)) throw badRequest(`Property '${key}' value is longer than 65535 characters.`);
  }
}

function validateValidationData(v: unknown): void {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw schemaError(`${JSON.stringify(v)} is not of type 'object'`);
  const d = v as Record<string, unknown>;
  const limits: Record<string, [number, number]> = { checksum: [32, 32], os_hash_algo: [0, 64], os_hash_value: [0, 128] };
  for (const k of Object.keys(d)) if (!(k in limits)) throw schemaError(`Additional properties are not allowed ('${k}' was unexpected)`);
  for (const req of ['os_hash_algo', 'os_hash_value']) if (!(req in d)) throw schemaError(`'${req}' is a required property`);
  for (const [k, [min, max]] of Object.entries(limits)) {
    const x = d[k];
    if (x === undefined) continue;
    if (typeof x !== 'string') throw schemaError(`${JSON.stringify(x)} is not of type 'string'`);
    if (x.length < min) throw schemaError(`'${x}' is too short`);
    if (x.length > max) throw schemaError(`'${x}' is too long`);
  }
}

export function validateTag(t: unknown): asserts t is string {
  if (typeof t !== 'string') throw schemaError(`${JSON.stringify(t)} is not of type 'string'`);
  if (tooLong(t, 255)) throw badRequest(`Tag '${t.slice(0, 40)}…' is longer than 255 characters.`);
}

/** What a client may write: 403 for read-only and reserved names, as Glance answers. */
export function checkWritable(key: string, creating: boolean): void {
  if (key === 'id' && creating) return;
  if (READ_ONLY.has(key) || key === 'id') throw forbidden(`Attribute '${key}' is read-only.`);
  if (isReserved(key)) throw forbidden(`Attribute '${key}' is reserved.`);
  if (key === 'locations' || key === 'direct_url') throw badRequest(`Invalid JSON pointer for this resource: '/${key}'`);
}
