/**
 * The Apple disk image (UDIF, .dmg) reader, QEMU 7.2 block/dmg.c semantics, read-only: the
 * koly trailer, mish block tables from the resource fork or the XML plist (layout.ts), and
 * chunks that are zero/ignore (holes), raw, zlib or bzip2 compressed. QEMU probes dmg by the
 * file name only (".dmg"); qemu-img cannot create dmg files.
 *
 * Where diskhub goes past QEMU: bzip2 chunks are decoded (Debian's QEMU is built without its
 * dmg-bz2 module and fails reads of them), and a read the image cannot serve (a sector no chunk
 * covers, an lzfse chunk, data outside the file) says why instead of a bare I/O error.
 */
import { zlib } from '../builtins.js';
import { promisify } from 'node:util';
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { FormatDriver, Image, ImageInfo, OpenOptions } from '../format.js';
import type { ByteSource } from '../source.js';
import { bunzip2 } from './bzip2.js';
import {
  CHUNK_BZIP2, CHUNK_IGNORE, CHUNK_RAW, CHUNK_ZERO, CHUNK_ZLIB, SECTOR, chunkTypeName, readDmgLayout,
  type ChunkTable, type DmgLayout,
} from './layout.js';
import { inspectDmg } from './inspect.js';

const inflate = (input: Uint8Array, options: import('node:zlib').ZlibOptions = {}): Promise<Buffer> => promisify(zlib().inflate)(input, options);
/**
 * Decoded chunks kept for reads that continue in the same chunk (convert reads in pieces
 * smaller than hdiutil's 1 MiB chunks, several at a time); a chunk may be up to 64 MiB.
 */
const CACHED_BYTES = 8 << 20;

function probeDmg(_head: Uint8Array, filename?: string): number {
  // QEMU's probe looks at the name only: the trailer sits at the end, out of a probe's reach.
  return filename !== undefined && filename.length > 4 && filename.endsWith('.dmg') ? 2 : 0;
}

const isHole = (type: number) => type === CHUNK_ZERO || type === CHUNK_IGNORE;

export class DmgImage implements Image {
  readonly format = 'dmg';
  readonly size: number;
  private readonly chunks: ChunkTable;
  private readonly skippedTypes: number[];
  private readonly decoded = new Map<number, Promise<Uint8Array>>();
  private fileSize = -1;

  constructor(readonly source: ByteSource, layout: DmgLayout) {
    this.size = layout.sectors * SECTOR;
    this.chunks = layout.chunks;
    this.skippedTypes = layout.skippedTypes;
  }

  /** The chunk holding `sector`, or -(next chunk index) - 1 when no chunk covers it. */
  private find(sector: number): number {
    const c = this.chunks;
    let lo = 0;
    let hi = c.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (c.sector[mid]! > sector) hi = mid - 1;
      else if (c.sector[mid]! + c.sectorCount[mid]! <= sector) lo = mid + 1;
      else return mid;
    }
    return -lo - 1;
  }

  /** Virtual byte ranges as runs of one chunk (index) or of no chunk (-1), covering [offset, offset+length). */
  private *runs(offset: number, length: number): Generator<{ pos: number; length: number; chunk: number }> {
    const c = this.chunks;
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const at = this.find(Math.floor(pos / SECTOR));
      let runEnd: number;
      if (at >= 0) runEnd = (c.sector[at]! + c.sectorCount[at]!) * SECTOR;
      else runEnd = -at - 1 < c.count ? c.sector[-at - 1]! * SECTOR : end;
      const n = Math.min(end, runEnd) - pos;
      yield { pos, length: n, chunk: at >= 0 ? at : -1 };
      pos += n;
    }
  }

  private uncovered(pos: number): DiskError {
    const skipped = this.skippedTypes.length
      ? ` (the image has chunks of unknown type ${this.skippedTypes.map((t) => `0x${t.toString(16)}`).join(', ')}, which are skipped)`
      : '';
    return new DiskError('EIO', `${this.source.name}: dmg sector ${Math.floor(pos / SECTOR)} is not covered by any chunk${skipped}`);
  }

  /** The stored bytes of a chunk, which must lie inside the file (QEMU would read zeroes past its end). */
  private async stored(i: number, from: number, length: number): Promise<Uint8Array> {
    if (this.fileSize < 0) this.fileSize = await this.source.size();
    const at = this.chunks.offset[i]! + from;
    if (at + length > this.fileSize) {
      throw new DiskError('ECORRUPT', `${this.source.name}: dmg chunk ${i} data (offset ${this.chunks.offset[i]}, ${this.chunks.length[i]} bytes) extends past the end of the file (${this.fileSize} bytes)`);
    }
    const b = new Uint8Array(length);
    await this.source.read(b, at);
    return b;
  }

  private async decode(i: number): Promise<Uint8Array> {
    const type = this.chunks.type[i]!;
    const expected = this.chunks.sectorCount[i]! * SECTOR;
    const input = await this.stored(i, 0, this.chunks.length[i]!);
    const bad = (why: string) => new DiskError('ECORRUPT', `${this.source.name}: dmg ${chunkTypeName(type)} chunk ${i} (sector ${this.chunks.sector[i]}) ${why}`);
    let out: Uint8Array;
    if (type === CHUNK_ZLIB) {
      try {
        // A stream that would inflate past the chunk (a decompression bomb) stops at the limit and fails.
        out = await inflate(input, { maxOutputLength: expected });
      } catch (e) {
        throw bad(`does not inflate to ${expected} bytes: ${(e as Error).message}`);
      }
    } else if (type === CHUNK_BZIP2) {
      out = bunzip2(input, expected, (m) => bad(m));
    } else {
      throw new DiskError('EUNSUPPORTED', `${this.source.name}: dmg chunk ${i} (sector ${this.chunks.sector[i]}) is ${chunkTypeName(type)} compressed (type 0x${type.toString(16)}), which diskhub does not decode`);
    }
    if (out.length !== expected) throw bad(`decompresses to ${out.length} bytes, not ${expected}`);
    return out;
  }

  private decodedChunk(i: number): Promise<Uint8Array> {
    let p = this.decoded.get(i);
    if (p) {
      // Most recently used last.
      this.decoded.delete(i);
      this.decoded.set(i, p);
      return p;
    }
    p = this.decode(i);
    this.decoded.set(i, p);
    p.catch(() => this.decoded.delete(i));
    // Keep at most CACHED_BYTES of decoded chunks (by declared size), and always the newest.
    let bytes = 0;
    for (const k of this.decoded.keys()) bytes += this.chunks.sectorCount[k]! * SECTOR;
    for (const k of this.decoded.keys()) {
      if (bytes <= CACHED_BYTES || k === i) break;
      bytes -= this.chunks.sectorCount[k]! * SECTOR;
      this.decoded.delete(k);
    }
    return p;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    for (const r of this.runs(offset, buf.length)) {
      const part = buf.subarray(r.pos - offset, r.pos - offset + r.length);
      if (r.chunk < 0) throw this.uncovered(r.pos);
      const type = this.chunks.type[r.chunk]!;
      const inChunk = r.pos - this.chunks.sector[r.chunk]! * SECTOR;
      if (isHole(type)) part.fill(0);
      else if (type === CHUNK_RAW) part.set(await this.stored(r.chunk, inChunk, r.length));
      else part.set((await this.decodedChunk(r.chunk)).subarray(inChunk, inChunk + r.length));
    }
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    // Zero and ignore chunks read as zeroes without storing anything, so they are holes (QEMU's
    // dmg driver has no block status and qemu-img map calls all of a dmg data). Every other
    // range, including one no chunk covers (whose reads fail), is data as QEMU reports it, with
    // no host offset and no compressed flag, as qemu-img 7.2 prints a dmg.
    for (const r of this.runs(offset, length)) {
      const type = r.chunk >= 0 ? this.chunks.type[r.chunk]! : -1;
      if (r.chunk >= 0 && isHole(type)) yield { offset: r.pos, length: r.length, data: false, zero: true, present: true, depth: 0 };
      else yield { offset: r.pos, length: r.length, data: true, zero: false, present: true, depth: 0 };
    }
  }

  async info(): Promise<ImageInfo> {
    return { 'virtual-size': this.size, filename: this.source.name, format: 'dmg', 'actual-size': await this.source.allocatedSize() };
  }

  async close(): Promise<void> {
    this.decoded.clear();
    await this.source.close();
  }
}

export const dmgDriver: FormatDriver = {
  name: 'dmg',
  inspections: [inspectDmg],
  probe: probeDmg,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: dmg images have no internal snapshots`);
    if (options.writable) throw new DiskError('EUNSUPPORTED', `${source.name}: writing dmg images is not supported`);
    return new DmgImage(source, await readDmgLayout(source));
  },
};
