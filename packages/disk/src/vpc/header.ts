/**
 * VHD (qemu's "vpc") on-disk structures, after Microsoft's "Virtual Hard Disk Image Format
 * Specification" 1.0: the 512-byte footer ("conectix", big-endian; at the end of every image
 * and copied at offset 0 of dynamic ones) and the dynamic disk header ("cxsparse") with its
 * parent locators. Shared by the driver and the safety inspector.
 */
import { DiskError } from '../errors.js';

export const FOOTER_SIZE = 512;
export const DYNAMIC_HEADER_SIZE = 1024;
export const DISK_FIXED = 2;
export const DISK_DYNAMIC = 3;
export const DISK_DIFFERENCING = 4;
/** The largest CHS geometry a VHD can record (65535 cylinders, 16 heads, 255 sectors). */
export const MAX_CHS_SECTORS = 65535 * 16 * 255;

export interface VhdFooter {
  features: number;
  version: number;
  /** Offset of the dynamic header; -1 (0xffffffffffffffff) for fixed disks. */
  dataOffset: number;
  timestamp: number;
  creatorApp: string;
  creatorVersion: number;
  creatorOs: string;
  originalSize: number;
  currentSize: number;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  checksum: number;
  /** Whether the stored checksum matches the footer's bytes. */
  checksumOk: boolean;
  uuid: Uint8Array;
}

export function isFooter(b: Uint8Array, at = 0): boolean {
  return b.length >= at + 8 && new TextDecoder('latin1').decode(b.subarray(at, at + 8)) === 'conectix';
}

/** The spec's checksum: one's complement of the byte sum, with the checksum field as zeroes. */
export function vhdChecksum(b: Uint8Array, checksumAt: number): number {
  let sum = 0;
  for (let i = 0; i < b.length; i++) if (i < checksumAt || i >= checksumAt + 4) sum += b[i]!;
  return ~sum >>> 0;
}

const ascii = (b: Uint8Array) => new TextDecoder('latin1').decode(b);

function safe64(v: DataView, at: number, what: string, file: string): number {
  const n = v.getBigUint64(at, false);
  if (n === 0xffffffffffffffffn) return -1;
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: vhd ${what} ${n} is out of range`);
  return Number(n);
}

export function parseFooter(b: Uint8Array, file = 'image'): VhdFooter {
  if (b.length < FOOTER_SIZE) throw new DiskError('ETRUNCATED', `${file}: vhd footer is truncated`);
  if (!isFooter(b)) throw new DiskError('EFORMAT', `${file}: not a vhd footer (no "conectix" cookie)`);
  const f = b.subarray(0, FOOTER_SIZE);
  const v = new DataView(f.buffer, f.byteOffset, FOOTER_SIZE);
  const checksum = v.getUint32(64, false);
  return {
    features: v.getUint32(8, false),
    version: v.getUint32(12, false),
    dataOffset: safe64(v, 16, 'data offset', file),
    timestamp: v.getUint32(24, false),
    creatorApp: ascii(f.subarray(28, 32)),
    creatorVersion: v.getUint32(32, false),
    creatorOs: ascii(f.subarray(36, 40)),
    originalSize: safe64(v, 40, 'original size', file),
    currentSize: safe64(v, 48, 'current size', file),
    cylinders: v.getUint16(56, false),
    heads: v.getUint8(58),
    sectorsPerTrack: v.getUint8(59),
    diskType: v.getUint32(60, false),
    checksum,
    checksumOk: vhdChecksum(f, 64) === checksum,
    uuid: f.slice(68, 84),
  };
}

/**
 * The virtual size qemu-img reports. Virtual PC sizes disks by their CHS geometry, Hyper-V
 * and most converters by current_size; QEMU (block/vpc.c, 7.2) tells them apart by the
 * creator application and treats the maximum CHS geometry as "use current_size". Users trip
 * over this: the same file reports different sizes in different tools.
 */
export function vpcVirtualSize(f: VhdFooter, forceSize = false): number {
  const chsSectors = f.cylinders * f.heads * f.sectorsPerTrack;
  const sizeByFooter = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'].includes(f.creatorApp);
  if (forceSize || sizeByFooter || chsSectors === MAX_CHS_SECTORS) return f.currentSize;
  return chsSectors * 512;
}

export interface ParentLocator {
  platformCode: string;
  dataSpace: number;
  dataLength: number;
  dataOffset: number;
}

export interface DynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksumOk: boolean;
  parentUuid: Uint8Array;
  /** Parent's name (UTF-16BE in the header), empty when there is none. */
  parentName: string;
  parentLocators: ParentLocator[];
}

export function parseDynamicHeader(b: Uint8Array, file = 'image'): DynamicHeader {
  if (b.length < DYNAMIC_HEADER_SIZE) throw new DiskError('ETRUNCATED', `${file}: vhd dynamic header is truncated`);
  if (ascii(b.subarray(0, 8)) !== 'cxsparse') throw new DiskError('ECORRUPT', `${file}: vhd dynamic header has no "cxsparse" cookie`);
  const h = b.subarray(0, DYNAMIC_HEADER_SIZE);
  const v = new DataView(h.buffer, h.byteOffset, DYNAMIC_HEADER_SIZE);
  const nameBytes = h.subarray(64, 576);
  let name = '';
  for (let i = 0; i + 1 < nameBytes.length; i += 2) {
    const c = (nameBytes[i]! << 8) | nameBytes[i + 1]!;
    if (c === 0) break;
    name += String.fromCharCode(c);
  }
  const parentLocators: ParentLocator[] = [];
  for (let i = 0; i < 8; i++) {
    const at = 576 + i * 24;
    const code = v.getUint32(at, false);
    if (code === 0) continue;
    parentLocators.push({
      platformCode: ascii(h.subarray(at, at + 4)),
      dataSpace: v.getUint32(at + 4, false),
      dataLength: v.getUint32(at + 8, false),
      dataOffset: safe64(v, at + 16, 'parent locator offset', file),
    });
  }
  return {
    tableOffset: safe64(v, 16, 'table offset', file),
    headerVersion: v.getUint32(24, false),
    maxTableEntries: v.getUint32(28, false),
    blockSize: v.getUint32(32, false),
    checksumOk: vhdChecksum(h, 36) === v.getUint32(36, false),
    parentUuid: h.slice(40, 56),
    parentName: name,
    parentLocators,
  };
}

/** The largest disk QEMU opens or creates: 2040 GiB (0xff000000 sectors). */
export const VHD_MAX_SECTORS = 0xff000000;
/** VHD timestamps count seconds from 2000-01-01 00:00:00 UTC. */
export const VHD_TIMESTAMP_BASE = 946684800;
/** Block allocation table entry of a block that is not allocated. */
export const BAT_UNALLOCATED = 0xffffffff;

export interface Geometry { cylinders: number; heads: number; sectorsPerTrack: number }

/**
 * The CHS geometry the VHD specification (appendix "CHS calculation") derives from a sector
 * count. The product may fall short of the count: callers search upwards for one that covers it.
 */
export function chsGeometry(totalSectors: number): Geometry {
  const sectors = Math.min(totalSectors, MAX_CHS_SECTORS);
  let spt: number;
  let heads: number;
  let cylTimesHeads: number;
  if (sectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cylTimesHeads = Math.floor(sectors / spt);
  } else {
    spt = 17;
    cylTimesHeads = Math.floor(sectors / spt);
    heads = Math.max(4, Math.ceil(cylTimesHeads / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cylTimesHeads = Math.floor(sectors / spt);
    }
    if (cylTimesHeads >= heads * 1024) {
      spt = 63;
      heads = 16;
      cylTimesHeads = Math.floor(sectors / spt);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack: spt };
}

export interface NewFooter {
  dataOffset: number;
  creatorApp: string;
  size: number;
  geometry: Geometry;
  diskType: number;
  uuid: Uint8Array;
  timestamp: number;
}

/** A footer as QEMU writes it (creator "qemu"/"qem2" 5.3 on "Wi2k"), checksum included. */
export function serializeFooter(f: NewFooter): Uint8Array {
  const b = new Uint8Array(FOOTER_SIZE);
  const v = new DataView(b.buffer);
  const ascii4 = (s: string, at: number) => { for (let i = 0; i < s.length; i++) b[at + i] = s.charCodeAt(i); };
  ascii4('conectix', 0);
  v.setUint32(8, 2, false); // features: "reserved", always set
  v.setUint32(12, 0x00010000, false);
  v.setBigUint64(16, f.dataOffset < 0 ? 0xffffffffffffffffn : BigInt(f.dataOffset), false);
  v.setUint32(24, f.timestamp >>> 0, false);
  ascii4(f.creatorApp, 28);
  v.setUint32(32, 0x00050003, false);
  ascii4('Wi2k', 36);
  v.setBigUint64(40, BigInt(f.size), false);
  v.setBigUint64(48, BigInt(f.size), false);
  v.setUint16(56, f.geometry.cylinders, false);
  v.setUint8(58, f.geometry.heads);
  v.setUint8(59, f.geometry.sectorsPerTrack);
  v.setUint32(60, f.diskType, false);
  b.set(f.uuid, 68);
  v.setUint32(64, vhdChecksum(b, 64), false);
  return b;
}

/** A dynamic disk header without a parent, checksum included. */
export function serializeDynamicHeader(tableOffset: number, maxTableEntries: number, blockSize: number): Uint8Array {
  const b = new Uint8Array(DYNAMIC_HEADER_SIZE);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode('cxsparse'), 0);
  v.setBigUint64(8, 0xffffffffffffffffn, false);
  v.setBigUint64(16, BigInt(tableOffset), false);
  v.setUint32(24, 0x00010000, false);
  v.setUint32(28, maxTableEntries, false);
  v.setUint32(32, blockSize, false);
  v.setUint32(36, vhdChecksum(b, 36), false);
  return b;
}

/**
 * The parent's file name from a differencing disk's locators: the relative Windows path
 * (W2ru) first, then the absolute one (W2ku), both UTF-16LE; MacX holds a UTF-8 file URL.
 * `locatorData` reads a locator's bytes. Falls back to the header's parent name.
 */
export async function parentFileName(h: DynamicHeader, locatorData: (l: ParentLocator) => Promise<Uint8Array>): Promise<string | undefined> {
  for (const code of ['W2ru', 'W2ku', 'MacX']) {
    const l = h.parentLocators.find((p) => p.platformCode === code);
    if (!l || l.dataLength === 0 || l.dataOffset < 0) continue;
    const data = await locatorData(l);
    let name = code === 'MacX' ? new TextDecoder('utf-8').decode(data).replace(/^file:\/\//, '') : new TextDecoder('utf-16le').decode(data);
    name = name.replace(/\0+$/, '').replace(/\\/g, '/').replace(/^\.\//, '');
    if (name) return name;
  }
  return h.parentName || undefined;
}
