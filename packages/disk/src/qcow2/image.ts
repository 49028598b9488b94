/**
 * A qcow2 image as a BlockDevice (QEMU docs/interop/qcow2.txt): guest offsets map through
 * the L1 table to L2 tables (kept in a bounded cache) to host clusters, which hold data, read
 * as zeroes, fall through to the backing image, or are compressed (zlib or zstd). With
 * extended L2 entries each cluster is 32 subclusters with their own allocation and zero bits.
 *
 * This file is the read side; writes (allocation, refcounts, compression) live in write.ts
 * and extend this class through the hooks marked "write path".
 */
import { zlib } from '../builtins.js';
import type * as Fzstd from 'fzstd';
import { hostio, type HostIo } from '@diskhub/hostio';
import { backingStatus, checkRange, readBacking, settled, type BlockDevice, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { SNAPSHOT_NOT_FOUND, type BackingRef, type PersistentBitmap, type Image, type ImageInfo, type OpenOptions, type SnapshotInfo } from '../format.js';
import { backingInfo } from '../backing.js';
import { readExact, type ByteSource } from '../source.js';
import { luksInfo, type LuksHeader } from '../luks/header.js';
import { EncryptedSource } from '../luks/source.js';
import type { SectorCipher } from '../luks/cipher.js';
import { openQcow2Crypto } from './crypto.js';
import {
  AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, BME_FLAG_AUTO, BME_FLAG_IN_USE, COMPAT_LAZY_REFCOUNTS, MAX_BITMAP_DIRECTORY,
  parseBitmapDirectory, parseBitmapExtension, type BitmapEntry, bitmapDataBytes, MAX_BITMAP_BYTES, COMPRESSION_ZSTD, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY,
  CRYPT_AES, MAX_L1_SIZE_BYTES, decodeL2Entry, entryOffset, geometry, parseHeader, parseSnapshotTable,
  type Qcow2Geometry, type Qcow2Header, type Qcow2Snapshot,
} from './layout.js';

/** Compressed clusters collected before they are read and inflated together. */
const COMPRESSED_BATCH = 64;
/** Largest single read of neighbouring compressed clusters. */
const MAX_COMPRESSED_READ = 4 << 20;
/** Compressed clusters per threadpool call (several calls per read keep both cores busy). */
const INFLATE_JOB = 8;

/** A compressed cluster and the part of a read request it fills. */
interface CompressedPiece { hostOffset: number; size: number; clusterStart: number; offset: number; slice: Uint8Array }

/** Memory the L2 cache may hold (QEMU's default l2-cache-size is 32 MiB as well). */
export const L2_CACHE_BYTES = 32 << 20;

/** How a run of guest bytes is stored. */
export type RunKind = 'data' | 'zero' | 'zero-alloc' | 'unallocated' | 'compressed';

export interface Run {
  offset: number;
  length: number;
  kind: RunKind;
  /** data / zero-alloc: host offset (in the data file) of `offset`. */
  hostOffset?: number;
  /** compressed: where the compressed cluster is, and the guest offset its cluster starts at. */
  compressed?: { hostOffset: number; size: number; clusterStart: number };
}

/** The header-derived state a Qcow2Image works from. */
export interface Qcow2State {
  header: Qcow2Header;
  geo: Qcow2Geometry;
  /** The active L1 table (or a snapshot's), as raw big-endian entries. */
  l1: Uint8Array;
  snapshots: Qcow2Snapshot[];
  /** Persistent dirty bitmaps (listed only while the autoclear bitmaps bit vouches for them). */
  bitmaps: BitmapEntry[];
  /** encrypt.format=luks: the LUKS header kept in the crypto header extension's clusters. */
  luks?: LuksHeader;
  /** encrypt.format=luks opened for I/O: the LUKS area in the file and the passphrase that opened it. */
  luksKeys?: { offset: number; length: number; secret: Uint8Array };
  /** encrypt.format=aes: data sectors are decrypted with IVs from their guest offsets. */
  guestCipher?: SectorCipher;
}

export class Qcow2Image implements Image {
  readonly format = 'qcow2';
  size: number;
  readonly clusterSize: number;
  /** Changed by changeBackingFile (rebase, commit) on a writable image. */
  backingRef?: BackingRef;
  backing?: Image;
  protected readonly geo: Qcow2Geometry;
  protected header: Qcow2Header;
  protected l1: Uint8Array;
  protected l1View: DataView;
  protected snapshotList: Qcow2Snapshot[];
  protected bitmapList: BitmapEntry[];
  protected readonly luks?: LuksHeader;
  protected readonly luksKeys?: Qcow2State['luksKeys'];
  private readonly guestCipher?: SectorCipher;
  /** Data clusters live in an external data file (dataSource is that file, not the image). */
  protected readonly externalData: boolean;
  /** L2 tables by host offset, least recently used first. */
  protected readonly l2Cache = new Map<number, Uint8Array>();
  private readonly l2Loading = new Map<number, Promise<Uint8Array>>();
  private readonly maxL2Tables: number;
  private lastCompressed?: { hostOffset: number; data: Uint8Array };

  constructor(
    readonly source: ByteSource,
    /** Where data clusters live: the image itself, or its external data file. */
    protected readonly dataSource: ByteSource,
    state: Qcow2State,
    protected readonly writable: boolean,
    private readonly snapshotView?: Qcow2Snapshot,
  ) {
    this.header = state.header;
    this.geo = state.geo;
    this.clusterSize = state.geo.clusterSize;
    this.size = snapshotView?.diskSize ?? state.header.size;
    this.l1 = state.l1;
    this.l1View = new DataView(this.l1.buffer, this.l1.byteOffset, this.l1.byteLength);
    this.snapshotList = state.snapshots;
    this.bitmapList = state.bitmaps;
    if (state.luks) this.luks = state.luks;
    if (state.luksKeys) this.luksKeys = state.luksKeys;
    if (state.guestCipher) this.guestCipher = state.guestCipher;
    this.externalData = (state.header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
    this.maxL2Tables = Math.max(4, Math.floor(L2_CACHE_BYTES / this.clusterSize));
    if (state.header.backingFile !== undefined) {
      this.backingRef = { filename: state.header.backingFile, ...(state.header.backingFormat ? { format: state.header.backingFormat } : {}) };
    }
  }

  /** Bytes of guest data one L2 table maps. */
  protected get l2Span(): number { return this.geo.l2Entries * this.clusterSize; }

  /** Host offset of the L2 table for L1 index `i` (0 when unallocated). */
  protected l1Entry(i: number): number {
    if (i * 8 + 8 > this.l1.length) return 0;
    const hi = this.l1View.getUint32(i * 8, false), lo = this.l1View.getUint32(i * 8 + 4, false);
    return entryOffset(hi, lo);
  }

  /** The L2 table at `offset`, from the cache or the file. */
  protected async l2Table(offset: number): Promise<Uint8Array> {
    const hit = this.l2Cache.get(offset);
    if (hit) {
      this.l2Cache.delete(offset);
      this.l2Cache.set(offset, hit);
      return hit;
    }
    let loading = this.l2Loading.get(offset);
    if (!loading) {
      loading = (async () => {
        if (offset % this.clusterSize !== 0) {
          throw new DiskError('ECORRUPT', `${this.source.name}: L2 table offset 0x${offset.toString(16)} unaligned`);
        }
        const t = new Uint8Array(this.clusterSize);
        const n = await this.source.read(t, offset);
        if (n !== t.length) throw new DiskError('ECORRUPT', `${this.source.name}: L2 table at offset 0x${offset.toString(16)} lies past the end of the file`);
        this.cacheL2(offset, t);
        return t;
      })();
      this.l2Loading.set(offset, loading);
      void loading.finally(() => this.l2Loading.delete(offset)).catch(() => {});
    }
    return loading;
  }

  protected cacheL2(offset: number, table: Uint8Array): void {
    this.l2Cache.delete(offset);
    this.l2Cache.set(offset, table);
    while (this.l2Cache.size > this.maxL2Tables) this.evictL2();
  }

  /** Drop the least recently used table (the write path flushes dirty tables before they go). */
  protected evictL2(): void {
    const first = this.l2Cache.keys().next();
    if (!first.done) this.l2Cache.delete(first.value);
  }

  /**
   * How [offset, offset+length) is stored, as runs in order covering the range; adjacent
   * units with the same kind (and contiguous host offsets) are merged, compressed clusters
   * come one per cluster. Runs come an L2 table at a time: the scan of a table is a plain
   * function (tableRuns), which V8 optimises in a few ms, where this async generator with the
   * scan inside took it 120-160 ms of compiling (twice, after a deopt) in a 2 GiB convert.
   */
  async *runs(offset: number, length: number): AsyncIterable<Run> {
    const end = offset + length;
    const span = this.l2Span;
    const done: Run[] = [];
    let cur: Run | undefined;
    const emit = (r: Run): void => {
      if (cur && r.kind === cur.kind && r.kind !== 'compressed' && cur.offset + cur.length === r.offset
        && (cur.hostOffset === undefined ? r.hostOffset === undefined : cur.hostOffset + cur.length === r.hostOffset)) {
        cur.length += r.length;
        return;
      }
      if (cur) done.push(cur);
      cur = r;
    };
    let pos = offset;
    while (pos < end) {
      const l1Index = Math.floor(pos / span);
      const tableEnd = Math.min(end, (l1Index + 1) * span);
      const l2Offset = this.l1Entry(l1Index);
      if (l2Offset === 0) emit({ offset: pos, length: tableEnd - pos, kind: 'unallocated' });
      else {
        if (cur && !this.l2Cache.has(l2Offset)) {
          // The run so far goes out before the next table is read: a reader of a stream (an
          // import converted as it arrives) reads the data before the table that follows it.
          const out = cur;
          cur = undefined;
          yield out;
        }
        this.tableRuns(await this.l2Table(l2Offset), l2Offset, l1Index, pos, tableEnd, emit);
      }
      pos = tableEnd;
      yield* done;
      done.length = 0;
    }
    if (cur) yield cur;
  }

  /**
   * Where guest bytes [offset, offset+length) lie in the data file when that is known without
   * waiting: they are inside one L2 table, which is cached and maps each of their clusters as
   * plain allocated data (not compressed, not zero, no subclusters, no legacy encryption), the
   * clusters one after another in the file. Undefined otherwise: the general path decides.
   */
  private cachedDataOffset(offset: number, length: number): number | undefined {
    if (this.guestCipher || this.geo.extendedL2) return undefined;
    const span = this.l2Span;
    const l1Index = Math.floor(offset / span);
    if (offset + length > (l1Index + 1) * span) return undefined;
    const table = this.l2Cache.get(this.l1Entry(l1Index));
    if (!table) return undefined;
    const cs = this.clusterSize;
    const first = Math.floor((offset - l1Index * span) / cs);
    const last = Math.floor((offset + length - 1 - l1Index * span) / cs);
    const v3 = this.header.version >= 3;
    let start = 0;
    for (let i = first; i <= last; i++) {
      const at = i * 8;
      const hi = (table[at]! << 24 | table[at + 1]! << 16 | table[at + 2]! << 8 | table[at + 3]!) >>> 0;
      const lo = (table[at + 4]! << 24 | table[at + 5]! << 16 | table[at + 6]! << 8 | table[at + 7]!) >>> 0;
      if (hi & 0x40000000 || (v3 && lo & 1)) return undefined;
      const host = entryOffset(hi, lo);
      if (host === 0 || host % cs !== 0) return undefined;
      if (i === first) start = host;
      else if (host !== start + (i - first) * cs) return undefined;
    }
    return start + (offset % cs);
  }

  /** The runs of [pos, tableEnd) in the L2 table `table` (at `l2Offset`, L1 index `l1Index`), to `emit` in order. */
  private tableRuns(table: Uint8Array, l2Offset: number, l1Index: number, pos: number, tableEnd: number, emit: (r: Run) => void): void {
    const cs = this.clusterSize;
    const span = this.l2Span;
    const ext = this.geo.extendedL2;
    const unit = this.geo.subclusterSize;
    const entrySize = this.geo.l2EntrySize;
    const v3 = this.header.version >= 3;
    const tv = new DataView(table.buffer, table.byteOffset, table.byteLength);
    while (pos < tableEnd) {
      const clusterStart = Math.floor(pos / cs) * cs;
      const index = (clusterStart - l1Index * span) / cs;
      const clusterEnd = Math.min(tableEnd, clusterStart + cs);
      const hi = tv.getUint32(index * entrySize, false), lo = tv.getUint32(index * entrySize + 4, false);
      if (hi === 0 && lo === 0 && (!ext || tv.getBigUint64(index * entrySize + 8) === 0n)) {
        // An unallocated cluster: the entries after it that are all zero too join it in one
        // step (a sparse image's tables are mostly these; one object per entry was the cost).
        const last = Math.ceil((tableEnd - l1Index * span) / cs);
        let j = index + 1;
        for (; j < last; j++) {
          const at = j * entrySize;
          if (tv.getUint32(at) !== 0 || tv.getUint32(at + 4) !== 0 || (ext && tv.getBigUint64(at + 8) !== 0n)) break;
        }
        const runEnd = Math.min(tableEnd, l1Index * span + j * cs);
        emit({ offset: pos, length: runEnd - pos, kind: 'unallocated' });
        pos = runEnd;
        continue;
      }
      if (hi & 0x40000000) {
        const m = decodeL2Entry(tv.getBigUint64(index * entrySize, false), this.geo.clusterBits, this.header.version);
        emit({ offset: pos, length: clusterEnd - pos, kind: 'compressed', compressed: { hostOffset: m.hostOffset, size: m.compressedSize, clusterStart } });
        pos = clusterEnd;
        continue;
      }
      const host = entryOffset(hi, lo);
      // With an external data file, offset 0 with COPIED set is the data file's first cluster
      // (qcow2.txt "Standard Cluster Descriptor"); otherwise offset 0 means unallocated.
      const atZero = host === 0 && (hi & 0x80000000) !== 0 && this.externalData;
      if (host % cs !== 0) {
        throw new DiskError('ECORRUPT', `${this.source.name}: cluster allocation offset 0x${host.toString(16)} unaligned (L2 offset 0x${l2Offset.toString(16)}, L2 index ${index})`);
      }
      if (!ext) {
        const allocated = host !== 0 || atZero;
        const kind: RunKind = v3 && (lo & 1) ? (allocated ? 'zero-alloc' : 'zero') : allocated ? 'data' : 'unallocated';
        const r: Run = { offset: pos, length: clusterEnd - pos, kind };
        if (allocated) r.hostOffset = host + (pos - clusterStart);
        emit(r);
        pos = clusterEnd;
        continue;
      }
      // Extended L2: the bitmap's high word is "reads as zero", its low word "allocated".
      const zeroBits = tv.getUint32(index * entrySize + 8, false), allocBits = tv.getUint32(index * entrySize + 12, false);
      const allocated = host !== 0 || atZero;
      if (!allocated && allocBits) {
        throw new DiskError('ECORRUPT', `${this.source.name}: subclusters allocated in an unallocated cluster (L2 offset 0x${l2Offset.toString(16)}, L2 index ${index})`);
      }
      while (pos < clusterEnd) {
        const sc = Math.floor((pos - clusterStart) / unit);
        const scEnd = Math.min(clusterEnd, clusterStart + (sc + 1) * unit);
        const bit = 1 << sc;
        const kind: RunKind = allocBits & bit ? 'data' : zeroBits & bit ? (allocated ? 'zero-alloc' : 'zero') : 'unallocated';
        const r: Run = { offset: pos, length: scEnd - pos, kind };
        // Even an unallocated subcluster of an allocated cluster has a place in the file
        // (QEMU reports it when nothing below provides the range).
        if (allocated) r.hostOffset = host + (pos - clusterStart);
        emit(r);
        pos = scEnd;
      }
    }
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    // A read inside one data cluster whose table is cached (a filesystem walk's metadata reads,
    // thousands of 4 KiB blocks): one read of the data file, without the general path's run list.
    // The same for a run of whole data clusters stored one after another (a convert's chunks).
    if (buf.length > 0) {
      const host = this.cachedDataOffset(offset, buf.length);
      if (host !== undefined) {
        const n = await this.dataSource.read(buf, host);
        if (n < buf.length) buf.fill(0, n);
        return;
      }
    }
    const reads: Promise<unknown>[] = [];
    let compressed: CompressedPiece[] = [];
    await settled(reads, async () => {
      for await (const r of this.runs(offset, buf.length)) {
        const slice = buf.subarray(r.offset - offset, r.offset - offset + r.length);
        switch (r.kind) {
          case 'data': {
            // Legacy AES: a view of the data file in which offsets are guest offsets (IV sectors).
            const from = this.guestCipher ? new EncryptedSource(this.dataSource, this.guestCipher, r.hostOffset! - r.offset) : this.dataSource;
            const at = this.guestCipher ? r.offset : r.hostOffset!;
            reads.push(from.read(slice, at).then((n) => { if (n < slice.length) slice.fill(0, n); }));
            break;
          }
          case 'zero':
          case 'zero-alloc':
            slice.fill(0);
            break;
          case 'unallocated':
            reads.push(readBacking(this.backing, slice, r.offset));
            break;
          case 'compressed':
            compressed.push({ ...r.compressed!, offset: r.offset, slice });
            if (compressed.length >= COMPRESSED_BATCH) { reads.push(this.readCompressed(compressed)); compressed = []; }
            break;
        }
        if (reads.length >= 16) await settled(reads.splice(0));
      }
      if (compressed.length) reads.push(this.readCompressed(compressed));
    });
  }

  /**
   * `convert -C` from this image (QEMU's qcow2_co_copy_range_from): data clusters are handed to
   * the target as ranges of the data file, clusters that read as zeroes become writeZeroes,
   * unallocated ones go to the backing image's own copyRangeTo (zeroes without one).
   * Compressed and encrypted clusters cannot be copied as they are stored: EUNSUPPORTED, and
   * the caller reads and writes instead, as qemu-img falls back.
   */
  async copyRangeTo(offset: number, length: number, dst: BlockDevice, dstOffset: number): Promise<void> {
    checkRange(this.size, offset, length, 'copy');
    const unsupported = (why: string) => new DiskError('EUNSUPPORTED', `${this.source.name}: copy offloading: ${why}`);
    if (this.guestCipher || this.luks) throw unsupported('encrypted image');
    if (!dst.copyRangeFrom) throw unsupported('not supported by the target');
    const zeroes = (at: number, n: number) => {
      if (!dst.writeZeroes) throw unsupported('the target cannot write zeroes');
      return dst.writeZeroes(at, n);
    };
    const work: Promise<void>[] = [];
    await settled(work, async () => {
      for await (const r of this.runs(offset, length)) {
        const at = dstOffset + (r.offset - offset);
        if (r.kind === 'compressed') throw unsupported('compressed cluster');
        if (r.kind === 'data') work.push(dst.copyRangeFrom!(this.dataSource, r.hostOffset!, at, r.length));
        else if (r.kind === 'unallocated' && this.backing) {
          const inside = Math.max(0, Math.min(r.length, this.backing.size - r.offset));
          if (inside > 0) {
            if (!this.backing.copyRangeTo) throw unsupported('the backing image cannot be copied from');
            work.push(this.backing.copyRangeTo(r.offset, inside, dst, at));
          }
          if (inside < r.length) work.push(zeroes(at + inside, r.length - inside));
        } else work.push(zeroes(at, r.length));
        if (work.length >= 16) await settled(work.splice(0));
      }
    });
  }

  /**
   * Compressed clusters into their slices. Clusters stored next to each other in the file (as
   * `convert -c` writes them) are fetched with one read. zlib clusters are inflated on the
   * threadpool when the hostio addon is there (INFLATE_JOB clusters a call, so that one read's
   * clusters spread over both cores as QEMU's thread pool spreads them); otherwise, and for
   * zstd, on this thread.
   */
  private async readCompressed(pieces: CompressedPiece[]): Promise<void> {
    const inflateRaw = this.header.compressionType === COMPRESSION_ZSTD ? undefined : hostio?.inflateRaw;
    const inflating: Promise<void>[] = [];
    await settled(inflating, async () => {
      for (let i = 0; i < pieces.length;) {
        const first = pieces[i]!;
        if (this.lastCompressed?.hostOffset === first.hostOffset) {
          this.place(first, this.lastCompressed.data);
          i++;
          continue;
        }
        // The group: following clusters that start within (or just after) the span read so far.
        let end = first.hostOffset + first.size;
        let j = i + 1;
        while (j < pieces.length) {
          const p = pieces[j]!;
          if (p.hostOffset < first.hostOffset || p.hostOffset > end + 4096 || p.hostOffset + p.size - first.hostOffset > MAX_COMPRESSED_READ) break;
          end = Math.max(end, p.hostOffset + p.size);
          j++;
        }
        const input = new Uint8Array(end - first.hostOffset);
        // The last cluster's size may run past the end of the file (it is rounded to sectors).
        const got = await this.dataSource.read(input, first.hostOffset);
        const inputOf = (p: CompressedPiece) => {
          const from = p.hostOffset - first.hostOffset;
          if (from >= got) throw new DiskError('ECORRUPT', `${this.source.name}: compressed cluster at 0x${p.hostOffset.toString(16)} lies past the end of the file`);
          return input.subarray(from, Math.min(got, from + p.size));
        };
        if (inflateRaw) {
          for (let k = i; k < j; k += INFLATE_JOB) inflating.push(this.inflateOnThreadpool(inflateRaw, pieces.slice(k, Math.min(j, k + INFLATE_JOB)), inputOf));
        } else {
          for (const p of pieces.slice(i, j)) this.place(p, this.inflate(inputOf(p), p.hostOffset));
        }
        i = j;
      }
    });
  }

  /** zlib clusters inflated by one hostio call: whole ones straight into their slices. */
  private async inflateOnThreadpool(inflateRaw: NonNullable<HostIo['inflateRaw']>, pieces: CompressedPiece[], inputOf: (p: CompressedPiece) => Uint8Array): Promise<void> {
    const outputs = pieces.map((p) => (p.offset === p.clusterStart && p.slice.length === this.clusterSize ? p.slice : new Uint8Array(this.clusterSize)));
    const results = await inflateRaw(pieces.flatMap((p, k) => [inputOf(p), outputs[k]!]));
    pieces.forEach((p, k) => {
      const error = this.inflateError(p.hostOffset, results[k]!);
      if (error) throw error;
      const out = outputs[k]!;
      if (out !== p.slice) {
        this.lastCompressed = { hostOffset: p.hostOffset, data: out };
        this.place(p, out);
      }
    });
  }

  private place(p: CompressedPiece, cluster: Uint8Array): void {
    p.slice.set(cluster.subarray(p.offset - p.clusterStart, p.offset - p.clusterStart + p.slice.length));
  }

  /** One compressed cluster's data, decompressed on this thread. */
  private inflate(input: Uint8Array, hostOffset: number): Uint8Array {
    const data = this.header.compressionType === COMPRESSION_ZSTD ? this.zstdCluster(input, hostOffset) : this.zlibCluster(input, hostOffset);
    this.lastCompressed = { hostOffset, data };
    return data;
  }

  /** Why a cluster that decompressed to `got` bytes (or failed with message `got`) is unusable, if it is. */
  private inflateError(hostOffset: number, got: number | string): DiskError | undefined {
    const where = `${this.source.name}: compressed cluster at 0x${hostOffset.toString(16)}`;
    if (typeof got === 'string') return new DiskError('ECORRUPT', `${where} does not decompress: ${got}`);
    if (got !== this.clusterSize) return new DiskError('ECORRUPT', `${where} decompresses to ${got} bytes, not ${this.clusterSize}`);
    return undefined;
  }

  private zlibCluster(input: Uint8Array, hostOffset: number): Uint8Array {
    let out: Buffer;
    try {
      // Raw deflate (QEMU: window bits -12); the input may run on past the stream's end.
      // An output chunk a little larger than the cluster: one output buffer instead of growing
      // zlib's default 16 KiB chunks (measured about 20% less CPU per 64 KiB cluster).
      out = zlib().inflateRawSync(input, { maxOutputLength: this.clusterSize, chunkSize: this.clusterSize + 512, finishFlush: zlib().constants.Z_SYNC_FLUSH });
    } catch (e) {
      throw this.inflateError(hostOffset, (e as Error).message);
    }
    const error = this.inflateError(hostOffset, out.length);
    if (error) throw error;
    return out;
  }

  private zstdCluster(input: Uint8Array, hostOffset: number): Uint8Array {
    // A zstd frame followed by whatever shares its last sector (often the next cluster's
    // frame): decode until the cluster is full and ignore the rest, as QEMU's streaming
    // decoder does.
    const out = new Uint8Array(this.clusterSize);
    let filled = 0;
    if (!zstdDecoder) throw new Error('qcow2: the zstd decoder is loaded when an image using it is opened');
    const d = new zstdDecoder.Decompress((chunk) => {
      const n = Math.min(chunk.length, out.length - filled);
      out.set(chunk.subarray(0, n), filled);
      filled += n;
    });
    try {
      d.push(input, true);
    } catch (e) {
      if (filled !== out.length) throw this.inflateError(hostOffset, (e as Error).message);
    }
    const error = this.inflateError(hostOffset, filled);
    if (error) throw error;
    return out;
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    const hostFile = this.dataSource.name;
    // Host bytes of an encrypted image are ciphertext: QEMU reports no offset for them.
    const mapped = this.header.cryptMethod === 0;
    for await (const r of this.runs(offset, length)) {
      switch (r.kind) {
        case 'data':
          yield { offset: r.offset, length: r.length, data: true, zero: false, present: true, depth: 0, ...(mapped ? { hostOffset: r.hostOffset!, hostFile } : {}) };
          break;
        case 'zero':
          yield { offset: r.offset, length: r.length, data: false, zero: true, present: true, depth: 0 };
          break;
        case 'zero-alloc':
          yield { offset: r.offset, length: r.length, data: false, zero: true, present: true, depth: 0, ...(mapped ? { hostOffset: r.hostOffset!, hostFile } : {}) };
          break;
        case 'compressed':
          yield { offset: r.offset, length: r.length, data: true, zero: false, present: true, depth: 0, compressed: true };
          break;
        case 'unallocated':
          if (!this.backing && r.hostOffset !== undefined && mapped) {
            yield { offset: r.offset, length: r.length, data: false, zero: true, present: false, depth: 0, hostOffset: r.hostOffset, hostFile };
          } else {
            yield* backingStatus(this.backing, r.offset, r.length);
          }
          break;
      }
    }
  }

  /** Status of a range this image leaves to its backing file, one level deeper. */

  /** qcow2 keeps persistent dirty bitmaps from version 3 on. */
  get storesBitmaps(): boolean { return this.header.version >= 3; }

  /** The persistent dirty bitmaps with their bits (convert --bitmaps). */
  async readBitmaps(): Promise<PersistentBitmap[]> {
    const out: PersistentBitmap[] = [];
    for (const b of this.bitmapList) {
      out.push({ name: b.name, flags: b.flags, granularityBits: b.granularityBits, bits: await readBitmapBits(this.source, b, this.size, this.clusterSize) });
    }
    return out;
  }

  /** A persistent bitmap's granularity and bits (`qemu-img bitmap --merge NAME -b THIS_IMAGE`). */
  async readBitmap(name: string): Promise<{ granularity: number; bits: Uint8Array }> {
    const entry = this.bitmapList.find((b) => b.name === name);
    if (!entry) throw new DiskError('ENOENT', `Dirty bitmap '${name}' not found`);
    if (entry.flags & BME_FLAG_IN_USE) throw new DiskError('EINVAL', `Bitmap '${name}' is inconsistent and cannot be used`);
    return { granularity: 2 ** entry.granularityBits, bits: await readBitmapBits(this.source, entry, this.size, this.clusterSize) };
  }

  async snapshots(): Promise<SnapshotInfo[]> {
    return this.snapshotList.map(snapshotInfo);
  }

  async info(): Promise<ImageInfo> {
    const h = this.header;
    const data: Record<string, unknown> = {
      compat: h.version === 2 ? '0.10' : '1.1',
      'compression-type': h.compressionType === COMPRESSION_ZSTD ? 'zstd' : 'zlib',
      'refcount-bits': this.geo.refcountBits,
    };
    if (this.luks) data.encrypt = luksInfo(this.luks, 'luks');
    else if (h.cryptMethod === CRYPT_AES) data.encrypt = { format: 'aes' };
    if (h.version >= 3) {
      data['lazy-refcounts'] = (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
      if (this.bitmapList.length) {
        data.bitmaps = this.bitmapList.map((b) => ({
          flags: [...(b.flags & BME_FLAG_IN_USE ? ['in-use'] : []), ...(b.flags & BME_FLAG_AUTO ? ['auto'] : [])],
          name: b.name,
          granularity: 2 ** b.granularityBits,
        }));
      }
      if (h.dataFile !== undefined) {
        data['data-file'] = h.dataFile;
        data['data-file-raw'] = (h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
      }
      data.corrupt = (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
      data['extended-l2'] = this.geo.extendedL2;
    }
    const info: ImageInfo = {
      'virtual-size': this.size,
      filename: this.source.name,
      'cluster-size': this.clusterSize,
      format: 'qcow2',
      'actual-size': await this.source.allocatedSize(),
    };
    if (h.cryptMethod !== 0) info.encrypted = true;
    Object.assign(info, backingInfo(this.source.name, this.backingRef));
    if (this.snapshotList.length) info.snapshots = this.snapshotList.map(snapshotInfo);
    info['format-specific'] = { type: 'qcow2', data };
    info['dirty-flag'] = (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    return info;
  }

  async flush(): Promise<void> {
    if (this.writable) await this.source.flush();
  }

  async close(): Promise<void> {
    if (this.externalData) await this.dataSource.close().catch(() => {});
    await this.source.close();
  }
}

function snapshotInfo(s: Qcow2Snapshot): SnapshotInfo {
  const clock = s.vmClockNsec;
  return {
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSizeLarge ?? s.vmStateSize,
    'date-sec': s.dateSec,
    'date-nsec': s.dateNsec,
    'vm-clock-sec': Number(clock / 1_000_000_000n),
    'vm-clock-nsec': Number(clock % 1_000_000_000n),
    ...(s.icount !== undefined && s.icount !== 0xffffffffffffffffn ? { icount: Number(s.icount) } : {}),
  };
}

/** Bytes of bitmap data of `entry` for a disk of `size` bytes. */
export function bitmapBytes(entry: BitmapEntry, size: number): number {
  return bitmapDataBytes(size, entry.granularityBits);
}

/** A stored bitmap's bits (qcow2.txt "Bitmap table": an entry of 0 is all clear, 1 all set). */
export async function readBitmapBits(source: ByteSource, entry: BitmapEntry, size: number, cs: number): Promise<Uint8Array> {
  const bytes = bitmapBytes(entry, size);
  if (bytes > MAX_BITMAP_BYTES) throw new DiskError('ELIMIT', `${source.name}: bitmap '${entry.name}' holds more than ${MAX_BITMAP_BYTES} bytes`);
  if (entry.tableSize !== Math.ceil(bytes / cs)) throw new DiskError('ECORRUPT', `${source.name}: bitmap '${entry.name}' table has ${entry.tableSize} entries for ${bytes} bytes`);
  const table = new Uint8Array(entry.tableSize * 8);
  if ((await source.read(table, entry.tableOffset)) !== table.length) throw new DiskError('ECORRUPT', `${source.name}: bitmap '${entry.name}' table lies past the end of the file`);
  const bits = new Uint8Array(bytes);
  const tv = new DataView(table.buffer);
  for (let i = 0; i < entry.tableSize; i++) {
    const e = tv.getBigUint64(i * 8, false);
    const slot = bits.subarray(i * cs, Math.min(bytes, (i + 1) * cs));
    const off = Number(e & 0x00fffffffffffe00n);
    if (off) await source.read(slot, off);
    else if (e & 1n) slot.fill(0xff);
  }
  return bits;
}

/**
 * The zstd decoder, loaded when an image with zstd compression is opened (readQcow2State): its
 * tables cost every command's start-up 1.1 M instructions, and few images use it.
 */
let zstdDecoder: typeof Fzstd | undefined;

/** Read and check what opening needs: header, snapshot table, and the L1 table to use. */
export async function readQcow2State(source: ByteSource, snapshot?: string): Promise<Qcow2State & { view?: Qcow2Snapshot }> {
  const fileSize = await source.size();
  const probe = new Uint8Array(Math.min(fileSize, 512));
  await readExact(source, probe, 0, 'qcow2 header');
  const clusterBits = probe.length >= 24 ? new DataView(probe.buffer).getUint32(20, false) : 16;
  const headLen = Math.min(fileSize, 2 ** Math.min(Math.max(clusterBits, 9), 21));
  const head = new Uint8Array(headLen);
  await readExact(source, head, 0, 'qcow2 header cluster');
  const header = parseHeader(head, fileSize, source.name);
  if (header.compressionType === COMPRESSION_ZSTD) zstdDecoder ??= await import('fzstd');
  const geo = geometry(header);
  let snapshots: Qcow2Snapshot[] = [];
  if (header.nbSnapshots > 0) {
    // Entries are at most 40 + 1024 + 2 * 65535 bytes; read generously but bounded.
    const maxLen = Math.min(fileSize - header.snapshotsOffset, header.nbSnapshots * (40 + 1024 + 2 * 65535 + 8), 64 << 20);
    if (maxLen <= 0) throw new DiskError('ECORRUPT', `${source.name}: snapshot table lies past the end of the file`);
    const buf = new Uint8Array(maxLen);
    const n = await source.read(buf, header.snapshotsOffset);
    snapshots = parseSnapshotTable(buf.subarray(0, n), header.nbSnapshots, source.name).snapshots;
  }
  let l1Offset = header.l1TableOffset;
  let l1Size = header.l1Size;
  let view: Qcow2Snapshot | undefined;
  if (snapshot !== undefined) {
    view = findSnapshot(snapshots, snapshot);
    if (!view) throw new DiskError('ENOENT', SNAPSHOT_NOT_FOUND);
    l1Offset = view.l1TableOffset;
    l1Size = view.l1Size;
    if (l1Size * 8 > MAX_L1_SIZE_BYTES) throw new DiskError('ELIMIT', `${source.name}: snapshot L1 table too large`);
    if (l1Size && (l1Offset % geo.clusterSize !== 0 || l1Offset + l1Size * 8 > fileSize)) {
      throw new DiskError('ECORRUPT', `${source.name}: snapshot '${view.name}' L1 table lies outside the file`);
    }
  }
  const l1 = new Uint8Array(l1Size * 8);
  if (l1.length) await readExact(source, l1, l1Offset, 'L1 table');
  let bitmaps: BitmapEntry[] = [];
  const bm = parseBitmapExtension(header);
  if (bm && (header.autoclearFeatures & AUTOCLEAR_BITMAPS) && bm.directorySize <= MAX_BITMAP_DIRECTORY) {
    const dir = new Uint8Array(bm.directorySize);
    await readExact(source, dir, bm.directoryOffset, 'bitmap directory');
    bitmaps = parseBitmapDirectory(dir, bm.count, source.name);
  }
  return { header, geo, l1, snapshots, bitmaps, ...(view ? { view } : {}) };
}

/**
 * A snapshot named the way qemu-img's -s/-l take it: "snapshot.id=ID", "snapshot.name=NAME",
 * or a plain string matched as an ID first, then as a name.
 */
export function findSnapshot(list: Qcow2Snapshot[], spec: string): Qcow2Snapshot | undefined {
  const m = /^snapshot\.(id|name)=(.*)$/.exec(spec);
  if (m) return list.find((s) => (m[1] === 'id' ? s.id : s.name) === m[2]);
  return list.find((s) => s.id === spec) ?? list.find((s) => s.name === spec);
}

/** Open options checked against the header's incompatible features. */
export async function openQcow2(source: ByteSource, options: OpenOptions): Promise<{ state: Qcow2State; dataSource: ByteSource; view?: Qcow2Snapshot }> {
  const { view, ...state } = await readQcow2State(source, options.snapshot);
  const h = state.header;
  if (options.writable && (h.incompatibleFeatures & INCOMPAT_CORRUPT)) {
    throw new DiskError('ECORRUPT', `${source.name}: qcow2: Image is corrupt; cannot be opened read/write`);
  }
  let dataSource = source;
  if (h.incompatibleFeatures & INCOMPAT_DATA_FILE) {
    if (h.dataFile === undefined) throw new DiskError('EINVAL', `${source.name}: 'data-file' is required for this image`);
    if (!options.allowExternalData) {
      throw new DiskError('EUNSAFE', `${source.name}: the image keeps its data in the external file '${h.dataFile}'; opening it needs an explicit opt-in`);
    }
    if (!options.openRelated) throw new DiskError('EINVAL', `${source.name}: cannot open the external data file '${h.dataFile}'`);
    dataSource = await options.openRelated(h.dataFile, !!options.writable);
  }
  if (h.cryptMethod !== 0) {
    try {
      const crypto = await openQcow2Crypto(source, h, options);
      if (crypto.luks) state.luks = crypto.luks;
      if (crypto.luksArea && crypto.secret) state.luksKeys = { ...crypto.luksArea, secret: crypto.secret };
      if (crypto.wrap) dataSource = crypto.wrap(dataSource);
      if (crypto.guestCipher) state.guestCipher = crypto.guestCipher;
    } catch (e) {
      if (dataSource !== source) await dataSource.close().catch(() => {});
      throw e;
    }
  }
  return { state, dataSource, ...(view ? { view } : {}) };
}
