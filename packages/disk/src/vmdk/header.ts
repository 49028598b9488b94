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

/**
 * seSparse: the snapshot format of ESXi 6.5 and later (createType "seSparse", extent type
 * SESPARSE). VMware never published it; the layout here is the one QEMU 7.2's block/vmdk.c
 * accepts (read-only, strictly): a 512-byte "const" header at offset 0, a 512-byte "volatile"
 * header where the const header says, a grain directory of 64-bit entries naming grain tables
 * by index, grain tables of 64-bit entries naming grains by index. Offsets and sizes are in
 * sectors; every field is a little-endian u64.
 */
export const SESPARSE_CONST_MAGIC = 0xcafebaben;
export const SESPARSE_VOLATILE_MAGIC = 0xcafecafen;
/** Version "2.1": major in the high 32 bits. The only one QEMU opens. */
export const SESPARSE_VERSION = 0x0000000200000001n;
/** The only grain size (sectors: 4 KiB) and grain table size (sectors: 4096 entries) QEMU opens. */
export const SESPARSE_GRAIN_SECTORS = 8;
export const SESPARSE_GT_SECTORS = 64;
/** Byte offsets of the const header fields (u64 each); 208..511 is padding that must be zero. */
export const SESPARSE_FIELD = {
  magic: 0, version: 8, capacity: 16, grainSize: 24, grainTableSize: 32, flags: 40,
  reserved: 48, // four u64
  volatileHeaderOffset: 80, volatileHeaderSize: 88,
  journalHeaderOffset: 96, journalHeaderSize: 104, journalOffset: 112, journalSize: 120,
  grainDirOffset: 128, grainDirSize: 136, grainTablesOffset: 144, grainTablesSize: 152,
  freeBitmapOffset: 160, freeBitmapSize: 168, backmapOffset: 176, backmapSize: 184,
  grainsOffset: 192, grainsSize: 200,
} as const;
const SESPARSE_CONST_PAD = 208;
/** Volatile header: magic, free GT number, next transaction number, replay-journal flag; 32..511 zero. */
const SESPARSE_VOLATILE_REPLAY = 24;
const SESPARSE_VOLATILE_PAD = 32;
/** A grain directory entry of an allocated grain table: 0x1000_0000 in the high word, the table index in the low one. */
export const SESPARSE_GDE_ALLOCATED = 0x10000000;
/** Grain table entry types, the top nibble (QEMU's reading of the format). */
export const SESPARSE_GTE_UNALLOCATED = 0x0;
export const SESPARSE_GTE_UNMAPPED = 0x1; // guest unmapped it: reads as zeroes
export const SESPARSE_GTE_ZERO = 0x2;
export const SESPARSE_GTE_ALLOCATED = 0x3;

export interface SeSparseHeader {
  /** Virtual size in sectors. */
  capacity: number;
  volatileHeaderOffset: number;
  grainDirOffset: number;
  grainDirSectors: number;
  grainTablesOffset: number;
  grainsOffset: number;
}

const hex64 = (n: bigint) => `0x${n.toString(16).padStart(16, '0')}`;

/** Parse and check an seSparse const header as strictly as QEMU (the format is undocumented). */
export function parseSeSparseHeader(b: Uint8Array, file = 'image'): SeSparseHeader {
  if (b.length < 512) throw new DiskError('ETRUNCATED', `${file}: seSparse const header is truncated`);
  const v = new DataView(b.buffer, b.byteOffset, 512);
  const f = (at: number) => v.getBigUint64(at, true);
  const magic = f(SESPARSE_FIELD.magic);
  if (magic !== SESPARSE_CONST_MAGIC) throw new DiskError('EFORMAT', `${file}: Bad const header magic: ${hex64(magic)}`);
  const version = f(SESPARSE_FIELD.version);
  if (version !== SESPARSE_VERSION) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported version: ${hex64(version)}`);
  const grain = f(SESPARSE_FIELD.grainSize);
  if (grain !== BigInt(SESPARSE_GRAIN_SECTORS)) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported grain size: ${grain}`);
  const table = f(SESPARSE_FIELD.grainTableSize);
  if (table !== BigInt(SESPARSE_GT_SECTORS)) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported grain table size: ${table}`);
  const flags = f(SESPARSE_FIELD.flags);
  if (flags !== 0n) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported flags: ${hex64(flags)}`);
  const reserved = [0, 1, 2, 3].map((i) => f(SESPARSE_FIELD.reserved + 8 * i));
  if (reserved.some((r) => r !== 0n)) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported reserved bits: ${reserved.map(hex64).join(' ')}`);
  if (b.subarray(SESPARSE_CONST_PAD, 512).some((x) => x !== 0)) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported non-zero const header padding`);
  const num = (at: number, what: string): number => {
    const n = f(at);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ELIMIT', `${file}: seSparse ${what} ${n} is out of range`);
    return Number(n);
  };
  return {
    capacity: num(SESPARSE_FIELD.capacity, 'capacity'),
    volatileHeaderOffset: num(SESPARSE_FIELD.volatileHeaderOffset, 'volatile header offset'),
    grainDirOffset: num(SESPARSE_FIELD.grainDirOffset, 'grain directory offset'),
    grainDirSectors: num(SESPARSE_FIELD.grainDirSize, 'grain directory size'),
    grainTablesOffset: num(SESPARSE_FIELD.grainTablesOffset, 'grain tables offset'),
    grainsOffset: num(SESPARSE_FIELD.grainsOffset, 'grains offset'),
  };
}

/** Check an seSparse volatile header: its magic, a clean journal, zero padding. */
export function checkSeSparseVolatileHeader(b: Uint8Array, file = 'image'): void {
  const v = new DataView(b.buffer, b.byteOffset, 512);
  const magic = v.getBigUint64(0, true);
  if (magic !== SESPARSE_VOLATILE_MAGIC) throw new DiskError('EFORMAT', `${file}: Bad volatile header magic: ${hex64(magic)}`);
  // The journal is VMware's crash recovery; like QEMU we do not replay it, so a dirty image is refused.
  if (v.getBigUint64(SESPARSE_VOLATILE_REPLAY, true) !== 0n) throw new DiskError('EUNSUPPORTED', `${file}: Image is dirty, Replaying journal not supported`);
  if (b.subarray(SESPARSE_VOLATILE_PAD, 512).some((x) => x !== 0)) throw new DiskError('EUNSUPPORTED', `${file}: Unsupported non-zero volatile header padding`);
}
