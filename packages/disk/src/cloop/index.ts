/**
 * The cloop (compressed loopback) image reader, QEMU 7.2 block/cloop.c semantics, read-only:
 * a 128-byte shell-script preamble, the block size and block count (big-endian uint32), then
 * n+1 big-endian uint64 offsets; block i is the zlib stream between offsets i and i+1 and must
 * inflate to exactly one block. QEMU cannot create these; `create_compressed_fs` does.
 */
import zlib from 'node:zlib';
import { promisify } from 'node:util';
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { FormatDriver, Image, ImageInfo, OpenOptions } from '../format.js';
import { readExact, type ByteSource } from '../source.js';

const inflate = promisify(zlib.inflate);
const PREAMBLE = '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n';
const HEADER_BYTES = 128 + 8;
/** QEMU's limits: blocks of at most 64 MiB, at most 512 MiB of offsets. */
const MAX_BLOCK_SIZE = 64 * 1024 * 1024;
const MAX_OFFSETS_BYTES = 512 * 1024 * 1024;
/** The engine's limit on the offsets table it holds (QEMU allows 512 MiB). */
export const CLOOP_MAX_BLOCKS = 8 * 1024 * 1024;

function probeCloop(head: Uint8Array): number {
  // QEMU compares the preamble (or as much of it as it was given) and answers a low score.
  const n = Math.min(PREAMBLE.length, head.length);
  if (n === 0) return 0;
  for (let i = 0; i < n; i++) if (head[i] !== PREAMBLE.charCodeAt(i)) return 0;
  return 2;
}

interface CloopLayout {
  blockSize: number;
  offsets: Float64Array;
}

async function openCloop(source: ByteSource): Promise<CloopLayout> {
  const head = new Uint8Array(HEADER_BYTES);
  await readExact(source, head, 0, 'cloop header');
  const v = new DataView(head.buffer);
  const blockSize = v.getUint32(128);
  const corrupt = (m: string) => new DiskError('ECORRUPT', `${source.name}: ${m}`);
  if (blockSize % 512) throw corrupt(`block_size ${blockSize} must be a multiple of 512`);
  if (blockSize === 0) throw corrupt('block_size cannot be zero');
  if (blockSize > MAX_BLOCK_SIZE) throw corrupt(`block_size ${blockSize} must be ${MAX_BLOCK_SIZE / (1024 * 1024)} MB or less`);
  const nBlocks = v.getUint32(132);
  if (nBlocks > Math.floor((0xffffffff - 1) / 8)) throw corrupt(`n_blocks ${nBlocks} must be ${Math.floor((0xffffffff - 1) / 8)} or less`);
  if ((nBlocks + 1) * 8 > MAX_OFFSETS_BYTES) throw corrupt('image requires too many offsets, try increasing block size');
  if (nBlocks > CLOOP_MAX_BLOCKS) throw new DiskError('ELIMIT', `${source.name}: cloop image of ${nBlocks} blocks is larger than the engine's limit of ${CLOOP_MAX_BLOCKS}`);
  const raw = new Uint8Array((nBlocks + 1) * 8);
  await readExact(source, raw, HEADER_BYTES, 'cloop offsets');
  const rv = new DataView(raw.buffer);
  const offsets = new Float64Array(nBlocks + 1);
  for (let i = 0; i <= nBlocks; i++) {
    const o = rv.getBigUint64(i * 8);
    if (o > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`offset ${o} at index ${i} is out of range, image file is corrupt`);
    offsets[i] = Number(o);
    if (i === 0) continue;
    if (offsets[i]! < offsets[i - 1]!) throw corrupt(`offsets not monotonically increasing at index ${i}, image file is corrupt`);
    // Compressed blocks should be smaller than the uncompressed length, with some slack for incompressible data.
    if (offsets[i]! - offsets[i - 1]! > 2 * MAX_BLOCK_SIZE) throw corrupt(`invalid compressed block size at index ${i}, image file is corrupt`);
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
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: cloop images have no internal snapshots`);
    if (options.writable) throw new DiskError('EUNSUPPORTED', `${source.name}: writing cloop images is not supported`);
    return new CloopImage(source, await openCloop(source));
  },
};
