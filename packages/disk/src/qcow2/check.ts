/**
 * `qemu-img check` for qcow2 (after QEMU's block/qcow2-refcount.c): count every reference the
 * metadata makes (header, L1 and L2 tables of the image and its snapshots, data and
 * compressed clusters, snapshot table, bitmaps, refcount table and blocks), compare with the
 * stored refcounts, and check the COPIED flags. Findings are reported with qemu-img's
 * messages; `-r leaks` lowers refcounts that are too high, `-r all` also raises the ones too
 * low, rebuilds a refcount structure that cannot be trusted, and fixes COPIED flags. A
 * repaired image is checked again, as qemu-img does.
 *
 * Memory is one counter per host cluster of the file (bounded by the file size), and every
 * table read is bounded by the header limits parseHeader enforces.
 */
import { cryptoHeaderPointer } from './crypto.js';
import { DiskError } from '../errors.js';
import type { CheckOptions, CheckResult } from '../format.js';
import { readExact, type ByteSource } from '../source.js';
import {
  CRYPT_LUKS,
  MAX_BITMAP_DIRECTORY, compressedSpan, entryOffset, parseBitmapDirectory, parseBitmapExtension, L1E_RESERVED_MASK, decodeL2Entry, geometry, getRefcount, parseHeader, parseSnapshotTable,
  refcountMax, setRefcount, type Qcow2Geometry, type Qcow2Header,
} from './layout.js';

const hex = (n: number | bigint) => n.toString(16);
const COPIED = 1n << 63n;
/** Table reads kept in flight while walking many small tables. */
const TABLE_READ_AHEAD = 32;

interface Counters {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  leaksFixed: number;
  corruptionsFixed: number;
  allocated: number;
  fragmented: number;
  compressed: number;
}

/** One pass over the image: counts references, compares, and (when asked) repairs. */
class Qcow2Checker {
  readonly messages: string[] = [];
  readonly c: Counters = { corruptions: 0, leaks: 0, checkErrors: 0, leaksFixed: 0, corruptionsFixed: 0, allocated: 0, fragmented: 0, compressed: 0 };
  private h!: Qcow2Header;
  private geo!: Qcow2Geometry;
  private cs = 0;
  private maxRefcount = 0;
  private fileSize = 0;
  /** Computed references per host cluster. */
  private refs = new Float64Array(0);
  private nbClusters = 0;
  private rebuild = false;
  /**
   * No COPIED flag of the active tables disagrees with the stored refcounts, as far as the
   * first walk saw: unless a repair changed something, the second walk (checkCopied) would
   * find nothing and is skipped.
   */
  private copiedClean = true;
  private reftable: number[] = [];
  private readonly refblockCache = new Map<number, Uint8Array>();

  constructor(private readonly src: ByteSource, private readonly fix?: 'leaks' | 'all') {}

  private say(s: string): void { this.messages.push(s); }

  async run(): Promise<void> {
    this.fileSize = await this.src.size();
    const probe = new Uint8Array(Math.min(this.fileSize, 2 << 20));
    await readExact(this.src, probe, 0, 'qcow2 header');
    this.h = parseHeader(probe, this.fileSize, this.src.name);
    this.geo = geometry(this.h);
    this.cs = this.geo.clusterSize;
    this.maxRefcount = refcountMax(this.geo.refcountBits);
    this.nbClusters = Math.ceil(this.fileSize / this.cs);
    this.refs = new Float64Array(this.nbClusters);
    await this.loadReftable();
    await this.loadRefblocks();

    this.inc(0, this.cs);
    await this.checkL1(this.h.l1TableOffset, this.h.l1Size, true);
    if (this.h.nbSnapshots) {
      const buf = new Uint8Array(Math.max(0, Math.min(this.fileSize - this.h.snapshotsOffset, 64 << 20)));
      await this.src.read(buf, this.h.snapshotsOffset);
      const { snapshots, length } = parseSnapshotTable(buf, this.h.nbSnapshots, this.src.name);
      for (const sn of snapshots) await this.checkL1(sn.l1TableOffset, sn.l1Size, false);
      this.inc(this.h.snapshotsOffset, length);
    }
    this.inc(this.h.refcountTableOffset, this.h.refcountTableClusters * this.cs);
    if (this.h.cryptMethod === CRYPT_LUKS) {
      // The LUKS header and key material (qcow2.txt "Full disk encryption header pointer").
      const area = cryptoHeaderPointer(this.h, this.fileSize, this.src.name);
      this.inc(area.offset, area.length);
    }
    await this.checkBitmaps();
    await this.checkRefblocks();

    const before = { ...this.c };
    await this.compare(false);
    if (this.fix && this.rebuild) {
      if (this.fix !== 'all') {
        this.say('ERROR need to rebuild refcount structures');
        this.c.checkErrors++;
        throw new DiskError('EIO', 'Input/output error');
      }
      this.say('Rebuilding refcount structure');
      await this.rebuildRefcounts();
      this.c.corruptionsFixed += this.c.corruptions;
      this.c.corruptions = 0;
      this.c.leaks = 0;
    } else if (this.fix && (this.c.leaks || this.c.corruptions)) {
      Object.assign(this.c, before);
      await this.compare(true);
    }
    if (!this.copiedClean || this.rebuild || this.c.leaksFixed || this.c.corruptionsFixed) await this.checkCopied();
  }

  /** An active table entry's COPIED flag against its target's stored refcount (see copiedClean). */
  private noteCopied(copied: boolean, refcount: number): void {
    if (copied !== (refcount === 1)) this.copiedClean = false;
  }

  // ---- counting ----

  private grow(clusters: number): void {
    if (clusters <= this.refs.length) return;
    const next = new Float64Array(Math.max(clusters, this.refs.length * 2));
    next.set(this.refs);
    this.refs = next;
  }

  /** Count one reference to every cluster of [offset, offset+size). */
  private inc(offset: number, size: number): void {
    if (size <= 0) return;
    if (offset + size > this.fileSize && offset + size - this.fileSize >= this.cs) {
      this.say(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hex(offset)} size 0x${hex(size)}`);
      this.c.corruptions++;
      return;
    }
    const last = Math.floor((offset + size - 1) / this.cs);
    this.grow(last + 1);
    this.nbClusters = Math.max(this.nbClusters, last + 1);
    for (let k = Math.floor(offset / this.cs); k <= last; k++) {
      if (this.refs[k]! >= this.maxRefcount) {
        this.say(`ERROR: overflow cluster offset=0x${hex(k * this.cs)}`);
        this.c.corruptions++;
        continue;
      }
      this.refs[k]!++;
    }
  }

  private async readTable(offset: number, size: number): Promise<Uint8Array> {
    const buf = new Uint8Array(size);
    // Past the end of the file a table reads as zeroes (as QEMU's file driver returns them).
    if (offset < this.fileSize) {
      if (this.src.readSync) this.src.readSync(buf, offset);
      else await this.src.read(buf, offset);
    }
    return buf;
  }

  /**
   * Tables at `offsets`, in order, with up to TABLE_READ_AHEAD reads in flight: a check walks
   * thousands of small tables (8,192 L2 tables for a million 1 KiB clusters) and one read at a
   * time would spend its time on round trips to the I/O threads (sources that can read
   * synchronously skip them altogether). While repairing, tables are read one at a time so
   * that a repair always lands before the next read.
   */
  private async *readTables(offsets: number[], size: number): AsyncIterable<Uint8Array> {
    const ahead = this.fix ? 1 : TABLE_READ_AHEAD;
    const reads: Promise<Uint8Array>[] = [];
    let next = 0;
    try {
      while (next < offsets.length || reads.length) {
        while (next < offsets.length && reads.length < ahead) {
          const read = this.readTable(offsets[next++]!, size);
          read.catch(() => {}); // awaited in order below; a failure surfaces there
          reads.push(read);
        }
        yield await reads.shift()!;
      }
    } finally {
      await Promise.allSettled(reads);
    }
  }

  private async checkL1(l1Offset: number, l1Size: number, active: boolean): Promise<void> {
    this.inc(l1Offset, l1Size * 8);
    const l1 = await this.readTable(l1Offset, l1Size * 8);
    const v = new DataView(l1.buffer);
    const l2Of = (i: number) => Number(v.getBigUint64(i * 8, false) & 0x00fffffffffffe00n);
    const l2s: number[] = [];
    for (let i = 0; i < l1Size; i++) if (l2Of(i)) l2s.push(l2Of(i));
    const tables = this.readTables(l2s, this.cs)[Symbol.asyncIterator]();
    try {
      for (let i = 0; i < l1Size; i++) {
        const e = v.getBigUint64(i * 8, false);
        if (e & L1E_RESERVED_MASK) {
          this.say(`ERROR found L1 entry with reserved bits set: ${hex(e)}`);
          this.c.corruptions++;
        }
        const l2 = l2Of(i);
        if (!l2) continue;
        this.inc(l2, this.cs);
        if (l2 % this.cs) {
          this.say(`ERROR l2_offset=${hex(l2)}: Table is not cluster aligned; L1 entry corrupted`);
          this.c.corruptions++;
        }
        if (active && this.copiedClean) this.noteCopied((e & COPIED) !== 0n, this.stored(Math.floor(l2 / this.cs)));
        const table = (await tables.next()).value as Uint8Array;
        // Fragmentation is judged within each L2 table, as QEMU does.
        await this.checkL2(l2, table, active, { offset: 0 });
      }
    } finally {
      await tables.return?.();
    }
  }

  private async checkL2(l2Offset: number, table: Uint8Array, active: boolean, next: { offset: number }): Promise<void> {
    const v = new DataView(table.buffer);
    const es = this.geo.l2EntrySize;
    const v3 = this.h.version >= 3;
    const ext = this.geo.extendedL2;
    for (let i = 0; i < this.geo.l2Entries; i++) {
      // 32-bit halves: most entries are decided without building a BigInt.
      const hi = v.getUint32(i * es, false), lo = v.getUint32(i * es + 4, false);
      const allocBits = ext ? v.getUint32(i * es + 12, false) : 0;
      if (hi === 0 && lo === 0 && (!ext || (allocBits === 0 && v.getUint32(i * es + 8, false) === 0))) continue;
      if (hi & 0x40000000) {
        const e = v.getBigUint64(i * es, false);
        const bitmap = ext ? v.getBigUint64(i * es + 8, false) : 0n;
        if (e & COPIED) {
          this.say(`ERROR: coffset=0x${hex(e & ((1n << 62n) - 1n))}: copied flag must never be set for compressed clusters`);
          this.c.corruptions++;
        }
        if (bitmap) {
          this.say(`ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${hex(e)}`);
          this.c.corruptions++;
        }
        const m = decodeL2Entry(e & ~COPIED, this.geo.clusterBits, this.h.version);
        const { start, end } = compressedSpan(m);
        this.inc(start, end - start);
        if (active) { this.c.allocated++; this.c.compressed++; this.c.fragmented++; }
        continue;
      }
      const host = entryOffset(hi, lo);
      if (!host) continue;
      const entry = () => (BigInt(hi) << 32n) | BigInt(lo);
      if ((hi & 0x3f000000) || (lo & 0x1fe)) {
        this.say(`ERROR found l2 entry with reserved bits set: ${hex(entry())}`);
        this.c.corruptions++;
      }
      const zero = ext ? allocBits === 0 : v3 && (lo & 1) !== 0;
      if (host % this.cs) {
        this.c.corruptions++;
        if (zero) {
          const repair = this.fix === 'all';
          this.say(`${repair ? 'Repairing' : 'ERROR'} offset=${hex(host)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
          if (repair) {
            // A preallocated zero cluster keeps no data: make it a plain zero cluster.
            const fixed = new Uint8Array(8);
            new DataView(fixed.buffer).setBigUint64(0, this.geo.extendedL2 ? 0n : 1n, false);
            await this.src.write(fixed, l2Offset + i * es);
            this.c.corruptions--;
            this.c.corruptionsFixed++;
            continue;
          }
        } else {
          this.say(`ERROR offset=${hex(host)}: Data cluster is not properly aligned; L2 entry corrupted.`);
        }
      }
      if (active && this.copiedClean) this.noteCopied((hi & 0x80000000) !== 0, this.h.dataFile !== undefined ? 1 : this.stored(Math.floor(host / this.cs)));
      if (active) {
        this.c.allocated++;
        if (next.offset && host !== next.offset) this.c.fragmented++;
        next.offset = host + this.cs;
      }
      // With an external data file, data clusters are not in this file.
      if (this.h.dataFile === undefined) this.inc(host, this.cs);
    }
  }

  /** Persistent dirty bitmaps (qcow2.txt "Bitmaps extension"): directory, tables and data clusters. */
  private async checkBitmaps(): Promise<void> {
    const ext = parseBitmapExtension(this.h);
    if (!ext) return;
    if (ext.directorySize > MAX_BITMAP_DIRECTORY) {
      this.say(`ERROR bitmap directory of ${ext.directorySize} bytes is too large`);
      this.c.corruptions++;
      return;
    }
    this.inc(ext.directoryOffset, ext.directorySize);
    let entries;
    try {
      entries = parseBitmapDirectory(await this.readTable(ext.directoryOffset, ext.directorySize), ext.count, this.src.name);
    } catch (e) {
      this.say(`ERROR ${(e as Error).message}`);
      this.c.corruptions++;
      return;
    }
    for (const bm of entries) {
      if (bm.tableSize * 8 > MAX_BITMAP_DIRECTORY) continue;
      this.inc(bm.tableOffset, bm.tableSize * 8);
      const t = await this.readTable(bm.tableOffset, bm.tableSize * 8);
      const tv = new DataView(t.buffer);
      for (let i = 0; i < bm.tableSize; i++) {
        const off = Number(tv.getBigUint64(i * 8, false) & 0x00fffffffffffe00n);
        if (off) this.inc(off, this.cs);
      }
    }
  }

  // ---- stored refcounts ----

  private async loadReftable(): Promise<void> {
    const t = await this.readTable(this.h.refcountTableOffset, this.h.refcountTableClusters * this.cs);
    const v = new DataView(t.buffer);
    this.reftable = [];
    for (let i = 0; i < t.length / 8; i++) this.reftable.push(Number(v.getBigUint64(i * 8, false)));
  }

  private async checkRefblocks(): Promise<void> {
    for (let i = 0; i < this.reftable.length; i++) {
      const raw = this.reftable[i]!;
      const offset = raw - (raw % 512);
      if (raw % 512) {
        this.say(`ERROR refcount table entry ${i} has reserved bits set`);
        this.c.corruptions++;
        this.rebuild = true;
        continue;
      }
      if (offset % this.cs) {
        this.say(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
        this.c.corruptions++;
        this.rebuild = true;
        continue;
      }
      if (!offset) continue;
      if (offset / this.cs >= Math.ceil(this.fileSize / this.cs)) {
        this.c.corruptions++;
        this.say(`ERROR refcount block ${i} is outside image`);
        this.rebuild = true;
        continue;
      }
      this.inc(offset, this.cs);
      const n = this.refs[offset / this.cs]!;
      if (n !== 1) {
        this.say(`ERROR refcount block ${i} refcount=${n}`);
        this.c.corruptions++;
        this.rebuild = true;
      }
    }
  }

  /** Every refcount block inside the file, read once (their total is a small fraction of the file). */
  private async loadRefblocks(): Promise<void> {
    this.refblockCache.clear();
    const offsets = [...new Set(this.reftable.filter((off) => off && off % this.cs === 0 && off < this.fileSize))];
    let k = 0;
    for await (const block of this.readTables(offsets, this.cs)) this.refblockCache.set(offsets[k++]!, block);
  }

  /** The stored refcount of cluster `k` (0 where no refcount block covers it). */
  private stored(k: number): number {
    const per = this.geo.refcountBlockEntries;
    const off = this.reftable[Math.floor(k / per)] ?? 0;
    const block = off ? this.refblockCache.get(off) : undefined;
    return block ? getRefcount(block, k % per, this.geo.refcountBits) : 0;
  }

  private async setStored(k: number, value: number): Promise<boolean> {
    const per = this.geo.refcountBlockEntries;
    const off = this.reftable[Math.floor(k / per)] ?? 0;
    if (!off || off % this.cs || off >= this.fileSize) return false;
    const block = this.refblockCache.get(off);
    if (!block) return false;
    setRefcount(block, k % per, this.geo.refcountBits, value);
    await this.src.write(block, off);
    return true;
  }

  private highest = 0;

  private async compare(fixing: boolean): Promise<void> {
    this.highest = 0;
    for (let k = 0; k < this.nbClusters; k++) {
      const r1 = this.stored(k);
      const r2 = this.refs[k] ?? 0;
      if (r1 > 0 || r2 > 0) this.highest = k;
      if (r1 === r2) continue;
      let fixed: 'leaksFixed' | 'corruptionsFixed' | undefined;
      if (r1 === 0) this.rebuild = true;
      else if (fixing && r1 > r2) fixed = 'leaksFixed';
      else if (fixing && r1 < r2 && this.fix === 'all') fixed = 'corruptionsFixed';
      this.say(`${fixed ? 'Repairing' : r1 < r2 ? 'ERROR' : 'Leaked'} cluster ${k} refcount=${r1} reference=${r2}`);
      if (fixed && (await this.setStored(k, r2))) {
        this.c[fixed]++;
        continue;
      }
      if (r1 < r2) this.c.corruptions++;
      else this.c.leaks++;
    }
  }

  /**
   * A new refcount structure from the computed references, appended to the file: refcount
   * blocks, then the table; the header then names it. The old table and blocks are left
   * unreferenced (so they read as free).
   */
  private async rebuildRefcounts(): Promise<void> {
    const cs = this.cs;
    const per = this.geo.refcountBlockEntries;
    const refs = this.refs.slice(0, this.nbClusters);
    // The old structure is being replaced: its clusters lose the references counted for them.
    for (let i = 0; i < this.h.refcountTableClusters; i++) {
      const k = this.h.refcountTableOffset / cs + i;
      if (k < refs.length && refs[k]! > 0) refs[k]!--;
    }
    for (const off of this.reftable) {
      if (off && off % cs === 0 && off / cs < refs.length && refs[off / cs]! > 0) refs[off / cs]!--;
    }
    const start = Math.ceil(this.fileSize / cs);
    let blocks = 1, tableClusters = 1;
    for (;;) {
      const total = start + blocks + tableClusters;
      const nb = Math.ceil(total / per);
      const nt = Math.ceil((nb * 8) / cs);
      if (nb <= blocks && nt <= tableClusters) break;
      blocks = Math.max(blocks, nb);
      tableClusters = Math.max(tableClusters, nt);
    }
    const all = new Float64Array(start + blocks + tableClusters);
    all.set(refs.subarray(0, Math.min(refs.length, start)));
    for (let k = start; k < all.length; k++) all[k] = 1;
    const table = new Uint8Array(tableClusters * cs);
    const tv = new DataView(table.buffer);
    for (let b = 0; b < blocks; b++) {
      const block = new Uint8Array(cs);
      for (let i = 0; i < per && b * per + i < all.length; i++) {
        const v = all[b * per + i]!;
        if (v) setRefcount(block, i, this.geo.refcountBits, v);
      }
      const at = (start + b) * cs;
      await this.src.write(block, at);
      tv.setBigUint64(b * 8, BigInt(at), false);
    }
    const tableAt = (start + blocks) * cs;
    await this.src.write(table, tableAt);
    await this.src.flush();
    const hv = new Uint8Array(12);
    new DataView(hv.buffer).setBigUint64(0, BigInt(tableAt), false);
    new DataView(hv.buffer).setUint32(8, tableClusters, false);
    await this.src.write(hv, 48);
    await this.src.flush();
  }

  /** COPIED must be set exactly where the refcount is 1 (qcow2.txt, L1/L2 entry bit 63). */
  private async checkCopied(): Promise<void> {
    // Reload what the repairs may have rewritten.
    this.fileSize = await this.src.size();
    const probe = new Uint8Array(Math.min(this.fileSize, 2 << 20));
    await readExact(this.src, probe, 0, 'qcow2 header');
    this.h = parseHeader(probe, this.fileSize, this.src.name);
    await this.loadReftable();
    await this.loadRefblocks();
    const repair = this.fix === 'all' || (this.fix === 'leaks' && !this.c.checkErrors && !this.c.corruptions && !this.c.leaks);
    // A second walk over the active tables (as QEMU does) keeps memory flat: nothing per
    // cluster is remembered from the first.
    const verify = async (entry: bigint, refcount: number, what: string, at: number) => {
      if ((refcount === 1) === ((entry & COPIED) !== 0n)) return;
      this.say(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED ${what} refcount=${refcount}`);
      if (!repair) {
        this.c.corruptions++;
        return;
      }
      const fixed = new Uint8Array(8);
      new DataView(fixed.buffer).setBigUint64(0, refcount === 1 ? entry | COPIED : entry & ~COPIED, false);
      await this.src.write(fixed, at);
      this.c.corruptionsFixed++;
    };
    const l1 = await this.readTable(this.h.l1TableOffset, this.h.l1Size * 8);
    const l1v = new DataView(l1.buffer);
    const es = this.geo.l2EntrySize;
    const l1Indexes: number[] = [];
    const l2s: number[] = [];
    for (let i = 0; i < this.h.l1Size; i++) {
      const l2 = Number(l1v.getBigUint64(i * 8, false) & 0x00fffffffffffe00n);
      if (l2) { l1Indexes.push(i); l2s.push(l2); }
    }
    let k = 0;
    for await (const table of this.readTables(l2s, this.cs)) {
      const i = l1Indexes[k]!, l2 = l2s[k++]!;
      const e = l1v.getBigUint64(i * 8, false);
      await verify(e, this.stored(Math.floor(l2 / this.cs)), `L2 cluster: l1_index=${i} l1_entry=${hex(e)}`, this.h.l1TableOffset + i * 8);
      const v = new DataView(table.buffer);
      for (let j = 0; j < this.geo.l2Entries; j++) {
        const hi = v.getUint32(j * es, false), lo = v.getUint32(j * es + 4, false);
        if (hi & 0x40000000) continue;
        const host = entryOffset(hi, lo);
        if (!host) continue;
        const refcount = this.h.dataFile !== undefined ? 1 : this.stored(Math.floor(host / this.cs));
        if ((refcount === 1) === ((hi & 0x80000000) !== 0)) continue;
        const entry = (BigInt(hi) << 32n) | BigInt(lo);
        await verify(entry, refcount, `data cluster: l2_entry=${hex(entry)}`, l2 + j * es);
      }
    }
  }

  result(): CheckResult {
    return {
      filename: this.src.name,
      format: 'qcow2',
      'check-errors': this.c.checkErrors,
      corruptions: this.c.corruptions,
      leaks: this.c.leaks,
      'corruptions-fixed': this.c.corruptionsFixed,
      'leaks-fixed': this.c.leaksFixed,
      'image-end-offset': (this.highest + 1) * this.cs,
      'total-clusters': Math.ceil(this.h.size / this.cs),
      'allocated-clusters': this.c.allocated,
      'fragmented-clusters': this.c.fragmented,
      'compressed-clusters': this.c.compressed,
      messages: this.messages,
    };
  }
}

export async function checkQcow2(source: ByteSource, options: CheckOptions): Promise<CheckResult> {
  const first = new Qcow2Checker(source, options.repair);
  await first.run();
  const r = first.result();
  if (!options.repair || (!r['leaks-fixed'] && !r['corruptions-fixed'])) return r;
  await source.flush();
  // As qemu-img: after repairs, report what a fresh check finds, with the repair counts.
  const again = new Qcow2Checker(source);
  await again.run();
  const r2 = again.result();
  return { ...r2, 'leaks-fixed': r['leaks-fixed'], 'corruptions-fixed': r['corruptions-fixed'], messages: [...r.messages, ...r2.messages] };
}
