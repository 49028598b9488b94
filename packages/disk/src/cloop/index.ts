/**
 * The cloop (compressed loopback) image reader, QEMU 7.2 block/cloop.c semantics, read-only:
 * a 128-byte shell-script preamble, the block size and block count (big-endian uint32), then
 * n+1 big-endian uint64 offsets; block i is the zlib stream between offsets i and i+1 and must
 * inflate to exactly one block. QEMU cannot create these; `create_compressed_fs` does.
 */
import { zlib } from '../builtins.js';
import { promisify } from 'node:util';
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { FormatDriver, Image, ImageInfo, OpenOptions } from '../format.js';
import { readExact, type ByteSource } from '../source.js';
import { CLOOP_HEADER_BYTES, CLOOP_MAX_BLOCK_SIZE, parseCloopHeader, probeCloop } from './header.js';
import { inspectCloop } from './inspect.js';

const inflate = (input: Uint8Array, options: import('node:zlib').ZlibOptions = {}): Promise<Buffer> => promisify(zlib().inflate)(input, options);
interface CloopLayout {
  blockSize: number;
  offsets: Float64Array;
}

async function openCloop(source: ByteSource): Promise<CloopLayout> {
  const head = new Uint8Array(CLOOP_HEADER_BYTES);
  await readExact(source, head, 0, 'cloop header');
  const { blockSize, blocks: nBlocks } = parseCloopHeader(head, source.name);
  const corrupt = (m: string) => new DiskError('ECORRUPT', `${source.name}: ${m}`);
  const raw = new Uint8Array((nBlocks + 1) * 8);
  await readExact(source, raw, CLOOP_HEADER_BYTES, 'cloop offsets');
  const rv = new DataView(raw.buffer);
  const offsets = new Float64Array(nBlocks + 1);
  for (let i = 0; i <= nBlocks; i++) {
    const o = rv.getBigUint64(i * 8);
    if (o > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`offset ${o} at index ${i} is out of range, image file is corrupt`);
    offsets[i] = Number(o);
    if (i === 0) continue;
    if (offsets[i]! < offsets[i - 1]!) throw corrupt(`offsets not monotonically increasing at index ${i}, image file is corrupt`);
    // Compressed blocks should be smaller than the uncompressed length, with some slack for incompressible data.
    if (offsets[i]! - offsets[i - 1]! > 2 * CLOOP_MAX_BLOCK_SIZE) throw corrupt(`invalid compressed block size at index ${i}, image file is corrupt`);
  }
  return { blockSize, offsets };
}

export class CloopImage implements Image {
  readonly format = 'cloop';
  readonly size: number;
  private readonly blockSize: number;
  private readonly offsets: Float64Array;
  private cache?: { block: number; data: Uint8Array };

  constructor(readonly source: ByteSource, layout: CloopLayout) {
    this.blockSize = layout.blockSize;
    this.offsets = layout.offsets;
    this.size = (layout.offsets.length - 1) * layout.blockSize;
  }

  private async block(i: number): Promise<Uint8Array> {
    if (this.cache?.block === i) return this.cache.data;
    const from = this.offsets[i]!;
    const input = new Uint8Array(this.offsets[i + 1]! - from);
    await readExact(this.source, input, from, `cloop block ${i}`);
    let out: Uint8Array;
    try {
      // Inflating more than a block (a decompression bomb) stops at the limit and fails.
      out = await inflate(input, { maxOutputLength: this.blockSize });
    } catch (e) {
      throw new DiskError('ECORRUPT', `${this.source.name}: cloop block ${i} does not inflate to ${this.blockSize} bytes: ${(e as Error).message}`);
    }
    if (out.length !== this.blockSize) throw new DiskError('ECORRUPT', `${this.source.name}: cloop block ${i} inflates to ${out.length} bytes, not ${this.blockSize}`);
    this.cache = { block: i, data: out };
    return out;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    for (let done = 0; done < buf.length;) {
      const pos = offset + done;
      const i = Math.floor(pos / this.blockSize);
      const inBlock = pos % this.blockSize;
      const n = Math.min(buf.length - done, this.blockSize - inBlock);
      buf.set((await this.block(i)).subarray(inBlock, inBlock + n), done);
      done += n;
    }
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    // QEMU's cloop driver has no block status: the whole disk is data.
    yield { offset, length, data: true, zero: false, present: true, depth: 0 };
  }

  async info(): Promise<ImageInfo> {
    return { 'virtual-size': this.size, filename: this.source.name, format: 'cloop', 'actual-size': await this.source.allocatedSize() };
  }

  async close(): Promise<void> {
    await this.source.close();
  }
}

export const cloopDriver: FormatDriver = {
  name: 'cloop',
  probe: probeCloop,
  inspections: [inspectCloop],
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: cloop images have no internal snapshots`);
    if (options.writable) throw new DiskError('EUNSUPPORTED', `${source.name}: writing cloop images is not supported`);
    return new CloopImage(source, await openCloop(source));
  },
};
