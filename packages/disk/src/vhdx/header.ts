/**
 * VHDX on-disk structures ([MS-VHDX] v20160714): the file type identifier at 0, two headers
 * at 64 KiB and 128 KiB (the valid one with the higher sequence number is current), two
 * region tables at 192 KiB and 256 KiB locating the BAT and the metadata region, and the
 * metadata table with the virtual disk size, block size and parent locator. All little-endian,
 * checksummed with CRC-32C over the structure with its checksum field zeroed.
 */
import { DiskError } from '../errors.js';
import { crc32c } from '../crc32c.js';
import { formatGuid } from '../partition/guid.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const;
export const REGION_TABLE_SIZE = 64 * KiB;
/** The metadata table occupies the first 64 KiB of the metadata region (§2.6.1). */
export const METADATA_TABLE_SIZE = 64 * KiB;

export const BAT_GUID = '2DC27766-F623-4200-9D64-115E9BFD4A08';
export const METADATA_GUID = '8B7CA206-4790-4B9A-B8FE-575F050F886E';
export const FILE_PARAMETERS_GUID = 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B';
export const VIRTUAL_DISK_SIZE_GUID = '2FA54224-CD1B-4876-B211-5DBED83BF4B8';
export const PAGE83_GUID = 'BECA12AB-B2E6-4523-93EF-C309E000C746';
export const LOGICAL_SECTOR_SIZE_GUID = '8141BF1D-A96F-4709-BA47-F233A8FAAB5F';
export const PHYSICAL_SECTOR_SIZE_GUID = 'CDA348C7-445D-4471-9CC9-E9885251C556';
export const PARENT_LOCATOR_GUID = 'A8D35F2D-B30B-454D-ABF7-D3D84834AB0C';

const ascii = (b: Uint8Array) => new TextDecoder('latin1').decode(b);
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function isVhdx(b: Uint8Array): boolean {
  return b.length >= 8 && ascii(b.subarray(0, 8)) === 'vhdxfile';
}

/** CRC-32C of `b` with the 4-byte checksum field at `at` taken as zero. */
export function checksumWithHole(b: Uint8Array, at: number): number {
  const copy = b.slice();
  copy.fill(0, at, at + 4);
  return crc32c(copy);
}

export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: string;
  dataWriteGuid: string;
  /** Non-zero: the log holds entries that must be replayed before the image is consistent. */
  logGuid: string;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';

/** Parse one 4 KiB header; null when its signature or checksum is wrong (the other copy may serve). */
export function parseVhdxHeader(b: Uint8Array): VhdxHeader | null {
  if (b.length < HEADER_SIZE || ascii(b.subarray(0, 4)) !== 'head') return null;
  const h = b.subarray(0, HEADER_SIZE);
  const v = dv(h);
  if (checksumWithHole(h, 4) !== v.getUint32(4, true)) return null;
  return {
    sequenceNumber: v.getBigUint64(8, true),
    fileWriteGuid: formatGuid(h.subarray(16, 32)),
    dataWriteGuid: formatGuid(h.subarray(32, 48)),
    logGuid: formatGuid(h.subarray(48, 64)),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLength: v.getUint32(68, true),
    logOffset: Number(v.getBigUint64(72, true)),
  };
}

/** The current header: the valid one with the higher sequence number (§2.2.2.1). */
export function currentHeader(a: VhdxHeader | null, b: VhdxHeader | null, file = 'image'): VhdxHeader {
  if (!a && !b) throw new DiskError('ECORRUPT', `${file}: vhdx has no valid header`);
  if (!a) return b!;
  if (!b) return a;
  return b.sequenceNumber > a.sequenceNumber ? b : a;
}

export interface RegionEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

/** Parse a 64 KiB region table; null when its signature or checksum is wrong. */
export function parseRegionTable(b: Uint8Array, file = 'image'): RegionEntry[] | null {
  if (b.length < REGION_TABLE_SIZE || ascii(b.subarray(0, 4)) !== 'regi') return null;
  const t = b.subarray(0, REGION_TABLE_SIZE);
  const v = dv(t);
  if (checksumWithHole(t, 4) !== v.getUint32(4, true)) return null;
  const count = v.getUint32(8, true);
  // 16-byte table header, 32-byte entries; the spec caps the count at 2047.
  if (count > 2047) throw new DiskError('ECORRUPT', `${file}: vhdx region table has ${count} entries (at most 2047)`);
  const entries: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    const off = v.getBigUint64(at + 16, true);
    if (off > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: vhdx region offset ${off} is out of range`);
    entries.push({
      guid: formatGuid(t.subarray(at, at + 16)),
      fileOffset: Number(off),
      length: v.getUint32(at + 24, true),
      required: (v.getUint32(at + 28, true) & 1) !== 0,
    });
  }
  return entries;
}

export interface MetadataEntry {
  itemId: string;
  /** Offset from the start of the metadata region. */
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

export function parseMetadataTable(b: Uint8Array, file = 'image'): MetadataEntry[] {
  if (b.length < 32 || ascii(b.subarray(0, 8)) !== 'metadata') throw new DiskError('ECORRUPT', `${file}: vhdx metadata table has no "metadata" signature`);
  const v = dv(b);
  const count = v.getUint16(10, true);
  if (count > 2047) throw new DiskError('ECORRUPT', `${file}: vhdx metadata table has ${count} entries (at most 2047)`);
  if (32 + count * 32 > b.length) throw new DiskError('ETRUNCATED', `${file}: vhdx metadata table is truncated`);
  const entries: MetadataEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const flags = v.getUint32(at + 24, true);
    entries.push({
      itemId: formatGuid(b.subarray(at, at + 16)),
      offset: v.getUint32(at + 16, true),
      length: v.getUint32(at + 20, true),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    });
  }
  return entries;
}

export interface FileParameters {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
}

export function parseFileParameters(b: Uint8Array): FileParameters {
  const v = dv(b);
  const flags = v.getUint32(4, true);
  return { blockSize: v.getUint32(0, true), leaveBlocksAllocated: (flags & 1) !== 0, hasParent: (flags & 2) !== 0 };
}

/** Parent locator (§2.6.2.6): key/value pairs in UTF-16LE (parent_linkage, relative_path, ...). */
export function parseParentLocator(b: Uint8Array, file = 'image'): { type: string; entries: Record<string, string> } {
  if (b.length < 20) throw new DiskError('ETRUNCATED', `${file}: vhdx parent locator is truncated`);
  const v = dv(b);
  const count = v.getUint16(18, true);
  const utf16 = new TextDecoder('utf-16le');
  const entries: Record<string, string> = {};
  for (let i = 0; i < count && 20 + (i + 1) * 12 <= b.length; i++) {
    const at = 20 + i * 12;
    const ko = v.getUint32(at, true), vo = v.getUint32(at + 4, true);
    const kl = v.getUint16(at + 8, true), vl = v.getUint16(at + 10, true);
    if (ko + kl > b.length || vo + vl > b.length) continue;
    entries[utf16.decode(b.subarray(ko, ko + kl))] = utf16.decode(b.subarray(vo, vo + vl));
  }
  return { type: formatGuid(b.subarray(0, 16)), entries };
}
