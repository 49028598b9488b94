/**
 * A stored image as a read-only ByteSource of the disk engine, read through `Store.read`, so
 * the inspector, x-diskhub/inside and any later inspection open an image in any store (file,
 * RBD, Swift, S3) without a local copy: the engine reads headers and tables (a few KiB to a
 * few MiB of a many-GiB image), and only those ranges are fetched.
 *
 * Reads go through a small cache of aligned blocks: a format driver reads the same header,
 * L1 table or directory many times in small pieces, and each store round trip costs a network
 * request on remote stores. Concurrent reads of one block share one request.
 */
import { DiskError, type ByteSource, type HostExtent } from '@diskhub/disk';
import type { Store } from './store.js';

/**
 * A store that can say where an object's holes are (the file store: SEEK_DATA/SEEK_HOLE), so a
 * sparse raw image's allocation shows its holes. Optional, beside the contract.
 */
export interface StoreWithExtents extends Store {
  hostExtents(location: string, offset: number, length: number): AsyncIterable<HostExtent>;
}
const hasExtents = (s: Store): s is StoreWithExtents => typeof (s as Partial<StoreWithExtents>).hostExtents === 'function';

export interface StoreSourceOptions {
  /** Bytes per cached block (a power of two). */
  blockSize?: number;
  /** Blocks kept (least recently used dropped first). */
  blocks?: number;
}

const DEFAULT_BLOCK = 256 * 1024;
const DEFAULT_BLOCKS = 64;

export class StoreSource implements ByteSource {
  readonly name: string;
  readonly readOnly = true;
  private readonly blockSize: number;
  private readonly maxBlocks: number;
  /** Block index → its bytes (shorter at the end of the object); Map order is the LRU order. */
  private readonly cache = new Map<number, Promise<Buffer>>();
  private sizeKnown: number | null = null;
  /** Store reads made (for tests and logs: how much of the image was fetched). */
  reads = 0;
  bytesFetched = 0;

  constructor(private readonly store: Store, private readonly location: string, options: StoreSourceOptions = {}) {
    // The location is the name the engine puts in its messages: never a credential (the contract).
    this.name = location;
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK;
    this.maxBlocks = options.blocks ?? DEFAULT_BLOCKS;
    if (this.blockSize <= 0 || (this.blockSize & (this.blockSize - 1)) !== 0) throw new RangeError('blockSize must be a power of two');
  }

  async size(): Promise<number> {
    return this.sizeKnown ??= await this.store.size(this.location);
  }

  private block(index: number): Promise<Buffer> {
    const hit = this.cache.get(index);
    if (hit) {
      this.cache.delete(index);
      this.cache.set(index, hit);
      return hit;
    }
    const p = this.store.read(this.location, index * this.blockSize, this.blockSize).then((b) => {
      this.reads++;
      this.bytesFetched += b.length;
      return b;
    });
    // A failed read is not kept: the next attempt asks the store again.
    p.catch(() => { if (this.cache.get(index) === p) this.cache.delete(index); });
    this.cache.set(index, p);
    while (this.cache.size > this.maxBlocks) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const size = await this.size();
    const end = Math.min(offset + buf.length, size);
    if (offset >= end) return 0;
    // A read of many blocks (a data copy, not metadata) goes to the store in one request, uncached.
    if (end - offset > this.blockSize * 4) {
      const data = await this.store.read(this.location, offset, end - offset);
      this.reads++;
      this.bytesFetched += data.length;
      buf.set(data, 0);
      return data.length;
    }
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((end - 1) / this.blockSize);
    const blocks = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => this.block(first + i)));
    let done = 0;
    for (let i = 0; i < blocks.length; i++) {
      const base = (first + i) * this.blockSize;
      const from = Math.max(offset, base) - base;
      const to = Math.min(end, base + this.blockSize) - base;
      const piece = blocks[i]!.subarray(from, to);
      buf.set(piece, done);
      done += piece.length;
      if (piece.length < to - from) break; // the object ended early (it shrank): a short read
    }
    return done;
  }

  private readOnlyError(): DiskError {
    return new DiskError('EROFS', `${this.name}: a stored image is read-only`);
  }
  async write(): Promise<void> { throw this.readOnlyError(); }
  async truncate(): Promise<void> { throw this.readOnlyError(); }
  async punchHole(): Promise<void> { throw this.readOnlyError(); }
  async allocate(): Promise<void> { throw this.readOnlyError(); }

  /** Where the store says the holes are; a store that cannot tell: everything is data. */
  async *hostExtents(offset: number, length: number): AsyncIterable<HostExtent> {
    const end = Math.min(offset + length, await this.size());
    if (end <= offset) return;
    if (hasExtents(this.store)) yield* this.store.hostExtents(this.location, offset, end - offset);
    else yield { offset, length: end - offset, data: true };
  }

  async allocatedSize(): Promise<number> { return this.size(); }
  async flush(): Promise<void> {}
  async close(): Promise<void> { this.cache.clear(); }
}
