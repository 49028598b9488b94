/**
 * Internal snapshots written as QEMU 7.2 writes them (block/qcow2-snapshot.c, the refcount
 * walk of qcow2-refcount.c's qcow2_update_snapshot_refcount; qcow2.txt "Snapshots"): a
 * snapshot is a copy of the L1 table plus one more reference on every L2 table and data
 * cluster it reaches; the COPIED flag (refcount exactly 1) then tells the writer which
 * clusters must be copied before they change.
 *
 * Crash safety, step by step as in QEMU: creating writes the L1 copy and the raised
 * refcounts before the snapshot table names them; deleting removes the snapshot from the
 * table before lowering refcounts; applying raises the snapshot's refcounts before its L1
 * replaces the active one and lowers the old tree's afterwards. A crash in between leaves
 * leaked clusters or stale COPIED flags, both repaired by `qemu-img check -r all` with no
 * data lost; the snapshot table itself changes by one header write.
 */
import { DiskError } from '../errors.js';
import { SNAPSHOT_NOT_FOUND } from '../format.js';
import { findSnapshot } from './image.js';
import { compressedSpan, decodeL2Entry, entryOffset, MAX_SNAPSHOTS, serializeSnapshotTable, type Qcow2Snapshot } from './layout.js';
import { Qcow2ResizableImage } from './resize.js';

const COPIED = 0x80000000;
const COMPRESSED = 0x40000000;

export class Qcow2SnapshotImage extends Qcow2ResizableImage {
  /** qcow2_snapshot_create, with what qemu-img gives it: a name, the date, no VM state. */
  async createSnapshot(name: string, date: { sec: number; nsec: number }): Promise<void> {
    await this.serial(async () => {
      if (this.externalData) throw new DiskError('EUNSUPPORTED', 'Operation not supported');
      if (this.snapshotList.length >= MAX_SNAPSHOTS) throw new DiskError('ENOSPC', 'File too large');
      await this.writeBack();
      const h = this.header;
      // find_new_snapshot_id: one more than the largest numeric ID.
      const id = String(this.snapshotList.reduce((max, s) => Math.max(max, Number.parseInt(s.id, 10) || 0), 0) + 1);
      const l1Copy = this.l1.slice(0, h.l1Size * 8);
      const l1Offset = h.l1Size ? await this.allocate(Math.ceil(l1Copy.length / this.clusterSize)) : 0;
      await this.writeBack();
      if (l1Copy.length) await this.source.write(l1Copy, l1Offset);
      await this.updateTreeRefcounts(this.l1, h.l1Size, 1);
      await this.writeBack();
      await this.source.flush();
      const extra = new Uint8Array(24);
      const ev = new DataView(extra.buffer);
      ev.setBigUint64(0, 0n, false); // vm_state_size_large
      ev.setBigUint64(8, BigInt(this.size), false); // disk_size
      ev.setBigUint64(16, 0n, false); // icount: qemu-img leaves it 0
      const snapshot: Qcow2Snapshot = {
        l1TableOffset: l1Offset, l1Size: h.l1Size, id, name, dateSec: date.sec, dateNsec: date.nsec,
        vmClockNsec: 0n, vmStateSize: 0, extraData: extra, vmStateSizeLarge: 0, diskSize: this.size, icount: 0n,
      };
      await this.writeSnapshotTable([...this.snapshotList, snapshot]);
    });
  }

  /** qcow2_snapshot_goto: the disk becomes the snapshot's, size included. */
  async applySnapshot(idOrName: string): Promise<void> {
    await this.serial(async () => {
      const sn = findSnapshot(this.snapshotList, idOrName);
      if (!sn) throw new DiskError('ENOENT', SNAPSHOT_NOT_FOUND);
      await this.writeBack();
      const diskSize = sn.diskSize ?? this.size;
      if (diskSize !== this.size) await this.truncateTo(diskSize, { preallocation: 'off' }, true);
      await this.growL1(sn.l1Size);
      const h = this.header;
      const snL1 = new Uint8Array(h.l1Size * 8);
      const snBytes = sn.l1Size * 8;
      if (snBytes) {
        if (sn.l1TableOffset % this.clusterSize !== 0) throw new DiskError('ECORRUPT', `${this.source.name}: snapshot '${sn.name}' L1 table offset is not cluster-aligned`);
        const n = await this.source.read(snL1.subarray(0, snBytes), sn.l1TableOffset);
        if (n !== snBytes) throw new DiskError('ECORRUPT', `${this.source.name}: snapshot '${sn.name}' L1 table lies past the end of the file`);
      }
      // Everything the snapshot reaches gains a reference before the active L1 names it.
      const snapshotL1 = snL1.slice(0, snBytes);
      if (await this.updateTreeRefcounts(snapshotL1, sn.l1Size, 1)) await this.source.write(snapshotL1, sn.l1TableOffset);
      await this.writeBack();
      await this.source.flush();
      await this.source.write(snL1, h.l1TableOffset);
      await this.source.flush();
      // The old tree loses the active L1's reference (walked from memory, as QEMU does).
      const oldL1 = this.l1;
      this.l1 = snL1;
      this.l1View = new DataView(snL1.buffer);
      this.l1Dirty = false;
      const released: number[] = [];
      await this.updateTreeRefcounts(oldL1, h.l1Size, -1, released);
      await this.updateTreeRefcounts(this.l1, h.l1Size, 0);
      await this.writeBack();
      await this.source.flush();
      await this.punchFreed(released);
    });
  }

  /** qcow2_snapshot_delete of the first snapshot named `name` (qemu-img -d looks names up only). */
  async deleteSnapshot(name: string): Promise<void> {
    await this.serial(async () => {
      const sn = this.snapshotList.find((s) => s.name === name);
      if (!sn) throw new DiskError('ENOENT', 'snapshot not found');
      await this.writeBack();
      await this.writeSnapshotTable(this.snapshotList.filter((s) => s !== sn));
      const snL1 = new Uint8Array(sn.l1Size * 8);
      if (snL1.length) {
        const n = await this.source.read(snL1, sn.l1TableOffset);
        if (n !== snL1.length) throw new DiskError('ECORRUPT', `${this.source.name}: snapshot '${sn.name}' L1 table lies past the end of the file`);
      }
      const released: number[] = [];
      await this.updateTreeRefcounts(snL1, sn.l1Size, -1, released);
      for (let c = 0; c * this.clusterSize < snL1.length; c++) {
        await this.addRef(sn.l1TableOffset + c * this.clusterSize, -1);
        released.push(sn.l1TableOffset + c * this.clusterSize);
      }
      await this.updateTreeRefcounts(this.l1, this.header.l1Size, 0);
      await this.writeBack();
      await this.source.flush();
      await this.punchFreed(released);
    });
  }

  /**
   * qcow2_write_snapshots: the table goes to new clusters, one header write switches to it
   * (nb_snapshots and snapshots_offset are adjacent), then the old table's clusters are freed.
   */
  private async writeSnapshotTable(list: Qcow2Snapshot[]): Promise<void> {
    const h = this.header;
    const cs = this.clusterSize;
    const table = serializeSnapshotTable(list);
    const offset = table.length ? await this.allocate(Math.ceil(table.length / cs)) : 0;
    await this.writeBack();
    if (table.length) await this.source.write(table, offset);
    await this.source.flush();
    const field = new Uint8Array(12);
    const v = new DataView(field.buffer);
    v.setUint32(0, list.length, false);
    v.setBigUint64(4, BigInt(offset), false);
    await this.source.write(field, 60);
    await this.source.flush();
    const oldBytes = serializeSnapshotTable(this.snapshotList).length;
    const oldOffset = h.snapshotsOffset;
    h.nbSnapshots = list.length;
    h.snapshotsOffset = offset;
    this.snapshotList = list;
    for (let c = 0; c * cs < oldBytes; c++) await this.addRef(oldOffset + c * cs, -1);
    await this.writeBack();
  }

  /**
   * qcow2_update_snapshot_refcount: add `addend` (1, -1 or 0) to the refcount of every L2
   * table and data cluster the first `entries` entries of `l1` reach, and set each L1 and L2
   * entry's COPIED flag exactly when its cluster's refcount is then 1. Changed L2 tables are
   * marked for write-back; `l1` is changed in place and the result says whether it changed
   * (the active table is marked dirty here; the caller writes any other).
   */
  private async updateTreeRefcounts(l1: Uint8Array, entries: number, addend: number, released?: number[]): Promise<boolean> {
    const cs = this.clusterSize;
    const es = this.geo.l2EntrySize;
    const l1View = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
    let l1Changed = false;
    for (let i = 0; i < entries; i++) {
      const hi = l1View.getUint32(i * 8, false), lo = l1View.getUint32(i * 8 + 4, false);
      const l2Offset = entryOffset(hi, lo);
      if (l2Offset === 0) continue;
      const table = await this.l2Table(l2Offset);
      const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
      let l2Changed = false;
      for (let index = 0; index < this.geo.l2Entries; index++) {
        const at = index * es;
        const ehi = view.getUint32(at, false), elo = view.getUint32(at + 4, false);
        if (ehi === 0 && elo === 0) continue;
        if (ehi & COMPRESSED) {
          if (addend !== 0) {
            const { start, end } = compressedSpan(decodeL2Entry(view.getBigUint64(at, false), this.geo.clusterBits, this.header.version));
            for (let c = Math.floor(start / cs); c * cs < end; c++) {
              await this.addRef(c * cs, addend);
              released?.push(c * cs);
            }
          }
          continue; // compressed clusters never carry COPIED
        }
        const host = entryOffset(ehi, elo);
        let refcount = 0;
        if (this.externalData) refcount = host || (ehi & COPIED) ? 1 : 0;
        else if (host) {
          // The refcount block is nearly always cached: no promise per cluster then.
          refcount = this.adjustCachedRefcount(host, addend);
          if (refcount < 0) {
            if (addend !== 0) await this.addRef(host, addend);
            refcount = await this.refcountOf(host);
          }
          released?.push(host);
        }
        const flagged = refcount === 1 ? (ehi | COPIED) >>> 0 : (ehi & ~COPIED) >>> 0;
        if (flagged !== ehi) {
          view.setUint32(at, flagged, false);
          l2Changed = true;
        }
      }
      if (addend !== 0 && !this.addRefCached(l2Offset, addend)) await this.addRef(l2Offset, addend);
      released?.push(l2Offset);
      const l2Refcount = this.cachedRefcountOf(l2Offset) ?? await this.refcountOf(l2Offset);
      if (l2Refcount === 0) {
        // The table is free now: nothing may write it back.
        this.dirtyL2.delete(l2Offset);
        this.l2Cache.delete(l2Offset);
      } else if (l2Changed) {
        this.cacheL2(l2Offset, table);
        this.dirtyL2.add(l2Offset);
      }
      const flagged = l2Refcount === 1 ? (hi | COPIED) >>> 0 : (hi & ~COPIED) >>> 0;
      if (flagged !== hi) {
        l1View.setUint32(i * 8, flagged, false);
        l1Changed = true;
      }
      if (this.dirtyL2.size > 64) await this.writeBack();
    }
    if (l1Changed && l1 === this.l1) this.l1Dirty = true;
    return l1Changed;
  }
}
