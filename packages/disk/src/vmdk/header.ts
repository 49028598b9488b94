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
