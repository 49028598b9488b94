/**
 * The Bochs "growing" redolog header (QEMU 7.2 block/bochs.c): 512 little-endian bytes — magic,
 * type and subtype strings, version, header size, catalog entries, bitmap size, extent size,
 * disk size. Pure: the reader and the safety inspection both decode it here.
 */
import { DiskError } from '../errors.js';

export const BOCHS_HEADER_BYTES = 512;
const MAGIC = 'Bochs Virtual HD Image';
const TYPE_REDOLOG = 'Redolog';
const SUBTYPE_GROWING = 'Growing';
const VERSION_2 = 0x00020000;
const VERSION_1 = 0x00010000;
/** QEMU's limits: a catalog of 1M entries (bximage's largest, ~8 TB), extents of 512 B to 8 MiB. */
const MAX_CATALOG = 0x100000;
const MAX_EXTENT = 0x800000;

/** A NUL-terminated string field, as C's strcmp sees it. */
function cString(b: Uint8Array, at: number, len: number): string {
  const field = b.subarray(at, at + len);
  const end = field.indexOf(0);
  return new TextDecoder('latin1').decode(end < 0 ? field : field.subarray(0, end));
}

/** The signature alone (the magic string). */
export function hasBochsMagic(b: Uint8Array): boolean {
  return b.length >= 32 && cString(b, 0, 32) === MAGIC;
}

/** A header QEMU opens: the magic, a growing redolog, version 1 or 2. */
export function isBochs(b: Uint8Array): boolean {
  if (b.length < BOCHS_HEADER_BYTES) return false;
  const version = new DataView(b.buffer, b.byteOffset, BOCHS_HEADER_BYTES).getUint32(64, true);
  return hasBochsMagic(b) && cString(b, 32, 16) === TYPE_REDOLOG && cString(b, 48, 16) === SUBTYPE_GROWING
    && (version === VERSION_2 || version === VERSION_1);
}

export interface BochsHeader {
  /** Virtual size in bytes (whole sectors). */
  size: number;
  headerSize: number;
  catalogEntries: number;
  bitmapSize: number;
  extentSize: number;
}

/** Decode and check the header (`head`: the file's first 512 bytes, or fewer if it is shorter). */
export function parseBochsHeader(head: Uint8Array, name: string): BochsHeader {
  if (!isBochs(head)) throw new DiskError('EFORMAT', `${name}: Image not in Bochs format`);
  const v = new DataView(head.buffer, head.byteOffset, BOCHS_HEADER_BYTES);
  // Version 1 headers lack the reserved word before the disk size.
  const disk = v.getBigUint64(v.getUint32(64, true) === VERSION_1 ? 84 : 88, true);
  const sectors = disk / 512n;
  if (sectors > BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 512))) throw new DiskError('ECORRUPT', `${name}: bochs disk size ${disk} is out of range`);
  const catalogEntries = v.getUint32(72, true);
  if (catalogEntries > MAX_CATALOG) throw new DiskError('ECORRUPT', `${name}: Catalog size is too large`);
  const extentSize = v.getUint32(80, true);
  if (extentSize < 512) throw new DiskError('ECORRUPT', `${name}: Extent size must be at least 512`);
  if (extentSize & (extentSize - 1)) throw new DiskError('ECORRUPT', `${name}: Extent size ${extentSize} is not a power of two`);
  if (extentSize > MAX_EXTENT) throw new DiskError('ECORRUPT', `${name}: Extent size ${extentSize} is too large`);
  if (catalogEntries < Math.ceil(Number(sectors) / (extentSize / 512))) throw new DiskError('ECORRUPT', `${name}: Catalog size is too small for this disk size`);
  return { size: Number(sectors) * 512, headerSize: v.getUint32(68, true), catalogEntries, bitmapSize: v.getUint32(76, true), extentSize };
}
