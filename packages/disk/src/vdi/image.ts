/**
 * The VDI reader and writer. The virtual disk is cut into 1 MiB blocks; the block map (one
 * little-endian uint32 a block, right after the header) gives each block's index in the data
 * area, or marks it unallocated / discarded (both read as zeroes). Writes into an unallocated
 * block append a new block at the end of the data area (index = the header's allocated count),
 * then update the header's count and the block map, in that order, as QEMU's vdi driver does.
 */
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { QueuedWriteImage, blockPieces } from '../blockwalk.js';
import type { CheckResult, Image, ImageInfo } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  VDI_BLOCK_SIZE, VDI_BLOCKS_IN_IMAGE_MAX, VDI_DISK_SIZE_MAX, VDI_FIELD, VDI_HEADER_SIZE, VDI_SECTOR_SIZE,
  VDI_SIGNATURE, VDI_TYPE_STATIC, isVdiAllocated, parseVdiHeader, type VdiHeader,
} from './header.js';

/**
 * The largest block map the engine reads (128 MiB, a 32 TiB disk). QEMU allows 2 GiB; a map
 * that large is hostile or absurd, and it must not take the engine's memory.
 */
export const VDI_MAX_BMAP_BLOCKS = 32 * 1024 * 1024;

export interface OpenedVdi {
  header: VdiHeader;
  /** The virtual size: the header's disk size rounded up to whole sectors (as QEMU does). */
  size: number;
  bmap: Uint32Array;
}

const hex = (n: number | bigint) => n.toString(16);

/** Read and validate the header and block map, refusing what QEMU 7.2 refuses with its messages. */
export async function openVdi(source: ByteSource): Promise<OpenedVdi> {
  const head = new Uint8Array(VDI_HEADER_SIZE);
  // Like QEMU, a short file reads as zeroes past its end (and then fails the signature test).
  await source.read(head, 0);
  const v = new DataView(head.buffer);
  const rawDiskSize = v.getBigUint64(VDI_FIELD.diskSize, true);
  if (rawDiskSize > BigInt(VDI_DISK_SIZE_MAX)) {
    throw new DiskError('EUNSUPPORTED', `Unsupported VDI image size (size is 0x${hex(rawDiskSize)}, max supported is 0x${hex(VDI_DISK_SIZE_MAX)})`);
  }
  const signature = v.getUint32(VDI_FIELD.signature, true);
  if (signature !== VDI_SIGNATURE) {
    throw new DiskError('EFORMAT', `Image not in VDI format (bad signature ${hex(signature).padStart(8, '0')})`);
  }
  const version = v.getUint32(VDI_FIELD.version, true);
  if (version !== 0x00010001) throw new DiskError('EUNSUPPORTED', `unsupported VDI image (version ${version >>> 16}.${version & 0xffff})`);
  const h = parseVdiHeader(head, source.name);
  const size = Math.ceil(h.diskSize / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE;
  const unsupported = (what: string) => new DiskError('EUNSUPPORTED', `unsupported VDI image (${what})`);
  if (h.offsetBmap % VDI_SECTOR_SIZE) throw unsupported(`unaligned block map offset 0x${hex(h.offsetBmap)}`);
  if (h.offsetData % VDI_SECTOR_SIZE) throw unsupported(`unaligned data offset 0x${hex(h.offsetData)}`);
  if (h.sectorSize !== VDI_SECTOR_SIZE) throw unsupported(`sector size ${h.sectorSize} is not ${VDI_SECTOR_SIZE}`);
  if (h.blockSize !== VDI_BLOCK_SIZE) throw unsupported(`block size ${h.blockSize} is not ${VDI_BLOCK_SIZE}`);
  if (size > h.blocksInImage * h.blockSize) {
    throw unsupported(`disk size ${size}, image bitmap has room for ${h.blocksInImage * h.blockSize}`);
  }
  if (!isZero(head, VDI_FIELD.uuidLink)) throw unsupported('non-NULL link UUID');
  if (!isZero(head, VDI_FIELD.uuidParent)) throw unsupported('non-NULL parent UUID');
  if (h.blocksInImage > VDI_BLOCKS_IN_IMAGE_MAX) throw unsupported(`too many blocks ${h.blocksInImage}, max is ${VDI_BLOCKS_IN_IMAGE_MAX}`);
  if (h.blocksInImage > VDI_MAX_BMAP_BLOCKS) {
    throw new DiskError('ELIMIT', `${source.name}: vdi block map of ${h.blocksInImage} blocks is larger than the engine's limit of ${VDI_MAX_BMAP_BLOCKS}`);
  }
  const bmapBytes = Math.ceil((h.blocksInImage * 4) / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE;
  // QEMU would read a missing block map as zeroes (every block mapped to data block 0); a map
  // outside the file is damage, and checking first keeps a tiny hostile file from costing memory.
  const fileSize = await source.size();
  if (h.offsetBmap + h.blocksInImage * 4 > fileSize) {
    throw new DiskError('ETRUNCATED', `${source.name}: vdi block map (${h.blocksInImage} entries at offset ${h.offsetBmap}) extends past the end of the file (${fileSize} bytes)`);
  }
  const raw = new Uint8Array(bmapBytes);
  await source.read(raw, h.offsetBmap);
  const bmap = new Uint32Array(h.blocksInImage);
  const bv = new DataView(raw.buffer);
  for (let i = 0; i < bmap.length; i++) bmap[i] = bv.getUint32(i * 4, true);
  return { header: h, size, bmap };
}

function isZero(b: Uint8Array, at: number): boolean {
  for (let i = at; i < at + 16; i++) if (b[i] !== 0) return false;
  return true;
}

export class VdiImage extends QueuedWriteImage implements Image {
  readonly format = 'vdi';
  readonly clusterSize = VDI_BLOCK_SIZE;
  readonly size: number;
  backing?: Image;
  private readonly header: VdiHeader;
  private readonly bmap: Uint32Array;
  private blocksAllocated: number;

  constructor(source: ByteSource, opened: OpenedVdi, writable: boolean) {
    super(source, writable);
    this.header = opened.header;
    this.size = opened.size;
    this.bmap = opened.bmap;
    this.blocksAllocated = opened.header.blocksAllocated;
  }

  private hostOffset(entry: number, inBlock: number): number {
    return this.header.offsetData + entry * VDI_BLOCK_SIZE + inBlock;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const block = Math.floor(pos / VDI_BLOCK_SIZE);
      const inBlock = pos % VDI_BLOCK_SIZE;
      const entry = this.bmap[block]!;
      let n = Math.min(buf.length - done, VDI_BLOCK_SIZE - inBlock);
      if (!isVdiAllocated(entry)) {
        buf.fill(0, done, done + n);
      } else {
        // Blocks stored back to back are read in one go.
        for (let next = block + 1; done + n < buf.length && this.bmap[next] === entry + (next - block); next++) {
          n = Math.min(buf.length - done, n + VDI_BLOCK_SIZE);
        }
        const part = buf.subarray(done, done + n);
        const got = await this.source.read(part, this.hostOffset(entry, inBlock));
        // A block past the end of the file reads as zeroes, as QEMU's file layer returns them.
        if (got < n) part.fill(0, got);
      }
      done += n;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length, 'write');
    await this.writeQueue.run(() => this.writeLocked(buf, offset));
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'write zeroes');
    await this.writeQueue.run(async () => {
      // Unallocated and discarded blocks already read as zeroes; allocated ones are zeroed in place.
      const zero = new Uint8Array(Math.min(length, VDI_BLOCK_SIZE));
      for (const p of blockPieces(offset, length, VDI_BLOCK_SIZE)) {
        const entry = this.bmap[p.block]!;
        if (isVdiAllocated(entry)) await this.source.write(zero.subarray(0, p.length), this.hostOffset(entry, p.inBlock));
      }
    });
  }

  private async writeLocked(buf: Uint8Array, offset: number): Promise<void> {
    let firstNew = -1;
    let lastNew = -1;
    for (let done = 0; done < buf.length;) {
      const pos = offset + done;
      const block = Math.floor(pos / VDI_BLOCK_SIZE);
      const inBlock = pos % VDI_BLOCK_SIZE;
      const n = Math.min(buf.length - done, VDI_BLOCK_SIZE - inBlock);
      const part = buf.subarray(done, done + n);
      let entry = this.bmap[block]!;
      if (isVdiAllocated(entry)) {
        await this.source.write(part, this.hostOffset(entry, inBlock));
      } else {
        entry = this.blocksAllocated;
        if (entry >= this.header.blocksInImage) {
          throw new DiskError('ECORRUPT', `${this.source.name}: vdi header counts ${entry} allocated blocks of ${this.header.blocksInImage}; cannot allocate another`);
        }
        // A new block is written whole: the rest of it must read as zeroes.
        let data = part;
        if (n !== VDI_BLOCK_SIZE) {
          data = new Uint8Array(VDI_BLOCK_SIZE);
          data.set(part, inBlock);
        }
        await this.source.write(data, this.hostOffset(entry, 0));
        this.bmap[block] = entry;
        this.blocksAllocated++;
        if (firstNew < 0) firstNew = block;
        lastNew = block;
      }
      done += n;
    }
    if (firstNew < 0) return;
    const count = new Uint8Array(4);
    new DataView(count.buffer).setUint32(0, this.blocksAllocated, true);
    await this.source.write(count, VDI_FIELD.blocksAllocated);
    await this.source.write(this.bmapBytes(firstNew, lastNew + 1), this.header.offsetBmap + firstNew * 4);
  }

  private bmapBytes(from: number, to: number): Uint8Array {
    const out = new Uint8Array((to - from) * 4);
    const v = new DataView(out.buffer);
    for (let i = from; i < to; i++) v.setUint32((i - from) * 4, this.bmap[i]!, true);
    return out;
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    const hostFile = this.source.name;
    const isStatic = this.header.imageType === VDI_TYPE_STATIC;
    for (const { pos, block, inBlock, length: n } of blockPieces(offset, length, VDI_BLOCK_SIZE)) {
      const entry = this.bmap[block]!;
      if (!isVdiAllocated(entry)) {
        yield { offset: pos, length: n, data: false, zero: true, present: true, depth: 0 };
      } else if (!isStatic) {
        yield { offset: pos, length: n, data: true, zero: false, present: true, depth: 0, hostOffset: this.hostOffset(entry, inBlock), hostFile };
      } else {
        // Static images are preallocated files: QEMU asks the host file which parts are
        // holes and reports them as zero data.
        const host = this.hostOffset(entry, inBlock);
        for await (const h of this.source.hostExtents(host, n)) {
          yield { offset: pos + (h.offset - host), length: h.length, data: true, zero: !h.data, present: true, depth: 0, hostOffset: h.offset, hostFile };
        }
      }
    }
  }

  async info(): Promise<ImageInfo> {
    return {
      'virtual-size': this.size,
      filename: this.source.name,
      'cluster-size': VDI_BLOCK_SIZE,
      format: 'vdi',
      'actual-size': await this.source.allocatedSize(),
      'dirty-flag': false,
    };
  }

  /** `qemu-img check`: every allocated entry must point inside the image and at a block no other entry uses. */
  check(): CheckResult {
    const result: CheckResult = { filename: this.source.name, format: 'vdi', 'check-errors': 0, corruptions: 0, messages: [] };
    const blocks = this.header.blocksInImage;
    const owner = new Uint32Array(blocks).fill(0xffffffff);
    let allocated = 0;
    for (let block = 0; block < blocks; block++) {
      const entry = this.bmap[block]!;
      if (!isVdiAllocated(entry)) continue;
      if (entry >= blocks) {
        result.messages.push(`ERROR: block index ${block} too large, is ${entry}`);
        result.corruptions!++;
        continue;
      }
      allocated++;
      if (isVdiAllocated(owner[entry]!)) {
        // QEMU's report names the data block twice (its owner table holds the index itself).
        result.messages.push(`ERROR: block index ${owner[entry]} also used by ${entry}`);
        result.corruptions!++;
      } else {
        owner[entry] = entry;
      }
    }
    if (allocated !== this.header.blocksAllocated) {
      result.messages.push(`ERROR: allocated blocks mismatch, is ${allocated}, should be ${this.header.blocksAllocated}`);
      result.corruptions!++;
    }
    return result;
  }
}
