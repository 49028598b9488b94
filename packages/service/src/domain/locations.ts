/**
 * An image's locations (Glance's multi-store and locations API): the PATCH operations on
 * /locations (_do_add_locations, _do_replace_locations, _do_remove_locations in Glance 25's
 * glance/api/v2/images.py, with glance/location.py's checks), removing an image's data from
 * one store (delete_from_store) or from all of them (image delete). Messages and status codes
 * are Glance's.
 *
 * A location the API adds must be data of a configured store (Store.owns) that exists and is
 * not empty (its size is read), and never a file:// URL: as Glance refuses the file scheme for
 * external locations (a location naming a server's local file would let a client read it).
 */
import { HttpError, badRequest, conflict, forbidden, notFound } from '../http.js';
import type { AuthContext } from '../identity.js';
import type { ImageLocation, ImageRecord } from '../images-model.js';
import type { ImageRepo, LocationImageChanges, LocationInput } from '../repo/images.js';
import type { StoreSet } from '../stores/registry.js';
import type { Logger } from '../log.js';
import type { ImageChange, ImageService } from './images.js';
import { storeFailure } from './store-failures.js';
import { StoreError } from '../stores/store.js';

export interface LocationOptions {
  /** Glance's show_multiple_locations: the locations API is open only when images show their locations. */
  showMultipleLocations: boolean;
}

/** A location as a client sends it (validated against the image schema's `locations` by validateLocations). */
interface LocationValue { url: string; metadata: Record<string, unknown>; validation_data?: Record<string, string> }

/** Glance's restricted schemes for locations set through the API (store_utils.RESTRICTED_URI_SCHEMAS). */
const RESTRICTED_SCHEMES = new Set(['file', 'filesystem', 'swift+config']);

/** glance_store's InUseByStore message, which Glance's 409 quotes (the store's own message, naming pools and images, goes to the log). */
const IN_USE = 'The image cannot be deleted because it is in use through the backend store outside of Glance.';

/** Digest sizes in bytes (the service hashes with sha512, Glance's default hashing_algorithm). */
const HASH_SIZES: Record<string, number> = { sha512: 64 };

export class ImageLocations {
  constructor(
    private readonly images: ImageService,
    private readonly repo: ImageRepo,
    private readonly stores: StoreSet,
    private readonly opts: LocationOptions,
    private readonly log: Logger,
  ) {}

  /** The PATCH operations on /locations, in order, each saved as it is applied (as Glance's proxy does). */
  async apply(a: AuthContext, id: string, changes: ImageChange[]): Promise<void> {
    // The request as a whole is checked against the schema before anything is applied (Glance's deserializer).
    for (const change of changes) {
      if (change.op === 'remove') continue;
      if (!change.hasValue) throw badRequest('Operation objects must contain exactly one member named "value".');
      validateLocations(change.op === 'add' ? [change.value] : change.value);
    }
    for (const change of changes) {
      const img = await this.images.get(a, id);
      const pol = this.images.imagePolicy(a, img);
      if (change.op === 'replace') {
        if (!Array.isArray(change.value) || change.value.length === 0) throw forbidden('Cannot set locations to empty list.');
        pol.setImageLocation();
        await this.replace(img, change.value as LocationValue[]);
      } else if (change.op === 'add') {
        pol.setImageLocation();
        await this.add(img, change.position, change.value as LocationValue);
      } else {
        pol.deleteImageLocation();
        await this.remove(img, change.position);
      }
    }
  }

  private async add(img: ImageRecord, position: string | undefined, value: LocationValue): Promise<void> {
    if (!this.opts.showMultipleLocations) throw forbidden("It's not allowed to add locations if locations are invisible.");
    if (img.status !== 'active' && img.status !== 'queued') throw conflict(`It's not allowed to add locations if image status is ${img.status}.`);
    const validation = validationData(img, [value]);
    const loc = this.withStore(value);
    const pos = opPosition(position, img.locations.length, true);
    if (pos === null) throw badRequest('Invalid position for adding a location.');
    const size = await this.check(loc);
    if (img.locations.some((l) => sameLocation(l, loc))) throw badRequest(`The location ${loc.url} already exists`);
    const next: LocationInput[] = img.locations.map(keep);
    next.splice(pos, 0, loc);
    await this.save(img, next, activation(img, size, validation));
  }

  private async replace(img: ImageRecord, values: LocationValue[]): Promise<void> {
    if (!this.opts.showMultipleLocations) throw forbidden("It's not allowed to update locations if locations are invisible.");
    if (img.status !== 'active' && img.status !== 'queued') throw conflict(`It's not allowed to replace locations if image status is ${img.status}.`);
    const validation = validationData(img, values);
    const locs = values.map((v) => this.withStore(v));
    const urls = locs.map((l) => l.url).sort();
    const current = img.locations.map((l) => l.url).sort();
    const same = urls.length === current.length && urls.every((u, i) => u === current[i]);
    if (same) {
      // The same URLs: only their metadata (and order) change; nothing to check again.
      const byUrl = new Map(img.locations.map((l) => [l.url, l]));
      await this.save(img, locs.map((l) => ({ ...l, id: byUrl.get(l.url)!.id })), activation(img, null, validation));
      return;
    }
    if (img.locations.length > 0) throw badRequest(`Original locations is not empty: ${pythonRepr(img.locations.map((l) => ({ url: l.url, metadata: l.metadata, status: 'active' })))}`);
    let size: number | null = null;
    for (const loc of locs) {
      const s = await this.check(loc);
      size ??= s;
      if (locs.filter((o) => sameLocation(o, loc)).length > 1) throw badRequest(`The location ${loc.url} already exists`);
    }
    await this.save(img, locs, activation(img, size, validation));
  }

  private async remove(img: ImageRecord, position: string | undefined): Promise<void> {
    if (!this.opts.showMultipleLocations) throw forbidden("It's not allowed to remove locations if locations are invisible.");
    if (img.status !== 'active') throw conflict(`It's not allowed to remove locations if image status is ${img.status}.`);
    if (img.locations.length === 1) throw forbidden('Cannot remove last location in the image.');
    const pos = opPosition(position, img.locations.length, false);
    if (pos === null) throw badRequest('Invalid position for removing a location.');
    const gone = img.locations[pos]!;
    // Glance removes the data from its store first: a failure there keeps the location.
    await this.deleteData(img, gone, true);
    await this.save(img, img.locations.filter((l) => l !== gone).map(keep));
  }

  /** DELETE /v2/stores/{store_id}/{image_id}: the image's data in one store goes, its other copies stay. */
  async deleteFromStore(a: AuthContext, storeId: string, imageId: string): Promise<void> {
    if (!this.stores.get(storeId)) throw conflict(`The selected store ${storeId} is not available on this node.`);
    let img: ImageRecord;
    try {
      img = await this.images.get(a, imageId);
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) throw notFound(`Failed to find image ${imageId}`);
      throw e;
    }
    const pol = this.images.imagePolicy(a, img);
    pol.getImageLocation();
    pol.deleteImageLocation();
    if (img.status !== 'active') throw conflict("It's not allowed to remove image data from store if image status is not 'active'");
    if (img.locations.length === 1) throw forbidden('Cannot delete image data from the only store containing it. Consider deleting the image instead.');
    const gone = img.locations.find((l) => l.metadata.store === storeId);
    if (!gone) throw notFound(`Image ${img.id} is not stored in store ${storeId}.`);
    await this.deleteData(img, gone, true);
    if (!(await this.repo.setLocations(img, img.locations.filter((l) => l !== gone).map(keep)))) {
      throw conflict(`Image ${img.id} was changed by another request; retry.`);
    }
  }

  /**
   * Before the image is deleted (as Glance's Image.delete removes the data before the row): its
   * data goes from every store holding it (failures are logged, as Glance's safe delete does),
   * but data a store keeps because it is in use (an RBD snapshot with clones) stops the delete
   * with Glance's 409: the image stays, without the locations whose data was already removed.
   */
  async deleteAllData(img: ImageRecord): Promise<void> {
    const done: string[] = [];
    for (const loc of img.locations) {
      let removed: boolean;
      try {
        removed = await this.deleteData(img, loc, false, `Image ${img.id} could not be deleted because it is in use: ${IN_USE}`);
      } catch (e) {
        if (done.length) await this.repo.setLocations(img, img.locations.filter((l) => !done.includes(l.id)).map(keep)).catch(() => false);
        throw e;
      }
      if (removed) done.push(loc.id);
    }
    await this.repo.markLocationsDeleted(img.id, done);
  }

  /**
   * Remove one location's data from its store; `strict`: a store failure is the request's
   * failure (503). Data a store keeps in use is always the request's failure: 409 with `inUse`
   * (Glance's words for the data of one store by default).
   */
  private async deleteData(img: ImageRecord, loc: ImageLocation, strict: boolean, inUse = `The data for Image ${img.id} could not be deleted because it is in use: ${IN_USE}`): Promise<boolean> {
    const store = this.stores.locate(loc.store_id, loc.url);
    if (!store) {
      this.log.warn('image location in no configured store: data left in place', { image: img.id, store: loc.store_id });
      return false;
    }
    try {
      await store.delete(loc.url);
      return true;
    } catch (e) {
      const failure = storeFailure(e, store.id, 'deleting the data');
      this.log.warn('store delete failed', { image: img.id, store: store.id, error: failure?.message ?? String(e) });
      if (e instanceof StoreError && e.kind === 'in-use') throw conflict(inUse);
      if (strict) throw failure ?? new HttpError(503, `The image store '${store.id}' could not delete the data; try again later.`);
      return false;
    }
  }

  /** The location with its store as Glance's get_updated_store_location sets it: the configured store whose URL it is. */
  private withStore(v: LocationValue): LocationInput {
    const owner = this.stores.ownerOf(v.url);
    const metadata = { ...v.metadata };
    if (owner) metadata.store = owner.id;
    return { url: v.url, store_id: owner?.id ?? null, metadata };
  }

  /** glance/location.py's _check_location_uri: a known, unrestricted scheme, data in a configured store, not empty. Returns its size. */
  private async check(loc: LocationInput): Promise<number> {
    const invalid = () => badRequest('Invalid location');
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(loc.url)?.[1]?.toLowerCase();
    if (!scheme || RESTRICTED_SCHEMES.has(scheme)) throw invalid();
    const store = loc.store_id === null ? undefined : this.stores.get(loc.store_id);
    if (!store) throw invalid();
    let size: number;
    try {
      size = await store.size(loc.url);
    } catch (e) {
      // No such object: Glance's BadStoreUri; a store that cannot answer is not the client's fault.
      if (e instanceof StoreError && e.kind === 'not-found') throw invalid();
      throw storeFailure(e, store.id, 'checking the location') ?? e;
    }
    if (!(size > 0)) throw invalid();
    return size;
  }

  private async save(img: ImageRecord, next: LocationInput[], changes: LocationImageChanges = {}): Promise<void> {
    if (!(await this.repo.setLocations(img, next, changes))) throw conflict(`Image ${img.id} was changed by another request; retry.`);
  }
}

const keep = (l: ImageLocation): LocationInput => ({ id: l.id, url: l.url, store_id: l.store_id, metadata: l.metadata });

/** glance/location.py's _count_duplicated_locations: the same URL with the same metadata. */
function sameLocation(a: { url: string; metadata: Record<string, unknown> }, b: { url: string; metadata: Record<string, unknown> }): boolean {
  return a.url === b.url && JSON.stringify(sortKeys(a.metadata)) === JSON.stringify(sortKeys(b.metadata));
}
const sortKeys = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));

/** Glance's _get_locations_op_pos: a digit string, or '-' (the end); `allowMax`: the position after the last (add). */
function opPosition(pathPos: string | undefined, max: number, allowMax: boolean): number | null {
  if (pathPos === undefined) return null;
  let pos = allowMax ? max : max - 1;
  if (/^\d+$/.test(pathPos)) pos = Number(pathPos);
  else if (pathPos !== '-') return null;
  if (!(allowMax || (pos >= 0 && pos < max))) return null;
  // (Glance's list.insert puts a position past the end at the end)
  return Math.min(pos, max);
}

/** What a location change sets on a queued image: active, its size from the store, the validation data. */
function activation(img: ImageRecord, size: number | null, validation: LocationImageChanges): LocationImageChanges {
  if (img.status !== 'queued') return {};
  return { ...validation, status: 'active', ...(img.size === null && size !== null ? { size } : {}) };
}

/**
 * Glance's _validate_validation_data: checksum / os_hash_algo / os_hash_value given with the
 * locations must agree with each other and with the image; new values only for a queued image.
 */
function validationData(img: ImageRecord, values: LocationValue[]): LocationImageChanges {
  const given: Record<string, string> = {};
  for (const v of values) {
    for (const [k, val] of Object.entries(v.validation_data ?? {})) {
      if (k in given && given[k] !== val) throw conflict(`Conflicting values for ${k}`);
      given[k] = val;
    }
  }
  const fresh: Record<string, string> = {};
  for (const [k, v] of Object.entries(given)) {
    const current = (img as unknown as Record<string, unknown>)[k];
    if (v === current) continue;
    if (current) throw conflict(`${k} is already set with a different value`);
    fresh[k] = v;
  }
  if (Object.keys(fresh).length === 0) return {};
  if (img.status !== 'queued') throw conflict(`New value(s) for ${Object.keys(fresh).join(', ')} may only be provided when image status is 'queued'`);
  if (fresh.checksum !== undefined) {
    if (!/^(?:[0-9a-fA-F]{2})*$/.test(fresh.checksum)) throw conflict(`checksum (${fresh.checksum}) is not a valid hexadecimal value`);
    if (fresh.checksum.length !== 32) throw conflict(`checksum (${fresh.checksum}) is not the correct size for md5 (should be 16 bytes)`);
  }
  const algo = fresh.os_hash_algo;
  if (algo !== 'sha512') throw conflict(`os_hash_algo must be sha512, not ${algo ?? 'None'}`);
  const value = fresh.os_hash_value ?? '';
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(value)) throw conflict(`os_hash_value (${value}) is not a valid hexadecimal value`);
  if (value.length / 2 !== HASH_SIZES[algo]) throw conflict(`os_hash_value (${value}) is not the correct size for ${algo} (should be ${HASH_SIZES[algo]} bytes)`);
  return fresh;
}

/** A Python-like repr of locations, for Glance's "Original locations is not empty" message. */
function pythonRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'string') return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (Array.isArray(v)) return `[${v.map(pythonRepr).join(', ')}]`;
  if (typeof v === 'object') return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${pythonRepr(k)}: ${pythonRepr(x)}`).join(', ')}}`;
  return String(v);
}

const schemaError = (detail: string) => badRequest(`Provided object does not match schema 'image': ${detail}`);
/** Length in characters (code points), as Glance counts it, not UTF-16 units. */
const tooLong = (s: string, max: number) => s.length > max && [...s].length > max;

/**
 * The image schema's `locations`: [{url (≤255), metadata (object), validation_data?}], in the
 * schema library's words. (A location added at /locations/N is one item of it, which the
 * route's JSON schema of the whole attribute does not see.)
 */
function validateLocations(value: unknown): void {
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
