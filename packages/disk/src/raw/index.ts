/**
 * raw: the virtual disk is the file, byte for byte. Sparse-aware both ways: block status
 * comes from the host file's holes (SEEK_DATA/SEEK_HOLE via ByteSource.hostExtents), and
 * writeZeroes/discard punch holes instead of writing zero bytes.
 */
import { checkRange, type BlockDevice, type Extent, type WriteZeroesOptions } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { FormatDriver, Image, ImageInfo, OpenOptions, CreateRequest, MeasureRequest, MeasureResult, ResizeOptions } from '../format.js';
import { preallocateHostRange, type ByteSource } from '../source.js';
import { inspectIso, inspectPartitionTable } from './inspect.js';

export class RawImage implements Image {
  readonly format = 'raw';
  constructor(readonly source: ByteSource, public size: number, private readonly writable: boolean) {}

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    const n = await this.source.read(buf, offset);
    // A file shorter than its size (being grown elsewhere) reads as zeroes past its end.
    if (n < buf.length) buf.fill(0, n);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length, 'write');
    await this.source.write(buf, offset);
  }

  async writeZeroes(offset: number, length: number, _options?: WriteZeroesOptions): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'write zeroes');
    await this.source.punchHole(offset, length);
  }

  async discard(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  /** `convert -C` from a raw image: the virtual disk is the file, so the range is handed on as it is. */
  async copyRangeTo(offset: number, length: number, dst: BlockDevice, dstOffset: number): Promise<void> {
    checkRange(this.size, offset, length, 'copy');
    if (!dst.copyRangeFrom) throw new DiskError('EUNSUPPORTED', 'copy offloading is not supported by the target');
    // A file shorter than its size: what lies past its end reads as zeroes, which the kernel
    // cannot copy (QEMU's copy then fails with ENOSPC and it falls back the same way).
    await dst.copyRangeFrom(this.source, offset, dstOffset, length);
  }

  async copyRangeFrom(from: ByteSource, fromOffset: number, offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'copy');
    if (!this.source.copyFrom) throw new DiskError('EUNSUPPORTED', 'copy offloading is not supported by the target');
    await this.source.copyFrom(from, fromOffset, offset, length);
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    for await (const h of this.source.hostExtents(offset, length)) {
      yield h.data
        ? { offset: h.offset, length: h.length, data: true, zero: false, present: true, depth: 0, hostOffset: h.offset, hostFile: this.source.name }
        : { offset: h.offset, length: h.length, data: false, zero: true, present: true, depth: 0, hostOffset: h.offset, hostFile: this.source.name };
    }
  }

  async info(): Promise<ImageInfo> {
    return {
      'virtual-size': this.size,
      filename: this.source.name,
      format: 'raw',
      'actual-size': await this.source.allocatedSize(),
      'dirty-flag': false,
    };
  }

  /**
   * QEMU's raw_co_truncate over file-posix: the file is cut or extended; growing with falloc
   * reserves the new blocks, with full writes zeroes into them (metadata means nothing for a
   * file and is refused, as QEMU refuses it).
   */
  async resize(size: number, options: ResizeOptions): Promise<void> {
    this.checkWritable();
    const { preallocation } = options;
    if (preallocation === 'metadata') throw new DiskError('EUNSUPPORTED', 'Unsupported preallocation mode: metadata');
    const old = await this.source.size();
    await this.source.truncate(size);
    await preallocateHostRange(this.source, old, size - old, preallocation);
    this.size = Math.ceil(size / 512) * 512;
  }

  async flush(): Promise<void> { await this.source.flush(); }
  async close(): Promise<void> { await this.source.close(); }

  private checkWritable(): void {
    if (!this.writable) throw new DiskError('EROFS', `${this.source.name}: image is opened read-only`);
  }
}

export const rawDriver: FormatDriver = {
  name: 'raw',
  inspections: [inspectIso, inspectPartitionTable],
  probe: () => 1,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    // Like QEMU, a raw image is a whole number of 512-byte sectors; a partial last sector
    // reads as zeroes past the end of the file.
    return new RawImage(source, Math.ceil((await source.size()) / 512) * 512, !!options.writable);
  },
  // preallocation is an option of the host file (the "protocol" level in qemu-img's terms),
  // which `create -o help` lists separately; create() still honours it.
  createOptions: [
    { name: 'size', type: 'size', help: 'Virtual disk size' },
  ],
  async measure(request: MeasureRequest): Promise<MeasureResult> {
    // A raw image is its virtual size, rounded up to whole 512-byte sectors.
    const size = request.source ? request.source.size : request.size ?? 0;
    const rounded = Math.ceil(size / 512) * 512;
    return { required: rounded, 'fully-allocated': rounded };
  },
  async create(target: ByteSource, request: CreateRequest): Promise<void> {
    const prealloc = request.options.preallocation ?? 'off';
    if (!['off', 'falloc', 'full'].includes(prealloc)) {
      throw new DiskError('EINVAL', `invalid parameter value: ${prealloc}`);
    }
    if (request.backingFile) throw new DiskError('EUNSUPPORTED', "Backing file not supported for file format 'raw'");
    // QEMU rounds the file up to whole 512-byte sectors.
    const size = Math.ceil(request.size / 512) * 512;
    await target.truncate(size);
    if (prealloc === 'falloc') await target.allocate(0, size);
    // Like QEMU, allocate the first block (up to 4 KiB) so that later alignment probing and
    // `info`'s disk size see what qemu-img's images show.
    if (size > 0 && prealloc !== 'full') await target.write(new Uint8Array(Math.min(size, 4096)), 0);
    if (prealloc === 'full') {
      const zero = new Uint8Array(Math.min(size, 1 << 20));
      for (let off = 0; off < size; off += zero.length) {
        await target.write(zero.subarray(0, Math.min(zero.length, size - off)), off);
      }
    }
  },
};
