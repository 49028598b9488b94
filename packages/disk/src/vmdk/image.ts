/**
 * The vmdk reader and writer. The virtual disk is the concatenation of its extents; a flat
 * extent is raw bytes at an offset of its file, a sparse extent maps grains through a grain
 * directory (GD) of grain tables (GT). Grain table entries: 0 = unallocated (reads through to
 * the parent, or zeroes), 1 with the zeroed-grain flag = zeroes, else the grain's sector.
 * Writes into an unallocated grain append a whole grain at the end of the file, then set the
 * entry in the grain table and in the redundant one (QEMU's order: data first). streamOptimized
 * grains are deflate-compressed behind a 12-byte marker, written once each, in any order.
 */
import { promisify } from 'node:util';
import { zlib } from '../builtins.js';
import { checkRange, settled, type Extent } from '../blockdev.js';
import { QueuedWriteImage } from '../blockwalk.js';
import { DiskError } from '../errors.js';
import type { BackingRef, CheckResult, Image, ImageInfo } from '../format.js';
import { resolveBackingPath } from '../backing.js';
import type { ByteSource } from '../source.js';
import { GRAIN_MARKER_SIZE, GTE_ZEROED, SECTOR, SESPARSE_GRAIN_SECTORS } from './header.js';
import type { OpenedVmdk, SparseExtent, VmdkExtent } from './open.js';

const deflateAsync = (input: Uint8Array): Promise<Buffer> => promisify(zlib().deflate)(input);

/** Grain tables kept in memory per extent (each at most 512 entries, 2 KiB); the cache is dropped when it fills. */
const GT_CACHE_ENTRIES = 1024;
/** Largest single read of neighbouring compressed grains. */
const MAX_PACKED_READ = 4 << 20;
interface PackedGrain { ext: SparseExtent; sector: number; inGrain: number; part: Uint8Array }
/** [rel, rel+n) is a whole grain of `ext` (the last grain of an extent may be short). */
const wholeGrain = (ext: SparseExtent, rel: number, n: number) => rel % ext.grainBytes === 0 && n === Math.min(ext.grainBytes, ext.bytes - rel);

/** Decoded seSparse grain table entries that are not grain sectors (those are >= 0). */
const SE_ZEROED = -1;
const SE_INVALID = -2;
const SE_OUT_OF_RANGE = -3;

type GrainState =
  | { kind: 'unallocated' }
  | { kind: 'zeroed' }
  | { kind: 'data'; sector: number }
  | { kind: 'error'; why: string };

export class VmdkImage extends QueuedWriteImage implements Image {
  readonly format = 'vmdk';
  readonly size: number;
  readonly clusterSize?: number;
  readonly backingRef?: BackingRef;
  backing?: Image;
  readonly createType: string;
  readonly cid: number;
  readonly parentCid: number;
  private readonly extents: VmdkExtent[];
  private readonly gtCache = new Map<SparseExtent, Map<number, Uint32Array | Float64Array>>();
  /** The last grain inflated: sequential reads of a compressed grain decompress it once. */
  private lastGrain?: { extent: SparseExtent; sector: number; data: Uint8Array };
  private cidChecked = false;
  /**
   * streamOptimized: a grain written in pieces (convert writes data runs and skips zero runs)
   * is gathered here and compressed once, when a write moves to another grain or on flush.
   */
  private pending?: { ext: SparseExtent; rel: number; data: Uint8Array };
  /** New grains and grain table entries of the request being written (see flushStaged). */
  private staged: { appends: { ext: SparseExtent; at: number; data: Uint8Array }[]; gtes: { ext: SparseExtent; grain: number; value: number }[] } = { appends: [], gtes: [] };
  private cidUpdated = false;

  constructor(private readonly opened: OpenedVmdk, writable: boolean) {
    super(opened.descriptorFile, writable);
    this.extents = opened.extents;
    this.size = opened.size;
    this.createType = opened.createType;
    this.cid = opened.cid;
    this.parentCid = opened.parentCid;
    if (opened.parentFileNameHint) this.backingRef = { filename: opened.parentFileNameHint, format: 'vmdk' };
    // qemu-img reports a cluster size only when every extent is sparse with the same grain.
    const first = this.extents[0]!;
    if (first.kind === 'sparse' && this.extents.every((e) => e.kind === 'sparse' && e.grainBytes === first.grainBytes && e.compressed === first.compressed)) {
      this.clusterSize = first.grainBytes;
    }
  }

  /** The extent holding virtual byte `pos`. */
  private extentAt(pos: number): VmdkExtent {
    let lo = 0;
    let hi = this.extents.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.extents[mid]!.start <= pos) lo = mid;
      else hi = mid - 1;
    }
    return this.extents[lo]!;
  }

  /** The piece of [pos, end) inside one grain (or one flat extent). */
  private piece(pos: number, end: number): { ext: VmdkExtent; rel: number; n: number } {
    const ext = this.extentAt(pos);
    const rel = pos - ext.start;
    const limit = ext.kind === 'flat' ? ext.bytes - rel : ext.grainBytes - (rel % ext.grainBytes);
    return { ext, rel, n: Math.min(end - pos, limit, ext.bytes - rel) };
  }

  private async grainTable(ext: SparseExtent, sector: number): Promise<Uint32Array | Float64Array> {
    let cache = this.gtCache.get(ext);
    if (!cache) this.gtCache.set(ext, cache = new Map());
    const hit = cache.get(sector);
    if (hit) return hit;
    const raw = new Uint8Array(ext.gtEntries * (ext.seSparse ? 8 : 4));
    // A table past the end of the file reads as zeroes (unallocated), as through QEMU's file layer.
    await ext.file.read(raw, sector * SECTOR);
    const v = new DataView(raw.buffer);
    let gt: Uint32Array | Float64Array;
    if (ext.seSparse) {
      gt = decodeSeSparseTable(v, ext.gtEntries, ext.seSparse.grainsSector);
    } else {
      gt = new Uint32Array(ext.gtEntries);
      for (let i = 0; i < gt.length; i++) gt[i] = v.getUint32(i * 4, true);
    }
    if (cache.size >= GT_CACHE_ENTRIES) cache.clear();
    cache.set(sector, gt);
    return gt;
  }

  private async grainState(ext: SparseExtent, rel: number): Promise<GrainState> {
    const grain = Math.floor(rel / ext.grainBytes);
    const gdIndex = Math.floor(grain / ext.gtEntries);
    if (gdIndex >= ext.gd.length) return { kind: 'error', why: `grain ${grain} is beyond the grain directory` };
    const gtSector = ext.gd[gdIndex]!;
    if (gtSector === 0) return { kind: 'unallocated' };
    if (gtSector < 0) return { kind: 'error', why: `seSparse grain directory entry ${gdIndex} is invalid` };
    const gte = (await this.grainTable(ext, gtSector))[grain % ext.gtEntries]!;
    if (ext.seSparse && gte < 0) {
      if (gte === SE_ZEROED) return { kind: 'zeroed' };
      return { kind: 'error', why: gte === SE_INVALID ? `seSparse grain table entry of grain ${grain} is invalid` : `seSparse grain ${grain} lies beyond any addressable offset` };
    }
    if (ext.zeroGrain && gte === GTE_ZEROED) return { kind: 'zeroed' };
    if (gte === 0) return { kind: 'unallocated' };
    return { kind: 'data', sector: gte };
  }

  private corrupt(ext: VmdkExtent, why: string): DiskError {
    return new DiskError('ECORRUPT', `${ext.file.name}: ${why}`);
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    const end = offset + buf.length;
    /** Compressed grains behind markers (streamOptimized), read and inflated together after the walk. */
    const packed: PackedGrain[] = [];
    // Stored bytes (flat extents, uncompressed grains) are read in runs: pieces that follow each
    // other both in the request and in the same file make one read, and the runs' reads overlap
    // (a 2 MiB request of 64 KiB grains used to be 32 reads, one after the other).
    const reads: Promise<void>[] = [];
    let run: { file: ByteSource; at: number; from: number; length: number } | undefined;
    const flush = () => {
      if (!run) return;
      const part = buf.subarray(run.from, run.from + run.length);
      reads.push(run.file.read(part, run.at).then((got) => { if (got < part.length) part.fill(0, got); }));
      run = undefined;
    };
    const stored = (file: ByteSource, at: number, from: number, length: number) => {
      if (run && run.file === file && run.at + run.length === at && run.from + run.length === from) run.length += length;
      else {
        flush();
        run = { file, at, from, length };
      }
    };
    await settled(reads, async () => {
      for (let pos = offset; pos < end;) {
        const { ext, rel, n } = this.piece(pos, end);
        const part = buf.subarray(pos - offset, pos - offset + n);
        if (ext.kind === 'flat') {
          stored(ext.file, ext.fileOffset + rel, pos - offset, n);
        } else {
          const p = this.pending;
          if (p && p.ext === ext && rel >= p.rel && rel < p.rel + p.data.length) {
            part.set(p.data.subarray(rel - p.rel, rel - p.rel + n));
            pos += n;
            continue;
          }
          const st = await this.grainState(ext, rel);
          if (st.kind === 'error') throw this.corrupt(ext, st.why);
          if (st.kind === 'zeroed') part.fill(0);
          else if (st.kind === 'unallocated') await this.readBacking(part, pos);
          else if (!ext.compressed) stored(ext.file, st.sector * SECTOR + (rel % ext.grainBytes), pos - offset, n);
          else if (ext.markers && !(this.lastGrain?.extent === ext && this.lastGrain.sector === st.sector)) {
            packed.push({ ext, sector: st.sector, inGrain: rel % ext.grainBytes, part });
          } else await this.readGrain(ext, st.sector, rel % ext.grainBytes, part);
        }
        pos += n;
      }
      flush();
      if (packed.length) await this.readPackedGrains(packed);
    });
  }

  /**
   * Compressed grains with markers. A streamOptimized file stores grains one after another in
   * guest order, so a request's grains are read with one read per run of neighbours (from the
   * first grain's marker to past the last one's largest possible end).
   */
  private async readPackedGrains(grains: PackedGrain[]): Promise<void> {
    for (let i = 0; i < grains.length;) {
      const first = grains[i]!;
      const spanStart = first.sector * SECTOR;
      const tail = GRAIN_MARKER_SIZE + 2 * first.ext.grainBytes; // the most a grain and its marker may take
      let j = i + 1;
      while (j < grains.length) {
        const g = grains[j]!;
        if (g.ext !== first.ext || g.sector <= grains[j - 1]!.sector || g.sector * SECTOR + tail - spanStart > MAX_PACKED_READ) break;
        j++;
      }
      const last = grains[j - 1]!;
      const span = new Uint8Array(last.sector * SECTOR + tail - spanStart);
      const got = await first.ext.file.read(span, spanStart);
      const view = new DataView(span.buffer, span.byteOffset, got);
      for (const g of grains.slice(i, j)) {
        const at = g.sector * SECTOR;
        const from = at - spanStart;
        if (from + GRAIN_MARKER_SIZE > got) throw this.corrupt(g.ext, `compressed grain at offset ${at} lies past the end of the file`);
        const len = this.markerLength(g.ext, at, view.getUint32(from + 8, true));
        const data = this.inflate(g.ext, at, span.subarray(from + GRAIN_MARKER_SIZE, Math.min(got, from + GRAIN_MARKER_SIZE + len)));
        this.placeGrain(g.ext, g.sector, data, g.inGrain, g.part);
      }
      i = j;
    }
  }

  private async readBacking(part: Uint8Array, pos: number): Promise<void> {
    const b = this.backing;
    if (!b) { part.fill(0); return; }
    this.checkParentCid();
    const inside = Math.max(0, Math.min(part.length, b.size - pos));
    if (inside > 0) await b.read(part.subarray(0, inside), pos);
    part.fill(0, inside);
  }

  /** QEMU reads through to a parent only while the parent's CID is the one this image recorded. */
  private checkParentCid(): void {
    if (this.cidChecked || !this.backing) return;
    const parent = this.backing;
    if (!(parent instanceof VmdkImage) || parent.cid !== this.parentCid) {
      throw new DiskError('ECORRUPT', `${this.source.name}: the parent image ${parent.source.name} does not match (parentCID ${this.parentCid.toString(16)}, parent ${parent instanceof VmdkImage ? `CID ${parent.cid.toString(16)}` : `is ${parent.format}, not vmdk`})`);
    }
    this.cidChecked = true;
  }

  /** Part of a compressed grain. */
  private async readGrain(ext: SparseExtent, sector: number, inGrain: number, part: Uint8Array): Promise<void> {
    const at = sector * SECTOR;
    const cached = this.lastGrain?.extent === ext && this.lastGrain.sector === sector ? this.lastGrain.data : null;
    this.placeGrain(ext, sector, cached ?? await this.inflateGrain(ext, at), inGrain, part);
  }

  /** A compressed grain read on its own (grains with markers are read in runs by readPackedGrains). */
  private async inflateGrain(ext: SparseExtent, at: number): Promise<Uint8Array> {
    let start = at;
    let len = ext.grainBytes;
    if (ext.markers) {
      const m = new Uint8Array(GRAIN_MARKER_SIZE);
      await ext.file.read(m, at);
      len = this.markerLength(ext, at, new DataView(m.buffer).getUint32(8, true));
      start = at + GRAIN_MARKER_SIZE;
    }
    const raw = new Uint8Array(len);
    const got = await ext.file.read(raw, start);
    return this.inflate(ext, at, raw.subarray(0, got));
  }

  /** The compressed size a grain marker gives, checked. */
  private markerLength(ext: SparseExtent, at: number, len: number): number {
    if (len === 0 || len > 2 * ext.grainBytes) throw this.corrupt(ext, `compressed grain at offset ${at} has an invalid size ${len}`);
    return len;
  }

  /**
   * A grain's deflate stream, inflated on this thread: per 64 KiB grain a round trip to the
   * thread pool costs more than the inflate.
   */
  private inflate(ext: SparseExtent, at: number, input: Uint8Array): Uint8Array {
    try {
      // An output chunk a little larger than the grain: one output buffer rather than growing 16 KiB ones.
      return zlib().inflateSync(input, { maxOutputLength: ext.grainBytes, chunkSize: ext.grainBytes + 512 });
    } catch (e) {
      throw this.corrupt(ext, `compressed grain at offset ${at} does not inflate: ${(e as Error).message}`);
    }
  }

  /** Copy what a read wants out of an inflated grain, and keep the grain for the next read of it. */
  private placeGrain(ext: SparseExtent, sector: number, data: Uint8Array, inGrain: number, part: Uint8Array): void {
    if (inGrain + part.length > data.length) {
      throw this.corrupt(ext, `compressed grain at sector ${sector} holds ${data.length} bytes, fewer than the ${inGrain + part.length} read`);
    }
    part.set(data.subarray(inGrain, inGrain + part.length));
    this.lastGrain = { extent: ext, sector, data };
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const { ext, rel, n } = this.piece(pos, end);
      const hostFile = ext.file.name;
      if (ext.kind === 'flat') {
        // QEMU recurses into the flat file: its holes are zero data.
        const host = ext.fileOffset + rel;
        for await (const h of ext.file.hostExtents(host, n)) {
          yield { offset: pos + (h.offset - host), length: h.length, data: true, zero: !h.data, present: true, depth: 0, hostOffset: h.offset, hostFile };
        }
      } else {
        const st = await this.grainState(ext, rel);
        if (st.kind === 'error') throw this.corrupt(ext, st.why);
        if (st.kind === 'zeroed') yield { offset: pos, length: n, data: false, zero: true, present: true, depth: 0 };
        else if (st.kind === 'unallocated') yield* this.backingStatus(pos, n);
        else if (ext.compressed) yield { offset: pos, length: n, data: true, zero: false, present: true, depth: 0, compressed: true };
        else yield { offset: pos, length: n, data: true, zero: false, present: true, depth: 0, hostOffset: st.sector * SECTOR + (rel % ext.grainBytes), hostFile };
      }
      pos += n;
    }
  }

  private async *backingStatus(offset: number, length: number): AsyncIterable<Extent> {
    const b = this.backing;
    if (!b) {
      yield { offset, length, data: false, zero: true, present: false, depth: 0 };
      return;
    }
    const inside = Math.max(0, Math.min(length, b.size - offset));
    if (inside > 0) for await (const e of b.blockStatus(offset, inside)) yield { ...e, depth: e.depth + 1 };
    if (inside < length) yield { offset: offset + inside, length: length - inside, data: false, zero: true, present: false, depth: 1 };
  }

  // --- writing ---

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length, 'write');
    // Whole grains of a streamOptimized extent start compressing now, on the thread pool, while
    // earlier writes still hold the queue: successive writes compress concurrently and are
    // appended in order.
    const packed = this.compressAhead(buf, offset);
    await this.writeQueue.run(() => this.writeLocked(buf, offset, packed));
  }

  private compressAhead(buf: Uint8Array, offset: number): Map<number, Promise<Buffer>> | undefined {
    let packed: Map<number, Promise<Buffer>> | undefined;
    const end = offset + buf.length;
    for (let pos = offset; pos < end;) {
      const { ext, rel, n } = this.piece(pos, end);
      if (ext.kind === 'sparse' && ext.compressed && wholeGrain(ext, rel, n)) {
        const deflating = deflateAsync(buf.subarray(pos - offset, pos - offset + n));
        deflating.catch(() => {}); // awaited where the grain is written; never unhandled
        (packed ??= new Map()).set(pos, deflating);
      }
      pos += n;
    }
    return packed;
  }

  /** vmdk has no compressed clusters outside streamOptimized: like QEMU, a compressed write is a write. */
  async writeCompressed(buf: Uint8Array, offset: number): Promise<void> {
    await this.write(buf, offset);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'write zeroes');
    await this.writeQueue.run(async () => {
      const end = offset + length;
      for (let pos = offset; pos < end;) {
        const { ext, rel, n } = this.piece(pos, end);
        if (ext.kind === 'sparse') {
          const st = await this.grainState(ext, rel);
          if (st.kind === 'error') throw this.corrupt(ext, st.why);
          if (st.kind === 'zeroed' || (st.kind === 'unallocated' && !this.backing)) { pos += n; continue; }
          if (ext.zeroGrain && wholeGrain(ext, rel, n)) {
            this.setGte(ext, rel, GTE_ZEROED);
            pos += n;
            continue;
          }
          if (st.kind === 'unallocated' && ext.compressed) { pos += n; continue; }
        }
        await this.writeLocked(new Uint8Array(n), pos);
        pos += n;
      }
      await this.flushStaged(); // zeroed-grain entries
    });
  }

  private async writeLocked(buf: Uint8Array, offset: number, packed?: Map<number, Promise<Buffer>>): Promise<void> {
    const end = offset + buf.length;
    try {
      for (let pos = offset; pos < end;) {
        const { ext, rel, n } = this.piece(pos, end);
        const part = buf.subarray(pos - offset, pos - offset + n);
        if (ext.kind === 'flat') {
          await ext.file.write(part, ext.fileOffset + rel);
        } else {
          await this.writeSparse(ext, rel, pos, part, packed?.get(pos));
        }
        pos += n;
      }
    } finally {
      // Grains written before a failure land, as they did when each was written at once.
      await this.flushStaged();
    }
    if (!this.cidUpdated) {
      this.cidUpdated = true;
      await this.writeNewCid();
    }
  }

  private async writeSparse(ext: SparseExtent, rel: number, pos: number, part: Uint8Array, packed?: Promise<Buffer>): Promise<void> {
    const st = await this.grainState(ext, rel);
    if (st.kind === 'error') throw this.corrupt(ext, st.why);
    const inGrain = rel % ext.grainBytes;
    if (ext.compressed) {
      if (st.kind === 'data') throw new DiskError('EIO', `${ext.file.name}: Could not write to allocated cluster for streamOptimized`);
      const grainRel = rel - inGrain;
      const grainLen = Math.min(ext.grainBytes, ext.bytes - grainRel);
      const p = this.pending;
      if (p && (p.ext !== ext || p.rel !== grainRel)) await this.commitPending();
      if (inGrain !== 0 || part.length !== grainLen || this.pending) {
        if (!this.pending) this.pending = { ext, rel: grainRel, data: new Uint8Array(grainLen) };
        this.pending.data.set(part, inGrain);
        return;
      }
      await this.writeCompressedGrain(ext, grainRel, part, packed);
      return;
    }
    if (st.kind === 'data') {
      await ext.file.write(part, st.sector * SECTOR + inGrain);
      return;
    }
    const gdIndex = Math.floor(Math.floor(rel / ext.grainBytes) / ext.gtEntries);
    if (ext.gd[gdIndex] === 0) {
      throw new DiskError('EUNSUPPORTED', `${ext.file.name}: grain table ${gdIndex} is not allocated; vmdk writes need preallocated grain tables`);
    }
    // A new grain is written whole: around the new data, the parent's bytes (or zeroes for a
    // zeroed grain and without a parent).
    // A whole grain goes out from the caller's buffer as it is (the staged writes land before
    // write() returns): no copy of every byte a convert writes.
    let grain = part;
    if (inGrain !== 0 || part.length !== ext.grainBytes) {
      grain = new Uint8Array(ext.grainBytes);
      const grainPos = pos - inGrain;
      const grainLen = Math.min(ext.grainBytes, this.size - grainPos);
      if (st.kind === 'unallocated' && this.backing && (inGrain > 0 || part.length < grainLen)) {
        await this.readBacking(grain.subarray(0, grainLen), grainPos);
      }
      grain.set(part, inGrain);
    }
    const sector = ext.nextGrainSector;
    if (sector >= 0xffffffff) throw new DiskError('ENOSPC', `${ext.file.name}: vmdk extent is full`);
    this.staged.appends.push({ ext, at: sector * SECTOR, data: grain });
    ext.nextGrainSector += ext.grainBytes / SECTOR;
    this.setGte(ext, rel, sector);
  }

  /** Compress one grain and append it behind its marker, then point the grain table at it. */
  private async writeCompressedGrain(ext: SparseExtent, rel: number, part: Uint8Array, deflated?: Promise<Buffer>): Promise<void> {
    const packed = await (deflated ?? deflateAsync(part));
    const at = ext.nextGrainSector * SECTOR;
    const total = GRAIN_MARKER_SIZE + packed.length;
    const out = new Uint8Array(Math.ceil(total / SECTOR) * SECTOR);
    const v = new DataView(out.buffer);
    v.setBigUint64(0, BigInt(Math.floor((ext.start + rel) / SECTOR)), true);
    v.setUint32(8, packed.length, true);
    out.set(packed, GRAIN_MARKER_SIZE);
    this.staged.appends.push({ ext, at, data: out });
    ext.nextGrainSector += out.length / SECTOR;
    this.setGte(ext, rel, at / SECTOR);
  }

  private async commitPending(): Promise<void> {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    await this.writeCompressedGrain(p.ext, p.rel, p.data);
    await this.flushStaged();
  }

  /** Point a grain table entry at `value`; it lands (after the data) with the next flushStaged. */
  private setGte(ext: SparseExtent, rel: number, value: number): void {
    this.staged.gtes.push({ ext, grain: Math.floor(rel / ext.grainBytes), value });
  }

  /**
   * Write what the current request staged: new grains first (neighbours in one write), then the
   * grain table entries, one write per table and copy for the span they cover (QEMU's order:
   * data before the tables point at it). Readers see an entry only once its grain is on disk.
   */
  private async flushStaged(): Promise<void> {
    const { appends, gtes } = this.staged;
    if (!appends.length && !gtes.length) return;
    this.staged = { appends: [], gtes: [] };
    for (let i = 0; i < appends.length;) {
      let j = i + 1;
      let end = appends[i]!.at + appends[i]!.data.length;
      while (j < appends.length && appends[j]!.ext === appends[i]!.ext && appends[j]!.at === end) end += appends[j++]!.data.length;
      const file = appends[i]!.ext.file;
      const run = appends.slice(i, j).map((a) => a.data);
      if (run.length > 1 && file.writev) await file.writev(run, appends[i]!.at);
      else for (const a of appends.slice(i, j)) await file.write(a.data, a.at);
      i = j;
    }
    const tables = new Map<SparseExtent, Map<number, { lo: number; hi: number; entries: [number, number][] }>>();
    for (const g of gtes) {
      const gdIndex = Math.floor(g.grain / g.ext.gtEntries);
      let perExt = tables.get(g.ext);
      if (!perExt) tables.set(g.ext, (perExt = new Map()));
      const idx = g.grain % g.ext.gtEntries;
      const t = perExt.get(gdIndex);
      if (t) { t.lo = Math.min(t.lo, idx); t.hi = Math.max(t.hi, idx); t.entries.push([idx, g.value]); }
      else perExt.set(gdIndex, { lo: idx, hi: idx, entries: [[idx, g.value]] });
    }
    for (const [ext, perExt] of tables) {
      for (const [gdIndex, t] of perExt) {
        const gtSector = ext.gd[gdIndex]!;
        const gt = await this.grainTable(ext, gtSector);
        for (const [idx, value] of t.entries) gt[idx] = value;
        const span = new Uint8Array((t.hi - t.lo + 1) * 4);
        const v = new DataView(span.buffer);
        for (let k = t.lo; k <= t.hi; k++) v.setUint32((k - t.lo) * 4, gt[k]!, true);
        await ext.file.write(span, gtSector * SECTOR + t.lo * 4);
        const backup = ext.rgd?.[gdIndex];
        if (backup) await ext.file.write(span, backup * SECTOR + t.lo * 4);
      }
    }
  }

  /** QEMU gives an image a new random CID on its first write after opening. */
  private async writeNewCid(): Promise<void> {
    const o = this.opened;
    const len = o.descriptorIsFile ? await o.descriptorFile.size() : 20 * SECTOR;
    const raw = new Uint8Array(len);
    await o.descriptorFile.read(raw, o.descriptorOffset);
    const nul = raw.indexOf(0);
    const text = new TextDecoder('latin1').decode(nul >= 0 ? raw.subarray(0, nul) : raw);
    const cid = (Math.random() * 0x100000000) >>> 0;
    const next = text.replace(/(^|[^A-Za-z])CID=[0-9a-fA-F]+/m, `$1CID=${cid.toString(16)}`);
    if (next === text) return;
    const bytes = new Uint8Array(Buffer.from(next, 'latin1'));
    if (o.descriptorIsFile) {
      await o.descriptorFile.write(bytes, 0);
      await o.descriptorFile.truncate(bytes.length);
    } else if (bytes.length <= len) {
      const padded = new Uint8Array(len);
      padded.set(bytes);
      await o.descriptorFile.write(padded, o.descriptorOffset);
    }
    (this as { cid: number }).cid = cid;
  }

  override async flush(): Promise<void> {
    await this.writeQueue.run(() => this.commitPending());
    if (this.writable) for (const f of this.files()) await f.flush();
  }

  override async close(): Promise<void> {
    await this.writeQueue.run(() => this.commitPending());
    await this.closeExtents();
    await this.source.close();
  }

  /** Close the extent files the image opened (not the descriptor's own file). */
  async closeExtents(): Promise<void> {
    for (const e of this.extents) if (e.ownFile) await e.file.close();
  }

  private files(): ByteSource[] {
    return [...new Set([this.source, ...this.extents.map((e) => e.file)])];
  }

  async info(): Promise<ImageInfo> {
    let actual = 0;
    for (const f of this.files()) actual += await f.allocatedSize();
    const info: Record<string, unknown> = {};
    if (this.backingRef) info['backing-filename-format'] = 'vmdk';
    info['virtual-size'] = this.size;
    info.filename = this.source.name;
    if (this.clusterSize) info['cluster-size'] = this.clusterSize;
    info.format = 'vmdk';
    info['actual-size'] = actual;
    info['format-specific'] = {
      type: 'vmdk',
      data: {
        cid: this.cid,
        'parent-cid': this.parentCid,
        'create-type': this.createType,
        extents: this.extents.map((e) => ({
          ...(e.kind === 'sparse' && e.compressed ? { compressed: true } : {}),
          'virtual-size': e.bytes,
          filename: e.file.name,
          ...(e.kind === 'sparse' ? { 'cluster-size': e.grainBytes } : {}),
          format: e.type,
        })),
      },
    };
    if (this.backingRef) {
      info['full-backing-filename'] = resolveBackingPath(this.source.name, this.backingRef.filename);
      info['backing-filename'] = this.backingRef.filename;
    }
    info['dirty-flag'] = false;
    return info as ImageInfo;
  }

  /**
   * `qemu-img check`: every allocated grain must lie inside its extent file. Like QEMU, the
   * first bad grain ends the check with a failure (exit 1), not a corruption count.
   */
  async check(): Promise<CheckResult> {
    const result: CheckResult = { filename: this.source.name, format: 'vmdk', 'check-errors': 0, messages: [] };
    for (const ext of this.extents) {
      if (ext.kind !== 'sparse') continue;
      const fileSize = await ext.file.size();
      for (let rel = 0; rel < ext.bytes; rel += ext.grainBytes) {
        const sectorNum = (ext.start + rel) / SECTOR;
        const gdIndex = Math.floor(rel / ext.grainBytes / ext.gtEntries);
        if (ext.gd[gdIndex] === 0) { rel += (ext.gtEntries - 1) * ext.grainBytes; continue; }
        const st = await this.grainState(ext, rel);
        if (st.kind === 'error') throw new DiskError('ECORRUPT', `could not get cluster_offset for sector ${sectorNum}`);
        if (st.kind === 'data' && st.sector * SECTOR >= fileSize) throw new DiskError('ECORRUPT', `cluster offset for sector ${sectorNum} points after EOF`);
      }
    }
    return result;
  }
}

/**
 * seSparse grain table entries (64-bit, QEMU's reading): the top nibble is the type. 0 with
 * nothing else set: unallocated; 1 (unmapped by the guest) and 2: zeroes; 3: allocated, the
 * grain index split as 12 low bits in bits 48..59 and the rest in bits 0..47. Grain sectors
 * come back as numbers; the other kinds as the negative SE_* codes (0 stays unallocated, and so
 * does a grain that resolves to sector 0, as in QEMU).
 */
function decodeSeSparseTable(v: DataView, entries: number, grainsSector: number): Float64Array {
  const gt = new Float64Array(entries);
  for (let i = 0; i < entries; i++) {
    const lo = v.getUint32(i * 8, true);
    const hi = v.getUint32(i * 8 + 4, true);
    switch (hi >>> 28) {
      case 0:
        gt[i] = lo === 0 && hi === 0 ? 0 : SE_INVALID;
        break;
      case 1:
      case 2:
        gt[i] = SE_ZEROED;
        break;
      case 3: {
        const index = ((hi & 0xffff) * 0x100000000 + lo) * 4096 + ((hi >>> 16) & 0xfff);
        const sector = grainsSector + index * SESPARSE_GRAIN_SECTORS;
        gt[i] = Number.isSafeInteger(sector * SECTOR) ? sector : SE_OUT_OF_RANGE;
        break;
      }
      default:
        gt[i] = SE_INVALID;
    }
  }
  return gt;
}
