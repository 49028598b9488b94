/**
 * Instance disks in Ceph, as Nova's rbd image backend keeps them ([libvirt] images_type = rbd;
 * nova/virt/libvirt/imagebackend.py class Rbd, storage/rbd_utils.py RBDDriver): each disk is the
 * RBD image `<instance uuid>_<disk name>` in the instances' pool. The root disk of an image
 * that Glance keeps in the same cluster (a location `rbd://<fsid>/<pool>/<image>/<snapshot>`)
 * is a copy-on-write clone of that protected snapshot, grown to the flavor's root size; any
 * other disk is imported from its local base file (`rbd import`). Cleaning up removes every
 * image of the instance (driver._cleanup_rbd).
 *
 * Through librbd (packages/rbd), the addon the RBD store uses: a clone and a resize are single
 * librbd calls (no process per step, errors with errno codes instead of text on stderr), and
 * the import and the snapshot's export read and write ranges, skipping zeroes, which the CLI's
 * whole-image streams cannot.
 */
import { open as openFile } from 'node:fs/promises';
import { isZero, openImage } from '@diskhub/disk';
import type { Cluster, Image as RbdImage, Librbd, Pool, RbdError } from '@diskhub/rbd';
import { ComputeError } from './errors.js';
import type { ImageRecord } from './client.js';

/** Nova's [libvirt] options for the rbd backend (images_rbd_pool, images_rbd_ceph_conf, rbd_user) and the keyring. */
export interface RbdSettings {
  /** images_rbd_pool (Nova's default "rbd"). */
  pool: string;
  /** images_rbd_ceph_conf ("" : librados's search path). */
  conf: string;
  /** rbd_user without "client." ("" : the configuration's default, client.admin). */
  user: string;
  /** A keyring file ("" : the one ceph.conf names). */
  keyring: string;
}

export const DEFAULT_RBD_POOL = 'rbd';
/** Seconds allowed for the connection and each operation (rados_connect_timeout's role). */
const TIMEOUT = 60;
/** `rbd import`'s object size: 4 MiB (order 22), the rbd CLI's default. */
const IMPORT_ORDER = 22;
const CHUNK = 4 << 20;

/** Nova's rbd_utils.RBDDriver.parse_url: rbd://fsid/pool/image/snapshot, each piece unquoted. */
export function parseRbdUrl(url: string): { fsid: string; pool: string; image: string; snapshot: string } | string {
  const prefix = 'rbd://';
  if (!url.startsWith(prefix)) return 'Not stored in rbd';
  const pieces = url.slice(prefix.length).split('/').map((p) => { try { return decodeURIComponent(p); } catch { return ''; } });
  if (pieces.includes('')) return 'Blank components';
  if (pieces.length !== 4) return 'Not an rbd snapshot';
  const [fsid, pool, image, snapshot] = pieces as [string, string, string, string];
  return { fsid, pool, image, snapshot };
}

/**
 * The URLs of an image's locations as Nova's image API reads them (nova/image/glance.py, with
 * include_locations): `locations`, then `direct_url` when it is not among them.
 */
export function locationUrls(image: ImageRecord): string[] {
  const urls: string[] = [];
  if (Array.isArray(image.locations)) {
    for (const l of image.locations as unknown[]) {
      const url = (l as { url?: unknown } | null)?.url;
      if (typeof url === 'string') urls.push(url);
    }
  }
  if (typeof image.direct_url === 'string' && !urls.includes(image.direct_url)) urls.push(image.direct_url);
  return urls;
}

const errCode = (e: unknown) => (e as RbdError)?.code;

export class RbdDisks {
  private readonly pools = new Map<string, Pool>();

  private constructor(private readonly lib: Librbd, private readonly cluster: Cluster, readonly settings: RbdSettings) {}

  static async connect(settings: RbdSettings): Promise<RbdDisks> {
    const { loadLibrbd } = await import('@diskhub/rbd');
    const { librbd, error } = loadLibrbd();
    if (!librbd) throw new ComputeError(`images_type rbd needs librbd (the rbd addon is unavailable: ${error})`);
    let cluster: Cluster;
    try {
      cluster = await librbd.connect(settings.conf, settings.user, settings.keyring, TIMEOUT);
    } catch (e) {
      throw new ComputeError(`cannot connect to the Ceph cluster${settings.user ? ` as client.${settings.user}` : ''}: ${(e as Error).message}`);
    }
    return new RbdDisks(librbd, cluster, settings);
  }

  get fsid(): string { return this.lib.fsid(this.cluster); }

  /** `<instance uuid>_<disk name>`, Nova's Rbd.rbd_name. */
  static diskName(instanceUuid: string, disk: string): string { return `${instanceUuid}_${disk}`; }

  /** The spec the rbd CLI and libvirt use: pool/name. */
  spec(name: string): string { return `${this.settings.pool}/${name}`; }

  private async pool(name: string): Promise<Pool> {
    let p = this.pools.get(name);
    if (!p) {
      try {
        p = await this.lib.openPool(this.cluster, name);
      } catch (e) {
        throw new ComputeError(`cannot open the pool '${name}': ${(e as Error).message}`);
      }
      this.pools.set(name, p);
    }
    return p;
  }

  /** Runs `fn` on the image `name` of `pool` (at `snapshot`), closing it after. */
  private async withImage<T>(pool: string, name: string, snapshot: string, readOnly: boolean, fn: (image: RbdImage) => Promise<T>): Promise<T> {
    const image = await this.lib.open(await this.pool(pool), name, snapshot, readOnly);
    try {
      return await fn(image);
    } finally {
      await this.lib.close(image);
    }
  }

  /** The size of `name` in the instances' pool, or undefined when it does not exist (RBDDriver.exists / size). */
  async sizeOf(name: string): Promise<number | undefined> {
    try {
      return await this.withImage(this.settings.pool, name, '', true, async (image) => this.lib.size(image));
    } catch (e) {
      if (errCode(e) === 'ENOENT') return undefined;
      throw new ComputeError(`cannot open ${this.spec(name)}: ${(e as Error).message}`);
    }
  }

  /**
   * RBDDriver.is_cloneable for each location, then clone of the first that is: an rbd URL of
   * this cluster, a raw image, a snapshot this user can open. The reasons the others were
   * passed over, when none is.
   */
  async cloneFromLocations(image: ImageRecord, name: string): Promise<{ cloned: string } | { reasons: string[] }> {
    const reasons: string[] = [];
    if (image.disk_format !== 'raw' && image.disk_format !== 'iso') return { reasons: ['Image is not raw format'] };
    for (const url of locationUrls(image)) {
      const loc = parseRbdUrl(url);
      if (typeof loc === 'string') { reasons.push(`${url}: ${loc}`); continue; }
      if (loc.fsid !== this.fsid) { reasons.push(`${url} is in a different ceph cluster`); continue; }
      if (image.disk_format !== 'raw') { reasons.push(`rbd image clone requires image format to be 'raw' but image ${url} is '${image.disk_format}'`); continue; }
      try {
        await this.withImage(loc.pool, loc.image, loc.snapshot, true, async () => undefined);
      } catch (e) {
        reasons.push(`Unable to open image ${url}: ${(e as Error).message}`);
        continue;
      }
      try {
        await this.lib.clone(await this.pool(loc.pool), loc.image, loc.snapshot, await this.pool(this.settings.pool), name);
      } catch (e) {
        const why = errCode(e) === 'EPERM' || errCode(e) === 'EACCES' ? `no write permission on storage pool ${this.settings.pool}` : (e as Error).message;
        throw new ComputeError(`cannot clone ${loc.pool}/${loc.image}@${loc.snapshot} to ${this.spec(name)}: ${why}`);
      }
      return { cloned: `${loc.pool}/${loc.image}@${loc.snapshot}` };
    }
    return { reasons: reasons.length ? reasons : ['No image locations are accessible'] };
  }

  /** RBDDriver.resize. */
  async resize(name: string, size: number): Promise<void> {
    await this.withImage(this.settings.pool, name, '', false, (image) => this.lib.resize(image, size));
  }

  /**
   * RBDDriver.import_image (`rbd import`) of a local disk image of any format the engine reads:
   * its virtual disk, zero blocks left unwritten (the new image reads them as zeroes). A failed
   * import removes what it made.
   */
  async importFrom(path: string, name: string): Promise<number> {
    const source = await openImage(path, {});
    try {
      const pool = await this.pool(this.settings.pool);
      await this.lib.create(pool, name, source.size, IMPORT_ORDER);
      try {
        await this.withImage(this.settings.pool, name, '', false, async (image) => {
          const buf = new Uint8Array(CHUNK);
          for await (const e of source.blockStatus(0, source.size)) {
            if (!e.data && e.zero) continue;
            for (let at = e.offset; at < e.offset + e.length; at += CHUNK) {
              const piece = buf.subarray(0, Math.min(CHUNK, e.offset + e.length - at));
              await source.read(piece, at);
              await this.lib.write(image, at, [piece], 4096);
            }
          }
          await this.lib.drain(image);
        });
      } catch (e) {
        await this.lib.remove(pool, name).catch(() => undefined);
        throw new ComputeError(`cannot import ${path} into ${this.spec(name)}: ${(e as Error).message}`);
      }
      return source.size;
    } finally {
      await source.close();
    }
  }

  /**
   * Rbd.snapshot_extract's reading side: the disk's bytes (a clone reads through to its parent
   * where it has no data of its own) into a new sparse raw file at `path`.
   */
  async exportTo(name: string, path: string): Promise<number> {
    return this.withImage(this.settings.pool, name, '', true, async (image) => {
      const size = this.lib.size(image);
      const out = await openFile(path, 'wx');
      try {
        const buf = new Uint8Array(CHUNK);
        for (let at = 0; at < size; at += CHUNK) {
          const piece = buf.subarray(0, Math.min(CHUNK, size - at));
          const n = await this.lib.read(image, at, piece);
          if (n !== piece.length) throw new ComputeError(`${this.spec(name)}: short read at ${at}`);
          if (!isZero(piece)) await out.write(piece, 0, piece.length, at);
        }
        await out.truncate(size);
      } finally {
        await out.close();
      }
      return size;
    });
  }

  /** The instance's images in the pool (driver._cleanup_rbd: names starting with `<uuid>_`). */
  async instanceImages(instanceUuid: string): Promise<string[]> {
    return (await this.lib.list(await this.pool(this.settings.pool))).filter((n) => n.startsWith(`${instanceUuid}_`)).sort();
  }

  async remove(name: string): Promise<void> {
    await this.lib.remove(await this.pool(this.settings.pool), name);
  }

  async close(): Promise<void> {
    for (const p of this.pools.values()) this.lib.closePool(p);
    this.pools.clear();
    await this.lib.shutdown(this.cluster);
  }
}
