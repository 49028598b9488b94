/**
 * Resizing a qcow2 image in place, as QEMU 7.2's qcow2_co_truncate does (block/qcow2.c,
 * qcow2-cluster.c, qcow2-refcount.c):
 * - growing gives the L1 table enough entries for the new size (a new table at the end of
 *   the file, switched to by one 12-byte header write, the old one freed afterwards), then
 *   preallocates the new range when asked (metadata: L2 tables and data clusters mapped;
 *   falloc / full: their host space reserved or written with zeroes as well);
 * - shrinking drops every cluster past the new end (L2 entries cleared, L2 tables past the
 *   new L1 size released), drops refcount blocks left describing nothing, and cuts the file
 *   after its last used cluster.
 * The size field is written last, so a crash leaves the old size with at most leaked
 * clusters (`qemu-img check -r leaks` reclaims them); references always reach the disk
 * before the refcounts they need, and are removed before the refcounts they held.
 */
import { DiskError } from '../errors.js';
import type { ResizeOptions } from '../format.js';
import { compressedSpan, decodeL2Entry, entryOffset, getRefcount, MAX_L1_SIZE_BYTES } from './layout.js';
import { preallocateHostRange } from '../source.js';
import { Qcow2BitmapTrackingImage } from './bitmaps.js';

const COMPRESSED = 0x40000000;

export class Qcow2ResizableImage extends Qcow2BitmapTrackingImage {
  async resize(size: number, options: ResizeOptions): Promise<void> {
    await this.serial(() => this.truncateTo(size, options, true));
  }

  /**
   * qcow2_co_truncate. `allowShrinkWithPreallocation` is never true: QEMU refuses it before
   * touching anything. `writeSize` false leaves the header's size to the caller (applying a
   * snapshot writes it with the rest of its state).
   */
  protected async truncateTo(size: number, options: ResizeOptions, writeSize: boolean): Promise<void> {
    const h = this.header;
    if (size % 512 !== 0) throw new DiskError('EINVAL', 'The new size must be a multiple of 512');
    if (this.snapshotList.length > 0 && h.version < 3) {
      // Snapshots of v2 images need not record their disk size, so QEMU cannot tell theirs.
      throw new DiskError('EUNSUPPORTED', "Can't resize a v2 image which has snapshots");
    }
    const old = this.size;
    const l1Needed = Math.ceil(size / this.l2Span);
    await this.writeBack();
    if (size < old) {
      if (options.preallocation !== 'off') throw new DiskError('EINVAL', "Preallocation can't be used for shrinking an image");
      await this.dropTail(size);
    } else {
      await this.growL1(l1Needed);
      if (options.preallocation !== 'off') await this.preallocate(old, size, options.preallocation);
    }
    if (this.externalData && options.preallocation === 'off') await this.dataSource.truncate(size);
    // Persistent bitmaps cover the new size (new bits clear), as QEMU resizes them.
    await this.resizeBitmaps(size);
    if (writeSize) {
      await this.source.flush();
      await this.writeHeaderSize(size);
    }
    this.size = size;
    h.size = size;
  }

  protected async writeHeaderSize(size: number): Promise<void> {
    const field = new Uint8Array(8);
    new DataView(field.buffer).setBigUint64(0, BigInt(size), false);
    await this.source.write(field, 24);
    await this.source.flush();
  }

  /** qcow2_grow_l1_table with exact_size: a new table of exactly `entries` entries. */
  protected async growL1(entries: number): Promise<void> {
    const h = this.header;
    if (entries <= h.l1Size) return;
    if (entries * 8 > MAX_L1_SIZE_BYTES) throw new DiskError('ENOSPC', 'Failed to grow the L1 table: File too large');
    const cs = this.clusterSize;
    const table = new Uint8Array(entries * 8);
    table.set(this.l1.subarray(0, h.l1Size * 8));
    const at = await this.allocate(Math.ceil(table.length / cs));
    // The new clusters' refcounts, then the table, then the header that names it.
    await this.writeBack();
    await this.source.write(table, at);
    await this.source.flush();
    const field = new Uint8Array(12);
    const v = new DataView(field.buffer);
    v.setUint32(0, entries, false);
    v.setBigUint64(4, BigInt(at), false);
    await this.source.write(field, 36);
    await this.source.flush();
    const old = { offset: h.l1TableOffset, bytes: h.l1Size * 8 };
    h.l1Size = entries;
    h.l1TableOffset = at;
    this.l1 = table;
    this.l1View = new DataView(table.buffer);
    this.l1Dirty = false;
    for (let c = 0; c * cs < old.bytes; c++) await this.addRef(old.offset + c * cs, -1);
  }

  /**
   * Map every cluster of [from, to) that nothing maps yet to a new host cluster (QEMU's
   * preallocate_co for metadata; for falloc and full the host space is then reserved or
   * zeroed too). The entries are plain allocated clusters: their host bytes read as zeroes.
   */
  private async preallocate(from: number, to: number, mode: ResizeOptions['preallocation']): Promise<void> {
    const cs = this.clusterSize;
    const es = this.geo.l2EntrySize;
    const runs: Array<[number, number]> = [];
    let pos = Math.floor(from / cs) * cs;
    while (pos < to) {
      const l1i = Math.floor(pos / this.l2Span);
      const tableEnd = Math.min(to, (l1i + 1) * this.l2Span);
      const l2 = await this.l2ForWrite(l1i);
      while (pos < tableEnd) {
        const index = (pos - l1i * this.l2Span) / cs;
        const at = index * es;
        if (l2.view.getUint32(at, false) !== 0 || l2.view.getUint32(at + 4, false) !== 0) { pos += cs; continue; }
        let n = 1;
        while (pos + n * cs < tableEnd && l2.view.getUint32((index + n) * es, false) === 0 && l2.view.getUint32((index + n) * es + 4, false) === 0) n++;
        const host = this.externalData ? pos : await this.allocate(n);
        for (let k = 0; k < n; k++) {
          this.setL2(l2.view, (index + k) * es, host + k * cs, 0);
          // Extended L2: every subcluster allocated.
          if (this.geo.extendedL2) { l2.view.setUint32((index + k) * es + 8, 0, false); l2.view.setUint32((index + k) * es + 12, 0xffffffff, false); }
        }
        runs.push([host, n * cs]);
        pos += n * cs;
      }
      if (this.dirtyL2.size > 64) await this.writeBack();
    }
    // The clusters must exist in the file (reading as zeroes) before L2 entries point at them.
    const target = this.dataSource;
    const end = this.externalData ? to : this.fileEnd;
    if ((await target.size()) < end) await target.truncate(end);
    for (const [host, length] of runs) await preallocateHostRange(target, host, length, mode);
    await target.flush();
    await this.writeBack();
  }

  /**
   * Shrinking: qcow2_cluster_discard (full discard) of everything from the first whole
   * cluster past `size`, qcow2_shrink_l1_table, qcow2_shrink_reftable, and the file cut
   * after its last used cluster.
   */
  private async dropTail(size: number): Promise<void> {
    const cs = this.clusterSize;
    const span = this.l2Span;
    const es = this.geo.l2EntrySize;
    const start = Math.ceil(size / cs) * cs;
    const keepL1 = Math.ceil(size / span);
    /** Host clusters whose references go: their refcounts drop once the references are gone from the disk. */
    const released: number[] = [];
    const releaseEntry = (view: DataView, at: number): void => {
      const hi = view.getUint32(at, false), lo = view.getUint32(at + 4, false);
      if (hi & COMPRESSED) {
        const { start: s, end: e } = compressedSpan(decodeL2Entry(view.getBigUint64(at, false), this.geo.clusterBits, this.header.version));
        for (let c = Math.floor(s / cs); c * cs < e; c++) released.push(c * cs);
        return;
      }
      const host = entryOffset(hi, lo);
      if (host && !this.externalData) released.push(host);
    };
    for (let i = Math.floor(start / span); i < this.header.l1Size; i++) {
      const l2Offset = this.l1Entry(i);
      if (l2Offset === 0) continue;
      if (i < keepL1) {
        const l2 = await this.l2ForWrite(i);
        for (let index = (start - i * span) / cs; index < this.geo.l2Entries; index++) {
          releaseEntry(l2.view, index * es);
          for (let b = 0; b < es; b += 4) l2.view.setUint32(index * es + b, 0, false);
        }
      } else {
        const table = await this.l2Table(l2Offset);
        const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
        for (let index = 0; index < this.geo.l2Entries; index++) releaseEntry(view, index * es);
        released.push(l2Offset);
        this.l1View.setUint32(i * 8, 0, false);
        this.l1View.setUint32(i * 8 + 4, 0, false);
        this.l1Dirty = true;
        this.dirtyL2.delete(l2Offset);
        this.l2Cache.delete(l2Offset);
      }
    }
    await this.writeBack();
    await this.source.flush();
    // The refcount block is nearly always cached: no promise per cluster then.
    for (const host of released) if (!this.addRefCached(host, -1)) await this.addRef(host, -1);
    await this.writeBack();
    await this.source.flush();
    await this.punchFreed(released);
    await this.dropEmptyRefblocks();
    const end = (await this.lastUsedCluster() + 1) * cs;
    if (end < (await this.source.size())) await this.source.truncate(end);
    this.fileEnd = end;
  }

  /**
   * Give the host file's blocks of clusters whose refcount is now 0 back to the filesystem
   * (QEMU passes these discards down to the file: QCOW2_DISCARD_ALWAYS for a shrink,
   * QCOW2_DISCARD_SNAPSHOT for a deleted snapshot). Runs of neighbours go as one punch.
   */
  protected async punchFreed(hosts: number[]): Promise<void> {
    const cs = this.clusterSize;
    const free: number[] = [];
    // A typed array sorts numerically without a comparator call per comparison (tens of
    // thousands of clusters after a snapshot's tree is released).
    for (const h of Float64Array.from(new Set(hosts)).sort()) if ((this.cachedRefcountOf(h) ?? await this.refcountOf(h)) === 0) free.push(h);
    for (let i = 0; i < free.length;) {
      let j = i + 1;
      while (j < free.length && free[j] === free[j - 1]! + cs) j++;
      await this.source.punchHole(free[i]!, free[j - 1]! + cs - free[i]!);
      i = j;
    }
  }

  /** refcountOf without waiting, when the refcount block is cached (undefined otherwise). */
  protected cachedRefcountOf(host: number): number | undefined {
    const cluster = Math.floor(host / this.clusterSize);
    const per = this.geo.refcountBlockEntries;
    const rb = this.reftable[Math.floor(cluster / per)];
    if (!rb) return 0;
    const block = this.refblocks.get(rb);
    return block ? getRefcount(block, cluster % per, this.geo.refcountBits) : undefined;
  }

  /** The refcount of the cluster at `host` (0 where no refcount block describes it). */
  protected async refcountOf(host: number): Promise<number> {
    const cluster = Math.floor(host / this.clusterSize);
    const per = this.geo.refcountBlockEntries;
    const rb = this.reftable[Math.floor(cluster / per)];
    if (!rb) return 0;
    return getRefcount(await this.refblock(rb), cluster % per, this.geo.refcountBits);
  }

  /** qcow2_shrink_reftable: refcount blocks that count nothing but themselves leave the table. */
  private async dropEmptyRefblocks(): Promise<void> {
    const cs = this.clusterSize;
    const per = this.geo.refcountBlockEntries;
    const bits = this.geo.refcountBits;
    const dropped: Array<{ index: number; offset: number; selfCounted: boolean }> = [];
    for (let i = 0; i < this.reftable.length; i++) {
      const rb = this.reftable[i]!;
      if (!rb) continue;
      const block = await this.refblock(rb);
      const self = Math.floor(rb / cs);
      const selfCounted = Math.floor(self / per) === i;
      let used = false;
      for (let e = 0; e < per && !used; e++) {
        if (selfCounted && e === self % per) continue;
        if (getRefcount(block, e, bits) !== 0) used = true;
      }
      if (!used) dropped.push({ index: i, offset: rb, selfCounted });
    }
    if (dropped.length === 0) return;
    for (const d of dropped) this.reftable[d.index] = 0;
    await this.source.write(this.serializeReftable(), this.header.refcountTableOffset);
    await this.source.flush();
    this.reftableDirty = false;
    for (const d of dropped) {
      this.refblocks.delete(d.offset);
      this.dirtyRefblocks.delete(d.offset);
      if (!d.selfCounted) await this.addRef(d.offset, -1);
    }
    await this.writeBack();
  }

  /** qcow2_get_last_cluster: the last cluster of the file with a non-zero refcount. */
  private async lastUsedCluster(): Promise<number> {
    const cs = this.clusterSize;
    for (let c = Math.ceil((await this.source.size()) / cs) - 1; c >= 0; c--) {
      if ((this.cachedRefcountOf(c * cs) ?? await this.refcountOf(c * cs)) > 0) return c;
    }
    return 0;
  }
}
