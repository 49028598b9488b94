/**
 * VirtualBox VDI on-disk header (VirtualBox's VDICore.h, version 1.1 as QEMU reads it): a text
 * banner, the signature 0xbeda107f at byte 64, then little-endian fields. Images are normal
 * (dynamic) or fixed; undo and differencing images link to a parent by UUID.
 */
import { DiskError } from '../errors.js';
import { formatGuid, isZeroGuid } from '../partition/guid.js';

export const VDI_SIGNATURE = 0xbeda107f;
export const VDI_VERSION_1_1 = 0x00010001;
export const VDI_TYPE_DYNAMIC = 1;
export const VDI_TYPE_STATIC = 2;
export const VDI_TYPE_UNDO = 3;
export const VDI_TYPE_DIFF = 4;
export const VDI_HEADER_SIZE = 512;
/** Block map entry for a block that is not allocated (reads as zeroes). */
export const VDI_UNALLOCATED = 0xffffffff;
/** Block map entry for a discarded block: no storage, reads as zeroes. Entries below it are allocated. */
export const VDI_DISCARDED = 0xfffffffe;
/** The only block size QEMU 7.2 opens or creates (its CONFIG_VDI_BLOCK_SIZE is off). */
export const VDI_BLOCK_SIZE = 1 << 20;
export const VDI_SECTOR_SIZE = 512;
/** QEMU's cap: the block map (4 bytes a block, rounded to a sector) must stay below 2 GiB. */
export const VDI_BLOCKS_IN_IMAGE_MAX = Math.floor((0x80000000 - 512) / 4);
export const VDI_DISK_SIZE_MAX = VDI_BLOCKS_IN_IMAGE_MAX * VDI_BLOCK_SIZE;
/** The banner QEMU writes into images it creates (VirtualBox writes its own; the text does not matter). */
export const VDI_TEXT = '<<< QEMU VM Virtual Disk Image >>>\n';

/** Byte offsets of the header fields the driver rewrites or creates (VDI 1.1 header, little-endian). */
export const VDI_FIELD = {
  signature: 64, version: 68, headerSize: 72, imageType: 76, imageFlags: 80, description: 84,
  offsetBmap: 340, offsetData: 344, cylinders: 348, heads: 352, sectors: 356, sectorSize: 360,
  diskSize: 368, blockSize: 376, blockExtra: 380, blocksInImage: 384, blocksAllocated: 388,
  uuidImage: 392, uuidLastSnap: 408, uuidLink: 424, uuidParent: 440,
} as const;

/** The block map entry points at a data block (not unallocated, not discarded). */
export const isVdiAllocated = (entry: number): boolean => entry < VDI_DISCARDED;

export interface VdiHeader {
  version: number;
  headerSize: number;
  imageType: number;
  flags: number;
  description: string;
  offsetBmap: number;
  offsetData: number;
  sectorSize: number;
  diskSize: number;
  blockSize: number;
  blockExtra: number;
  blocksInImage: number;
  blocksAllocated: number;
  uuidImage: string;
  uuidLink: string;
  uuidParent: string;
  /** The header names a parent image (uuidLink / uuidParent set, or a differencing type). */
  hasParent: boolean;
}

export function isVdi(b: Uint8Array): boolean {
  return b.length >= 68 && new DataView(b.buffer, b.byteOffset, 68).getUint32(64, true) === VDI_SIGNATURE;
}

export function parseVdiHeader(b: Uint8Array, file = 'image'): VdiHeader {
  if (b.length < VDI_HEADER_SIZE) throw new DiskError('ETRUNCATED', `${file}: vdi header is truncated`);
  const v = new DataView(b.buffer, b.byteOffset, VDI_HEADER_SIZE);
  if (v.getUint32(64, true) !== VDI_SIGNATURE) throw new DiskError('EFORMAT', `${file}: not a vdi image (bad signature)`);
  const version = v.getUint32(68, true);
  if (version !== VDI_VERSION_1_1) {
    throw new DiskError('EUNSUPPORTED', `${file}: unsupported VDI image (version ${version >>> 16}.${version & 0xffff})`);
  }
  const diskSize = v.getBigUint64(368, true);
  if (diskSize > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: vdi disk size ${diskSize} is out of range`);
  const desc = b.subarray(84, 340);
  const nul = desc.indexOf(0);
  const uuidLinkBytes = b.subarray(424, 440);
  const uuidParentBytes = b.subarray(440, 456);
  const imageType = v.getUint32(76, true);
  return {
    version,
    headerSize: v.getUint32(72, true),
    imageType,
    flags: v.getUint32(80, true),
    description: new TextDecoder('latin1').decode(nul >= 0 ? desc.subarray(0, nul) : desc),
    offsetBmap: v.getUint32(340, true),
    offsetData: v.getUint32(344, true),
    sectorSize: v.getUint32(360, true),
    diskSize: Number(diskSize),
    blockSize: v.getUint32(376, true),
    blockExtra: v.getUint32(380, true),
    blocksInImage: v.getUint32(384, true),
    blocksAllocated: v.getUint32(388, true),
    uuidImage: formatGuid(b.subarray(392, 408)),
    uuidLink: formatGuid(uuidLinkBytes),
    uuidParent: formatGuid(uuidParentBytes),
    hasParent: imageType === VDI_TYPE_DIFF || imageType === VDI_TYPE_UNDO || !isZeroGuid(uuidLinkBytes) || !isZeroGuid(uuidParentBytes),
  };
}

export interface NewVdiHeader {
  imageType: number;
  diskSize: number;
  blocksInImage: number;
  blocksAllocated: number;
  offsetData: number;
  uuidImage: Uint8Array;
  uuidLastSnap: Uint8Array;
}

/** A 512-byte header for a new image, laid out as QEMU creates them (bmap right after the header). */
export function serializeVdiHeader(h: NewVdiHeader): Uint8Array {
  const b = new Uint8Array(VDI_HEADER_SIZE);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode(VDI_TEXT), 0);
  v.setUint32(VDI_FIELD.signature, VDI_SIGNATURE, true);
  v.setUint32(VDI_FIELD.version, VDI_VERSION_1_1, true);
  // The header proper (after the banner, signature and version) is 0x180 bytes in version 1.1.
  v.setUint32(VDI_FIELD.headerSize, 0x180, true);
  v.setUint32(VDI_FIELD.imageType, h.imageType, true);
  v.setUint32(VDI_FIELD.offsetBmap, VDI_HEADER_SIZE, true);
  v.setUint32(VDI_FIELD.offsetData, h.offsetData, true);
  v.setUint32(VDI_FIELD.sectorSize, VDI_SECTOR_SIZE, true);
  v.setBigUint64(VDI_FIELD.diskSize, BigInt(h.diskSize), true);
  v.setUint32(VDI_FIELD.blockSize, VDI_BLOCK_SIZE, true);
  v.setUint32(VDI_FIELD.blocksInImage, h.blocksInImage, true);
  v.setUint32(VDI_FIELD.blocksAllocated, h.blocksAllocated, true);
  b.set(h.uuidImage, VDI_FIELD.uuidImage);
  b.set(h.uuidLastSnap, VDI_FIELD.uuidLastSnap);
  return b;
}
