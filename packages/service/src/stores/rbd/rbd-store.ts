/**
 * The Ceph RBD store, as glance_store's rbd driver keeps images (glance_store/_drivers/rbd.py):
 * one RBD image per Glance image in a pool (`images`), named by the image's id, with objects of
 * rbd_store_chunk_size and the cluster's default image features; once written, a snapshot
 * `snap` that is protected, so Nova and Cinder can clone it (copy-on-write layering); located by
 * `rbd://<fsid>/<pool>/<image>/snap`. Deleting unprotects and removes the snapshot, then the
 * image; a snapshot with clones is in use, and its image is kept (Glance's InUseByStore).
 *
 * What diskhub adds: the data is written under a temporary image name (the contract's tempKey)
 * and renamed to the image's id on commit (rbd rename), so a crash leaves only a temporary image,
 * which `sweep` removes; zero blocks are not written (thin provisioning: Ceph reads unwritten
 * ranges as zeroes); reads are ranged.
 *
 * It reaches Ceph through librbd (the @diskhub/rbd addon), not the rbd CLI: ranged reads need
 * librbd (`rbd export` has no range), and BENCHMARKS.md compares both ways for whole objects.
 */
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadLibrbd, type Cluster, type Image, type Librbd, type Pool, type RbdError } from '@diskhub/rbd';
import { StoreError, type LiveKeys, type Store, type StoreType, type StoreWriter } from '../store.js';
import { drained } from '../drained.js';
// Zero blocks left unwritten: the service's write unit, as the file store leaves holes.
import { ZERO_BLOCK } from '../file/sparse-writes.js';
import { formatRbdLocation, parseRbdLocation, type RbdLocation } from './location.js';

export interface RbdStoreOptions {
  /** The store's name in the configuration (Glance's enabled_backends key). */
  id?: string;
  description?: string;
  /** rbd_store_pool: the pool holding the images (default `images`). */
  pool?: string;
  /** rbd_store_user: the cephx user, with or without `client.` (default: librados's, client.admin). */
  user?: string;
  /** rbd_store_ceph_conf: ceph.conf's path (default: librados's search, /etc/ceph/ceph.conf first). */
  confFile?: string;
  /** rbd_store_keyring (diskhub's): the user's keyring (default: the one ceph.conf names). */
  keyring?: string;
  /** rbd_store_chunk_size: the RBD object size in MiB, a power of two from 1 to 64 (default 8). */
  chunkSizeMiB?: number;
  /**
   * rados_connect_timeout: seconds allowed to connect, and to each monitor and OSD operation
   * (default 30; Glance's -1, no limit, would let an unreachable cluster hang init()).
   */
  connectTimeout?: number;
  /**
   * rbd_thin_provisioning: leave whole zero blocks unwritten (default true; Glance's default is
   * false, but the service's writer hands whole 64 KiB blocks, so skipping them costs a compare).
   */
  thinProvisioning?: boolean;
  /** A download's reads in flight and their size (default SEND_DEPTH of SEND_CHUNK; bench/rbd.mjs compares others). */
  sendDepth?: number;
  sendChunk?: number;
  /**
   * rbd_store_partial_tag (diskhub's): a tag in the names of this deployment's partial uploads
   * (`diskhub-partial-<tag>.<image>-<random>`), so that its sweep removes only its own. Several
   * diskhub deployments (or test runs) writing to one pool each take their own; without one,
   * a sweep removes only untagged partial uploads. Committed images keep Glance's names.
   */
  partialTag?: string;
}

const TEMP_PREFIX = 'diskhub-partial-';
/** What a partial-upload tag may be: it ends at the first '.', which no image id has. */
const PARTIAL_TAG = /^[A-Za-z0-9_-]{1,32}$/;
/** Glance's snapshot name (glance_store DEFAULT_SNAPNAME), which Nova and Cinder clone. */
const SNAPSHOT = 'snap';
/**
 * A download reads SEND_CHUNK per request with SEND_DEPTH requests in flight: `rbd export`'s
 * shape (rbd_concurrent_management_ops = 10 reads of 4 MiB), which BENCHMARKS.md measured against
 * the four 8 MiB reads the store kept before (issue 19, "Ceph RBD store" and the import section).
 */
const SEND_CHUNK = 4 << 20;
const SEND_DEPTH = 10;
const SEND_SLICE = 1 << 20;
/** Images kept open for ranged reads (a snapshot never changes, so a handle stays valid). */
const OPEN_FOR_READ = 16;

const UNAVAILABLE = new Set(['ETIMEDOUT', 'ESHUTDOWN', 'ENOTCONN', 'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ECANCELED']);

interface ReadHandle {
  image: Promise<Image>;
  users: number;
}

export class RbdStore implements Store {
  readonly id: string;
  readonly type: StoreType = 'rbd';
  readonly description: string;
  readonly pool: string;
  private readonly user: string;
  private readonly confFile: string;
  private readonly keyring: string;
  private readonly order: number;
  private readonly timeout: number;
  private readonly thin: boolean;
  /** The name prefix of this store's partial uploads (TEMP_PREFIX and its tag). */
  private readonly partialPrefix: string;
  private readonly sendDepth: number;
  private readonly sendChunk: number;
  private rbd: Librbd | null = null;
  private cluster: Cluster | null = null;
  private fsid = '';
  private readonly pools = new Map<string, Promise<Pool>>();
  private readonly readHandles = new Map<string, ReadHandle>();
  /**
   * Images open for writing, by temporary key: close() closes them (librbd's images must not
   * outlive their cluster handle), and sweep closes one the database no longer lists as live.
   */
  private readonly writing = new Map<string, Image>();

  constructor(opts: RbdStoreOptions = {}) {
    this.id = opts.id ?? 'rbd';
    this.pool = opts.pool || 'images';
    this.user = (opts.user ?? '').replace(/^client\./, '');
    this.confFile = opts.confFile ?? '';
    this.keyring = opts.keyring ?? '';
    const chunk = opts.chunkSizeMiB ?? 8;
    if (!Number.isInteger(chunk) || chunk < 1 || chunk > 64) throw new StoreError(`rbd store '${this.id}': rbd_store_chunk_size must be 1 to 64 (MiB), not ${chunk}`);
    // As glance_store: order = int(log2(chunk size)), so a chunk size that is no power of two rounds down.
    this.order = 20 + Math.floor(Math.log2(chunk));
    this.timeout = opts.connectTimeout ?? 30;
    if (!(this.timeout > 0)) throw new StoreError(`rbd store '${this.id}': rados_connect_timeout must be more than 0 seconds`);
    this.thin = opts.thinProvisioning ?? true;
    this.sendDepth = opts.sendDepth ?? SEND_DEPTH;
    this.sendChunk = opts.sendChunk ?? SEND_CHUNK;
    this.description = opts.description ?? `Ceph RBD pool ${this.pool}`;
    if (opts.partialTag !== undefined && !PARTIAL_TAG.test(opts.partialTag)) throw new StoreError(`rbd store '${this.id}': rbd_store_partial_tag must be 1 to 32 letters, digits, '-' or '_', not '${opts.partialTag}'`);
    this.partialPrefix = `${TEMP_PREFIX}${opts.partialTag ? `${opts.partialTag}.` : ''}`;
  }

  /** Whether `name` is one of this store's partial uploads (its tag, or untagged when it has none). */
  private ownPartial(name: string): boolean {
    return name.startsWith(this.partialPrefix) && !name.slice(this.partialPrefix.length).includes('.');
  }

  /** "client.glance" (or librados's default user). */
  private get userName(): string {
    return this.user ? `client.${this.user}` : 'the default Ceph user';
  }

  async init(): Promise<void> {
    if (this.cluster) return;
    const { librbd, error } = loadLibrbd();
    if (!librbd) throw new StoreError(`rbd store '${this.id}': librbd is not available (${error ?? 'unknown reason'})`, 'unavailable');
    this.rbd = librbd;
    const connecting = librbd.connect(this.confFile, this.user, this.keyring, this.timeout);
    // librados honours the timeouts it was given; this is the guard should it ever not.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('no answer'), { code: 'ETIMEDOUT' })), (this.timeout + 10) * 1000);
    });
    try {
      this.cluster = await Promise.race([connecting, late]);
    } catch (e) {
      // A connection that completes after the guard gave up is closed, not leaked.
      connecting.then((c) => librbd!.shutdown(c), () => {});
      const code = (e as RbdError).code;
      const hint = code === 'EACCES' || code === 'EPERM' ? ` (is ${this.userName}'s key in its keyring the cluster's?)`
        : code === 'ENOENT' ? ` (a missing ceph.conf or keyring${this.keyring ? ` ${this.keyring}` : ''}?)`
        : code === 'ETIMEDOUT' ? ` (no monitor answered within ${this.timeout} s; rados_connect_timeout)` : '';
      throw this.error(e, `cannot connect to the Ceph cluster as ${this.userName}${this.confFile ? ` with ${this.confFile}` : ''}`, hint, 'unavailable');
    } finally {
      clearTimeout(timer);
    }
    this.fsid = librbd.fsid(this.cluster);
    // Opening the pool and listing it checks the pool exists and the user may read it.
    const pool = await this.poolHandle(this.pool);
    try {
      await librbd.list(pool);
    } catch (e) {
      throw this.error(e, `cannot list pool ${this.pool} as ${this.userName}`);
    }
  }

  newTempKey(imageId: string): string {
    return `${this.partialPrefix}${imageId}-${randomBytes(6).toString('hex')}`;
  }

  async begin(tempKey: string, sizeHint?: number): Promise<StoreWriter> {
    const rbd = this.connected();
    if (!this.ownPartial(tempKey) || !validName(tempKey)) throw new StoreError(`rbd store '${this.id}': bad temporary key '${tempKey}'`);
    const pool = await this.poolHandle(this.pool);
    // Without a size the image grows as glance_store grows it: doubling steps, at most 8 GiB.
    let capacity = sizeHint && sizeHint > 0 ? sizeHint : 0;
    let step = 1 << this.order;
    try {
      await rbd.create(pool, tempKey, capacity, this.order);
    } catch (e) {
      throw this.error(e, `cannot create image ${this.pool}/${tempKey}`);
    }
    let image: Image;
    try {
      image = await rbd.open(pool, tempKey, '', false);
    } catch (e) {
      await rbd.remove(pool, tempKey).catch(() => {});
      throw this.error(e, `cannot open image ${this.pool}/${tempKey}`);
    }
    this.writing.set(tempKey, image);
    let length = 0;
    let open = true;
    /** commit or discard was called: no more writes. */
    let finished = false;
    let committed = false;
    let discarded = false;
    /** The image handle is gone once sweep closed it: no call may use it after that. */
    const swept = () => {
      if (this.writing.get(tempKey) !== image) throw new StoreError(`rbd store '${this.id}': the write of ${tempKey} was abandoned (swept or the store closed)`);
    };
    const closeImage = async () => {
      if (!open) return;
      open = false;
      // sweep may have closed it already
      if (this.writing.get(tempKey) !== image) return;
      this.writing.delete(tempKey);
      await rbd.close(image);
    };
    /**
     * Appends `bytes` bytes: `chunks`, or (null) zeroes left unwritten — a thin image's new
     * range reads as zeroes, as write() skips zero blocks. The image grows as glance_store grows it.
     */
    const append = async (bytes: number, chunks: Buffer[] | null) => {
      if (finished) throw new StoreError(`rbd store '${this.id}': write after commit or discard`);
      swept();
      try {
        const end = length + bytes;
        if (end > capacity) {
          capacity = Math.max(end, capacity + step);
          step = Math.min(step * 2, 8 * 2 ** 30);
          await rbd.resize(image, capacity);
        }
        if (chunks) {
          // Waiting for room here, not in the addon: a write waiting there holds one of libuv's
          // four worker threads (file reads, hashing), and a slow cluster would hold them all.
          for (let pause = 1; !rbd.room(image); pause = Math.min(pause * 2, 20)) await sleep(pause);
          await rbd.write(image, length, chunks, this.thin ? ZERO_BLOCK : 0);
        }
      } catch (e) {
        throw this.error(e, `cannot write image ${this.pool}/${tempKey}`);
      }
      length += bytes;
    };
    return {
      tempKey,
      write: (chunks: Buffer[]) => {
        let bytes = 0;
        for (const c of chunks) bytes += c.length;
        return append(bytes, chunks);
      },
      ...(this.thin ? { writeZeroes: (bytes: number) => append(bytes, null) } : {}),
      commit: async (imageId: string) => {
        if (finished) throw new StoreError(`rbd store '${this.id}': commit after commit or discard`);
        if (!validName(imageId) || imageId.startsWith(TEMP_PREFIX)) throw new StoreError(`rbd store '${this.id}': bad image name '${imageId}'`);
        swept();
        finished = true;
        try {
          await rbd.drain(image);
          if (capacity !== length) await rbd.resize(image, length);
          // Glance's order: the data, then the protected snapshot that clones are made from.
          await rbd.snapCreate(image, SNAPSHOT);
          await rbd.snapProtect(image, SNAPSHOT);
        } catch (e) {
          throw this.error(e, `cannot finish image ${this.pool}/${tempKey}`);
        }
        try {
          // The one step that makes the data visible under the image's name. The image is still
          // open (watched) until then, so a sweep elsewhere leaves it alone.
          await rbd.rename(pool, tempKey, imageId);
        } catch (e) {
          const exists = (e as RbdError).code === 'EEXIST';
          throw this.error(e, exists ? `RBD image ${this.pool}/${imageId} already exists` : `cannot rename image ${this.pool}/${tempKey} to ${imageId}`);
        }
        committed = true;
        await closeImage().catch(() => {});
        return formatRbdLocation(this.fsid, this.pool, imageId, SNAPSHOT);
      },
      discard: async () => {
        if (committed || discarded) return;
        finished = discarded = true;
        await closeImage().catch(() => {});
        // After a failed commit the temporary image may already carry the protected snapshot.
        await this.removeImage(this.pool, tempKey, SNAPSHOT);
      },
    };
  }

  async read(location: string, offset: number, length: number): Promise<Buffer> {
    const loc = this.locate(location);
    return this.withReadHandle(loc, async (rbd, image) => {
      const size = rbd.size(image);
      if (offset >= size || length <= 0) return Buffer.alloc(0);
      const buf = Buffer.allocUnsafe(Math.min(length, size - offset));
      const got = await rbd.read(image, offset, buf);
      return got === buf.length ? buf : buf.subarray(0, got);
    });
  }

  /**
   * A download: sendDepth reads of sendChunk in flight while the socket sends, into buffers
   * reused once the socket has taken their bytes (librbd splits each read across the objects
   * it spans and reads them in parallel).
   */
  async send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void> {
    const loc = this.locate(location);
    await this.withReadHandle(loc, async (rbd, image) => {
      const size = rbd.size(image);
      const end = Math.min(size, range ? range.end + 1 : size);
      const free: Buffer[] = [];
      const reading: Promise<{ buf: Buffer; bytes: number } | null>[] = [];
      let pos = range?.start ?? 0;
      let failure: unknown = null;
      const next = () => {
        const n = Math.min(this.sendChunk, end - pos);
        const buf = free.pop() ?? Buffer.allocUnsafe(this.sendChunk);
        const at = pos;
        pos += n;
        reading.push(rbd.read(image, at, buf.subarray(0, n)).then((bytes) => ({ buf, bytes }), (e) => { failure ??= e; return null; }));
      };
      try {
        while (pos < end || reading.length) {
          while (reading.length < this.sendDepth && pos < end && !out.destroyed && failure === null) next();
          if (!reading.length) break;
          const got = await reading.shift()!;
          if (!got || failure !== null || out.destroyed) continue;
          if (got.bytes === 0) { pos = end; continue; }
          // Handed to the socket a MiB at a time, so a client that leaves stops it within one.
          const { buf, bytes } = got;
          for (let at = 0; at < bytes && !out.destroyed; at += SEND_SLICE) {
            const last = at + SEND_SLICE >= bytes;
            if (!out.write(buf.subarray(at, Math.min(bytes, at + SEND_SLICE)), last ? () => free.push(buf) : undefined)) await drained(out);
          }
        }
      } finally {
        await Promise.all(reading);
      }
      if (failure !== null) throw this.error(failure, `cannot read image ${loc.pool ?? this.pool}/${loc.image}`);
      if (!out.destroyed) out.end();
    });
  }

  async size(location: string): Promise<number> {
    return this.withReadHandle(this.locate(location), async (rbd, image) => rbd.size(image));
  }

  async delete(location: string): Promise<void> {
    const loc = this.locate(location);
    await this.forgetReadHandles(loc.pool ?? this.pool, loc.image);
    await this.removeImage(loc.pool ?? this.pool, loc.image, loc.snapshot);
  }

  async sweep(live: LiveKeys): Promise<string[]> {
    const rbd = this.connected();
    const pool = await this.poolHandle(this.pool);
    let names: string[];
    try {
      names = await rbd.list(pool);
    } catch (e) {
      throw this.error(e, `cannot list pool ${this.pool}`);
    }
    const removed: string[] = [];
    for (const name of names) {
      if (!this.ownPartial(name) || live.has(name)) continue;
      // A write of this process that the database does not list is abandoned: its image closes
      // (its writer's next call fails), or the open image would keep it from being removed.
      const abandoned = this.writing.get(name);
      if (abandoned) {
        this.writing.delete(name);
        await rbd.close(abandoned).catch(() => {});
      }
      // Still open: by a writer elsewhere (whose snapshot must not be touched), or by a process
      // that died less than the OSDs' watch timeout (30 s) ago. The next sweep removes it.
      if (await this.inUse(pool, name)) continue;
      try {
        await this.removeImage(this.pool, name, SNAPSHOT);
        removed.push(name);
      } catch (e) {
        if (!(e instanceof RbdImageBusy)) throw e;
      }
    }
    return removed;
  }

  owns(location: string): boolean {
    const loc = parseRbdLocation(location);
    if (!loc) return false;
    return loc.fsid === null || !this.fsid || loc.fsid === this.fsid;
  }

  detail(): Record<string, unknown> {
    return {
      pool: this.pool,
      user: this.user ? `client.${this.user}` : null,
      ceph_conf: this.confFile || null,
      fsid: this.fsid || null,
      chunk_size: 2 ** (this.order - 20),
      thin_provisioning: this.thin,
    };
  }

  async close(): Promise<void> {
    const rbd = this.rbd;
    const cluster = this.cluster;
    if (!rbd || !cluster) return;
    this.cluster = null;
    const writing = [...this.writing.values()];
    this.writing.clear();
    await Promise.all(writing.map((i) => rbd.close(i).catch(() => {})));
    const handles = [...this.readHandles.values()];
    this.readHandles.clear();
    await Promise.all(handles.map((h) => h.image.then((i) => rbd.close(i), () => {})));
    const pools = [...this.pools.values()];
    this.pools.clear();
    for (const p of await Promise.allSettled(pools)) if (p.status === 'fulfilled') rbd.closePool(p.value);
    await rbd.shutdown(cluster);
  }

  // ------------------------------------------------------------------ helpers

  private connected(): Librbd {
    if (!this.rbd || !this.cluster) throw new StoreError(`rbd store '${this.id}' is not connected (init() first)`, 'unavailable');
    return this.rbd;
  }

  private locate(location: string): RbdLocation {
    const loc = parseRbdLocation(location);
    if (!loc || !this.owns(location)) throw new StoreError(`location is not in rbd store '${this.id}'`, 'not-found');
    return loc;
  }

  private poolHandle(name: string): Promise<Pool> {
    const rbd = this.connected();
    let pool = this.pools.get(name);
    if (!pool) {
      pool = rbd.openPool(this.cluster!, name).catch((e: unknown) => {
        this.pools.delete(name);
        throw this.error(e, `cannot open pool ${name}`, (e as RbdError).code === 'ENOENT' ? ' (no such pool)' : '');
      });
      this.pools.set(name, pool);
    }
    return pool;
  }

  /**
   * Runs `use` with the image a location names opened read-only (its snapshot, or its head for
   * the old one-component form), from a small cache of open images; a read that fails as the
   * cluster being unreachable is retried once on a freshly opened image.
   */
  private async withReadHandle<T>(loc: RbdLocation, use: (rbd: Librbd, image: Image) => Promise<T>): Promise<T> {
    const rbd = this.connected();
    const poolName = loc.pool ?? this.pool;
    const key = `${poolName}/${loc.image}@${loc.snapshot ?? ''}`;
    for (let attempt = 0; ; attempt++) {
      let handle = this.readHandles.get(key);
      if (!handle) {
        handle = { image: this.poolHandle(poolName).then((p) => rbd.open(p, loc.image, loc.snapshot ?? '', true)), users: 0 };
        this.readHandles.set(key, handle);
        this.trimReadHandles();
      } else {
        // most recently used last
        this.readHandles.delete(key);
        this.readHandles.set(key, handle);
      }
      handle.users++;
      try {
        return await use(rbd, await handle.image);
      } catch (e) {
        if (this.readHandles.get(key) === handle) this.readHandles.delete(key);
        if (e instanceof StoreError) throw e;
        const err = this.error(e, `cannot read image ${poolName}/${loc.image}${loc.snapshot ? `@${loc.snapshot}` : ''}`);
        if (err.kind !== 'unavailable' || attempt > 0) throw err;
      } finally {
        handle.users--;
        if (handle.users === 0 && this.readHandles.get(key) !== handle) handle.image.then((i) => rbd.close(i), () => {});
      }
    }
  }

  /** Closes the least recently used idle images beyond OPEN_FOR_READ. */
  private trimReadHandles(): void {
    for (const [key, h] of this.readHandles) {
      if (this.readHandles.size <= OPEN_FOR_READ) break;
      if (h.users > 0) continue;
      this.readHandles.delete(key);
      h.image.then((i) => this.rbd!.close(i), () => {});
    }
  }

  private async forgetReadHandles(pool: string, image: string): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const [key, h] of this.readHandles) {
      if (!key.startsWith(`${pool}/${image}@`)) continue;
      this.readHandles.delete(key);
      if (h.users === 0) closing.push(h.image.then((i) => this.rbd!.close(i), () => {}));
    }
    await Promise.all(closing);
  }

  /**
   * glance_store's delete: unprotect and remove the snapshot, then remove the image. A snapshot
   * with clones cannot be unprotected (EBUSY): the image is in use and stays, whole. A missing
   * image is no error.
   */
  private async removeImage(poolName: string, name: string, snapshot: string | null): Promise<void> {
    const rbd = this.connected();
    const pool = await this.poolHandle(poolName);
    const spec = `${poolName}/${name}`;
    if (snapshot) {
      let image: Image;
      try {
        image = await rbd.open(pool, name, '', false);
      } catch (e) {
        if ((e as RbdError).code === 'ENOENT') return;
        throw this.error(e, `cannot open image ${spec}`);
      }
      try {
        try {
          await rbd.snapUnprotect(image, snapshot);
        } catch (e) {
          const code = (e as RbdError).code;
          // EINVAL: not protected (any more); ENOENT: no such snapshot.
          if (code === 'EBUSY') throw new RbdImageBusy(`rbd store '${this.id}': RBD image ${spec} is in use: its snapshot ${snapshot} has clones (${await this.clones(pool, name, snapshot)}); it was not deleted`);
          if (code !== 'EINVAL' && code !== 'ENOENT') throw this.error(e, `cannot unprotect snapshot ${spec}@${snapshot}`);
        }
        try {
          await rbd.snapRemove(image, snapshot);
        } catch (e) {
          if ((e as RbdError).code !== 'ENOENT') throw this.error(e, `cannot remove snapshot ${spec}@${snapshot}`);
        }
      } finally {
        await rbd.close(image).catch(() => {});
      }
    }
    try {
      await rbd.remove(pool, name);
    } catch (e) {
      const code = (e as RbdError).code;
      if (code === 'ENOENT') return;
      if (code === 'EBUSY') throw new RbdImageBusy(`rbd store '${this.id}': RBD image ${spec} is in use (open or mapped by another client); it was not deleted`);
      if (code === 'ENOTEMPTY') throw new StoreError(`RBD image ${spec} has snapshots other than ${snapshot ?? 'Glance\'s'}; it was not deleted`);
      throw this.error(e, `cannot remove image ${spec}`);
    }
  }

  /** Whether another client has the image open for writing (a missing image is not in use). */
  private async inUse(pool: Pool, name: string): Promise<boolean> {
    const rbd = this.connected();
    let image: Image;
    try {
      // read-only: this handle does not watch the image itself
      image = await rbd.open(pool, name, '', true);
    } catch (e) {
      if ((e as RbdError).code === 'ENOENT') return false;
      throw this.error(e, `cannot open image ${this.pool}/${name}`);
    }
    try {
      return (await rbd.watchers(image)) > 0;
    } catch (e) {
      throw this.error(e, `cannot list the watchers of image ${this.pool}/${name}`);
    } finally {
      await rbd.close(image).catch(() => {});
    }
  }

  /**
   * The clones of `name@snapshot`, for the in-use message ("vms/disk-1, ..."); Glance's user
   * usually may not read the pools clones live in (caps 'profile rbd pool=images').
   */
  private async clones(pool: Pool, name: string, snapshot: string): Promise<string> {
    const rbd = this.connected();
    try {
      const image = await rbd.open(pool, name, snapshot, true);
      try {
        const children = await rbd.children(image);
        return children.length ? children.join(', ') : 'none listed';
      } finally {
        await rbd.close(image);
      }
    } catch {
      return `${this.userName} may not list them`;
    }
  }

  /** The addon's error as a StoreError: what failed, the errno's text, never a key. */
  private error(e: unknown, what: string, hint = '', kind?: StoreError['kind']): StoreError {
    if (e instanceof StoreError) return e;
    const code = (e as RbdError | null)?.code;
    const k = code === 'ENOENT' ? 'not-found' : code === 'ENOSPC' || code === 'EDQUOT' ? 'full'
      : code && UNAVAILABLE.has(code) ? 'unavailable' : 'failed';
    return new StoreError(`rbd store '${this.id}': ${what}: ${(e as Error)?.message ?? String(e)}${hint}`, kind && k === 'failed' ? kind : k);
  }
}

/**
 * An image that is in use (Glance's InUseByStore): open elsewhere, or its snapshot has clones.
 * The image is kept whole.
 */
export class RbdImageBusy extends StoreError {
  constructor(message: string) { super(message, 'in-use'); }
}

/** An RBD image name librbd accepts: no '/', '@' or NUL, and not empty. */
function validName(name: string): boolean {
  return name.length > 0 && name.length < 256 && !/[/@\0]/.test(name);
}
