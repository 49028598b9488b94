/**
 * VMDK on-disk structures (VMware "Virtual Disk Format 5.0" specification): the sparse
 * extent header ("KDMV", little-endian), the descriptor text with its extent lines, and the
 * streamOptimized footer. Shared by the driver and the safety inspector.
 */
import { DiskError } from '../errors.js';

export const SPARSE_MAGIC = 0x564d444b; // "KDMV" read little-endian
export const COWD_MAGIC = 0x44574f43;   // "COWD": ESX vmfsSparse
/** gdOffset value meaning "the grain directory location is in the footer" (streamOptimized). */
export const GD_AT_END = 0xffffffffffffffffn;
export const SECTOR = 512;

/** Sparse header flags (spec section "Hosted Sparse Extent Header"). */
export const FLAG_NL_DETECT = 1 << 0;
/** A redundant (backup) grain directory and tables exist at rgdOffset. */
export const FLAG_RGD = 1 << 1;
/** Grain table entry 1 means "this grain reads as zeroes" (QEMU's zeroed_grain). */
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_COMPRESSED = 1 << 16;
export const FLAG_MARKERS = 1 << 17;
export const COMPRESSION_DEFLATE = 1;
/** The grain table entry value of a zeroed grain (with FLAG_ZERO_GRAIN). */
export const GTE_ZEROED = 1;
/** streamOptimized marker types (the `type` word of a metadata marker). */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;
/** Grain-marker header: lba (u64) and compressed size (u32) before the deflate data. */
export const GRAIN_MARKER_SIZE = 12;

export interface SparseHeader {
  version: number;
  flags: number;
  /** Virtual size in sectors. */
  capacity: number;
  grainSize: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  rgdOffset: number;
  /** Sectors; -1 when the footer holds it (GD_AT_END). */
  gdOffset: number;
  overHead: number;
  uncleanShutdown: boolean;
  compressAlgorithm: number;
}

export function isSparseHeader(b: Uint8Array): boolean {
  return b.length >= 4 && new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) === SPARSE_MAGIC;
}

const u64 = (v: DataView, at: number, what: string, file: string): number => {
  const n = v.getBigUint64(at, true);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: vmdk ${what} ${n} is out of range`);
  return Number(n);
};

/** Parse a 512-byte sparse extent header (at sector 0, or the copy in a stream footer). */
export function parseSparseHeader(b: Uint8Array, file = 'image'): SparseHeader {
  if (b.length < 512) throw new DiskError('ETRUNCATED', `${file}: vmdk header is truncated`);
  const v = new DataView(b.buffer, b.byteOffset, 512);
  if (v.getUint32(0, true) !== SPARSE_MAGIC) throw new DiskError('EFORMAT', `${file}: not a vmdk sparse extent (bad magic)`);
  const gd = v.getBigUint64(56, true);
  return {
    version: v.getUint32(4, true),
    flags: v.getUint32(8, true),
    capacity: u64(v, 12, 'capacity', file),
    grainSize: u64(v, 20, 'grainSize', file),
    descriptorOffset: u64(v, 28, 'descriptorOffset', file),
    descriptorSize: u64(v, 36, 'descriptorSize', file),
    numGTEsPerGT: v.getUint32(44, true),
    rgdOffset: u64(v, 48, 'rgdOffset', file),
    gdOffset: gd === GD_AT_END ? -1 : u64(v, 56, 'gdOffset', file),
    overHead: u64(v, 64, 'overHead', file),
    uncleanShutdown: v.getUint8(72) !== 0,
    compressAlgorithm: v.getUint16(77, true),
  };
}

export type ExtentAccess = 'RW' | 'RDONLY' | 'NOACCESS';
export interface DescriptorExtent {
  access: ExtentAccess;
  /** Size in sectors. */
  sectors: number;
  type: string;
  /** File name as written (relative to the descriptor), absent for ZERO extents. */
  filename?: string;
  /** Offset in sectors into the file (FLAT extents). */
  offset: number;
  /** The line gave an offset after the file name. */
  hasOffset: boolean;
}

export interface Descriptor {
  version?: number;
  cid?: string;
  parentCid?: string;
  createType?: string;
  parentFileNameHint?: string;
  extents: DescriptorExtent[];
  /** ddb.* entries (adapterType, geometry, virtualHWVersion, ...). */
  ddb: Record<string, string>;
}

/** Does this text look like a descriptor file (the start of a text vmdk)? */
export function looksLikeDescriptor(b: Uint8Array): boolean {
  const text = new TextDecoder('latin1').decode(b.subarray(0, Math.min(b.length, 512)));
  return /^\s*#\s*Disk\s*DescriptorFile/i.test(text) || /^\s*version\s*=\s*\d+\s*$/m.test(text) && /createType\s*=/.test(text);
}

const EXTENT_LINE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/;

/** Parse descriptor text (bounded by the caller). Unknown lines are ignored, as VMware does. */
export function parseDescriptor(text: string, file = 'image'): Descriptor {
  const d: Descriptor = { extents: [], ddb: {} };
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\0.*$/, '').trim();
    if (!line || line.startsWith('#')) continue;
    const ext = EXTENT_LINE.exec(line);
    if (ext) {
      const sectors = Number(ext[2]);
      if (!Number.isSafeInteger(sectors)) throw new DiskError('ECORRUPT', `${file}: vmdk extent size ${ext[2]} is out of range`);
      d.extents.push({
        access: ext[1] as ExtentAccess, sectors, type: ext[3]!,
        ...(ext[4] !== undefined ? { filename: ext[4] } : {}),
        offset: ext[5] ? Number(ext[5]) : 0,
        hasOffset: ext[5] !== undefined,
      });
      continue;
    }
    const kv = /^([A-Za-z0-9_.]+)\s*=\s*"?([^"]*)"?$/.exec(line);
    if (!kv) continue;
    const [, key, value] = kv as unknown as [string, string, string];
    if (key === 'version') d.version = Number(value);
    else if (key === 'CID') d.cid = value;
    else if (key === 'parentCID') d.parentCid = value;
    else if (key === 'createType') d.createType = value;
    else if (key === 'parentFileNameHint') d.parentFileNameHint = value;
    else if (key.startsWith('ddb.')) d.ddb[key.slice(4)] = value;
  }
  return d;
}

/** parentCID of an image without a parent (VMware writes ffffffff). */
export const NO_PARENT_CID = 'ffffffff';

/** Parse a 512-byte ESX vmfsSparse ("COWD", VMDK3) header: the fields QEMU reads. */
export interface CowdHeader {
  version: number;
  /** Virtual size in sectors. */
  capacity: number;
  grainSize: number;
  /** Grain directory offset, in sectors. */
  gdOffset: number;
  gdEntries: number;
}

export function parseCowdHeader(b: Uint8Array, file = 'image'): CowdHeader {
  if (b.length < 512) throw new DiskError('ETRUNCATED', `${file}: vmdk COWD header is truncated`);
  const v = new DataView(b.buffer, b.byteOffset, 512);
  if (v.getUint32(0, true) !== COWD_MAGIC) throw new DiskError('EFORMAT', `${file}: not a vmfsSparse extent (bad magic)`);
  return {
    version: v.getUint32(4, true),
    capacity: v.getUint32(12, true),
    grainSize: v.getUint32(16, true),
    gdOffset: v.getUint32(20, true),
    gdEntries: v.getUint32(24, true),
  };
}

export interface NewSparseHeader {
  version: number;
  flags: number;
  capacity: number;
  grainSize: number;
  descriptorOffset: number;
  descriptorSize: number;
  numGTEsPerGT: number;
  rgdOffset: number;
  /** Sectors, or -1 for GD_AT_END. */
  gdOffset: number;
  overHead: number;
  compressAlgorithm: number;
}

/** A 512-byte sparse extent header (magic, fields, and the newline-detection bytes). */
export function serializeSparseHeader(h: NewSparseHeader): Uint8Array {
  const b = new Uint8Array(512);
  const v = new DataView(b.buffer);
  v.setUint32(0, SPARSE_MAGIC, true);
  v.setUint32(4, h.version, true);
  v.setUint32(8, h.flags, true);
  v.setBigUint64(12, BigInt(h.capacity), true);
  v.setBigUint64(20, BigInt(h.grainSize), true);
  v.setBigUint64(28, BigInt(h.descriptorOffset), true);
  v.setBigUint64(36, BigInt(h.descriptorSize), true);
  v.setUint32(44, h.numGTEsPerGT, true);
  v.setBigUint64(48, BigInt(h.rgdOffset), true);
  v.setBigUint64(56, h.gdOffset < 0 ? GD_AT_END : BigInt(h.gdOffset), true);
  v.setBigUint64(64, BigInt(h.overHead), true);
  // singleEndLineChar, nonEndLineChar, doubleEndLineChar1/2: a transfer in text mode mangles them.
  b.set([0x0a, 0x20, 0x0d, 0x0a], 73);
  v.setUint16(77, h.compressAlgorithm, true);
  return b;
}

/** The CID written after "CID=" (not parentCID), as an unsigned 32-bit number. */
export function descriptorCid(text: string, parent: boolean): number | undefined {
  const m = parent ? /parentCID\s*=\s*([0-9a-fA-F]+)/.exec(text) : /(?:^|[^A-Za-z])CID\s*=\s*([0-9a-fA-F]+)/m.exec(text);
  if (!m) return undefined;
  return Number.parseInt(m[1]!.slice(-8), 16) >>> 0;
}
