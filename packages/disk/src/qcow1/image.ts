/**
 * The qcow (version 1) reader, QEMU 7.2 block/qcow.c semantics. A big-endian header, an L1
 * table of L2 table offsets, L2 entries giving each cluster's file offset; bit 63 marks a
 * compressed cluster (raw deflate, its compressed size in the bits above the offset). 0 means
 * unallocated: the backing file's data, or zeroes. Read-only; encrypted images are refused.
 */
import { zlib } from '../builtins.js';
import { backingStatus, checkRange, readBacking, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { BackingRef, Image, ImageInfo } from '../format.js';
import { backingInfo } from '../backing.js';
import { readExact, type ByteSource } from '../source.js';
import { QCOW1_HEADER_BYTES, parseQcow1Header } from './header.js';

/** The engine's limit on the L1 table (QEMU's is INT_MAX/8 entries, 2 GiB of memory). */
export const QCOW1_MAX_L1_ENTRIES = 4 * 1024 * 1024;
const L2_CACHE_TABLES = 64;

export interface OpenedQcow1 {
  size: number;
  clusterBits: number;
  l2Bits: number;
  l1: Float64Array;
  backingFile?: string;
}

export async function openQcow1(source: ByteSource): Promise<OpenedQcow1> {
  const head = new Uint8Array(QCOW1_HEADER_BYTES);
  const got = await source.read(head, 0);
  const { backingOffset, backingSize, size, clusterBits, l2Bits, cryptMethod, l1Offset } = parseQcow1Header(head.subarray(0, got), source.name);
  if (cryptMethod === 1) throw new DiskError('EUNSUPPORTED', `${source.name}: encrypted qcow (AES) images are not supported`);
  const shift = clusterBits + l2Bits;
  const l1Size = Math.ceil(size / 2 ** shift);
  if (l1Size > QCOW1_MAX_L1_ENTRIES) {
    throw new DiskError('ELIMIT', `${source.name}: qcow L1 table of ${l1Size} entries is larger than the engine's limit of ${QCOW1_MAX_L1_ENTRIES}`);
  }
  const raw = new Uint8Array(l1Size * 8);
  // QEMU reads a short L1 table as an error too.
  await readExact(source, raw, l1Offset, 'qcow L1 table');
  const l1 = new Float64Array(l1Size);
  const lv = new DataView(raw.buffer);
  for (let i = 0; i < l1Size; i++) {
    const e = lv.getBigUint64(i * 8);
    l1[i] = e > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(e);
  }
  const opened: OpenedQcow1 = { size, clusterBits, l2Bits, l1 };
  if (backingOffset !== 0) {
    const name = new Uint8Array(backingSize);
    await readExact(source, name, backingOffset, 'qcow backing file name');
    opened.backingFile = new TextDecoder().decode(name);
  }
  return opened;
}

type Kind = 'data' | 'compressed' | 'unallocated';

export class Qcow1Image implements Image {
  readonly format = 'qcow';
  readonly size: number;
  readonly clusterSize: number;
  readonly backingRef?: BackingRef;
  backing?: Image;
  private readonly l1: Float64Array;
  private readonly l2Entries: number;
  private readonly l2Cache = new Map<number, Uint8Array>();
  /** The last decompressed cluster (by its L2 entry), as QEMU keeps one. */
  private clusterCache?: { entry: bigint; data: Uint8Array };

  constructor(readonly source: ByteSource, opened: OpenedQcow1) {
    this.size = opened.size;
    this.clusterSize = 2 ** opened.clusterBits;
    this.l2Entries = 2 ** opened.l2Bits;
    this.l1 = opened.l1;
    if (opened.backingFile !== undefined) this.backingRef = { filename: opened.backingFile };
  }

  private async l2Table(offset: number): Promise<Uint8Array> {
    let t = this.l2Cache.get(offset);
    if (t) return t;
    t = new Uint8Array(this.l2Entries * 8);
    const got = await this.source.read(t, offset);
    // Past the end of the file reads as zeroes, as QEMU's file layer returns them.
    if (got < t.length) t.fill(0, got);
    if (this.l2Cache.size >= L2_CACHE_TABLES) this.l2Cache.delete(this.l2Cache.keys().next().value!);
    this.l2Cache.set(offset, t);
    return t;
  }

  /** The L2 entry of cluster `cluster` (0n when unallocated). */
  private async entry(cluster: number): Promise<bigint> {
    const l1Index = Math.floor(cluster / this.l2Entries);
    const l2Offset = this.l1[l1Index]!;
    if (l2Offset === 0) return 0n;
    if (l2Offset < 0) throw new DiskError('ECORRUPT', `${this.source.name}: qcow L1 entry ${l1Index} is out of range`);
    const t = await this.l2Table(l2Offset);
    return new DataView(t.buffer).getBigUint64((cluster % this.l2Entries) * 8);
  }

  private kindOf(e: bigint): Kind {
    return e === 0n ? 'unallocated' : e >> 63n ? 'compressed' : 'data';
  }

  /** Runs of clusters with one status (contiguous host clusters for data). */
  private async *runs(offset: number, length: number): AsyncGenerator<{ pos: number; length: number; kind: Kind; entry: bigint }> {
    const cs = this.clusterSize;
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const cluster = Math.floor(pos / cs);
      const e = await this.entry(cluster);
      const kind = this.kindOf(e);
      let to = (cluster + 1) * cs;
      if (kind !== 'compressed') {
        for (let c = cluster + 1; to < end; c++, to += cs) {
          const n = await this.entry(c);
          if (this.kindOf(n) !== kind || (kind === 'data' && n !== e + BigInt((c - cluster) * cs))) break;
        }
      }
      const n = Math.min(to, end) - pos;
      yield { pos, length: n, kind, entry: e };
      pos += n;
    }
  }

  private hostOffset(entry: bigint): number {
    if (entry > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${this.source.name}: qcow cluster offset ${entry} is out of range`);
    return Number(entry);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    const cs = this.clusterSize;
    for await (const r of this.runs(offset, buf.length)) {
      const part = buf.subarray(r.pos - offset, r.pos - offset + r.length);
      const inCluster = r.pos % cs;
      if (r.kind === 'unallocated') {
        await readBacking(this.backing, part, r.pos);
      } else if (r.kind === 'data') {
        const got = await this.source.read(part, this.hostOffset(r.entry) + inCluster);
        if (got < part.length) part.fill(0, got);
      } else {
        const data = await this.decompress(r.entry);
        part.set(data.subarray(inCluster, inCluster + part.length));
      }
    }
  }

  /** A compressed cluster: raw deflate that must inflate to exactly one cluster (QEMU's test). */
  private async decompress(entry: bigint): Promise<Uint8Array> {
    if (this.clusterCache?.entry === entry) return this.clusterCache.data;
    const cs = this.clusterSize;
    const bits = BigInt(Math.log2(cs));
    const offsetMask = (1n << (63n - bits)) - 1n;
    const csize = Number((entry >> (63n - bits)) & BigInt(cs - 1));
    const at = this.hostOffset(entry & offsetMask);
    const input = new Uint8Array(csize);
    const got = await this.source.read(input, at);
    let out: Uint8Array;
    try {
      out = zlib().inflateRawSync(input.subarray(0, got), { maxOutputLength: cs, finishFlush: zlib().constants.Z_SYNC_FLUSH });
    } catch (e) {
      throw new DiskError('ECORRUPT', `${this.source.name}: qcow compressed cluster at offset ${at} (${csize} bytes) does not inflate to ${cs} bytes: ${(e as Error).message}`);
    }
    if (out.length !== cs) throw new DiskError('ECORRUPT', `${this.source.name}: qcow compressed cluster at offset ${at} inflates to ${out.length} bytes, not ${cs}`);
    this.clusterCache = { entry, data: out };
    return out;
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    const cs = this.clusterSize;
    for await (const r of this.runs(offset, length)) {
      if (r.kind === 'unallocated') yield* backingStatus(this.backing, r.pos, r.length);
      else if (r.kind === 'compressed') yield { offset: r.pos, length: r.length, data: true, zero: false, present: true, depth: 0, compressed: true };
      else yield { offset: r.pos, length: r.length, data: true, zero: false, present: true, depth: 0, hostOffset: this.hostOffset(r.entry) + (r.pos % cs), hostFile: this.source.name };
    }
  }

  async info(): Promise<ImageInfo> {
    const info: Record<string, unknown> = { 'virtual-size': this.size, filename: this.source.name, 'cluster-size': this.clusterSize, format: 'qcow' };
    info['actual-size'] = await this.source.allocatedSize();
    Object.assign(info, backingInfo(this.source.name, this.backingRef));
    info['dirty-flag'] = false;
    return info as ImageInfo;
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}
