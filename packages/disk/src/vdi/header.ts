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
