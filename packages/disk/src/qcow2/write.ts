/**
 * Writing qcow2 in place (QEMU docs/interop/qcow2.txt "Host cluster management"): new
 * clusters are taken from the end of the file and counted in the refcount blocks (growing the
 * refcount table when it is full); shared clusters (refcount > 1, after a snapshot) are copied
 * before they change; partial writes into unallocated clusters copy the rest of the cluster
 * from the backing image. Metadata is cached and written back in the order that keeps the
 * file consistent after a crash (at worst leaking clusters): data, then refcount blocks, then
 * L2 tables, then the L1 table.
 *
 * One operation runs at a time (allocation and copy-on-write need it); the callers' own
 * parallelism still overlaps compression and reads.
 */
import { zlib } from '../builtins.js';
import { promisify } from 'node:util';
import { checkRange, readBacking, settled, type WriteZeroesOptions } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { PersistentBitmap } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, COMPRESSION_ZSTD, EXT_BITMAPS, MAX_BITMAP_DIRECTORY, decodeL2Entry, getRefcount, parseBitmapExtension,
  compressedSpan, entryOffset, refcountMax, serializeHeader, setRefcount, MAX_BACKING_FILE_NAME,
  BME_FLAG_AUTO, bitmapDataBytes, parseBitmapDirectory, serializeBitmapEntry, serializeBitmapExtension,
} from './layout.js';
import { Qcow2Image, type Qcow2State } from './image.js';

const deflateRaw = (input: Uint8Array, options: import('node:zlib').ZlibOptions = {}): Promise<Buffer> => promisify(zlib().deflateRaw)(input, options);

/** The zstd encoder, loaded on first use (QEMU writes one zstd frame per compressed cluster). */
let zstdModule: Promise<{ compress(data: Uint8Array, level: number): Uint8Array }> | undefined;
function zstd(): Promise<{ compress(data: Uint8Array, level: number): Uint8Array }> {
  zstdModule ??= import('@bokuweb/zstd-wasm').then(async (m) => { await m.init(); return m; });
  return zstdModule;
}
const COPIED = 0x80000000;
const ZERO_FLAG = 1;

/** A byte range of the file to write, gathered so that adjacent pieces go out as one write. */
interface DataWrite {
  host: number;
  data: Uint8Array;
}

/** `convert -C`: `length` bytes at `at` of the host file `from`, to be copied by the kernel to `host`. */
interface HostCopy {
  host: number;
  from: ByteSource;
  at: number;
  length: number;
}

export class Qcow2WritableImage extends Qcow2Image {
  /** Next free host offset: new clusters are appended. */
  protected fileEnd = 0;
  protected reftable: number[] = [];
  protected reftableDirty = false;
  protected readonly refblocks = new Map<number, Uint8Array>();
  protected readonly dirtyRefblocks = new Set<number>();
  protected readonly dirtyL2 = new Set<number>();
  protected l1Dirty = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** Where the next compressed cluster goes, and the end of the host cluster it is in. */
  private compressedAt = 0;
  private compressedEnd = 0;
  private readonly maxRefblocks: number;

  /** data_file_raw: the external data file is kept valid as a raw image of the disk. */
  private readonly dataFileRaw: boolean;

  constructor(source: ByteSource, dataSource: ByteSource, state: Qcow2State) {
    super(source, dataSource, state, true);
    this.dataFileRaw = this.externalData && (state.header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
    this.maxRefblocks = Math.max(8, Math.floor((32 << 20) / this.clusterSize));
  }

  /**
   * Load the refcount table; called once by the driver after construction (which has already
   * repaired an image left dirty by a crash).
   */
  async init(): Promise<void> {
    const h = this.header;
    const cs = this.clusterSize;
    const table = new Uint8Array(h.refcountTableClusters * cs);
    const n = await this.source.read(table, h.refcountTableOffset);
    if (n !== table.length) throw new DiskError('ECORRUPT', `${this.source.name}: refcount table lies past the end of the file`);
    const v = new DataView(table.buffer);
    this.reftable = [];
    for (let i = 0; i < table.length / 8; i++) {
      const hi = v.getUint32(i * 8, false), lo = v.getUint32(i * 8 + 4, false);
      const off = entryOffset(hi, lo);
      if (off % cs !== 0) throw new DiskError('ECORRUPT', `${this.source.name}: refcount block offset 0x${off.toString(16)} unaligned`);
      this.reftable.push(off);
    }
    this.fileEnd = Math.ceil((await this.source.size()) / cs) * cs;
    if (h.version >= 3 && ((h.autoclearFeatures & ~AUTOCLEAR_DATA_FILE_RAW) || parseBitmapExtension(h))) await this.openBitmaps();
  }

  /** What a writable open does with persistent bitmaps: this writer drops them; bitmaps.ts keeps them. */
  protected async openBitmaps(): Promise<void> {
    await this.dropBitmaps();
  }

  /**
   * Persistent dirty bitmaps are not maintained by this writer, so they go before the first
   * write: their clusters are released and the extension removed, and the autoclear bits
   * cleared (qcow2.txt: a writer that does not know a feature clears its autoclear bit).
   */
  protected async dropBitmaps(): Promise<void> {
    const h = this.header;
    const cs = this.clusterSize;
    const release = async (offset: number, length: number) => {
      for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) await this.addRef(c * cs, -1);
    };
    const ext = parseBitmapExtension(h);
    if (ext && (h.autoclearFeatures & AUTOCLEAR_BITMAPS)) {
      for (const bm of this.bitmapList) {
        const table = new Uint8Array(Math.min(bm.tableSize * 8, MAX_BITMAP_DIRECTORY));
        await this.source.read(table, bm.tableOffset);
        const tv = new DataView(table.buffer);
        for (let i = 0; i < table.length / 8; i++) {
          const off = Number(tv.getBigUint64(i * 8, false) & 0x00fffffffffffe00n);
          if (off) await this.addRef(off, -1);
        }
        await release(bm.tableOffset, bm.tableSize * 8);
      }
      await release(ext.directoryOffset, ext.directorySize);
    }
    h.extensions = h.extensions.filter((e) => e.type !== EXT_BITMAPS);
    // data_file_raw is the one autoclear feature this writer keeps true.
    h.autoclearFeatures &= AUTOCLEAR_DATA_FILE_RAW;
    this.bitmapList = [];
    await this.writeRefblocks();
    await this.source.flush();
    await this.source.write(serializeHeader(h, cs), 0);
    await this.source.flush();
  }

  /** Operations queued by serial and not yet finished (quickWrite runs only when there are none). */
  private queued = 0;

  /** Run `fn` after every operation queued before it. */
  protected serial<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const run = this.queue.then(fn, fn);
    const finished = () => { this.queued--; };
    this.queue = run.then(finished, finished);
    return run;
  }

  // ---- refcounts ----

  protected async refblock(offset: number): Promise<Uint8Array> {
    let b = this.refblocks.get(offset);
    if (b) {
      this.refblocks.delete(offset);
      this.refblocks.set(offset, b);
      return b;
    }
    b = new Uint8Array(this.clusterSize);
    const n = await this.source.read(b, offset);
    if (n !== b.length && offset < this.fileEnd - this.clusterSize) {
      throw new DiskError('ECORRUPT', `${this.source.name}: refcount block at 0x${offset.toString(16)} lies past the end of the file`);
    }
    this.refblocks.set(offset, b);
    if (this.refblocks.size > this.maxRefblocks) {
      for (const k of this.refblocks.keys()) {
        if (this.refblocks.size <= this.maxRefblocks) break;
        if (!this.dirtyRefblocks.has(k) && k !== offset) this.refblocks.delete(k);
      }
    }
    return b;
  }

  /**
   * addRef without waiting, when the cluster's refcount block exists and is cached (nearly
   * always while a convert fills an image): returns false, changing nothing, when it cannot.
   */
  protected addRefCached(host: number, delta: number): boolean {
    const cluster = Math.floor(host / this.clusterSize);
    const rb = this.reftable[Math.floor(cluster / this.geo.refcountBlockEntries)];
    const block = rb ? this.refblocks.get(rb) : undefined;
    if (!block) return false;
    this.changeRef(block, rb!, cluster, delta);
    return true;
  }

  /**
   * The refcount of the cluster at `host` after adding `delta` (0: only read it), without
   * waiting: -1, changing nothing, when its refcount block is not cached. A walk over a whole
   * tree (snapshots) changes and then reads each cluster's refcount: one lookup for both.
   */
  protected adjustCachedRefcount(host: number, delta: number): number {
    const cluster = Math.floor(host / this.clusterSize);
    const per = this.geo.refcountBlockEntries;
    const rb = this.reftable[Math.floor(cluster / per)];
    if (!rb) return delta === 0 ? 0 : -1;
    const block = this.refblocks.get(rb);
    if (!block) return -1;
    return delta === 0 ? getRefcount(block, cluster % per, this.geo.refcountBits) : this.changeRef(block, rb, cluster, delta);
  }

  /** Add `delta` to cluster `cluster`'s entry (`i`) in the refcount block `block` (at `rb`); returns the new refcount. */
  private changeRef(block: Uint8Array, rb: number, cluster: number, delta: number, i = cluster % this.geo.refcountBlockEntries): number {
    const value = getRefcount(block, i, this.geo.refcountBits) + delta;
    if (value < 0) throw new DiskError('ECORRUPT', `${this.source.name}: refcount of cluster ${cluster} would drop below zero`);
    if (value > refcountMax(this.geo.refcountBits)) throw new DiskError('ELIMIT', `${this.source.name}: refcount of cluster ${cluster} would overflow ${this.geo.refcountBits} bits`);
    setRefcount(block, i, this.geo.refcountBits, value);
    this.dirtyRefblocks.add(rb);
    return value;
  }

  /** Add `delta` to the refcount of the cluster at `host`, creating refcount blocks as needed. */
  protected async addRef(host: number, delta: number): Promise<void> {
    const cs = this.clusterSize;
    const cluster = Math.floor(host / cs);
    const perBlock = this.geo.refcountBlockEntries;
    const ti = Math.floor(cluster / perBlock);
    if (ti >= this.reftable.length) await this.growReftable(ti + 1);
    let rb = this.reftable[ti]!;
    if (rb === 0) {
      rb = this.fileEnd;
      this.fileEnd += cs;
      this.reftable[ti] = rb;
      this.reftableDirty = true;
      this.refblocks.set(rb, new Uint8Array(cs));
      this.dirtyRefblocks.add(rb);
      // The new block is a cluster too; it is counted where it belongs (perhaps in itself).
      await this.addRef(rb, 1);
    }
    this.changeRef(await this.refblock(rb), rb, cluster, delta);
  }

  /** A bigger refcount table at the end of the file; the old one is freed once the header names the new. */
  private async growReftable(minEntries: number): Promise<void> {
    const cs = this.clusterSize;
    const entries = Math.max(minEntries + 1, this.reftable.length * 2);
    const clusters = Math.ceil((entries * 8) / cs);
    const old = { offset: this.header.refcountTableOffset, clusters: this.header.refcountTableClusters };
    const at = this.fileEnd;
    this.fileEnd += clusters * cs;
    while (this.reftable.length < (clusters * cs) / 8) this.reftable.push(0);
    for (let i = 0; i < clusters; i++) await this.addRef(at + i * cs, 1);
    // Blocks and table must be on disk before the header points at the table.
    await this.writeRefblocks();
    await this.source.write(this.serializeReftable(), at);
    this.header.refcountTableOffset = at;
    this.header.refcountTableClusters = clusters;
    const hv = new Uint8Array(12);
    new DataView(hv.buffer).setBigUint64(0, BigInt(at), false);
    new DataView(hv.buffer).setUint32(8, clusters, false);
    await this.source.flush();
    await this.source.write(hv, 48);
    await this.source.flush();
    this.reftableDirty = false;
    for (let i = 0; i < old.clusters; i++) await this.addRef(old.offset + i * cs, -1);
  }

  protected serializeReftable(): Uint8Array {
    const t = new Uint8Array(this.reftable.length * 8);
    const v = new DataView(t.buffer);
    this.reftable.forEach((off, i) => { if (off) v.setBigUint64(i * 8, BigInt(off), false); });
    return t;
  }

  /** Take `n` contiguous new clusters from the end of the file, counted once each. */
  protected async allocate(n: number): Promise<number> {
    const at = this.fileEnd;
    this.fileEnd += n * this.clusterSize;
    const first = Math.floor(at / this.clusterSize);
    for (let c = first; c < first + n;) {
      // A convert allocates runs of up to an L2 table's clusters: count them a refcount block
      // at a time rather than looking the block up for every cluster.
      const counted = this.addRefsCached(c, first + n - c);
      if (counted > 0) {
        c += counted;
        continue;
      }
      await this.addRef(c * this.clusterSize, 1);
      c++;
    }
    return at;
  }

  /**
   * addRef(+1) without waiting on clusters [cluster, cluster + count) as far as they share one
   * refcount block that exists and is cached: returns how many it counted (0 when that block
   * is not cached; nothing changed then).
   */
  private addRefsCached(cluster: number, count: number): number {
    const per = this.geo.refcountBlockEntries;
    const rb = this.reftable[Math.floor(cluster / per)];
    const block = rb ? this.refblocks.get(rb) : undefined;
    if (!block) return 0;
    const first = cluster % per;
    const end = Math.min(per, first + count);
    if (this.geo.refcountBits === 16) {
      // The default width, big-endian in place: no per-entry calls (a convert counts every
      // cluster it writes here). An entry at its maximum goes the general way, which refuses it.
      for (let i = first; i < end; i++) {
        const value = ((block[2 * i]! << 8) | block[2 * i + 1]!) + 1;
        if (value > 0xffff) this.changeRef(block, rb!, cluster + (i - first), 1, i);
        block[2 * i] = value >> 8;
        block[2 * i + 1] = value & 0xff;
      }
      this.dirtyRefblocks.add(rb!);
    } else {
      for (let i = first; i < end; i++) this.changeRef(block, rb!, cluster + (i - first), 1, i);
    }
    return end - first;
  }

  /**
   * A data cluster for the guest cluster at `clusterStart`: a new cluster of the image, or,
   * with an external data file, the data file's cluster at the same offset (qcow2.txt: data
   * file clusters are not refcounted, and QEMU maps them one to one).
   */
  private async allocateData(clusterStart: number): Promise<number> {
    return this.externalData ? clusterStart : this.allocate(1);
  }

  /** Whether an L2 entry maps a data cluster (in an external data file, offset 0 is one when COPIED is set). */
  protected mapsCluster(hi: number, lo: number): boolean {
    if (hi & 0x40000000) return false;
    return entryOffset(hi, lo) !== 0 || (this.externalData && (hi & COPIED) !== 0);
  }

  /** Drop one reference to whatever an L2 entry points at (a cluster, or compressed bytes). */
  protected async release(hi: number, lo: number, at: number, table: DataView): Promise<void> {
    // Clusters of an external data file are not refcounted.
    if (this.externalData && !(hi & 0x40000000)) return;
    if (hi & 0x40000000) {
      const m = decodeL2Entry(table.getBigUint64(at, false), this.geo.clusterBits, this.header.version);
      const { start, end } = compressedSpan(m);
      for (let c = Math.floor(start / this.clusterSize); c * this.clusterSize < end; c++) await this.addRef(c * this.clusterSize, -1);
      return;
    }
    const host = entryOffset(hi, lo);
    if (host) await this.addRef(host, -1);
  }

  // ---- L1 / L2 ----

  private setL1(i: number, l2Offset: number): void {
    this.setL2(this.l1View, i * 8, l2Offset, 0);
    this.l1Dirty = true;
  }

  /** The L2 table for L1 index `i`, ready to be changed: allocated, or copied when shared. */
  protected async l2ForWrite(i: number): Promise<{ offset: number; view: DataView; table: Uint8Array }> {
    const hi = this.l1View.getUint32(i * 8, false);
    let offset = this.l1Entry(i);
    let table: Uint8Array;
    if (offset === 0) {
      offset = await this.allocate(1);
      table = new Uint8Array(this.clusterSize);
      this.cacheL2(offset, table);
      this.setL1(i, offset);
    } else {
      table = await this.l2Table(offset);
      if (!(hi & COPIED)) {
        // Shared with a snapshot: write a copy and let the snapshot keep the original.
        const copy = table.slice();
        const old = offset;
        offset = await this.allocate(1);
        this.cacheL2(offset, copy);
        this.setL1(i, offset);
        await this.addRef(old, -1);
        table = copy;
      }
    }
    this.dirtyL2.add(offset);
    return { offset, table, view: new DataView(table.buffer, table.byteOffset, table.byteLength) };
  }

  protected override evictL2(): void {
    for (const k of this.l2Cache.keys()) {
      if (!this.dirtyL2.has(k)) {
        this.l2Cache.delete(k);
        return;
      }
    }
  }

  /** An L1 or L2 entry for a table or cluster of our own (COPIED: refcount 1). */
  protected setL2(view: DataView, at: number, host: number, flags: number): void {
    view.setUint32(at, (COPIED | Math.floor(host / 2 ** 32)) >>> 0, false);
    view.setUint32(at + 4, ((host % 2 ** 32) | flags) >>> 0, false);
  }

  // ---- writes ----

  async write(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'write');
    if (buf.length === 0) return;
    const quick = this.queued === 0 ? this.quickWrite(buf, offset) : undefined;
    if (quick) return quick;
    // Allocation and metadata under the queue; the data itself goes out after it, so that
    // several writes' data are in flight at once (write-back waits for them before it writes
    // any L2 table that points at them).
    const pending: DataWrite[] = [];
    let flight: Promise<void> | undefined;
    await this.serial(async () => {
      await this.writeRange(offset, buf.length, buf, pending);
      // Registered before the queue moves on, so the next operation sees these bytes in flight.
      flight = this.track(pending);
    });
    await flight;
  }

  /**
   * A write of whole clusters that nothing maps yet, inside one L2 table that is cached and our
   * own, whose new clusters are counted in one cached refcount block: what a convert filling an
   * image writes nearly every time. Allocated, counted and mapped here without waiting (the
   * general path's chain of awaits per write was most of the writer's CPU in a convert), and
   * the data write started; the metadata follows at write-back as on the general path.
   * Undefined, with nothing changed, when the general path is needed. The caller makes sure no
   * other operation is queued.
   */
  private quickWrite(buf: Uint8Array, offset: number): Promise<void> | undefined {
    const cs = this.clusterSize;
    if (this.externalData || this.geo.extendedL2 || offset % cs !== 0 || buf.length % cs !== 0) return undefined;
    const span = this.l2Span;
    const l1i = Math.floor(offset / span);
    if (offset + buf.length > (l1i + 1) * span) return undefined;
    const l2Offset = this.l1Entry(l1i);
    // Not our own (COPIED clear: shared with a snapshot), or not cached: the general path.
    if (l2Offset === 0 || !(this.l1View.getUint32(l1i * 8, false) & COPIED)) return undefined;
    const table = this.l2Cache.get(l2Offset);
    if (!table) return undefined;
    const n = buf.length / cs;
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const index = (offset - l1i * span) / cs;
    if (this.newClusterRun(view, index, n) !== n) return undefined;
    const first = this.fileEnd / cs;
    const per = this.geo.refcountBlockEntries;
    if (Math.floor(first / per) !== Math.floor((first + n - 1) / per)) return undefined;
    const rb = this.reftable[Math.floor(first / per)];
    if (!rb || !this.refblocks.has(rb)) return undefined;
    const host = this.fileEnd;
    this.fileEnd += n * cs;
    this.addRefsCached(first, n);
    for (let k = 0; k < n; k++) this.setL2(view, (index + k) * this.geo.l2EntrySize, host + k * cs, 0);
    this.dirtyL2.add(l2Offset);
    const flight = this.track([{ host, data: buf }]);
    if (this.dirtyL2.size <= 64 && this.dirtyRefblocks.size <= this.maxRefblocks / 2) return flight;
    return settled([flight, this.serial(() => this.maybeWriteBack())]);
  }

  /** Data writes still in flight, with the host ranges they cover. */
  private readonly inflight = new Map<Promise<void>, Array<[number, number]>>();

  private track(pending: DataWrite[], copies: HostCopy[] = []): Promise<void> {
    const ranges = pending.map((d): [number, number] => [d.host, d.host + d.data.length]);
    for (const c of copies) ranges.push([c.host, c.host + c.length]);
    const p = copies.length
      ? settled([this.flushData(pending), ...copies.map((c) => this.dataSource.copyFrom!(c.from, c.at, c.host, c.length))])
      : this.flushData(pending);
    this.inflight.set(p, ranges);
    const done = () => { this.inflight.delete(p); };
    p.then(done, done);
    return p;
  }

  /** Wait for in-flight data writes that touch [from, to) (a later write there must land after them). */
  private async settle(from: number, to: number): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const [p, ranges] of this.inflight) if (ranges.some(([a, b]) => a < to && from < b)) waits.push(p);
    if (waits.length) await Promise.allSettled(waits);
  }

  /**
   * `convert -C` into this image (QEMU's qcow2_co_copy_range_to): the range's clusters are
   * allocated as a write would allocate them and the kernel copies the bytes of `from` into
   * them (copy_file_range). Pieces that do not fill new clusters of their own (a cluster's
   * edge, a cluster already mapped, extended L2, an external data file) are read from `from`
   * and written; either way every byte is stored as data, as QEMU's copy stores it. Throws
   * EUNSUPPORTED where the data file cannot take copies (encrypted images).
   */
  async copyRangeFrom(from: ByteSource, fromOffset: number, offset: number, length: number): Promise<void> {
    checkRange(this.size, offset, length, 'copy');
    if (!this.dataSource.copyFrom) throw new DiskError('EUNSUPPORTED', `${this.source.name}: copy offloading is not supported for this image`);
    if (length === 0) return;
    const pending: DataWrite[] = [];
    const copies: HostCopy[] = [];
    let flight: Promise<void> | undefined;
    await this.serial(async () => {
      await this.writeRange(offset, length, null, pending, { from, at: fromOffset, out: copies });
      flight = this.track(pending, copies);
    });
    await flight;
  }

  /**
   * Write `data` (or zeroes when null) over [offset, offset+length). With `out`, the data
   * writes are handed back to the caller instead of being written here. With `copy`, the
   * bytes are those of `copy.from` from `copy.at` on, and whole new clusters are handed back
   * in `copy.out` for the kernel to copy instead of being read.
   */
  private async writeRange(offset: number, length: number, data: Uint8Array | null, out?: DataWrite[], copy?: { from: ByteSource; at: number; out: HostCopy[] }): Promise<void> {
    const cs = this.clusterSize;
    const span = this.l2Span;
    const pending: DataWrite[] = out ?? [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const l1i = Math.floor(pos / span);
      const tableEnd = Math.min(end, (l1i + 1) * span);
      const l2 = await this.l2ForWrite(l1i);
      while (pos < tableEnd) {
        const clusterStart = Math.floor(pos / cs) * cs;
        const index = (clusterStart - l1i * span) / cs;
        if ((data || copy) && pos === clusterStart) {
          // Whole clusters nothing maps yet (an image being filled, as by convert): one
          // allocation for the run and one data write, no per-cluster round trips.
          const run = this.newClusterRun(l2.view, index, Math.floor((tableEnd - pos) / cs));
          if (run > 0) {
            const host = await this.allocate(run);
            if (data) pending.push({ host, data: data.subarray(pos - offset, pos - offset + run * cs) });
            else copy!.out.push({ host, from: copy!.from, at: copy!.at + (pos - offset), length: run * cs });
            for (let k = 0; k < run; k++) this.setL2(l2.view, (index + k) * this.geo.l2EntrySize, host + k * cs, 0);
            pos += run * cs;
            continue;
          }
        }
        const clusterEnd = Math.min(tableEnd, clusterStart + cs);
        const piece = data ? data.subarray(pos - offset, clusterEnd - offset) : new Uint8Array(clusterEnd - pos);
        // (Past the end of `from`: zeroes.)
        if (copy) await copy.from.read(piece, copy.at + (pos - offset));
        await this.writeInCluster(l2.view, index, clusterStart, pos, piece, pending);
        pos = clusterEnd;
      }
      if (!out && pending.length > 64) await this.flushData(pending);
    }
    if (!out) await this.flushData(pending);
    await this.maybeWriteBack();
  }

  /**
   * How many of the `max` L2 entries from `index` are all-zero (nothing allocated, no flags),
   * in an image whose data clusters are its own and whose entries are plain (no extended L2):
   * clusters that a whole-cluster write may simply allocate.
   */
  private newClusterRun(view: DataView, index: number, max: number): number {
    if (this.externalData || this.geo.extendedL2) return 0;
    const es = this.geo.l2EntrySize;
    let n = 0;
    while (n < max && view.getUint32((index + n) * es, false) === 0 && view.getUint32((index + n) * es + 4, false) === 0) n++;
    return n;
  }

  /** What a reader sees in the cluster at `clusterStart` now (zero-padded past the disk's end). */
  private async currentCluster(clusterStart: number): Promise<Uint8Array> {
    const cluster = new Uint8Array(this.clusterSize);
    await super.read(cluster.subarray(0, Math.min(this.clusterSize, this.size - clusterStart)), clusterStart);
    return cluster;
  }

  /** Write `piece` at guest offset `pos` inside the cluster at `clusterStart`. */
  private async writeInCluster(view: DataView, index: number, clusterStart: number, pos: number, piece: Uint8Array, pending: DataWrite[]): Promise<void> {
    const cs = this.clusterSize;
    const at = index * this.geo.l2EntrySize;
    const hi = view.getUint32(at, false), lo = view.getUint32(at + 4, false);
    const compressed = (hi & 0x40000000) !== 0;
    const host = compressed ? 0 : entryOffset(hi, lo);
    const mapped = this.mapsCluster(hi, lo);
    const owned = mapped && (hi & COPIED) !== 0;
    const inner = pos - clusterStart;
    if (this.geo.extendedL2 && !compressed && (owned || !mapped)) {
      await this.writeSubclusters(view, at, clusterStart, pos, piece, mapped ? host : undefined, pending);
      return;
    }
    const zeroFlag = !this.geo.extendedL2 && this.header.version >= 3 && (lo & ZERO_FLAG) !== 0;
    if (owned && !zeroFlag) {
      await this.settle(host, host + cs);
      pending.push({ host: host + inner, data: piece });
      return;
    }
    // A new cluster (or a zeroed one of our own): the old contents with the piece laid over.
    let cluster: Uint8Array;
    if (inner === 0 && piece.length === cs) cluster = piece;
    else {
      cluster = await this.currentCluster(clusterStart);
      cluster.set(piece, inner);
    }
    let target = host;
    if (owned && zeroFlag) await this.settle(host, host + cs);
    if (!(owned && zeroFlag)) {
      target = await this.allocateData(clusterStart);
      if (compressed || mapped) await this.release(hi, lo, at, view);
    }
    pending.push({ host: target, data: cluster });
    this.setL2(view, at, target, 0);
    if (this.geo.extendedL2) {
      view.setUint32(at + 8, 0, false);
      view.setUint32(at + 12, 0xffffffff, false);
    }
  }

  /**
   * Extended L2, a cluster of our own or none yet: only the touched subclusters change; the
   * others keep falling through to the backing image or reading as zeroes.
   */
  private async writeSubclusters(view: DataView, at: number, clusterStart: number, pos: number, piece: Uint8Array, host: number | undefined, pending: DataWrite[]): Promise<void> {
    const sc = this.geo.subclusterSize;
    let zeroBits = view.getUint32(at + 8, false) >>> 0;
    let allocBits = view.getUint32(at + 12, false) >>> 0;
    const first = Math.floor((pos - clusterStart) / sc);
    const last = Math.floor((pos - clusterStart + piece.length - 1) / sc);
    const from = clusterStart + first * sc;
    const to = Math.min(clusterStart + (last + 1) * sc, this.size);
    const target = host ?? (await this.allocateData(clusterStart));
    if (host !== undefined) await this.settle(host, host + this.clusterSize);
    let region = piece;
    if (pos !== from || pos + piece.length !== to) {
      // Partly covered subclusters at either end keep their old bytes around the piece.
      region = new Uint8Array(to - from);
      for (const s of new Set([first, last])) {
        const a = clusterStart + s * sc;
        const slot = region.subarray(a - from, Math.min(region.length, a - from + sc));
        const bit = 2 ** s;
        if (allocBits & bit) await this.dataSource.read(slot, target + s * sc);
        else if (!(zeroBits & bit)) await readBacking(this.backing, slot, a);
      }
      region.set(piece, pos - from);
    }
    pending.push({ host: target + (from - clusterStart), data: region });
    for (let s = first; s <= last; s++) {
      allocBits = (allocBits | 2 ** s) >>> 0;
      zeroBits = (zeroBits & ~(2 ** s)) >>> 0;
    }
    this.setL2(view, at, target, 0);
    view.setUint32(at + 8, zeroBits, false);
    view.setUint32(at + 12, allocBits, false);
  }

  /** Write gathered data; pieces adjacent in the file go out together (pwritev). */
  private async flushData(pending: DataWrite[]): Promise<void> {
    pending.sort((a, b) => a.host - b.host);
    const writes: Promise<void>[] = [];
    let i = 0;
    while (i < pending.length) {
      let j = i + 1;
      let end = pending[i]!.host + pending[i]!.data.length;
      while (j < pending.length && pending[j]!.host === end && j - i < 512) { end += pending[j]!.data.length; j++; }
      const group = pending.slice(i, j);
      if (group.length === 1) writes.push(this.dataSource.write(group[0]!.data, group[0]!.host));
      else if (this.dataSource.writev) writes.push(this.dataSource.writev(group.map((g) => g.data), group[0]!.host));
      else for (const g of group) writes.push(this.dataSource.write(g.data, g.host));
      i = j;
      if (writes.length >= 8) await Promise.all(writes.splice(0));
    }
    await Promise.all(writes);
    pending.length = 0;
  }

  async writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    checkRange(this.size, offset, length, 'write zeroes');
    await this.serial(() => this.zeroRange(offset, length, !!options.mayUnmap, false));
  }

  async discard(offset: number, length: number): Promise<void> {
    checkRange(this.size, offset, length, 'discard');
    await this.serial(() => this.zeroRange(offset, length, true, true));
  }

  /**
   * Whole clusters become zero clusters (v3) or unallocated (v2 without a backing image, or a
   * discard); partial clusters are written with zeroes, except by discard, which may leave them.
   */
  private async zeroRange(offset: number, length: number, unmap: boolean, isDiscard: boolean): Promise<void> {
    const cs = this.clusterSize;
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const clusterStart = Math.floor(pos / cs) * cs;
      const clusterEnd = Math.min(clusterStart + cs, this.size);
      const stop = Math.min(end, clusterEnd);
      if (pos !== clusterStart || stop !== clusterEnd) {
        if (!isDiscard) await this.writeRange(pos, stop - pos, null);
        pos = stop;
        continue;
      }
      const l1i = Math.floor(pos / this.l2Span);
      const index = (clusterStart - l1i * this.l2Span) / cs;
      const v3 = this.header.version >= 3;
      if (!v3 && !this.backing && this.l1Entry(l1i) === 0) { pos = stop; continue; }
      if (!v3 && this.backing && !isDiscard) {
        await this.writeRange(pos, stop - pos, null);
        pos = stop;
        continue;
      }
      const l2 = await this.l2ForWrite(l1i);
      const at = index * this.geo.l2EntrySize;
      const hi = l2.view.getUint32(at, false), lo = l2.view.getUint32(at + 4, false);
      const host = hi & 0x40000000 ? 0 : entryOffset(hi, lo);
      const mapped = this.mapsCluster(hi, lo);
      if (this.dataFileRaw) {
        // The data file must stay the disk by itself: its bytes become zeroes, the mapping stays.
        if (mapped) {
          await this.settle(host, host + cs);
          await this.dataSource.punchHole(host, stop - clusterStart);
        } else await this.writeRange(pos, stop - pos, null);
        pos = stop;
        continue;
      }
      // v3 can mark a cluster of our own as zero and keep it; v2 can only let it go.
      const keep = v3 && !unmap && mapped && (hi & COPIED) !== 0;
      if (!keep && (mapped || (hi & 0x40000000))) await this.release(hi, lo, at, l2.view);
      if (this.geo.extendedL2) {
        this.setL2(l2.view, at, keep ? host : 0, 0);
        if (!keep) l2.view.setUint32(at, 0, false);
        l2.view.setUint32(at + 8, 0xffffffff, false);
        l2.view.setUint32(at + 12, 0, false);
      } else if (v3) {
        if (keep) this.setL2(l2.view, at, host, ZERO_FLAG);
        else { l2.view.setUint32(at, 0, false); l2.view.setUint32(at + 4, ZERO_FLAG, false); }
      } else {
        l2.view.setUint32(at, 0, false);
        l2.view.setUint32(at + 4, 0, false);
      }
      pos = stop;
    }
    await this.maybeWriteBack();
  }

  // ---- compressed clusters (convert -c) ----

  async writeCompressed(buf: Uint8Array, offset: number): Promise<void> {
    const cs = this.clusterSize;
    if (offset % cs !== 0 || (buf.length !== cs && offset + buf.length !== this.size) || buf.length > cs) {
      throw new DiskError('EINVAL', `compressed writes must cover whole clusters (offset ${offset}, ${buf.length} bytes)`);
    }
    checkRange(this.size, offset, buf.length, 'write');
    if (this.externalData) throw new DiskError('EUNSUPPORTED', `${this.source.name}: compressed clusters cannot be written to an image with an external data file`);
    if (this.header.cryptMethod !== 0) throw new DiskError('EUNSUPPORTED', 'Compression and encryption not supported at the same time');
    const full = buf.length === cs ? buf : (() => { const b = new Uint8Array(cs); b.set(buf); return b; })();
    // Compression runs outside the queue so that several clusters compress at once (zlib on
    // the libuv threadpool; zstd, from a WebAssembly build of the reference library, inline).
    const packed = this.header.compressionType === COMPRESSION_ZSTD
      ? (await zstd()).compress(full, 3)
      : await deflateRaw(full, { windowBits: 12, level: 6 });
    await this.serial(async () => {
      // Not worth it (or not representable): store the cluster plainly.
      if (packed.length >= cs - 512) return this.writeRange(offset, buf.length, buf);
      await this.placeCompressed(offset, packed);
    });
  }

  private async placeCompressed(offset: number, packed: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    // Compressed data is packed byte after byte and may run into the next host cluster when
    // that one directly follows (nothing else was allocated in between).
    let at = this.compressedAt;
    const fits = at !== 0 && at + packed.length <= this.compressedEnd;
    const canGrow = at !== 0 && this.compressedEnd === this.fileEnd && at + packed.length <= this.compressedEnd + cs;
    if (!fits && !canGrow) {
      at = this.fileEnd;
      this.fileEnd += cs;
      this.compressedEnd = this.fileEnd;
    } else if (!fits) {
      this.fileEnd += cs;
      this.compressedEnd = this.fileEnd;
    }
    // Refcounts as qemu-img check counts them: +1 for every host cluster the descriptor's
    // sectors touch, once per compressed cluster.
    const first = at - (at % 512);
    const sectors = Math.ceil((packed.length + (at % 512)) / 512);
    for (let c = Math.floor(first / cs); c * cs < first + sectors * 512; c++) await this.addRef(c * cs, 1);
    await this.dataSource.write(packed, at);
    this.compressedAt = at + packed.length;
    // L2 entry: bit 62, then the sector count - 1 above the offset bits (qcow2.txt
    // "Compressed Clusters Descriptor").
    const l1i = Math.floor(offset / this.l2Span);
    const l2 = await this.l2ForWrite(l1i);
    const entryAt = ((offset - l1i * this.l2Span) / cs) * this.geo.l2EntrySize;
    const hi = l2.view.getUint32(entryAt, false), lo = l2.view.getUint32(entryAt + 4, false);
    if ((hi & 0x40000000) || (hi & 0x00ffffff) || (lo & 0xfffffe00)) await this.release(hi, lo, entryAt, l2.view);
    const x = BigInt(62 - (this.geo.clusterBits - 8));
    l2.view.setBigUint64(entryAt, (1n << 62n) | (BigInt(sectors - 1) << x) | BigInt(at), false);
    if (this.geo.extendedL2) l2.view.setBigUint64(entryAt + 8, 0n, false);
    await this.maybeWriteBack();
  }

  // ---- backing file, emptying (rebase, commit) ----

  /**
   * Name another backing file in the header, or none (QEMU's qcow2_change_backing_file). Every
   * write made so far reaches the disk before the header changes, so a crash leaves either the
   * old header over complete data or the new one: the content the guest sees never changes.
   */
  async changeBackingFile(filename: string | undefined, format: string | undefined): Promise<void> {
    // An external data file kept as a raw image cannot also depend on a backing file.
    if (filename !== undefined && this.dataFileRaw) throw new DiskError('EINVAL', 'Invalid argument');
    if (filename !== undefined && new TextEncoder().encode(filename).length > MAX_BACKING_FILE_NAME) throw new DiskError('EINVAL', 'Invalid argument');
    await this.serial(async () => {
      await this.writeBack();
      if (this.externalData) await this.dataSource.flush();
      await this.source.flush();
      const h = { ...this.header, backingFile: filename, backingFormat: filename !== undefined ? format : undefined };
      let cluster0: Uint8Array;
      try {
        cluster0 = serializeHeader(h, this.clusterSize);
      } catch (e) {
        if (e instanceof DiskError && e.code === 'ELIMIT') throw new DiskError('ENOSPC', 'No space left in the file header', { cause: e });
        throw e;
      }
      await this.source.write(cluster0, 0);
      await this.source.flush();
      this.header = h;
      this.backingRef = filename !== undefined ? { filename, ...(format ? { format } : {}) } : undefined;
    });
  }

  /**
   * Deallocate every cluster, so that reads fall through to the backing file (QEMU's
   * bdrv_make_empty, which `qemu-img commit` calls on the committed overlay). Tables shared
   * with internal snapshots are copied first, as any write does; the snapshots keep their data.
   */
  async makeEmpty(): Promise<void> {
    await this.serial(async () => {
      const es = this.geo.l2EntrySize;
      const cs = this.clusterSize;
      // Data clusters of our own that nothing references any more: their space goes back to
      // the filesystem once the tables no longer point at them (QEMU discards them too).
      const freed: number[] = [];
      for (let i = 0; i * 8 < this.l1.length; i++) {
        if (this.l1Entry(i) === 0) continue;
        const l2 = await this.l2ForWrite(i);
        for (let at = 0; at < l2.table.length; at += es) {
          const hi = l2.view.getUint32(at, false), lo = l2.view.getUint32(at + 4, false);
          if (hi === 0 && lo === 0 && (!this.geo.extendedL2 || l2.view.getBigUint64(at + 8, false) === 0n)) continue;
          if (this.mapsCluster(hi, lo) || (hi & 0x40000000)) {
            await this.release(hi, lo, at, l2.view);
            const host = hi & 0x40000000 || this.externalData ? 0 : entryOffset(hi, lo);
            if (host && (await this.refcountAt(host)) === 0) freed.push(host);
          }
          l2.table.fill(0, at, at + es);
        }
        await this.maybeWriteBack();
      }
      await this.writeBack();
      if (freed.length === 0) return;
      await this.source.flush();
      freed.sort((a, b) => a - b);
      for (let k = 0; k < freed.length;) {
        let end = k + 1;
        while (end < freed.length && freed[end] === freed[end - 1]! + cs) end++;
        await this.source.punchHole(freed[k]!, (end - k) * cs);
        k = end;
      }
    });
  }

  /** The refcount of the cluster at `host` (0 past the refcount table or in a missing block). */
  private async refcountAt(host: number): Promise<number> {
    const cluster = Math.floor(host / this.clusterSize);
    const rb = this.reftable[Math.floor(cluster / this.geo.refcountBlockEntries)];
    if (!rb) return 0;
    return getRefcount(await this.refblock(rb), cluster % this.geo.refcountBlockEntries, this.geo.refcountBits);
  }

  /**
   * Store persistent dirty bitmaps (convert --bitmaps): each bitmap's non-zero data clusters,
   * its table, then the directory, and last the header naming them with the autoclear bit
   * set. Only for an image that has none yet (a convert target).
   */
  async addBitmaps(list: PersistentBitmap[]): Promise<void> {
    if (list.length === 0) return;
    if (this.header.version < 3) throw new DiskError('EUNSUPPORTED', 'Cannot store dirty bitmaps in qcow2 v2 files');
    if (this.bitmapList.length) throw new DiskError('EINVAL', `${this.source.name} already has persistent bitmaps`);
    const cs = this.clusterSize;
    await this.serial(async () => {
      const entries: Uint8Array[] = [];
      for (const b of list) {
        if (b.bits.length !== bitmapDataBytes(this.size, b.granularityBits)) throw new DiskError('EINVAL', `bitmap '${b.name}' does not fit a disk of ${this.size} bytes`);
        const tableSize = Math.ceil(b.bits.length / cs);
        const table = new Uint8Array(tableSize * 8);
        const tv = new DataView(table.buffer);
        for (let i = 0; i < tableSize; i++) {
          const piece = b.bits.subarray(i * cs, (i + 1) * cs);
          if (piece.every((x) => x === 0)) continue; // entry 0: all zeroes, no cluster
          const host = await this.allocate(1);
          const cluster = new Uint8Array(cs);
          cluster.set(piece);
          await this.source.write(cluster, host);
          tv.setBigUint64(i * 8, BigInt(host), false);
        }
        const tableAt = await this.allocate(Math.ceil(table.length / cs));
        await this.source.write(table, tableAt);
        entries.push(serializeBitmapEntry(tableAt, tableSize, b.flags & BME_FLAG_AUTO, b.granularityBits, b.name));
      }
      const dir = new Uint8Array(entries.reduce((n, e) => n + e.length, 0));
      entries.reduce((at, e) => { dir.set(e, at); return at + e.length; }, 0);
      const dirAt = await this.allocate(Math.ceil(dir.length / cs));
      await this.source.write(dir, dirAt);
      // Everything the header will name is on disk (refcounts included) before it names it.
      await this.writeBack();
      await this.source.flush();
      const ext = serializeBitmapExtension({ count: list.length, directorySize: dir.length, directoryOffset: dirAt });
      const h = this.header;
      h.extensions = [...h.extensions.filter((e) => e.type !== EXT_BITMAPS), { type: EXT_BITMAPS, offset: 0, data: ext }];
      h.autoclearFeatures |= AUTOCLEAR_BITMAPS;
      await this.source.write(serializeHeader(h, cs), 0);
      await this.source.flush();
      this.bitmapList = parseBitmapDirectory(dir, list.length, this.source.name);
    });
  }

  // ---- write-back ----

  protected async writeRefblocks(): Promise<void> {
    const writes: Promise<void>[] = [];
    for (const off of this.dirtyRefblocks) writes.push(this.source.write(this.refblocks.get(off)!, off));
    await Promise.all(writes);
    this.dirtyRefblocks.clear();
  }

  /** Write metadata back: refcounts, then L2 tables, then the L1 and refcount tables. */
  protected async writeBack(): Promise<void> {
    // L2 entries must never reach the disk before the data they point at.
    while (this.inflight.size) await Promise.allSettled([...this.inflight.keys()]);
    await this.writeRefblocks();
    if (this.reftableDirty) {
      await this.source.write(this.serializeReftable(), this.header.refcountTableOffset);
      this.reftableDirty = false;
    }
    const writes: Promise<void>[] = [];
    for (const off of this.dirtyL2) {
      const t = this.l2Cache.get(off);
      if (t) writes.push(this.source.write(t, off));
    }
    await Promise.all(writes);
    this.dirtyL2.clear();
    if (this.l1Dirty) {
      await this.source.write(this.l1, this.header.l1TableOffset);
      this.l1Dirty = false;
    }
  }

  private async maybeWriteBack(): Promise<void> {
    if (this.dirtyL2.size > 64 || this.dirtyRefblocks.size > this.maxRefblocks / 2) await this.writeBack();
  }

  override async flush(): Promise<void> {
    await this.serial(async () => {
      await this.writeBack();
      if (this.externalData) await this.dataSource.flush();
      await this.source.flush();
    });
  }

  override async close(): Promise<void> {
    try {
      await this.serial(() => this.writeBack());
    } finally {
      await super.close();
    }
  }
}
