/**
 * The Parallels (and OpenVZ ploop) image reader, QEMU 7.2 block/parallels.c semantics and
 * docs/interop/parallels.txt: a 64-byte header, then the BAT (one little-endian uint32 a
 * cluster). A BAT entry is a cluster's place in the file, in sectors for the old
 * "WithoutFreeSpace" magic and in clusters for "WithouFreSpacExt"; 0 means unallocated (reads
 * as zeroes). Read-only here; QEMU's own writer is exercised through qemu-io in the tests.
 */
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { readHostRuns } from '../blockwalk.js';
import type { CheckResult, Image, ImageInfo } from '../format.js';
import { readExact, type ByteSource } from '../source.js';

export const PARALLELS_MAGIC = 'WithoutFreeSpace';
export const PARALLELS_MAGIC_EXT = 'WithouFreSpacExt';
export const PARALLELS_VERSION = 2;
export const PARALLELS_HEADER_BYTES = 64;
/** The header's in-use marker: the image was open for writing and not closed. */
export const PARALLELS_INUSE = 0x746f6e59;
/** The engine's limit on the BAT (QEMU's is INT_MAX/4 entries, 2 GiB of memory). */
export const PARALLELS_MAX_BAT_ENTRIES = 32 * 1024 * 1024;

export function isParallels(head: Uint8Array): boolean {
  if (head.length < PARALLELS_HEADER_BYTES) return false;
  const magic = new TextDecoder('latin1').decode(head.subarray(0, 16));
  return (magic === PARALLELS_MAGIC || magic === PARALLELS_MAGIC_EXT) && new DataView(head.buffer, head.byteOffset, 64).getUint32(16, true) === PARALLELS_VERSION;
}

export interface OpenedParallels {
  size: number;
  /** Sectors per cluster ("tracks"). */
  tracks: number;
  /** Sectors a BAT entry counts in. */
  offMultiplier: number;
  bat: Uint32Array;
  inUse: boolean;
}

export async function openParallels(source: ByteSource): Promise<OpenedParallels> {
  const head = new Uint8Array(PARALLELS_HEADER_BYTES);
  await source.read(head, 0);
  const v = new DataView(head.buffer);
  const magic = new TextDecoder('latin1').decode(head.subarray(0, 16));
  if (v.getUint32(16, true) !== PARALLELS_VERSION || (magic !== PARALLELS_MAGIC && magic !== PARALLELS_MAGIC_EXT)) {
    throw new DiskError('EFORMAT', `${source.name}: Image not in Parallels format`);
  }
  const tracks = v.getUint32(28, true);
  let sectors = v.getBigUint64(36, true);
  // The old format keeps a 32-bit sector count (the high word is not part of it).
  if (magic === PARALLELS_MAGIC) sectors &= 0xffffffffn;
  if (tracks === 0) throw new DiskError('ECORRUPT', `${source.name}: Invalid image: Zero sectors per track`);
  if (tracks > Math.floor(0x7fffffff / 513)) throw new DiskError('ECORRUPT', `${source.name}: Invalid image: Too big cluster`);
  if (sectors > BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 512))) throw new DiskError('ECORRUPT', `${source.name}: parallels sector count ${sectors} is out of range`);
  const entries = v.getUint32(32, true);
  if (entries > 0x7fffffff / 4) throw new DiskError('ECORRUPT', `${source.name}: Catalog too large`);
  if (entries > PARALLELS_MAX_BAT_ENTRIES) {
    throw new DiskError('ELIMIT', `${source.name}: parallels BAT of ${entries} entries is larger than the engine's limit of ${PARALLELS_MAX_BAT_ENTRIES}`);
  }
  // QEMU reads a BAT past the end of the file as zeroes; it is damage, and refusing it keeps a
  // tiny hostile file from costing memory.
  const raw = new Uint8Array(entries * 4);
  await readExact(source, raw, PARALLELS_HEADER_BYTES, 'parallels BAT');
  const bv = new DataView(raw.buffer);
  const bat = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) bat[i] = bv.getUint32(i * 4, true);
  return {
    size: Number(sectors) * 512,
    tracks,
    offMultiplier: magic === PARALLELS_MAGIC ? 1 : tracks,
    bat,
    inUse: v.getUint32(44, true) === PARALLELS_INUSE,
  };
}

export class ParallelsImage implements Image {
  readonly format = 'parallels';
  readonly size: number;
  readonly clusterSize: number;
  private readonly bat: Uint32Array;
  private readonly offMultiplier: number;
  private readonly inUse: boolean;

  constructor(readonly source: ByteSource, opened: OpenedParallels) {
    this.size = opened.size;
    this.clusterSize = opened.tracks * 512;
    this.bat = opened.bat;
    this.offMultiplier = opened.offMultiplier;
    this.inUse = opened.inUse;
  }

  /** File offset of cluster `index`, or undefined when it is not allocated. */
  private clusterHost(index: number): number | undefined {
    const entry = index < this.bat.length ? this.bat[index]! : 0;
    return entry === 0 ? undefined : entry * this.offMultiplier * 512;
  }

  /** Runs of clusters with one status: contiguous host clusters, or unallocated. */
  private *runs(offset: number, length: number): Generator<{ pos: number; length: number; host?: number }> {
    const cs = this.clusterSize;
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const index = Math.floor(pos / cs);
      const first = this.clusterHost(index);
      let to = (index + 1) * cs;
      for (let i = index + 1; to < end; i++, to += cs) {
        const h = this.clusterHost(i);
        if (first === undefined ? h !== undefined : h !== first + (i - index) * cs) break;
      }
      const n = Math.min(to, end) - pos;
      yield { pos, length: n, ...(first === undefined ? {} : { host: first + (pos - index * cs) }) };
      pos += n;
    }
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    await readHostRuns(this.source, buf, offset, this.runs(offset, buf.length));
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    for (const r of this.runs(offset, length)) {
      if (r.host === undefined) yield { offset: r.pos, length: r.length, data: false, zero: true, present: false, depth: 0 };
      else yield { offset: r.pos, length: r.length, data: true, zero: false, present: true, depth: 0, hostOffset: r.host, hostFile: this.source.name };
    }
  }

  async info(): Promise<ImageInfo> {
    return { 'virtual-size': this.size, filename: this.source.name, format: 'parallels', 'actual-size': await this.source.allocatedSize() };
  }

  /** `qemu-img check` (report only): an unclean close, clusters outside the file, space leaked past the last cluster. */
  async check(): Promise<CheckResult> {
    // QEMU measures the file in whole sectors.
    const size = Math.ceil((await this.source.size()) / 512) * 512;
    const cs = this.clusterSize;
    const r: CheckResult = {
      filename: this.source.name, format: 'parallels', 'check-errors': 0, corruptions: 0, leaks: 0,
      'total-clusters': this.bat.length, 'allocated-clusters': 0, 'fragmented-clusters': 0, 'compressed-clusters': 0, messages: [],
    };
    if (this.inUse) {
      r.messages.push('ERROR image was not closed correctly');
      r.corruptions!++;
    }
    let high = 0;
    let prev = 0;
    for (let i = 0; i < this.bat.length; i++) {
      const off = this.clusterHost(i) ?? 0;
      if (off === 0) { prev = 0; continue; }
      if (off > size) {
        r.messages.push(`ERROR cluster ${i} is outside image`);
        r.corruptions!++;
      }
      r['allocated-clusters']!++;
      if (off > high) high = off;
      if (prev !== 0 && prev + cs !== off) r['fragmented-clusters']!++;
      prev = off;
    }
    r['image-end-offset'] = high + cs;
    if (size > r['image-end-offset']) {
      r.messages.push(`ERROR space leaked at the end of the image ${size - r['image-end-offset']}`);
      r.leaks! += Math.ceil((size - r['image-end-offset']) / cs);
    }
    return r;
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}
