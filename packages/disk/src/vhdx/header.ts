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
  if (b.length < HEADER_SIZE) return null;
  const { signature, checksumOk, ...header } = readHeaderFields(b);
  return signature === 'head' && checksumOk ? header : null;
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

// --- What the driver needs beyond the inspector: limits, block states, the log, writers ---

/** The header section (file identifier, headers, region tables) fills the first 1 MiB (§2.1). */
export const HEADER_SECTION_SIZE = MiB;
/** Block sizes QEMU and the spec accept (§2.6.2.1): powers of two from 1 MiB to 256 MiB. */
export const BLOCK_SIZE_MIN = MiB;
export const BLOCK_SIZE_MAX = 256 * MiB;
/** The largest virtual disk the spec allows (§2.6.2.2) and qemu-img creates. */
export const MAX_IMAGE_SIZE = 64 * 1024 * 1024 * MiB;
/** Sectors a sector bitmap block describes (§2.5: 1 MiB of bits); sets the chunk ratio. */
export const MAX_SECTORS_PER_BLOCK = 1 << 23;

/** BAT entry states (§2.5.1): the low 3 bits of an entry; the file offset in MiB is bits 20-63. */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
/** The value drafts of the spec (v0.95) used for UNMAPPED; QEMU reads it as unmapped too. */
export const PAYLOAD_BLOCK_UNMAPPED_V095 = 5;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
export const SB_BLOCK_PRESENT = 6;
export const BAT_STATE_MASK = 7n;
export const BAT_OFFSET_MASK = ~0xfffffn & 0xffffffffffffffffn;

/** The log (§2.3): 4 KiB sectors; an entry is a header sector with descriptors, then data sectors. */
export const LOG_SECTOR_SIZE = 4096;
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;

export const FILE_SIGNATURE = 'vhdxfile';

/** Page 83 (§2.6.2.5) — the driver writes one, reading only checks presence. */
export const METADATA_FLAG_IS_USER = 1;
export const METADATA_FLAG_IS_VIRTUAL_DISK = 2;
export const METADATA_FLAG_IS_REQUIRED = 4;

/** GUID text → the 16 bytes VHDX stores (first three fields little-endian). */
export function guidBytes(guid: string): Uint8Array {
  const h = guid.replace(/-/g, '');
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = parseInt(h.slice(i * 2, i * 2 + 2), 16);
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** Parse one header slot without checks (the driver decides validity itself, as QEMU does). */
export function readHeaderFields(b: Uint8Array): VhdxHeader & { signature: string; checksumOk: boolean } {
  const v = dv(b);
  return {
    signature: ascii(b.subarray(0, 4)),
    checksumOk: b.length >= HEADER_SIZE && checksumWithHole(b.subarray(0, HEADER_SIZE), 4) === v.getUint32(4, true),
    sequenceNumber: v.getBigUint64(8, true),
    fileWriteGuid: formatGuid(b.subarray(16, 32)),
    dataWriteGuid: formatGuid(b.subarray(32, 48)),
    logGuid: formatGuid(b.subarray(48, 64)),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLength: v.getUint32(68, true),
    logOffset: Number(v.getBigUint64(72, true)),
  };
}

/** Write `h` into a 4 KiB header slot (keeping its reserved bytes) and set the checksum. */
export function serializeVhdxHeader(h: VhdxHeader, slot: Uint8Array = new Uint8Array(HEADER_SIZE)): Uint8Array {
  const b = slot.slice(0, HEADER_SIZE);
  const v = dv(b);
  b.set(new TextEncoder().encode('head'), 0);
  v.setBigUint64(8, h.sequenceNumber, true);
  b.set(guidBytes(h.fileWriteGuid), 16);
  b.set(guidBytes(h.dataWriteGuid), 32);
  b.set(guidBytes(h.logGuid), 48);
  v.setUint16(64, h.logVersion, true);
  v.setUint16(66, h.version, true);
  v.setUint32(68, h.logLength, true);
  v.setBigUint64(72, BigInt(h.logOffset), true);
  v.setUint32(4, checksumWithHole(b, 4), true);
  return b;
}

/** A 64 KiB region table with the given entries, checksummed. */
export function serializeRegionTable(entries: RegionEntry[]): Uint8Array {
  const b = new Uint8Array(REGION_TABLE_SIZE);
  const v = dv(b);
  b.set(new TextEncoder().encode('regi'), 0);
  v.setUint32(8, entries.length, true);
  entries.forEach((e, i) => {
    const at = 16 + i * 32;
    b.set(guidBytes(e.guid), at);
    v.setBigUint64(at + 16, BigInt(e.fileOffset), true);
    v.setUint32(at + 24, e.length, true);
    v.setUint32(at + 28, e.required ? 1 : 0, true);
  });
  v.setUint32(4, checksumWithHole(b, 4), true);
  return b;
}
