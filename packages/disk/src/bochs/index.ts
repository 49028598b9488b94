/**
 * The Bochs "growing" redolog image reader (QEMU 7.2 block/bochs.c semantics), read-only: a
 * 512-byte little-endian header, a catalog (one uint32 an extent; 0xffffffff = not allocated),
 * then extents, each a sector bitmap (bit i, least significant first, says sector i is stored)
 * followed by the extent's sectors. Unstored sectors read as zeroes. QEMU cannot create these.
 */
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { readHostRuns } from '../blockwalk.js';
import type { FormatDriver, Image, ImageInfo, OpenOptions } from '../format.js';
import { readExact, type ByteSource } from '../source.js';
import { BOCHS_HEADER_BYTES, isBochs, parseBochsHeader } from './header.js';
import { inspectBochs } from './inspect.js';

const UNALLOCATED = 0xffffffff;

interface BochsLayout {
  size: number;
  catalog: Uint32Array;
  dataOffset: number;
  bitmapBlocks: number;
  extentBlocks: number;
  extentSize: number;
}

async function openBochs(source: ByteSource): Promise<BochsLayout> {
  const head = new Uint8Array(BOCHS_HEADER_BYTES);
  const got = await source.read(head, 0);
  const h = parseBochsHeader(head.subarray(0, got), source.name);
  const raw = new Uint8Array(h.catalogEntries * 4);
  await readExact(source, raw, h.headerSize, 'bochs catalog');
  const cv = new DataView(raw.buffer);
  const catalog = new Uint32Array(h.catalogEntries);
  for (let i = 0; i < h.catalogEntries; i++) catalog[i] = cv.getUint32(i * 4, true);
  return {
    size: h.size,
    catalog,
    dataOffset: h.headerSize + h.catalogEntries * 4,
    // QEMU's arithmetic on the 32-bit fields (a bitmap size of 0 wraps around the same way).
    bitmapBlocks: 1 + Math.floor(((h.bitmapSize - 1) >>> 0) / 512),
    extentBlocks: 1 + Math.floor((h.extentSize - 1) / 512),
    extentSize: h.extentSize,
  };
}

export class BochsImage implements Image {
  readonly format = 'bochs';
  readonly size: number;
  private readonly l: BochsLayout;
  private bitmapCache?: { at: number; bits: Uint8Array };

  constructor(readonly source: ByteSource, layout: BochsLayout) {
    this.l = layout;
    this.size = layout.size;
  }

  /** File offset of sector `sector`, or undefined when it is not stored. */
  private async sectorHost(sector: number): Promise<number | undefined> {
    const l = this.l;
    const offset = sector * 512;
    const extent = Math.floor(offset / l.extentSize);
    const inExtent = (offset % l.extentSize) / 512;
    const entry = l.catalog[extent]!;
    if (entry === UNALLOCATED) return undefined;
    const bitmapAt = l.dataOffset + 512 * entry * (l.extentBlocks + l.bitmapBlocks);
    const byteAt = bitmapAt + Math.floor(inExtent / 8);
    // The bitmap bytes of one extent, cached (a read past the end of the file gives zeroes).
    const span = Math.ceil(l.extentSize / 512 / 8);
    if (this.bitmapCache?.at !== bitmapAt) {
      const bits = new Uint8Array(span);
      const got = await this.source.read(bits, bitmapAt);
      bits.fill(0, got);
      this.bitmapCache = { at: bitmapAt, bits };
    }
    const byte = this.bitmapCache.bits[byteAt - bitmapAt]!;
    if (!((byte >> (inExtent % 8)) & 1)) return undefined;
    return bitmapAt + 512 * (l.bitmapBlocks + inExtent);
  }

  /** Runs of sectors: contiguous stored sectors, or unstored ones. */
  private async *runs(offset: number, length: number): AsyncGenerator<{ pos: number; length: number; host?: number }> {
    const end = offset + length;
    let cur: { pos: number; length: number; host?: number } | undefined;
    for (let pos = offset; pos < end;) {
      const sector = Math.floor(pos / 512);
      const n = Math.min(end, (sector + 1) * 512) - pos;
      const base = await this.sectorHost(sector);
      const host = base === undefined ? undefined : base + (pos % 512);
      if (cur && (host === undefined ? cur.host === undefined : cur.host !== undefined && cur.host + cur.length === host)) {
        cur.length += n;
      } else {
        if (cur) yield cur;
        cur = { pos, length: n, ...(host === undefined ? {} : { host }) };
      }
      pos += n;
    }
    if (cur) yield cur;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    await readHostRuns(this.source, buf, offset, this.runs(offset, buf.length));
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    // QEMU's bochs driver has no block status: the whole disk is reported as data.
    yield { offset, length, data: true, zero: false, present: true, depth: 0 };
  }

  async info(): Promise<ImageInfo> {
    return { 'virtual-size': this.size, filename: this.source.name, format: 'bochs', 'actual-size': await this.source.allocatedSize() };
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}

export const bochsDriver: FormatDriver = {
  name: 'bochs',
  probe: (head: Uint8Array) => (isBochs(head) ? 100 : 0),
  inspections: [inspectBochs],
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: bochs images have no internal snapshots`);
    if (options.writable) throw new DiskError('EUNSUPPORTED', `${source.name}: writing bochs images is not supported`);
    return new BochsImage(source, await openBochs(source));
  },
};
