/**
 * The VHD reader and writer. Fixed disks are the data followed by the footer. Dynamic and
 * differencing disks have a block allocation table (BAT, big-endian sector numbers); each
 * allocated block is a sector bitmap followed by the block's data. As in QEMU 7.2, dynamic
 * disks read an allocated block whole (the bitmap is not consulted) and a write sets the whole
 * bitmap; a differencing disk reads sectors whose bitmap bit is clear from its parent.
 * Allocation puts the bitmap where the footer copy at the end of the file was, writes the
 * footer after the new block, then the BAT entry (QEMU's order).
 */
import { backingStatus, checkRange, readBacking, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { QueuedWriteImage, blockPieces } from '../blockwalk.js';
import type { BackingRef, Image, ImageInfo } from '../format.js';
import { readExact, type ByteSource } from '../source.js';
import { backingInfo } from '../backing.js';
import {
  BAT_UNALLOCATED, DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, DYNAMIC_HEADER_SIZE, FOOTER_SIZE, VHD_MAX_SECTORS,
  isFooter, parentFileName, parseDynamicHeader, parseFooter, vpcVirtualSize, type VhdFooter,
} from './header.js';

/** The largest BAT the engine reads (32M entries = 128 MiB); QEMU's own cap is 512M entries. */
export const VPC_MAX_BAT_ENTRIES = 32 * 1024 * 1024;

interface DynamicLayout {
  blockSize: number;
  bitmapSize: number;
  batOffset: number;
  bat: Uint32Array;
  /** Where the next block goes (and where the footer copy at the end sits). */
  freeDataBlockOffset: number;
}

export interface OpenedVpc {
  footer: VhdFooter;
  footerBytes: Uint8Array;
  size: number;
  dynamic?: DynamicLayout;
  parent?: string;
}

export async function openVpc(source: ByteSource): Promise<OpenedVpc> {
  const fileSize = await source.size();
  let footerBytes = new Uint8Array(FOOTER_SIZE);
  await source.read(footerBytes, 0);
  if (!isFooter(footerBytes)) {
    // Fixed disks keep their only footer at the end of the file. QEMU sees the file's length
    // in whole sectors, so only an empty file is "too small".
    const length = Math.ceil(fileSize / 512) * 512;
    if (length < FOOTER_SIZE) throw new DiskError('EFORMAT', 'File too small for a VHD header');
    footerBytes = new Uint8Array(FOOTER_SIZE);
    await source.read(footerBytes, length - FOOTER_SIZE);
    if (!isFooter(footerBytes) || new DataView(footerBytes.buffer).getUint32(60, false) !== DISK_FIXED) {
      throw new DiskError('EFORMAT', 'invalid VPC image');
    }
  }
  const footer = parseFooter(footerBytes, source.name);
  if (!footer.checksumOk) throw new DiskError('ECORRUPT', 'Incorrect header checksum');
  const size = vpcVirtualSize(footer);
  if (size / 512 > VHD_MAX_SECTORS) throw new DiskError('EUNSUPPORTED', 'File too large');
  if (footer.diskType === DISK_FIXED) return { footer, footerBytes, size };
  if (footer.diskType !== DISK_DYNAMIC && footer.diskType !== DISK_DIFFERENCING) {
    throw new DiskError('EUNSUPPORTED', `${source.name}: unsupported VHD disk type ${footer.diskType}`);
  }
  if (footer.dataOffset < 0 || footer.dataOffset + DYNAMIC_HEADER_SIZE > fileSize) {
    throw new DiskError('ETRUNCATED', `${source.name}: vhd dynamic header offset ${footer.dataOffset} is outside the file (${fileSize} bytes)`);
  }
  const hb = new Uint8Array(DYNAMIC_HEADER_SIZE);
  await readExact(source, hb, footer.dataOffset, 'vhd dynamic header');
  if (new TextDecoder('latin1').decode(hb.subarray(0, 8)) !== 'cxsparse') throw new DiskError('ECORRUPT', 'Invalid header magic');
  const h = parseDynamicHeader(hb, source.name);
  const blockSize = h.blockSize;
  if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) throw new DiskError('ECORRUPT', `Invalid block size ${blockSize}`);
  const bitmapSize = Math.ceil(blockSize / (8 * 512) / 512) * 512;
  if (size / blockSize > 0xffffffff) throw new DiskError('ECORRUPT', 'Too many blocks');
  if (h.maxTableEntries * blockSize < size) throw new DiskError('ECORRUPT', 'Page table too small');
  if (h.maxTableEntries > 0x7fffffff / 4) throw new DiskError('ECORRUPT', `Max Table Entries too large (${h.maxTableEntries})`);
  if (h.maxTableEntries > VPC_MAX_BAT_ENTRIES) {
    throw new DiskError('ELIMIT', `${source.name}: vhd block allocation table of ${h.maxTableEntries} entries is larger than the engine's limit of ${VPC_MAX_BAT_ENTRIES}`);
  }
  const batBytes = h.maxTableEntries * 4;
  if (h.tableOffset < 0 || h.tableOffset + batBytes > fileSize) {
    throw new DiskError('ETRUNCATED', `${source.name}: vhd block allocation table (${h.maxTableEntries} entries at offset ${h.tableOffset}) extends past the end of the file (${fileSize} bytes)`);
  }
  const raw = new Uint8Array(batBytes);
  await readExact(source, raw, h.tableOffset, 'vhd block allocation table');
  const bat = new Uint32Array(h.maxTableEntries);
  const bv = new DataView(raw.buffer);
  let free = Math.ceil((h.tableOffset + batBytes) / 512) * 512;
  for (let i = 0; i < bat.length; i++) {
    const e = bv.getUint32(i * 4, false);
    bat[i] = e;
    if (e !== BAT_UNALLOCATED) free = Math.max(free, e * 512 + bitmapSize + blockSize);
  }
  if (free > fileSize) {
    throw new DiskError('ETRUNCATED', 'block-vpc: free_data_block_offset points after the end of file. The image has been truncated.');
  }
  let parent: string | undefined;
  if (footer.diskType === DISK_DIFFERENCING) {
    parent = await parentFileName(h, async (l) => {
      if (l.dataLength > 64 * 1024 || l.dataOffset + l.dataLength > fileSize) {
        throw new DiskError('ECORRUPT', `${source.name}: vhd parent locator ${l.platformCode} (${l.dataLength} bytes at ${l.dataOffset}) is outside the file or too long`);
      }
      const d = new Uint8Array(l.dataLength);
      await readExact(source, d, l.dataOffset, 'vhd parent locator');
      return d;
    });
    if (!parent) throw new DiskError('ECORRUPT', `${source.name}: differencing vhd names no parent`);
  }
  return { footer, footerBytes, size, dynamic: { blockSize, bitmapSize, batOffset: h.tableOffset, bat, freeDataBlockOffset: free }, parent };
}

export class VpcImage extends QueuedWriteImage implements Image {
  readonly format = 'vpc';
  readonly size: number;
  readonly clusterSize?: number;
  readonly backingRef?: BackingRef;
  backing?: Image;
  private readonly dyn?: DynamicLayout;
  private readonly differencing: boolean;
  private readonly footerBytes: Uint8Array;
  /** The block whose bitmap was last set to all ones by a write (QEMU writes it once per block switch). */
  private lastBitmapOffset = -1;
  /** One cached sector bitmap of a differencing disk. */
  private bitmapCache?: { offset: number; bits: Uint8Array };

  constructor(source: ByteSource, opened: OpenedVpc, writable: boolean) {
    super(source, writable);
    this.size = opened.size;
    this.dyn = opened.dynamic;
    this.footerBytes = opened.footerBytes;
    this.differencing = opened.footer.diskType === DISK_DIFFERENCING;
    if (this.dyn) this.clusterSize = this.dyn.blockSize;
    if (opened.parent) this.backingRef = { filename: opened.parent };
  }

  private blockData(entry: number, inBlock: number): number {
    return entry * 512 + this.dyn!.bitmapSize + inBlock;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    const d = this.dyn;
    if (!d) return this.readHost(buf, offset);
    for (let done = 0; done < buf.length;) {
      const pos = offset + done;
      const block = Math.floor(pos / d.blockSize);
      const inBlock = pos % d.blockSize;
      const n = Math.min(buf.length - done, d.blockSize - inBlock);
      const part = buf.subarray(done, done + n);
      const entry = block < d.bat.length ? d.bat[block]! : BAT_UNALLOCATED;
      if (entry === BAT_UNALLOCATED) {
        await readBacking(this.backing, part, pos);
      } else if (!this.differencing) {
        await this.readHost(part, this.blockData(entry, inBlock));
      } else {
        for await (const run of this.bitmapRuns(entry, inBlock, n)) {
          const sub = part.subarray(run.from - inBlock, run.to - inBlock);
          if (run.set) await this.readHost(sub, this.blockData(entry, run.from));
          else await readBacking(this.backing, sub, pos + run.from - inBlock);
        }
      }
      done += n;
    }
  }

  /** Host bytes; past the end of the file they read as zeroes (QEMU's file layer does the same). */
  private async readHost(buf: Uint8Array, at: number): Promise<void> {
    const got = await this.source.read(buf, at);
    if (got < buf.length) buf.fill(0, got);
  }


  /** Runs of sectors with the same bitmap bit in [inBlock, inBlock+n) of a block (bit set: stored here). */
  private async *bitmapRuns(entry: number, inBlock: number, n: number): AsyncIterable<{ from: number; to: number; set: boolean }> {
    const at = entry * 512;
    if (this.bitmapCache?.offset !== at) {
      const bits = new Uint8Array(this.dyn!.bitmapSize);
      await this.readHost(bits, at);
      this.bitmapCache = { offset: at, bits };
    }
    const bits = this.bitmapCache.bits;
    const bit = (sector: number) => ((bits[sector >> 3]! >> (7 - (sector & 7))) & 1) === 1;
    let from = inBlock;
    while (from < inBlock + n) {
      const set = bit(Math.floor(from / 512));
      let to = (Math.floor(from / 512) + 1) * 512;
      while (to < inBlock + n && bit(to / 512) === set) to += 512;
      to = Math.min(to, inBlock + n);
      yield { from, to, set };
      from = to;
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, buf.length, 'write');
    if (!this.dyn) return this.source.write(buf, offset);
    await this.writeQueue.run(() => this.writeDynamic(buf, offset));
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRange(this.size, offset, length, 'write zeroes');
    const d = this.dyn;
    if (!d) return this.source.punchHole(offset, length);
    await this.writeQueue.run(async () => {
      // Unallocated blocks already read as zeroes; allocated ones are zeroed in place.
      for (const p of blockPieces(offset, length, d.blockSize)) {
        if (d.bat[p.block] !== BAT_UNALLOCATED) await this.writeDynamic(new Uint8Array(p.length), p.pos);
      }
    });
  }

  private async writeDynamic(buf: Uint8Array, offset: number): Promise<void> {
    const d = this.dyn!;
    for (let done = 0; done < buf.length;) {
      const pos = offset + done;
      const block = Math.floor(pos / d.blockSize);
      const inBlock = pos % d.blockSize;
      const n = Math.min(buf.length - done, d.blockSize - inBlock);
      let entry = d.bat[block]!;
      if (entry === BAT_UNALLOCATED) {
        entry = await this.allocate(block);
      } else if (this.lastBitmapOffset !== entry * 512) {
        await this.source.write(new Uint8Array(d.bitmapSize).fill(0xff), entry * 512);
        this.lastBitmapOffset = entry * 512;
      }
      await this.source.write(buf.subarray(done, done + n), this.blockData(entry, inBlock));
      done += n;
    }
  }

  private async allocate(block: number): Promise<number> {
    const d = this.dyn!;
    const at = d.freeDataBlockOffset;
    if (at % 512 || at / 512 >= BAT_UNALLOCATED) throw new DiskError('ENOSPC', `${this.source.name}: vhd has no room for another block at offset ${at}`);
    // The bitmap goes over the old footer copy; the block's data stays a hole until written.
    await this.source.write(new Uint8Array(d.bitmapSize).fill(0xff), at);
    d.freeDataBlockOffset = at + d.bitmapSize + d.blockSize;
    await this.source.write(this.footerBytes, d.freeDataBlockOffset);
    const entry = new Uint8Array(4);
    new DataView(entry.buffer).setUint32(0, at / 512, false);
    await this.source.write(entry, d.batOffset + block * 4);
    d.bat[block] = at / 512;
    this.lastBitmapOffset = at;
    return at / 512;
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    const hostFile = this.source.name;
    const d = this.dyn;
    if (!d) {
      // A fixed disk is raw data: QEMU reports the host file's holes as zero data.
      for await (const h of this.source.hostExtents(offset, length)) {
        yield { offset: h.offset, length: h.length, data: true, zero: !h.data, present: true, depth: 0, hostOffset: h.offset, hostFile };
      }
      return;
    }
    for (const { pos, block, inBlock, length: n } of blockPieces(offset, length, d.blockSize)) {
      const entry = block < d.bat.length ? d.bat[block]! : BAT_UNALLOCATED;
      if (entry === BAT_UNALLOCATED) {
        yield* this.parentStatus(pos, n);
      } else if (!this.differencing) {
        yield { offset: pos, length: n, data: true, zero: false, present: true, depth: 0, hostOffset: this.blockData(entry, inBlock), hostFile };
      } else {
        for await (const run of this.bitmapRuns(entry, inBlock, n)) {
          const at = pos + run.from - inBlock;
          if (run.set) yield { offset: at, length: run.to - run.from, data: true, zero: false, present: true, depth: 0, hostOffset: this.blockData(entry, run.from), hostFile };
          else yield* this.parentStatus(at, run.to - run.from);
        }
      }
    }
  }

  private async *parentStatus(offset: number, length: number): AsyncIterable<Extent> {
    if (!this.differencing) yield { offset, length, data: false, zero: true, present: true, depth: 0 };
    else yield* backingStatus(this.backing, offset, length);
  }

  async info(): Promise<ImageInfo> {
    // Keys in qemu-img's order (cluster-size only for disks with blocks).
    const info: Record<string, unknown> = { 'virtual-size': this.size, filename: this.source.name };
    if (this.clusterSize) info['cluster-size'] = this.clusterSize;
    info.format = 'vpc';
    info['actual-size'] = await this.source.allocatedSize();
    Object.assign(info, backingInfo(this.source.name, this.backingRef));
    info['dirty-flag'] = false;
    return info as ImageInfo;
  }
}
