/**
 * The image cache of one API node (Glance's image cache, glance/image_cache/): whole images
 * kept on local disk, so a download of an image from a remote store (RBD, Swift, S3) is
 * served from this node's disk the next time. Glance's semantics:
 *
 * - A download of an active image not in the cache streams from the store and, at the same
 *   time, fills the cache; a second download of the same image while that fill runs streams
 *   from the store alone (one fill per image). The client never waits for the cache: a fill
 *   that falls more than MAX_FILL_BEHIND bytes behind the download is abandoned.
 * - An entry becomes visible only when complete and verified: its data hashed as it arrives
 *   must equal the image's os_hash_value (sha512; md5 `checksum` for images without one).
 *   Incomplete fills live in `incomplete/` (removed on start: Glance's cleaner of stalled
 *   images) and a fill that does not verify is removed at once (Glance's invalid images).
 * - The cache is size-bounded (image_cache_max_size): after each fill the least recently
 *   used entries are removed until the rest fit (Glance's pruner, run here when needed
 *   instead of from cron). Images larger than the bound are never cached.
 * - `queue/` holds the ids queued for prefetching (PUT /v2/cache/{id}); the prefetcher
 *   (prefetcher.ts) fills them.
 *
 * What Glance does not do: every cached block is checked when served. Each entry has a
 * sidecar (`<id>.blocks`) with the sha256 of each 1 MiB block, written after the whole file
 * verified; a block that no longer matches (bit rot, a truncated or overwritten file) is
 * never sent — the entry is dropped and the rest of the download comes from the store.
 */
import { mkdir, open, readFile, readdir, rename, rm, stat, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { createHash, webcrypto } from 'node:crypto';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { UploadHasher } from '../hashing.js';
import { drained } from '../stores/drained.js';
import type { Logger } from '../log.js';

/** What the cache needs of an image. */
export interface CacheableImage {
  id: string;
  status: string;
  location: string | null;
  size: number | string | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
}

/** What the cache needs of the store that holds an image's data (the store contract's `send`). */
export interface CacheSource {
  send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void>;
}

/** One entry as GET /v2/cache lists it (Glance's sqlite driver's columns; times in seconds). */
export interface CachedImageInfo { image_id: string; hits: number; last_accessed: number; last_modified: number; size: number }

interface Entry {
  size: number;
  /** The image hash the data verified against when it was filled. */
  hash: string;
  /** sha256 of each BLOCK of the data, concatenated. */
  blocks: Buffer;
  lastAccessed: number;
  lastModified: number;
  hits: number;
}

const BLOCK = 1 << 20;
const DIGEST = 32;
/** A download never waits for its cache fill; a fill this far behind is given up. */
const MAX_FILL_BEHIND = 64 << 20;
/** Buffers a cached download reads ahead into (reused, as the file store's send does). */
const SEND_BUFFERS = 3;
const SIDECAR = '.blocks';
/** Image ids are UUIDs (any case); anything else is not a cache file name. */
const ID = /^[0-9A-Za-z-]{1,64}$/;

/** The hash the cache verifies an image's data against, or null when the image has none. */
function expectedHash(img: CacheableImage): { algo: 'sha512' | 'md5'; value: string } | null {
  if (img.os_hash_algo === 'sha512' && img.os_hash_value) return { algo: 'sha512', value: img.os_hash_value };
  if (img.checksum) return { algo: 'md5', value: img.checksum };
  return null;
}

export class ImageCache {
  private readonly entries = new Map<string, Entry>();
  private readonly filling = new Map<string, CacheFill>();
  private readonly incompleteDir: string;
  readonly queueDir: string;

  constructor(readonly dir: string, readonly maxSize: number, private readonly log: Logger) {
    this.incompleteDir = join(dir, 'incomplete');
    this.queueDir = join(dir, 'queue');
  }

  /** Create the directories, drop what a crash left (incomplete fills, half-written entries), load the entries. */
  async init(): Promise<void> {
    await mkdir(this.incompleteDir, { recursive: true });
    await mkdir(this.queueDir, { recursive: true });
    for (const name of await readdir(this.incompleteDir)) await rm(join(this.incompleteDir, name), { force: true });
    const names = new Set(await readdir(this.dir));
    for (const name of names) {
      if (name === 'incomplete' || name === 'queue') continue;
      const id = name.endsWith(SIDECAR) ? name.slice(0, -SIDECAR.length) : name;
      if (!ID.test(id)) continue;
      if (name.endsWith(SIDECAR)) {
        if (!names.has(id)) await rm(join(this.dir, name), { force: true });
        continue;
      }
      const entry = await this.loadEntry(id).catch(() => null);
      if (entry) this.entries.set(id, entry);
      else await this.removeFiles(id);
    }
    await this.prune();
  }

  private async loadEntry(id: string): Promise<Entry | null> {
    const meta = JSON.parse(await readFile(join(this.dir, id + SIDECAR), 'utf8')) as { image_id: string; hash: string; size: number; block_size: number; block_sha256: string };
    const st = await stat(join(this.dir, id));
    const blocks = Buffer.from(meta.block_sha256, 'base64');
    if (meta.image_id !== id || meta.block_size !== BLOCK || st.size !== meta.size || blocks.length !== Math.ceil(meta.size / BLOCK) * DIGEST) return null;
    return { size: meta.size, hash: meta.hash, blocks, lastAccessed: st.atimeMs / 1000, lastModified: st.mtimeMs / 1000, hits: 0 };
  }

  private async removeFiles(id: string): Promise<void> {
    // Data first: an entry is valid only with both files, so a crash in between leaves an orphan sidecar, which init removes.
    await rm(join(this.dir, id), { force: true });
    await rm(join(this.dir, id + SIDECAR), { force: true });
  }

  /** The bytes the cache holds. */
  get used(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.size;
    return n;
  }

  isCached(id: string): boolean { return this.entries.has(id); }

  list(): CachedImageInfo[] {
    return [...this.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([id, e]) => ({ image_id: id, hits: e.hits, last_accessed: e.lastAccessed, last_modified: e.lastModified, size: e.size }));
  }

  /** Remove one entry; false when it was not cached. */
  async delete(id: string): Promise<boolean> {
    if (!ID.test(id) || !this.entries.delete(id)) return false;
    await this.removeFiles(id);
    return true;
  }

  /** Remove every entry; returns how many. */
  async clear(): Promise<number> {
    const ids = [...this.entries.keys()];
    for (const id of ids) await this.delete(id);
    return ids.length;
  }

  // --- the prefetch queue (one empty file per id; its mtime orders the queue)

  async queued(): Promise<string[]> {
    const names = (await readdir(this.queueDir)).filter((n) => ID.test(n));
    const times = await Promise.all(names.map((n) => stat(join(this.queueDir, n)).then((s) => s.mtimeMs, () => Infinity)));
    return names.map((n, i) => ({ n, t: times[i]! })).filter((x) => x.t !== Infinity).sort((a, b) => a.t - b.t || (a.n < b.n ? -1 : 1)).map((x) => x.n);
  }

  async queue(id: string): Promise<void> {
    if (!ID.test(id)) throw new Error(`bad image id '${id}'`);
    await writeFile(join(this.queueDir, id), '', { flag: 'a' });
  }

  /** Take an id off the queue; false when it was not queued. */
  async dequeue(id: string): Promise<boolean> {
    if (!ID.test(id)) return false;
    return rm(join(this.queueDir, id)).then(() => true, () => false);
  }

  async clearQueue(): Promise<number> {
    let n = 0;
    for (const id of await this.queued()) if (await this.dequeue(id)) n++;
    return n;
  }

  // --- data

  /** Whether the cache would take `img`: active, with data, a hash to verify against, and within the bound. */
  cacheable(img: CacheableImage): boolean {
    const size = Number(img.size);
    return img.status === 'active' && !!img.location && size > 0 && size <= this.maxSize && expectedHash(img) !== null;
  }

  /**
   * Send the image's data (or bytes range.start..range.end) to `out` and end it: from the
   * cache when it holds the image, else from `source`, filling the cache on the way when
   * this is a whole download nobody else is filling. `img` is the image as the database has
   * it now (active, its location and hashes).
   */
  async send(img: CacheableImage, source: CacheSource, out: Writable, range?: { start: number; end: number }): Promise<void> {
    const entry = this.entries.get(img.id);
    const hash = expectedHash(img);
    if (entry && hash && entry.hash === hash.value) {
      entry.hits++;
      entry.lastAccessed = Date.now() / 1000;
      void utimes(join(this.dir, img.id), entry.lastAccessed, entry.lastModified).catch(() => {});
      return this.sendCached(img, entry, source, out, range);
    }
    if (entry) await this.delete(img.id); // filled for other data than the image has now: never served
    if (range || this.filling.has(img.id) || !this.cacheable(img)) return source.send(img.location!, out, range);
    const fill = this.startFill(img);
    const tee = teeWritable(out, fill);
    try {
      await source.send(img.location!, tee, range);
    } catch (e) {
      fill.abandon('the store failed');
      throw e;
    }
  }

  /** Fill the cache with `img` from `source` (the prefetcher); false when it is already cached, being filled or not cacheable. */
  async prefetch(img: CacheableImage, source: CacheSource): Promise<boolean> {
    if (this.entries.get(img.id)?.hash === expectedHash(img)?.value || this.filling.has(img.id) || !this.cacheable(img)) return false;
    const fill = this.startFill(img);
    const sink = new Writable({
      highWaterMark: 4 << 20,
      write: (chunk: Buffer, _e, cb) => { fill.push(chunk); fill.whenBehindAtMost(8 << 20).then(() => cb(), cb); },
      final: (cb) => { fill.end(); cb(); },
      destroy: (err, cb) => { fill.abandon('the prefetch was cut off'); cb(err); },
    });
    try {
      await source.send(img.location!, sink);
    } catch (e) {
      fill.abandon('the store failed');
      throw e;
    }
    return fill.done;
  }

  private startFill(img: CacheableImage): CacheFill {
    const fill = new CacheFill(this, img, expectedHash(img)!, join(this.incompleteDir, img.id), this.log);
    this.filling.set(img.id, fill);
    void fill.done.finally(() => this.filling.delete(img.id));
    return fill;
  }

  /** A fill that verified: move it into place as an entry, then prune to the bound. Called by CacheFill. */
  async commit(id: string, tmp: string, hash: string, size: number, blocks: Buffer): Promise<void> {
    const meta = { image_id: id, hash, size, block_size: BLOCK, block_sha256: blocks.toString('base64') };
    await writeFile(`${tmp}${SIDECAR}`, JSON.stringify(meta));
    await rename(`${tmp}${SIDECAR}`, join(this.dir, id + SIDECAR));
    await rename(tmp, join(this.dir, id));
    const t = Date.now() / 1000;
    this.entries.set(id, { size, hash, blocks, lastAccessed: t, lastModified: t, hits: 0 });
    this.log.info('image cached', { image: id, bytes: size });
    await this.prune();
  }

  /** Glance's pruner: least recently used entries go until the cache is within its bound. */
  async prune(): Promise<void> {
    let used = this.used;
    if (used <= this.maxSize) return;
    const lru = [...this.entries].sort(([, a], [, b]) => a.lastAccessed - b.lastAccessed);
    for (const [id, e] of lru) {
      if (used <= this.maxSize) break;
      await this.delete(id);
      used -= e.size;
      this.log.info('image cache pruned', { image: id, bytes: e.size });
    }
  }

  /**
   * A cached download: whole blocks are read (a few ahead), each checked against its
   * sha256 before any of it is sent. A block that does not match drops the entry, and the
   * rest of the download comes from the store, from the first byte not yet sent.
   */
  private async sendCached(img: CacheableImage, entry: Entry, source: CacheSource, out: Writable, range?: { start: number; end: number }): Promise<void> {
    const start = range?.start ?? 0;
    const end = range ? range.end + 1 : entry.size;
    let fh: FileHandle;
    try {
      fh = await open(join(this.dir, img.id), 'r');
    } catch {
      await this.delete(img.id);
      return source.send(img.location!, out, range);
    }
    const pool = new BufferPool(SEND_BUFFERS, out);
    const read = async (block: number) => {
      const buf = await pool.take();
      if (!buf) return null;
      const len = Math.min(BLOCK, entry.size - block * BLOCK);
      const { bytesRead } = await fh.read(buf, 0, len, block * BLOCK);
      const view = buf.subarray(0, len);
      const ok = bytesRead === len && Buffer.from(await webcrypto.subtle.digest('SHA-256', view)).equals(entry.blocks.subarray(block * DIGEST, (block + 1) * DIGEST));
      return { buf, view, ok };
    };
    let sent = start;
    let corrupt = false;
    try {
      const last = Math.ceil(end / BLOCK) - 1;
      let block = Math.floor(start / BLOCK);
      let next = block <= last ? read(block) : null;
      while (next) {
        const got = await next;
        if (!got || out.destroyed) { if (got) pool.give(got.buf); break; }
        next = block + 1 <= last ? read(block + 1) : null;
        if (!got.ok) { pool.give(got.buf); corrupt = true; break; }
        const from = Math.max(start, block * BLOCK) - block * BLOCK;
        const to = Math.min(end, (block + 1) * BLOCK) - block * BLOCK;
        sent += to - from;
        block++;
        if (!out.write(got.view.subarray(from, to), () => pool.give(got.buf))) await drained(out);
      }
      if (next) { const got = await next.catch(() => null); if (got) pool.give(got.buf); }
    } finally {
      await fh.close();
    }
    if (corrupt) {
      this.log.warn('image cache entry corrupt: dropped, the download continues from the store', { image: img.id, offset: sent });
      await this.delete(img.id);
      if (sent < end) return source.send(img.location!, out, { start: sent, end: end - 1 });
    }
    if (!out.destroyed) out.end();
  }
}

/**
 * One image being written into the cache: chunks are copied in as they pass (push never
 * waits), hashed (md5 and sha512 off the main thread, sha256 per block) and written to
 * `incomplete/<id>`; when the input ends whole and the hash matches, the entry is committed.
 */
class CacheFill {
  private readonly chunks: Buffer[] = [];
  private behind = 0;
  private ended = false;
  private abandoned: string | null = null;
  private wake: (() => void) | null = null;
  private readonly behindWaiters: { limit: number; resolve: () => void }[] = [];
  /** Resolves true once committed, false when abandoned or not verified. */
  readonly done: Promise<boolean>;

  constructor(private readonly cache: ImageCache, private readonly img: CacheableImage, private readonly hash: { algo: 'sha512' | 'md5'; value: string }, private readonly tmp: string, private readonly log: Logger) {
    this.done = this.run().catch((e) => {
      this.log.warn('image cache fill failed', { image: img.id, error: (e as Error).message });
      return false;
    });
  }

  push(chunk: Buffer): void {
    if (this.abandoned || this.ended) return;
    this.behind += chunk.length;
    if (this.behind > MAX_FILL_BEHIND) { this.abandon('the cache fell behind the download'); return; }
    this.chunks.push(Buffer.from(chunk));
    this.wake?.();
  }

  end(): void { this.ended = true; this.wake?.(); }

  abandon(why: string): void {
    // Once the store has handed over all the data, the fill finishes whatever the client does.
    if (this.abandoned || this.ended) return;
    this.abandoned = why;
    this.chunks.length = 0;
    this.wake?.();
    for (const w of this.behindWaiters.splice(0)) w.resolve();
  }

  /** Resolves when at most `limit` bytes wait to be written (or the fill is over). */
  whenBehindAtMost(limit: number): Promise<void> {
    if (this.behind <= limit || this.abandoned) return Promise.resolve();
    return new Promise((resolve) => this.behindWaiters.push({ limit, resolve }));
  }

  private async run(): Promise<boolean> {
    const fh = await open(this.tmp, 'w', 0o600);
    let offset = 0;
    const blocks: Buffer[] = [];
    let short = false;
    const hasher = new UploadHasher(async (batch) => {
      // Batches are whole 1 MiB blocks but the last: the block digests line up with the file's blocks.
      if (short) throw new Error('a short batch before the end of the data');
      if (batch.length !== BLOCK) short = true;
      blocks.push(createHash('sha256').update(batch).digest());
      let at = 0;
      while (at < batch.length) at += (await fh.write(batch, at, batch.length - at, offset + at)).bytesWritten;
      offset += batch.length;
    });
    try {
      for (;;) {
        if (this.abandoned) throw new Abandoned(this.abandoned);
        const chunk = this.chunks.shift();
        if (chunk) {
          await hasher.update(chunk);
          this.behind -= chunk.length;
          for (let i = this.behindWaiters.length - 1; i >= 0; i--) {
            if (this.behind <= this.behindWaiters[i]!.limit) this.behindWaiters.splice(i, 1)[0]!.resolve();
          }
          continue;
        }
        if (this.ended) break;
        await new Promise<void>((r) => { this.wake = r; });
        this.wake = null;
      }
      const digests = await hasher.digest();
      await fh.close();
      const size = Number(this.img.size);
      const got = this.hash.algo === 'sha512' ? digests.sha512 : digests.md5;
      if (offset !== size || got !== this.hash.value) {
        this.log.warn('image cache fill did not verify: removed', { image: this.img.id, bytes: offset, size });
        await rm(this.tmp, { force: true });
        return false;
      }
      await this.cache.commit(this.img.id, this.tmp, this.hash.value, size, Buffer.concat(blocks));
      return true;
    } catch (e) {
      await hasher.drop();
      await fh.close().catch(() => {});
      await rm(this.tmp, { force: true });
      if (e instanceof Abandoned) { this.log.info('image cache fill abandoned', { image: this.img.id, reason: e.message }); return false; }
      throw e;
    } finally {
      for (const w of this.behindWaiters.splice(0)) w.resolve();
    }
  }
}

class Abandoned extends Error {}

/**
 * The download's response as the store's `send` sees it: every chunk goes to the client and
 * a copy to the cache fill. A chunk counts as written when the client's socket has taken it
 * (so a store that reuses its buffers after the write callback stays safe); the cache copy is
 * made at once and never holds the client up.
 */
function teeWritable(res: Writable, fill: CacheFill): Writable {
  const tee = new Writable({
    highWaterMark: 4 << 20,
    write(chunk: Buffer, _e, cb) {
      fill.push(chunk);
      if (res.destroyed) { cb(new Error('the client went away')); return; }
      res.write(chunk, (err) => cb(err ?? null));
    },
    final(cb) { fill.end(); res.end(); cb(); },
    destroy(err, cb) { fill.abandon('the download was cut off'); if (!res.destroyed && err) res.destroy(); cb(err); },
  });
  res.once('close', () => { if (!res.writableFinished) tee.destroy(); });
  tee.on('error', () => {}); // a client that leaves is not an error of the service (the store's send sees `destroyed`)
  return tee;
}

/** A few reusable block buffers; take() waits for one to be given back (null when `out` closed). */
class BufferPool {
  private readonly free: Buffer[] = [];
  private made = 0;
  private wake: (() => void) | null = null;

  constructor(private readonly max: number, private readonly out: Writable) {
    out.once('close', () => { this.wake?.(); });
  }

  async take(): Promise<Buffer | null> {
    while (this.free.length === 0 && this.made >= this.max && !this.out.destroyed) await new Promise<void>((r) => { this.wake = r; });
    if (this.out.destroyed) return null;
    if (this.free.length) return this.free.pop()!;
    this.made++;
    return Buffer.allocUnsafeSlow(BLOCK);
  }

  give(buf: Buffer): void { this.free.push(buf); this.wake?.(); this.wake = null; }
}
