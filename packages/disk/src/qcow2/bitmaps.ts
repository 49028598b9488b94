/**
 * Persistent dirty bitmaps kept correct while an image is written (qcow2.txt "Bitmaps
 * extension", "Bitmap directory", "Bitmap table"; QEMU's block/qcow2-bitmap.c): a writable
 * open loads every consistent bitmap into memory; the first change of the image marks them
 * in use in the file (so a crash leaves them flagged inconsistent, as QEMU leaves them);
 * writes, zero writes and discards set the bits of enabled ("auto") bitmaps; a resize resizes
 * all of them; close stores the changed ones in new clusters (data, table, directory), switches
 * the header extension to the new directory in one write, and frees the old clusters.
 * Bitmaps already in use (inconsistent) are left exactly as they are.
 */
import { DiskError } from '../errors.js';
import {
  AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW, BME_FLAG_AUTO, BME_FLAG_IN_USE, EXT_BITMAPS, parseBitmapExtension, serializeBitmapDirectory,
  serializeBitmapExtension, serializeHeader, type BitmapEntry,
} from './layout.js';
import { bitmapBytes, readBitmapBits } from './image.js';
import { Qcow2WritableImage } from './write.js';

const OFFSET_MASK = 0x00fffffffffffe00n;

/** What --merge takes from a bitmap: its granularity and bits. */
export interface BitmapBits {
  granularity: number;
  bits: Uint8Array;
}

interface LoadedBitmap {
  entry: BitmapEntry;
  /** One bit per granule, least significant bit first, as stored. */
  bits: Uint8Array;
  /** Changed since it was loaded: stored again at close. */
  changed: boolean;
}

export class Qcow2BitmapTrackingImage extends Qcow2WritableImage {
  private loaded: LoadedBitmap[] = [];
  /** The file's directory says "in use" for the loaded bitmaps. */
  private markedInUse = false;
  /** Bitmaps were added, removed or changed: the directory is stored again at close. */
  private directoryChanged = false;
  /** Clusters of removed bitmaps, freed once the new directory is in place. */
  private readonly removedClusters: Array<[number, number]> = [];

  protected override async openBitmaps(): Promise<void> {
    const h = this.header;
    const ext = parseBitmapExtension(h);
    // Unknown autoclear features, or a bitmaps extension the autoclear bit no longer vouches
    // for (an old writer changed the image): nothing worth keeping, as before.
    if (!ext || !(h.autoclearFeatures & AUTOCLEAR_BITMAPS) || (h.autoclearFeatures & ~(AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW))) {
      await this.dropBitmaps();
      return;
    }
    for (const entry of this.bitmapList) {
      if (entry.flags & BME_FLAG_IN_USE) continue;
      this.loaded.push({ entry, bits: await readBitmapBits(this.source, entry, this.size, this.clusterSize), changed: false });
    }
  }

  /** Before the first change: the loaded bitmaps are marked in use in the file (directory rewritten in place). */
  private async markInUse(): Promise<void> {
    if (this.markedInUse || this.loaded.length === 0) return;
    const ext = parseBitmapExtension(this.header)!;
    for (const b of this.loaded) b.entry.flags |= BME_FLAG_IN_USE;
    const dir = serializeBitmapDirectory(this.bitmapList);
    if (dir.length !== ext.directorySize) throw new DiskError('ECORRUPT', `${this.source.name}: bitmap directory size ${ext.directorySize} does not match its entries`);
    await this.source.write(dir, ext.directoryOffset);
    await this.source.flush();
    this.markedInUse = true;
  }

  /** Set the bits of enabled bitmaps for guest bytes [offset, offset+length). */
  private async noteChange(offset: number, length: number): Promise<void> {
    if (this.loaded.length === 0 || length === 0) return;
    if (!this.markedInUse) await this.serial(() => this.markInUse());
    for (const b of this.loaded) {
      if (!(b.entry.flags & BME_FLAG_AUTO)) continue;
      const g = 2 ** b.entry.granularityBits;
      const last = Math.floor((offset + length - 1) / g);
      for (let bit = Math.floor(offset / g); bit <= last; bit++) {
        if ((bit & 7) === 0 && bit + 7 <= last) { b.bits[bit >> 3] = 0xff; bit += 7; continue; }
        b.bits[bit >> 3]! |= 1 << (bit & 7);
      }
      b.changed = true;
    }
  }

  override async write(buf: Uint8Array, offset: number): Promise<void> {
    await this.noteChange(offset, buf.length);
    await super.write(buf, offset);
  }

  override async writeZeroes(offset: number, length: number, options?: Parameters<Qcow2WritableImage['writeZeroes']>[2]): Promise<void> {
    await this.noteChange(offset, length);
    await super.writeZeroes(offset, length, options);
  }

  override async discard(offset: number, length: number): Promise<void> {
    await this.noteChange(offset, length);
    await super.discard(offset, length);
  }

  override async writeCompressed(buf: Uint8Array, offset: number): Promise<void> {
    await this.noteChange(offset, buf.length);
    await super.writeCompressed(buf, offset);
  }

  /** The image's size changes to `size` (called inside the queue): every loaded bitmap follows, new bits clear. */
  protected async resizeBitmaps(size: number): Promise<void> {
    if (this.loaded.length === 0) return;
    await this.markInUse();
    for (const b of this.loaded) {
      const bits = new Uint8Array(bitmapBytes(b.entry, size));
      bits.set(b.bits.subarray(0, bits.length));
      // Bits past the new end in the last byte go too.
      const count = Math.ceil(size / 2 ** b.entry.granularityBits);
      if (count % 8 && bits.length) bits[bits.length - 1]! &= (1 << (count % 8)) - 1;
      b.bits = bits;
      b.changed = true;
    }
  }

  // ---- `qemu-img bitmap` (qmp block-dirty-bitmap-add/remove/clear/enable/disable/merge) ----

  private findLoaded(name: string): LoadedBitmap {
    const b = this.loaded.find((x) => x.entry.name === name);
    if (!b) {
      if (this.bitmapList.some((e) => e.name === name)) throw new DiskError('EINVAL', `Bitmap '${name}' is inconsistent and cannot be used`);
      throw new DiskError('ENOENT', `Dirty bitmap '${name}' not found`);
    }
    return b;
  }

  /** A new persistent bitmap, enabled, every bit clear; granularity defaults to the cluster size within [4 KiB, 64 KiB], as QEMU's. */
  async addBitmap(name: string, granularity?: number): Promise<void> {
    await this.serial(async () => {
      const g = granularity ?? Math.min(65536, Math.max(4096, this.clusterSize));
      if (g < 512 || (g & (g - 1)) !== 0 || g > 2 ** 31) throw new DiskError('EINVAL', 'Granularity must be power of 2 and at least 512');
      if (this.bitmapList.some((e) => e.name === name)) throw new DiskError('EINVAL', `Bitmap already exists: ${name}`);
      if (this.header.version < 3) throw new DiskError('EUNSUPPORTED', `Can't make bitmap '${name}' persistent in '${this.source.name}': Cannot store dirty bitmaps in qcow2 v2 files`);
      if (new TextEncoder().encode(name).length > 1023) throw new DiskError('EINVAL', 'Bitmap name too long');
      const entry: BitmapEntry = { tableOffset: 0, tableSize: 0, flags: BME_FLAG_AUTO, granularityBits: Math.log2(g), name };
      this.bitmapList.push(entry);
      this.loaded.push({ entry, bits: new Uint8Array(bitmapBytes(entry, this.size)), changed: true });
      this.directoryChanged = true;
    });
  }

  async removeBitmap(name: string): Promise<void> {
    await this.serial(async () => {
      const entry = this.bitmapList.find((e) => e.name === name);
      if (!entry) throw new DiskError('ENOENT', `Dirty bitmap '${name}' not found`);
      const loaded = this.loaded.find((x) => x.entry === entry);
      // Clusters as the file has them (a loaded bitmap not yet stored still owns its old ones).
      if (entry.tableSize) {
        const table = new Uint8Array(entry.tableSize * 8);
        await this.source.read(table, entry.tableOffset);
        const tv = new DataView(table.buffer);
        for (let i = 0; i < entry.tableSize; i++) {
          const off = Number(tv.getBigUint64(i * 8, false) & OFFSET_MASK);
          if (off) this.removedClusters.push([off, this.clusterSize]);
        }
        this.removedClusters.push([entry.tableOffset, table.length]);
      }
      this.bitmapList = this.bitmapList.filter((e) => e !== entry);
      if (loaded) this.loaded = this.loaded.filter((x) => x !== loaded);
      this.directoryChanged = true;
    });
  }

  async clearBitmap(name: string): Promise<void> {
    await this.serial(async () => {
      const b = this.findLoaded(name);
      b.bits.fill(0);
      b.changed = true;
      this.directoryChanged = true;
    });
  }

  async enableBitmap(name: string, enabled: boolean): Promise<void> {
    await this.serial(async () => {
      const b = this.findLoaded(name);
      if (enabled) b.entry.flags |= BME_FLAG_AUTO;
      else b.entry.flags &= ~BME_FLAG_AUTO;
      this.directoryChanged = true;
    });
  }

  /**
   * Every granule dirty in `source` (a bitmap of this image, or `from`, read from another one)
   * makes the granules of `target` over the same bytes dirty.
   */
  async mergeBitmap(target: string, source: string, from?: BitmapBits): Promise<void> {
    await this.serial(async () => {
      const dst = this.findLoaded(target);
      const src = from ?? (({ entry, bits }) => ({ granularity: 2 ** entry.granularityBits, bits }))(this.findLoaded(source));
      const sg = src.granularity, dg = 2 ** dst.entry.granularityBits;
      const count = Math.min(Math.ceil(this.size / sg), src.bits.length * 8);
      for (let bit = 0; bit < count; bit++) {
        if (!(src.bits[bit >> 3]! & (1 << (bit & 7)))) continue;
        const from = bit * sg, to = Math.min(this.size, from + sg);
        for (let d = Math.floor(from / dg); d * dg < to; d++) dst.bits[d >> 3]! |= 1 << (d & 7);
      }
      dst.changed = true;
      this.directoryChanged = true;
    });
  }

  /** qcow2_store_persistent_dirty_bitmaps for the loaded bitmaps. */
  private async storeBitmaps(): Promise<void> {
    if (!this.markedInUse && !this.directoryChanged) return;
    const h = this.header;
    const cs = this.clusterSize;
    const old = parseBitmapExtension(h);
    const freed: Array<[number, number]> = [...this.removedClusters];
    if (old) freed.push([old.directoryOffset, old.directorySize]);
    for (const b of this.loaded) {
      const entry = b.entry;
      entry.flags &= ~BME_FLAG_IN_USE;
      if (!b.changed) continue;
      const oldTable = new Uint8Array(entry.tableSize * 8);
      await this.source.read(oldTable, entry.tableOffset);
      const ov = new DataView(oldTable.buffer);
      for (let i = 0; i < entry.tableSize; i++) {
        const off = Number(ov.getBigUint64(i * 8, false) & OFFSET_MASK);
        if (off) freed.push([off, cs]);
      }
      freed.push([entry.tableOffset, oldTable.length]);
      const tableSize = Math.ceil(b.bits.length / cs);
      const table = new Uint8Array(tableSize * 8);
      const tv = new DataView(table.buffer);
      for (let i = 0; i < tableSize; i++) {
        const chunk = b.bits.subarray(i * cs, (i + 1) * cs);
        if (chunk.every((x) => x === 0)) continue;
        const cluster = new Uint8Array(cs);
        cluster.set(chunk);
        const host = await this.allocate(1);
        await this.source.write(cluster, host);
        tv.setBigUint64(i * 8, BigInt(host), false);
      }
      const tableAt = await this.allocate(Math.max(1, Math.ceil(table.length / cs)));
      await this.source.write(table.length ? table : new Uint8Array(8), tableAt);
      entry.tableOffset = tableAt;
      entry.tableSize = tableSize;
    }
    if (this.bitmapList.length === 0) {
      // No bitmaps left: no extension, no autoclear bit (as QEMU leaves such an image).
      h.extensions = h.extensions.filter((e) => e.type !== EXT_BITMAPS);
      h.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
    } else {
      const dir = serializeBitmapDirectory(this.bitmapList);
      const dirAt = await this.allocate(Math.ceil(dir.length / cs));
      await this.source.write(dir, dirAt);
      const data = serializeBitmapExtension({ count: this.bitmapList.length, directorySize: dir.length, directoryOffset: dirAt });
      const ext = h.extensions.find((e) => e.type === EXT_BITMAPS);
      if (ext) ext.data = data;
      else h.extensions.push({ type: EXT_BITMAPS, offset: 0, data });
      h.autoclearFeatures |= AUTOCLEAR_BITMAPS;
    }
    await this.writeBack();
    await this.source.flush();
    await this.source.write(serializeHeader(h, cs), 0);
    await this.source.flush();
    for (const [offset, length] of freed) {
      for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) await this.addRef(c * cs, -1);
    }
    await this.writeBack();
    this.markedInUse = false;
    this.directoryChanged = false;
    this.removedClusters.length = 0;
  }

  override async close(): Promise<void> {
    try {
      await this.serial(() => this.storeBitmaps());
    } finally {
      await super.close();
    }
  }
}
