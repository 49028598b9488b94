/**
 * QED images (QEMU 7.2 block/qed.c semantics; docs/interop/qed_spec.txt): a header cluster, an
 * L1 table, then L2 tables and data clusters appended at the end of the file as they are
 * needed; there are no reference counts. An L2 entry is 0 (unallocated: the backing file, or
 * zeroes), 1 (a zero cluster) or the offset of a data cluster.
 *
 * While allocating writes are unflushed the header carries the need-check feature; a writable
 * open of such an image (after a crash) runs the consistency check with repair first, as QEMU
 * does, and flush/close clear the bit again.
 */
import { backingStatus, checkRange, readBacking, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { QueuedWriteImage } from '../blockwalk.js';
import type { BackingRef, CheckResult, Image, ImageInfo, ResizeOptions } from '../format.js';
import { readExact, type ByteSource } from '../source.js';
import { backingInfo } from '../backing.js';
import {
  QED_F_BACKING_FILE, QED_F_BACKING_FORMAT_NO_PROBE, QED_F_NEED_CHECK, QED_HEADER_BYTES, QED_ZERO_CLUSTER,
  backingFeatures, parseQedHeader, qedMaxImageSize, serializeQedHeader, type QedHeader,
} from './header.js';

/** L2 entries are cached and read in pages of this many (64 KiB), not whole tables (up to 1 GiB). */
const PAGE_ENTRIES = 8192;
/** Cached L2 pages (8 MiB). */
const MAX_PAGES = 128;

type Kind = 'data' | 'zero' | 'unallocated';
interface Run { offset: number; length: number; kind: Kind; host?: number }

export interface OpenedQed {
  header: QedHeader;
  l1: Float64Array;
  fileSize: number;
}

export async function openQed(source: ByteSource): Promise<OpenedQed> {
  const fileSize = await source.size();
  const head = new Uint8Array(Math.min(fileSize, 64 * 1024));
  await readExact(source, head.subarray(0, Math.min(head.length, QED_HEADER_BYTES)), 0, 'qed header');
  await source.read(head, 0);
  const h = parseQedHeader(head, source.name);
  const cs = h.clusterSize;
  if (h.imageSize % 512 !== 0) throw new DiskError('ECORRUPT', `${source.name}: qed image size ${h.imageSize} is not a multiple of 512`);
  if (h.imageSize > qedMaxImageSize(cs, h.tableSize)) {
    throw new DiskError('ECORRUPT', `${source.name}: qed image size ${h.imageSize} is larger than its tables can map (${qedMaxImageSize(cs, h.tableSize)})`);
  }
  const tableBytes = h.tableSize * cs;
  if (!tableOffsetValid(h, h.l1TableOffset, fileSize)) {
    throw new DiskError('ECORRUPT', `${source.name}: QED table offset is invalid (L1 table at ${h.l1TableOffset})`);
  }
  // Only the L1 entries the virtual size needs are read (bounded by the size, not the table).
  const entries = tableBytes / 8;
  const needed = Math.min(entries, Math.ceil(h.imageSize / (entries * cs)));
  const raw = new Uint8Array(needed * 8);
  const got = await source.read(raw, h.l1TableOffset);
  if (got < raw.length) raw.fill(0, got); // past the end of the file the table reads as zeroes
  const l1 = new Float64Array(needed);
  const v = new DataView(raw.buffer);
  for (let i = 0; i < needed; i++) l1[i] = v.getUint32(i * 8, true) + v.getUint32(i * 8 + 4, true) * 2 ** 32;
  return { header: h, l1, fileSize };
}

/**
 * QEMU's bounds for a cluster: aligned, after the header, before the end of the file (its
 * size taken down to whole clusters, as QEMU counts it).
 */
function clusterOffsetValid(h: QedHeader, offset: number, fileSize: number): boolean {
  const cs = h.clusterSize;
  return offset % cs === 0 && offset >= h.headerSize * cs && offset < Math.floor(fileSize / cs) * cs;
}

/**
 * A table's first and last clusters must both be valid. As in QEMU, a one-cluster table
 * (table_size=1) never is: its last cluster is its first, which QEMU's overflow guard refuses,
 * so QEMU cannot open the images it creates with table_size=1 — and neither do we.
 */
function tableOffsetValid(h: QedHeader, offset: number, fileSize: number): boolean {
  const end = offset + (h.tableSize - 1) * h.clusterSize;
  return end > offset && clusterOffsetValid(h, offset, fileSize) && clusterOffsetValid(h, end, fileSize);
}

export class QedImage extends QueuedWriteImage implements Image {
  readonly format = 'qed';
  size: number;
  readonly clusterSize: number;
  /** Changed by changeBackingFile (rebase) on a writable image. */
  backingRef?: BackingRef;
  backing?: Image;
  private header: QedHeader;
  private l1: Float64Array;
  /** Entries per L1/L2 table, and guest bytes one L2 table maps. */
  private readonly tableEntries: number;
  private readonly l2Span: number;
  private readonly pageEntries: number;
  private readonly pages = new Map<string, Float64Array>();
  /** Where the next cluster is allocated (the end of the file, cluster aligned). */
  private fileEnd: number;
  private fileSize: number;

  constructor(source: ByteSource, opened: OpenedQed, writable: boolean) {
    super(source, writable);
    const h = opened.header;
    this.header = h;
    this.size = h.imageSize;
    this.clusterSize = h.clusterSize;
    this.l1 = opened.l1;
    this.tableEntries = (h.tableSize * h.clusterSize) / 8;
    this.l2Span = this.tableEntries * h.clusterSize;
    this.pageEntries = Math.min(PAGE_ENTRIES, this.tableEntries);
    this.fileSize = opened.fileSize;
    // QEMU allocates from the file's size taken down to whole clusters.
    this.fileEnd = Math.floor(opened.fileSize / h.clusterSize) * h.clusterSize;
    if (h.backingFile !== undefined) {
      this.backingRef = { filename: h.backingFile, ...(h.features & QED_F_BACKING_FORMAT_NO_PROBE ? { format: 'raw' } : {}) };
    }
  }

  /** A writable open of an image left with need-check set: repair as QEMU does, then mark it clean. */
  async recover(): Promise<void> {
    if (!this.writable || !(this.header.features & QED_F_NEED_CHECK)) return;
    const r = await this.check(true);
    if (r['check-errors'] === 0 && !r.corruptions) await this.setNeedCheck(false);
  }

  private validTable(offset: number): boolean {
    return tableOffsetValid(this.header, offset, this.fileSize);
  }

  private validCluster(offset: number): boolean {
    return clusterOffsetValid(this.header, offset, this.fileSize);
  }

  /** The L2 page holding entry `index` of the table at `table`. */
  private async page(table: number, index: number): Promise<Float64Array> {
    const p = Math.floor(index / this.pageEntries);
    const key = `${table}:${p}`;
    const hit = this.pages.get(key);
    if (hit) {
      this.pages.delete(key);
      this.pages.set(key, hit);
      return hit;
    }
    const raw = new Uint8Array(this.pageEntries * 8);
    const got = await this.source.read(raw, table + p * this.pageEntries * 8);
    if (got < raw.length) raw.fill(0, got);
    const v = new DataView(raw.buffer);
    const entries = new Float64Array(this.pageEntries);
    for (let i = 0; i < entries.length; i++) entries[i] = v.getUint32(i * 8, true) + v.getUint32(i * 8 + 4, true) * 2 ** 32;
    this.pages.set(key, entries);
    while (this.pages.size > MAX_PAGES) this.pages.delete(this.pages.keys().next().value!);
    return entries;
  }

  /** How guest cluster `c` is stored. */
  private async lookup(c: number): Promise<{ kind: Kind; host?: number }> {
    const l1i = Math.floor(c / this.tableEntries);
    const table = this.l1[l1i] ?? 0;
    if (table === 0) return { kind: 'unallocated' };
    if (!this.validTable(table)) throw new DiskError('ECORRUPT', `${this.source.name}: qed L2 table offset 0x${table.toString(16)} (L1 index ${l1i}) is invalid`);
    const idx = c % this.tableEntries;
    const e = (await this.page(table, idx))[idx % this.pageEntries]!;
    if (e === 0) return { kind: 'unallocated' };
    if (e === QED_ZERO_CLUSTER) return { kind: 'zero' };
    if (!this.validCluster(e)) throw new DiskError('ECORRUPT', `${this.source.name}: qed cluster offset 0x${e.toString(16)} (cluster ${c}) is invalid`);
    return { kind: 'data', host: e };
  }

  /** [offset, offset+length) as runs of one kind (data runs contiguous in the file). */
  private async *runs(offset: number, length: number): AsyncIterable<Run> {
    const cs = this.clusterSize;
    let cur: Run | undefined;
    for (let pos = offset; pos < offset + length;) {
      const c = Math.floor(pos / cs);
      const end = Math.min(offset + length, (c + 1) * cs);
      // A whole unallocated L2 table is one step.
      const l1i = Math.floor(c / this.tableEntries);
      if ((this.l1[l1i] ?? 0) === 0) {
        const tableEnd = Math.min(offset + length, (l1i + 1) * this.l2Span);
        if (cur?.kind === 'unallocated') cur.length += tableEnd - pos;
        else { if (cur) yield cur; cur = { offset: pos, length: tableEnd - pos, kind: 'unallocated' }; }
        pos = tableEnd;
        continue;
      }
      const m = await this.lookup(c);
      const host = m.host !== undefined ? m.host + (pos - c * cs) : undefined;
      if (cur && cur.kind === m.kind && (host === undefined || cur.host! + cur.length === host)) cur.length += end - pos;
      else { if (cur) yield cur; cur = { offset: pos, length: end - pos, kind: m.kind, ...(host !== undefined ? { host } : {}) }; }
      pos = end;
    }
    if (cur) yield cur;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    const reads: Promise<unknown>[] = [];
    for await (const r of this.runs(offset, buf.length)) {
      const slice = buf.subarray(r.offset - offset, r.offset - offset + r.length);
      if (r.kind === 'zero') slice.fill(0);
      else if (r.kind === 'unallocated') reads.push(readBacking(this.backing, slice, r.offset));
      // A cluster cut short by the end of the file reads as zeroes, as QEMU's file layer returns them.
      else reads.push(this.source.read(slice, r.host!).then((n) => { if (n < slice.length) slice.fill(0, n); }));
      if (reads.length >= 16) await Promise.all(reads.splice(0));
    }
    await Promise.all(reads);
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    for await (const r of this.runs(offset, length)) {
      if (r.kind === 'data') yield { offset: r.offset, length: r.length, data: true, zero: false, present: true, depth: 0, hostOffset: r.host!, hostFile: this.source.name };
      else if (r.kind === 'zero') yield { offset: r.offset, length: r.length, data: false, zero: true, present: true, depth: 0 };
      else yield* backingStatus(this.backing, r.offset, r.length);
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length, 'write');
    await this.writeQueue.run(() => this.writeLocked(offset, buf.length, buf));
  }

  /**
   * Zeroes: whole clusters become zero clusters (allocated ones are zeroed in place, as QEMU
   * does), unallocated ones without a backing file already read as zeroes; partial clusters
   * are written.
   */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'write zeroes');
    await this.writeQueue.run(() => this.writeLocked(offset, length, null));
  }

  private async writeLocked(offset: number, length: number, data: Uint8Array | null): Promise<void> {
    for (let pos = offset; pos < offset + length;) {
      const l1i = Math.floor(pos / this.l2Span);
      const end = Math.min(offset + length, (l1i + 1) * this.l2Span);
      await this.writeInTable(l1i, pos, end - pos, data ? data.subarray(pos - offset, end - offset) : null);
      pos = end;
    }
  }

  /** A write inside the guest range of one L2 table. */
  private async writeInTable(l1i: number, offset: number, length: number, data: Uint8Array | null): Promise<void> {
    const cs = this.clusterSize;
    const updates: Array<[number, number]> = []; // [entry index, new value]
    const fresh: Uint8Array[] = [];
    for (let pos = offset; pos < offset + length;) {
      const c = Math.floor(pos / cs);
      const start = c * cs;
      const end = Math.min(offset + length, start + cs);
      const piece = data ? data.subarray(pos - offset, end - offset) : null;
      const whole = pos === start && (end - start === cs || end === this.size);
      const m = await this.lookup(c);
      if (m.kind === 'data') {
        await this.source.write(piece ?? new Uint8Array(end - pos), m.host! + (pos - start));
      } else if (!piece && whole) {
        // Zeroes over a whole cluster that holds none: a zero cluster, unless it reads as zeroes already.
        if (m.kind === 'unallocated' && this.backing) updates.push([c % this.tableEntries, QED_ZERO_CLUSTER]);
      } else if (!piece && m.kind === 'zero') {
        // Already zeroes.
      } else if (!piece && m.kind === 'unallocated' && !this.backing) {
        // Already zeroes.
      } else {
        // A new cluster: what the guest sees there now, with the piece laid over it.
        let cluster: Uint8Array;
        if (piece && whole && piece.length === cs) cluster = piece;
        else {
          cluster = new Uint8Array(cs);
          if (m.kind === 'unallocated') await readBacking(this.backing, cluster.subarray(0, Math.min(cs, this.size - start)), start);
          if (piece) cluster.set(piece, pos - start);
          else cluster.fill(0, pos - start, end - start);
        }
        updates.push([c % this.tableEntries, this.fileEnd + fresh.length * cs]);
        fresh.push(cluster);
      }
      pos = end;
    }
    if (!updates.length) return;
    await this.setNeedCheck(true);
    if (fresh.length) {
      const at = this.fileEnd;
      this.fileEnd += fresh.length * cs;
      this.fileSize = Math.max(this.fileSize, this.fileEnd);
      if (this.source.writev) await this.source.writev(fresh, at);
      else for (const [i, f] of fresh.entries()) await this.source.write(f, at + i * cs);
    }
    let table = this.l1[l1i]!;
    if (table === 0) {
      // A new L2 table after the data (QEMU's order): the file is extended over it, so it
      // reads as zeroes without writing them, and only the pages with entries are written.
      table = this.fileEnd;
      this.fileEnd += this.header.tableSize * cs;
      this.fileSize = Math.max(this.fileSize, this.fileEnd);
      await this.source.truncate(Math.max(await this.source.size(), this.fileEnd));
    }
    await this.setEntries(table, updates);
    if (this.l1[l1i] !== table) {
      this.l1[l1i] = table;
      const e = new Uint8Array(8);
      new DataView(e.buffer).setBigUint64(0, BigInt(table), true);
      await this.source.write(e, this.header.l1TableOffset + l1i * 8);
    }
  }

  /** Set L2 entries and write the changed range of each page. */
  private async setEntries(table: number, updates: Array<[number, number]>): Promise<void> {
    const byPage = new Map<number, Array<[number, number]>>();
    for (const u of updates) {
      const p = Math.floor(u[0] / this.pageEntries);
      if (!byPage.has(p)) byPage.set(p, []);
      byPage.get(p)!.push(u);
    }
    for (const [p, list] of byPage) {
      const entries = await this.page(table, p * this.pageEntries);
      let lo = Infinity, hi = -1;
      for (const [idx, value] of list) {
        const i = idx % this.pageEntries;
        entries[i] = value;
        lo = Math.min(lo, i);
        hi = Math.max(hi, i);
      }
      const out = new Uint8Array((hi - lo + 1) * 8);
      const v = new DataView(out.buffer);
      for (let i = lo; i <= hi; i++) v.setBigUint64((i - lo) * 8, BigInt(entries[i]!), true);
      await this.source.write(out, table + (p * this.pageEntries + lo) * 8);
    }
  }

  private async setNeedCheck(on: boolean): Promise<void> {
    if (!!(this.header.features & QED_F_NEED_CHECK) === on) return;
    // Clearing it must come after everything it covers is on disk.
    if (!on) await this.source.flush();
    this.header = { ...this.header, features: on ? this.header.features | QED_F_NEED_CHECK : this.header.features & ~QED_F_NEED_CHECK };
    await this.source.write(serializeQedHeader(this.header), 0);
  }

  /**
   * Name another backing file, or none (QEMU's bdrv_qed_change_backing_file): the fixed header
   * and the name after it are rewritten in one write, once every earlier write is on disk.
   * "raw" is the one backing format QED records (as "do not probe").
   */
  async changeBackingFile(filename: string | undefined, format: string | undefined): Promise<void> {
    // An unknown compatible feature may keep data after the header that we would overwrite.
    if (filename !== undefined && this.header.compatFeatures !== 0n) throw new DiskError('EUNSUPPORTED', 'Operation not supported');
    const name = new TextEncoder().encode(filename ?? '');
    if (QED_HEADER_BYTES + name.length > this.header.headerSize * this.clusterSize) throw new DiskError('ENOSPC', 'No space left in the file header');
    await this.writeQueue.run(async () => {
      await this.source.flush();
      let features = this.header.features & ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
      if (filename !== undefined) features |= backingFeatures(format);
      const h: QedHeader = { ...this.header, features, backingFilenameOffset: QED_HEADER_BYTES, backingFilenameSize: name.length, backingFile: filename };
      const bytes = new Uint8Array(QED_HEADER_BYTES + name.length);
      bytes.set(serializeQedHeader(h));
      bytes.set(name, QED_HEADER_BYTES);
      await this.source.write(bytes, 0);
      await this.source.flush();
      this.header = h;
      this.backingRef = filename !== undefined ? { filename, ...(format === 'raw' ? { format: 'raw' } : {}) } : undefined;
    });
  }

  /**
   * bdrv_qed_co_truncate: only growing, within what the tables can map; the header's size is
   * the one field that changes. The L1 entries the new size brings in are read (they are
   * zero unless another writer left them).
   */
  async resize(size: number, options: ResizeOptions): Promise<void> {
    if (!this.writable) throw new DiskError('EROFS', `${this.source.name}: image is opened read-only`);
    await this.writeQueue.run(async () => {
      if (options.preallocation !== 'off') throw new DiskError('EUNSUPPORTED', `Unsupported preallocation mode '${options.preallocation}'`);
      if (size % 512 !== 0 || size > qedMaxImageSize(this.clusterSize, this.header.tableSize)) throw new DiskError('EINVAL', 'Invalid image size specified');
      if (size < this.header.imageSize) throw new DiskError('EUNSUPPORTED', 'Shrinking images is currently not supported');
      await this.source.flush();
      this.header = { ...this.header, imageSize: size };
      await this.source.write(serializeQedHeader(this.header), 0);
      await this.source.flush();
      const needed = Math.min(this.tableEntries, Math.ceil(size / this.l2Span));
      if (needed > this.l1.length) {
        const raw = new Uint8Array((needed - this.l1.length) * 8);
        const got = await this.source.read(raw, this.header.l1TableOffset + this.l1.length * 8);
        if (got < raw.length) raw.fill(0, got);
        const l1 = new Float64Array(needed);
        l1.set(this.l1);
        const v = new DataView(raw.buffer);
        for (let i = this.l1.length; i < needed; i++) {
          const at = (i - this.l1.length) * 8;
          l1[i] = v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
        }
        this.l1 = l1;
      }
      this.size = size;
    });
  }

  override async flush(): Promise<void> {
    await this.writeQueue.idle();
    if (!this.writable) return;
    await this.writeQueue.run(() => this.setNeedCheck(false));
    await this.source.flush();
  }

  override async close(): Promise<void> {
    if (this.writable) await this.flush();
    await super.close();
  }

  async info(): Promise<ImageInfo> {
    const info: ImageInfo = {
      'virtual-size': this.size,
      filename: this.source.name,
      'cluster-size': this.clusterSize,
      format: 'qed',
      'actual-size': await this.source.allocatedSize(),
    };
    Object.assign(info, backingInfo(this.source.name, this.backingRef));
    info['dirty-flag'] = false;
    return info;
  }

  /**
   * `qemu-img check` as QEMU's qed-check.c: every table and data cluster must lie inside the
   * file, cluster aligned, referenced once; clusters nothing references are leaks (harmless,
   * never repaired). With `fix`, invalid entries are cleared instead of counted.
   */
  async check(fix = false): Promise<CheckResult> {
    const cs = this.clusterSize;
    const r = { corruptions: 0, leaks: 0, fixed: 0, allocated: 0, fragmented: 0 };
    const nClusters = Math.ceil(this.fileSize / cs);
    const used = new Uint8Array(Math.ceil(nClusters / 8));
    const mark = (offset: number, n: number): boolean => {
      let ok = true;
      for (let k = offset / cs; k < offset / cs + n; k++) {
        if (used[k >> 3]! & (1 << (k & 7))) { r.corruptions++; ok = false; }
        used[k >> 3]! |= 1 << (k & 7);
      }
      return ok;
    };
    mark(this.header.l1TableOffset, this.header.tableSize);
    const l1Fixes: number[] = [];
    for (let i = 0; i < this.l1.length; i++) {
      const table = this.l1[i]!;
      if (!table) continue;
      if (!this.validTable(table)) {
        if (fix) { l1Fixes.push(i); r.fixed++; } else r.corruptions++;
        continue;
      }
      if (!mark(table, this.header.tableSize)) continue;
      let last = 0;
      const fixes: Array<[number, number]> = [];
      for (let idx = 0; idx < this.tableEntries; idx++) {
        const e = (await this.page(table, idx))[idx % this.pageEntries]!;
        if (e === 0 || e === QED_ZERO_CLUSTER) continue;
        r.allocated++;
        if (last && last + cs !== e) r.fragmented++;
        last = e;
        if (!this.validCluster(e)) {
          if (fix) { fixes.push([idx, 0]); r.fixed++; } else r.corruptions++;
          continue;
        }
        mark(e, 1);
      }
      if (fixes.length) await this.setEntries(table, fixes);
    }
    for (const i of l1Fixes) {
      this.l1[i] = 0;
      await this.source.write(new Uint8Array(8), this.header.l1TableOffset + i * 8);
    }
    for (let k = this.header.headerSize; k < nClusters; k++) if (!(used[k >> 3]! & (1 << (k & 7)))) r.leaks++;
    if (fix && !r.corruptions) await this.setNeedCheck(false);
    return {
      filename: this.source.name,
      format: 'qed',
      'check-errors': 0,
      corruptions: r.corruptions,
      leaks: r.leaks,
      'corruptions-fixed': r.fixed,
      'total-clusters': Math.ceil(this.size / cs),
      'allocated-clusters': r.allocated,
      'fragmented-clusters': r.fragmented,
      messages: [],
    };
  }
}
