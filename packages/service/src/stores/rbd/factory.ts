/**
 * The RBD store's configuration, under glance_store's option names (a backend's section of
 * glance-api.conf): rbd_store_pool, rbd_store_user, rbd_store_ceph_conf, rbd_store_chunk_size,
 * rados_connect_timeout, rbd_thin_provisioning; and diskhub's rbd_store_keyring (Glance relies on
 * ceph.conf's [client] keyring) and rbd_store_partial_tag (whose partial uploads a sweep removes). Numbers and booleans may be given as JSON values or strings.
 */
import { stringOption, StoreConfigError, type StoreFactory, type StoreSpec } from '../registry.js';
import { RbdStore, type RbdStoreOptions } from './rbd-store.js';

const OPTIONS = new Set(['id', 'type', 'description', 'rbd_store_pool', 'rbd_store_user', 'rbd_store_ceph_conf', 'rbd_store_keyring',
  'rbd_store_chunk_size', 'rados_connect_timeout', 'rbd_thin_provisioning', 'rbd_store_partial_tag']);

function intOption(spec: StoreSpec, name: string): number | undefined {
  const v = spec[name];
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw new StoreConfigError(`store '${spec.id}' (rbd): ${name} must be an integer, not ${JSON.stringify(v)}`);
  return n;
}

function boolOption(spec: StoreSpec, name: string): boolean | undefined {
  const v = spec[name];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'boolean') return v;
  // oslo.config's BoolOpt spellings
  if (typeof v === 'string' && /^(true|1|yes|on)$/i.test(v)) return true;
  if (typeof v === 'string' && /^(false|0|no|off)$/i.test(v)) return false;
  throw new StoreConfigError(`store '${spec.id}' (rbd): ${name} must be true or false, not ${JSON.stringify(v)}`);
}

/** The store's options from its configuration (StoreConfigError for an unknown or malformed one). */
export function rbdStoreOptions(spec: StoreSpec): RbdStoreOptions {
  for (const k of Object.keys(spec)) if (!OPTIONS.has(k)) throw new StoreConfigError(`store '${spec.id}' (rbd): unknown option '${k}' (rbd stores take: ${[...OPTIONS].slice(2).join(', ')})`);
  const chunk = intOption(spec, 'rbd_store_chunk_size');
  if (chunk !== undefined && (chunk < 1 || chunk > 64)) throw new StoreConfigError(`store '${spec.id}' (rbd): rbd_store_chunk_size must be 1 to 64 (MiB), not ${chunk}`);
  const timeout = intOption(spec, 'rados_connect_timeout');
  return {
    id: spec.id,
    description: stringOption(spec, 'description'),
    pool: stringOption(spec, 'rbd_store_pool'),
    user: stringOption(spec, 'rbd_store_user'),
    confFile: stringOption(spec, 'rbd_store_ceph_conf'),
    keyring: stringOption(spec, 'rbd_store_keyring'),
    chunkSizeMiB: chunk,
    // Glance's -1 (or 0): no limit of its own; diskhub keeps its default rather than none.
    connectTimeout: timeout !== undefined && timeout > 0 ? timeout : undefined,
    thinProvisioning: boolOption(spec, 'rbd_thin_provisioning'),
    partialTag: stringOption(spec, 'rbd_store_partial_tag'),
  };
}

export const rbdStoreFactory: StoreFactory = (spec) => new RbdStore(rbdStoreOptions(spec));
