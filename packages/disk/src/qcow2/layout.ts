/**
 * qcow2 on-disk layout, from QEMU's docs/interop/qcow2.txt ("qcow2.txt" below). Parsing
 * and serialising of the header, header extensions, L1/L2 entries and the snapshot table.
 * Everything here is pure (bytes in, values out) and validates what it reads: a hostile
 * header yields a DiskError, never an exception of another kind or an unbounded allocation.
 */
import { DiskError } from '../errors.js';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

// Limits QEMU enforces (block/qcow2.h); larger values are refused as hostile.
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const MAX_L1_SIZE_BYTES = 32 * 1024 * 1024;        // QCOW_MAX_L1_SIZE
export const MAX_REFTABLE_SIZE_BYTES = 8 * 1024 * 1024;   // QCOW_MAX_REFTABLE_SIZE
export const MAX_SNAPSHOTS = 65536;                       // QCOW_MAX_SNAPSHOTS
export const MAX_BACKING_FILE_NAME = 1023;
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;              // QCOW_MAX_SNAPSHOT_EXTRA_DATA
/** qcow2.txt: "the size of the image ... must not exceed 2^(64-9)"; QEMU caps at 2^61-ish; we stay inside JS safe integers. */
export const MAX_VIRTUAL_SIZE = Number.MAX_SAFE_INTEGER - (1 << 21);

/** qcow2.txt "Header": incompatible feature bits. */
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/** Compatible feature bits. */
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
/** Autoclear feature bits. */
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

/** qcow2.txt "Header extensions": extension type magics. */
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_BITMAPS = 0x23852875;
export const EXT_DATA_FILE = 0x44415441;

export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

/** Fixed header length for version 2, and the minimum for version 3 (qcow2.txt "Header"). */
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
/** Header length QEMU writes for version 3 (includes compression_type + padding). */
export const V3_HEADER_LENGTH = 112;

export interface HeaderExtension {
  type: number;
  /** Offset of the extension's data in the file. */
  offset: number;
  data: Uint8Array;
}

export interface FeatureName {
  type: 'incompatible' | 'compatible' | 'autoclear';
  bit: number;
  name: string;
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** Extensions in file order (excluding the end marker). */
  extensions: HeaderExtension[];
  /** Decoded well-known extensions. */
  backingFormat?: string;
  dataFile?: string;
  featureNames: FeatureName[];
  /** Backing file name (read from backingFileOffset), if any. */
  backingFile?: string;
}

/** Derived geometry that every reader and writer needs. */
export interface Qcow2Geometry {
  clusterSize: number;
  clusterBits: number;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  l2EntrySize: number;
  /** Entries per L2 table (one cluster). */
  l2Entries: number;
  l2Bits: number;
  extendedL2: boolean;
  subclusterSize: number;
  subclustersPerCluster: number;
  refcountBits: number;
  /** Refcount entries per refcount block (one cluster). */
  refcountBlockEntries: number;
  /** L1 entries needed to map the whole virtual size. */
  l1EntriesNeeded: number;
}

function be64(view: DataView, off: number): bigint {
  return view.getBigUint64(off, false);
}

/** A 64-bit field that must be a safe JS integer (offsets, sizes). */
function safe64(view: DataView, off: number, field: string, file: string): number {
  const v = be64(view, off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DiskError('ELIMIT', `${file}: qcow2 header field ${field} (${v}) is too large`);
  }
  return Number(v);
}

export function isQcow2(head: Uint8Array): boolean {
  return head.length >= 8 && new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0, false) === QCOW2_MAGIC
    && [2, 3].includes(new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(4, false));
}

/**
 * Parse the header and its extensions from the first cluster of the file. `head` must
 * hold at least the first cluster (or the whole file if smaller); `fileSize` is used to
 * refuse offsets past the end of the file. Reading the backing file name needs the bytes
 * at backingFileOffset, which qcow2.txt places inside the first cluster too.
 */
export function parseHeader(head: Uint8Array, fileSize: number, file = 'image'): Qcow2Header {
  if (head.length < V2_HEADER_LENGTH) throw new DiskError('ETRUNCATED', `${file}: qcow2 header is truncated`);
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (v.getUint32(0, false) !== QCOW2_MAGIC) throw new DiskError('EFORMAT', 'Image is not in qcow2 format');
  const version = v.getUint32(4, false);
  if (version !== 2 && version !== 3) {
    throw new DiskError('EUNSUPPORTED', `${file}: Unsupported qcow2 version ${version}`);
  }
  const clusterBits = v.getUint32(20, false);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new DiskError('ELIMIT', `${file}: Unsupported cluster size: 2^${clusterBits}`);
  }
  const clusterSize = 2 ** clusterBits;
  const h: Qcow2Header = {
    version,
    backingFileOffset: safe64(v, 8, 'backing_file_offset', file),
    backingFileSize: v.getUint32(16, false),
    clusterBits,
    size: safe64(v, 24, 'size', file),
    cryptMethod: v.getUint32(32, false),
    l1Size: v.getUint32(36, false),
    l1TableOffset: safe64(v, 40, 'l1_table_offset', file),
    refcountTableOffset: safe64(v, 48, 'refcount_table_offset', file),
    refcountTableClusters: v.getUint32(56, false),
    nbSnapshots: v.getUint32(60, false),
    snapshotsOffset: safe64(v, 64, 'snapshots_offset', file),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: V2_HEADER_LENGTH,
    compressionType: COMPRESSION_ZLIB,
    extensions: [],
    featureNames: [],
  };
  if (version === 3) {
    if (head.length < V3_MIN_HEADER_LENGTH) throw new DiskError('ETRUNCATED', `${file}: qcow2 v3 header is truncated`);
    h.incompatibleFeatures = be64(v, 72);
    h.compatibleFeatures = be64(v, 80);
    h.autoclearFeatures = be64(v, 88);
    h.refcountOrder = v.getUint32(96, false);
    h.headerLength = v.getUint32(100, false);
    if (h.headerLength < V3_MIN_HEADER_LENGTH || h.headerLength > clusterSize || h.headerLength % 8 !== 0 && h.headerLength !== V3_MIN_HEADER_LENGTH) {
      throw new DiskError('ECORRUPT', `${file}: qcow2 header_length ${h.headerLength} is invalid`);
    }
    if (h.headerLength > head.length) throw new DiskError('ETRUNCATED', `${file}: qcow2 header is truncated`);
    if (h.headerLength > V3_MIN_HEADER_LENGTH) h.compressionType = v.getUint8(104);
    if (h.refcountOrder > 6) throw new DiskError('ELIMIT', `${file}: Reference count entry width too large; may not exceed 64 bits`);
  }
  if (h.size > MAX_VIRTUAL_SIZE) throw new DiskError('ELIMIT', `${file}: virtual size ${h.size} is too large`);
  if (h.l1Size * 8 > MAX_L1_SIZE_BYTES) throw new DiskError('ELIMIT', `${file}: Active L1 table too large (${h.l1Size} entries)`);
  if (h.refcountTableClusters * clusterSize > MAX_REFTABLE_SIZE_BYTES) {
    throw new DiskError('ELIMIT', `${file}: Reference count table too large (${h.refcountTableClusters} clusters)`);
  }
  if (h.nbSnapshots > MAX_SNAPSHOTS) throw new DiskError('ELIMIT', `${file}: Too many snapshots (${h.nbSnapshots})`);
  const geo = geometry(h);
  if (h.l1Size < geo.l1EntriesNeeded) throw new DiskError('ECORRUPT', `${file}: L1 table is too small (${h.l1Size} entries for ${geo.l1EntriesNeeded} needed)`);
  for (const [name, off, len] of [
    ['L1 table', h.l1TableOffset, h.l1Size * 8],
    ['refcount table', h.refcountTableOffset, h.refcountTableClusters * clusterSize],
  ] as const) {
    if (len > 0 && off % clusterSize !== 0) throw new DiskError('ECORRUPT', `${file}: ${name} offset ${off} is not cluster-aligned`);
    if (len > 0 && off + len > fileSize) throw new DiskError('ECORRUPT', `${file}: ${name} (offset ${off}, ${len} bytes) extends past the end of the file`);
  }
  if (h.refcountTableClusters === 0) throw new DiskError('ECORRUPT', `${file}: Image does not contain a reference count table`);
  if (h.nbSnapshots > 0 && h.snapshotsOffset % clusterSize !== 0) {
    throw new DiskError('ECORRUPT', `${file}: snapshot table offset ${h.snapshotsOffset} is not cluster-aligned`);
  }
  if (h.incompatibleFeatures & ~INCOMPAT_KNOWN) {
    throw new DiskError('EUNSUPPORTED', `${file}: Unsupported qcow2 feature(s): incompatible bits 0x${(h.incompatibleFeatures & ~INCOMPAT_KNOWN).toString(16)}`);
  }
  if (!(h.incompatibleFeatures & INCOMPAT_COMPRESSION) && h.compressionType !== COMPRESSION_ZLIB) {
    throw new DiskError('ECORRUPT', `${file}: compression_type ${h.compressionType} set without the compression type feature bit`);
  }
  if (h.compressionType !== COMPRESSION_ZLIB && h.compressionType !== COMPRESSION_ZSTD) {
    throw new DiskError('EUNSUPPORTED', `${file}: Unknown compression type ${h.compressionType}`);
  }
  parseExtensions(head, h, file);
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > MAX_BACKING_FILE_NAME || h.backingFileSize === 0) {
      throw new DiskError('ELIMIT', `${file}: Backing file name too long (${h.backingFileSize} bytes)`);
    }
    const end = h.backingFileOffset + h.backingFileSize;
    if (end > head.length || end > clusterSize) {
      throw new DiskError('ECORRUPT', `${file}: backing file name (offset ${h.backingFileOffset}) lies outside the header cluster`);
    }
    h.backingFile = utf8(head.subarray(h.backingFileOffset, end));
  }
  return h;
}

function utf8(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

/** qcow2.txt "Header extensions": walk from header_length to the end marker or the end of cluster 0. */
function parseExtensions(head: Uint8Array, h: Qcow2Header, file: string): void {
  const clusterSize = 2 ** h.clusterBits;
  const limit = Math.min(head.length, clusterSize, h.backingFileOffset > 0 ? h.backingFileOffset : clusterSize);
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let off = h.headerLength;
  while (off + 8 <= limit) {
    const type = v.getUint32(off, false);
    const len = v.getUint32(off + 4, false);
    if (type === EXT_END) return;
    if (off + 8 + len > limit) throw new DiskError('ECORRUPT', `${file}: qcow2 header extension 0x${type.toString(16)} overruns the header cluster`);
    const data = head.subarray(off + 8, off + 8 + len);
    h.extensions.push({ type, offset: off + 8, data });
    switch (type) {
      case EXT_BACKING_FORMAT: h.backingFormat = utf8(data); break;
      case EXT_DATA_FILE: h.dataFile = utf8(data); break;
      case EXT_FEATURE_TABLE:
        for (let i = 0; i + 48 <= len; i += 48) {
          const t = data[i];
          const name = utf8(data.subarray(i + 2, i + 48)).replace(/\0.*$/s, '');
          h.featureNames.push({ type: t === 0 ? 'incompatible' : t === 1 ? 'compatible' : 'autoclear', bit: data[i + 1], name });
        }
        break;
    }
    off += 8 + Math.ceil(len / 8) * 8;
  }
}

export function geometry(h: Pick<Qcow2Header, 'clusterBits' | 'incompatibleFeatures' | 'refcountOrder' | 'size'>): Qcow2Geometry {
  const clusterSize = 2 ** h.clusterBits;
  const extendedL2 = (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  const l2EntrySize = extendedL2 ? 16 : 8;
  const l2Entries = clusterSize / l2EntrySize;
  const l2Bits = Math.log2(l2Entries);
  const refcountBits = 2 ** h.refcountOrder;
  const bytesPerL1Entry = l2Entries * clusterSize;
  return {
    clusterSize,
    clusterBits: h.clusterBits,
    l2EntrySize,
    l2Entries,
    l2Bits,
    extendedL2,
    subclusterSize: extendedL2 ? clusterSize / 32 : clusterSize,
    subclustersPerCluster: extendedL2 ? 32 : 1,
    refcountBits,
    refcountBlockEntries: (clusterSize * 8) / refcountBits,
    l1EntriesNeeded: Math.ceil(h.size / bytesPerL1Entry),
  };
}

/** Serialise a header (and the given extensions, plus backing file name) into cluster 0. */
export function serializeHeader(h: Qcow2Header, clusterSize: number): Uint8Array {
  const buf = new Uint8Array(clusterSize);
  const v = new DataView(buf.buffer);
  v.setUint32(0, QCOW2_MAGIC, false);
  v.setUint32(4, h.version, false);
  v.setUint32(20, h.clusterBits, false);
  v.setBigUint64(24, BigInt(h.size), false);
  v.setUint32(32, h.cryptMethod, false);
  v.setUint32(36, h.l1Size, false);
  v.setBigUint64(40, BigInt(h.l1TableOffset), false);
  v.setBigUint64(48, BigInt(h.refcountTableOffset), false);
  v.setUint32(56, h.refcountTableClusters, false);
  v.setUint32(60, h.nbSnapshots, false);
  v.setBigUint64(64, BigInt(h.snapshotsOffset), false);
  let off = V2_HEADER_LENGTH;
  if (h.version === 3) {
    v.setBigUint64(72, h.incompatibleFeatures, false);
    v.setBigUint64(80, h.compatibleFeatures, false);
    v.setBigUint64(88, h.autoclearFeatures, false);
    v.setUint32(96, h.refcountOrder, false);
    v.setUint32(100, V3_HEADER_LENGTH, false);
    v.setUint8(104, h.compressionType);
    off = V3_HEADER_LENGTH;
  }
  const enc = new TextEncoder();
  const exts: Array<[number, Uint8Array]> = [];
  if (h.backingFormat) exts.push([EXT_BACKING_FORMAT, enc.encode(h.backingFormat)]);
  if (h.dataFile) exts.push([EXT_DATA_FILE, enc.encode(h.dataFile)]);
  // QEMU's order: the encryption header pointer comes before the feature name table.
  const crypto = h.extensions.find((e) => e.type === EXT_CRYPTO_HEADER);
  if (crypto) exts.push([EXT_CRYPTO_HEADER, crypto.data]);
  if (h.version === 3 && h.featureNames.length) exts.push([EXT_FEATURE_TABLE, encodeFeatureTable(h.featureNames)]);
  for (const e of h.extensions) {
    if ([EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_FEATURE_TABLE, EXT_CRYPTO_HEADER].includes(e.type)) continue;
    exts.push([e.type, e.data]);
  }
  for (const [type, data] of exts) {
    if (off + 8 + data.length + 8 > clusterSize) throw new DiskError('ELIMIT', 'qcow2 header extensions do not fit in the first cluster');
    v.setUint32(off, type, false);
    v.setUint32(off + 4, data.length, false);
    buf.set(data, off + 8);
    off += 8 + Math.ceil(data.length / 8) * 8;
  }
  off += 8; // end-of-extensions marker (zeroes)
  if (h.backingFile) {
    const name = enc.encode(h.backingFile);
    if (name.length > MAX_BACKING_FILE_NAME) throw new DiskError('EINVAL', `Backing file name too long: ${h.backingFile}`);
    if (off + name.length > clusterSize) throw new DiskError('ELIMIT', 'backing file name does not fit in the first cluster');
    buf.set(name, off);
    v.setBigUint64(8, BigInt(off), false);
    v.setUint32(16, name.length, false);
  }
  return buf;
}

/** The feature name table QEMU writes, so `qemu-img info` on images we make names features the same way. */
export const STANDARD_FEATURE_NAMES: FeatureName[] = [
  { type: 'incompatible', bit: 0, name: 'dirty bit' },
  { type: 'incompatible', bit: 1, name: 'corrupt bit' },
  { type: 'incompatible', bit: 2, name: 'external data file' },
  { type: 'incompatible', bit: 3, name: 'compression type' },
  { type: 'incompatible', bit: 4, name: 'extended L2 entries' },
  { type: 'compatible', bit: 0, name: 'lazy refcounts' },
  { type: 'autoclear', bit: 0, name: 'bitmaps' },
  { type: 'autoclear', bit: 1, name: 'raw external data' },
];

function encodeFeatureTable(names: FeatureName[]): Uint8Array {
  const out = new Uint8Array(names.length * 48);
  const enc = new TextEncoder();
  names.forEach((f, i) => {
    out[i * 48] = f.type === 'incompatible' ? 0 : f.type === 'compatible' ? 1 : 2;
    out[i * 48 + 1] = f.bit;
    out.set(enc.encode(f.name).subarray(0, 46), i * 48 + 2);
  });
  return out;
}

// ---- L1 / L2 entries (qcow2.txt "Cluster mapping") ----

/** Bits 9-55 of an L1 or standard L2 entry: the host cluster offset. */
export const OFFSET_MASK = 0x00fffffffffffe00n;
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
export const OFLAG_ZERO = 1n;
/** Reserved bits that must be zero in an L1 entry (bits 0-8 and 56-62). */
export const L1E_RESERVED_MASK = 0x7f000000000001ffn;
/** Reserved bits in a standard (uncompressed) L2 entry: bits 1-8 and 56-61. */
export const L2E_STD_RESERVED_MASK = 0x3f000000000001fen;

export type L2Kind = 'unallocated' | 'zero-plain' | 'zero-alloc' | 'normal' | 'compressed';

export interface L2Mapping {
  kind: L2Kind;
  /** Host offset: of the cluster (normal/zero-alloc), or of the compressed data. */
  hostOffset: number;
  /** Compressed data length upper bound in bytes (sectors * 512, covering the first partial sector). */
  compressedSize: number;
  copied: boolean;
}

/**
 * Decode a standard L2 entry. For extended L2 (qcow2.txt "Extended L2 Entries") the
 * first 64 bits are decoded here and the subcluster bitmap separately.
 */
export function decodeL2Entry(entry: bigint, clusterBits: number, version: number): L2Mapping {
  const copied = (entry & OFLAG_COPIED) !== 0n;
  if (entry & OFLAG_COMPRESSED) {
    // Compressed cluster descriptor: x = 62 - (cluster_bits - 8).
    const x = BigInt(62 - (clusterBits - 8));
    const hostOffset = Number(entry & ((1n << x) - 1n));
    const sectors = Number((entry >> x) & ((1n << (62n - x)) - 1n));
    // "Number of additional 512-byte sectors used for the compressed data, beyond the sector containing the offset".
    const compressedSize = (sectors + 1) * 512 - (hostOffset & 511);
    return { kind: 'compressed', hostOffset, compressedSize, copied: false };
  }
  const hostOffset = Number(entry & OFFSET_MASK);
  if (version >= 3 && (entry & OFLAG_ZERO)) {
    return { kind: hostOffset ? 'zero-alloc' : 'zero-plain', hostOffset, compressedSize: 0, copied };
  }
  return { kind: hostOffset ? 'normal' : 'unallocated', hostOffset, compressedSize: 0, copied };
}

/**
 * Host offset (bits 9-55) of an L1, L2 or refcount table entry given as its two big-endian
 * 32-bit halves: the hot paths decode entries without building a BigInt.
 */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
}

/**
 * The host bytes a compressed cluster descriptor accounts for: whole sectors from the one
 * holding its first byte (what refcounts count, as qemu-img check counts them).
 */
export function compressedSpan(m: Pick<L2Mapping, 'hostOffset' | 'compressedSize'>): { start: number; end: number } {
  const start = m.hostOffset - (m.hostOffset % 512);
  return { start, end: start + Math.ceil((m.compressedSize + (m.hostOffset % 512)) / 512) * 512 };
}

/** Extended L2 subcluster bitmap: bit n = subcluster n allocated, bit 32+n = reads as zero. */
export function subclusterBits(bitmap: bigint, index: number): { allocated: boolean; zero: boolean } {
  return {
    allocated: ((bitmap >> BigInt(index)) & 1n) !== 0n,
    zero: ((bitmap >> BigInt(32 + index)) & 1n) !== 0n,
  };
}

// ---- Snapshot table (qcow2.txt "Snapshots") ----

export interface Qcow2Snapshot {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  vmStateSize: number;
  extraData: Uint8Array;
  /** From extra data, when present. */
  vmStateSizeLarge?: number;
  diskSize?: number;
  icount?: bigint;
}

/** Parse `count` snapshot table entries from `buf` (which starts at snapshots_offset). Returns entries and the table's byte length. */
export function parseSnapshotTable(buf: Uint8Array, count: number, file = 'image'): { snapshots: Qcow2Snapshot[]; length: number } {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: Qcow2Snapshot[] = [];
  let off = 0;
  const dec = new TextDecoder();
  for (let i = 0; i < count; i++) {
    if (off + 40 > buf.length) throw new DiskError('ETRUNCATED', `${file}: snapshot table is truncated`);
    const l1Hi = v.getBigUint64(off, false);
    if (l1Hi > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: snapshot ${i} L1 table offset is invalid`);
    const idLen = v.getUint16(off + 12, false);
    const nameLen = v.getUint16(off + 14, false);
    const extraLen = v.getUint32(off + 36, false);
    if (extraLen > MAX_SNAPSHOT_EXTRA_DATA) throw new DiskError('ELIMIT', `${file}: snapshot ${i} extra data too large (${extraLen} bytes)`);
    const end = off + 40 + extraLen + idLen + nameLen;
    if (end > buf.length) throw new DiskError('ETRUNCATED', `${file}: snapshot table is truncated`);
    const extraData = buf.slice(off + 40, off + 40 + extraLen);
    const ev = new DataView(extraData.buffer);
    const s: Qcow2Snapshot = {
      l1TableOffset: Number(l1Hi),
      l1Size: v.getUint32(off + 8, false),
      id: dec.decode(buf.subarray(off + 40 + extraLen, off + 40 + extraLen + idLen)),
      name: dec.decode(buf.subarray(off + 40 + extraLen + idLen, end)),
      dateSec: v.getUint32(off + 16, false),
      dateNsec: v.getUint32(off + 20, false),
      vmClockNsec: v.getBigUint64(off + 24, false),
      vmStateSize: v.getUint32(off + 32, false),
      extraData,
    };
    if (extraLen >= 8) s.vmStateSizeLarge = Number(ev.getBigUint64(0, false));
    if (extraLen >= 16) s.diskSize = Number(ev.getBigUint64(8, false));
    if (extraLen >= 24) s.icount = ev.getBigUint64(16, false);
    if (s.l1Size * 8 > MAX_L1_SIZE_BYTES) throw new DiskError('ELIMIT', `${file}: snapshot '${s.name}' L1 table too large`);
    out.push(s);
    off = Math.ceil(end / 8) * 8;
  }
  return { snapshots: out, length: off };
}

/** Serialise a snapshot table (entries padded to 8 bytes). */
export function serializeSnapshotTable(snapshots: Qcow2Snapshot[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const s of snapshots) {
    const id = enc.encode(s.id);
    const name = enc.encode(s.name);
    const len = Math.ceil((40 + s.extraData.length + id.length + name.length) / 8) * 8;
    const b = new Uint8Array(len);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, BigInt(s.l1TableOffset), false);
    v.setUint32(8, s.l1Size, false);
    v.setUint16(12, id.length, false);
    v.setUint16(14, name.length, false);
    v.setUint32(16, s.dateSec, false);
    v.setUint32(20, s.dateNsec, false);
    v.setBigUint64(24, s.vmClockNsec, false);
    v.setUint32(32, s.vmStateSize, false);
    v.setUint32(36, s.extraData.length, false);
    b.set(s.extraData, 40);
    b.set(id, 40 + s.extraData.length);
    b.set(name, 40 + s.extraData.length + id.length);
    parts.push(b);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

// ---- Refcount blocks (qcow2.txt "Host cluster management") ----

/**
 * Entry `i` of a refcount block with `bits`-wide entries: big-endian for 8 bits and more;
 * narrower entries are packed into bytes starting at the least significant bit.
 */
export function getRefcount(block: Uint8Array, i: number, bits: number): number {
  if (bits < 8) return (block[(i * bits) >> 3]! >> ((i * bits) & 7)) & ((1 << bits) - 1);
  const bytes = bits / 8;
  let v = 0;
  for (let k = 0; k < bytes; k++) v = v * 256 + block[i * bytes + k]!;
  return v;
}

export function setRefcount(block: Uint8Array, i: number, bits: number, value: number): void {
  if (bits < 8) {
    const at = (i * bits) >> 3, shift = (i * bits) & 7, mask = ((1 << bits) - 1) << shift;
    block[at] = (block[at]! & ~mask) | ((value << shift) & mask);
    return;
  }
  const bytes = bits / 8;
  for (let k = bytes - 1; k >= 0; k--) {
    block[i * bytes + k] = value % 256;
    value = Math.floor(value / 256);
  }
}

/** refcountMax of each width (0..64 bits), worked out once: it is asked once per cluster counted. */
const REFCOUNT_MAXIMA = Array.from({ length: 65 }, (_, bits) => (bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** bits - 1));

/** The largest refcount an entry of `bits` holds (capped at what a JS number counts exactly). */
export function refcountMax(bits: number): number {
  return REFCOUNT_MAXIMA[bits] ?? Number.MAX_SAFE_INTEGER;
}

// ---- Persistent dirty bitmaps (qcow2.txt "Bitmaps extension", "Bitmap directory") ----

export interface BitmapExtension {
  count: number;
  directorySize: number;
  directoryOffset: number;
}

export interface BitmapEntry {
  tableOffset: number;
  /** Entries of the bitmap table (8 bytes each). */
  tableSize: number;
  flags: number;
  granularityBits: number;
  name: string;
}

export const BME_FLAG_IN_USE = 1;
export const BME_FLAG_AUTO = 2;
/** A directory larger than this is refused (QEMU caps it at 64 MiB as well). */
export const MAX_BITMAP_DIRECTORY = 64 << 20;

/** Bytes of bitmap data for a disk of `size` bytes (qcow2.txt "Bitmap table"). */
export function bitmapDataBytes(size: number, granularityBits: number): number {
  return Math.ceil(Math.ceil(size / 2 ** granularityBits) / 8);
}

/** Most bitmap data diskhub holds in memory for one bitmap (a 1 TiB disk at 512-byte granularity). */
export const MAX_BITMAP_BYTES = 256 << 20;

/** One bitmap directory entry (qcow2.txt "Bitmap directory"): no extra data, type 1 (dirty tracking). */
export function serializeBitmapEntry(tableOffset: number, tableSize: number, flags: number, granularityBits: number, name: string): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const entry = new Uint8Array(Math.ceil((24 + nameBytes.length) / 8) * 8);
  const v = new DataView(entry.buffer);
  v.setBigUint64(0, BigInt(tableOffset), false);
  v.setUint32(8, tableSize, false);
  v.setUint32(12, flags, false);
  v.setUint8(16, 1);
  v.setUint8(17, granularityBits);
  v.setUint16(18, nameBytes.length, false);
  entry.set(nameBytes, 24);
  return entry;
}

export function parseBitmapExtension(h: Qcow2Header): BitmapExtension | undefined {
  const ext = h.extensions.find((x) => x.type === EXT_BITMAPS);
  if (!ext || ext.data.length < 24) return undefined;
  const v = new DataView(ext.data.buffer, ext.data.byteOffset, ext.data.byteLength);
  return { count: v.getUint32(0, false), directorySize: Number(v.getBigUint64(8, false)), directoryOffset: Number(v.getBigUint64(16, false)) };
}

/** Entries of a bitmap directory (each 24 bytes + extra data + name, padded to 8). */
export function parseBitmapDirectory(dir: Uint8Array, count: number, file = 'image'): BitmapEntry[] {
  const v = new DataView(dir.buffer, dir.byteOffset, dir.byteLength);
  const out: BitmapEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + 24 > dir.length) throw new DiskError('ECORRUPT', `${file}: bitmap directory is truncated`);
    const nameSize = v.getUint16(at + 18, false);
    const extra = v.getUint32(at + 20, false);
    const end = at + 24 + extra + nameSize;
    if (end > dir.length) throw new DiskError('ECORRUPT', `${file}: bitmap directory entry ${i} overruns the directory`);
    out.push({
      tableOffset: Number(v.getBigUint64(at, false)),
      tableSize: v.getUint32(at + 8, false),
      flags: v.getUint32(at + 12, false),
      granularityBits: v.getUint8(at + 17),
      name: utf8(dir.subarray(at + 24 + extra, end)),
    });
    at = Math.ceil(end / 8) * 8;
  }
  return out;
}

/** A bitmap directory as qcow2.txt lays it out (type 1 = dirty tracking bitmap, no extra data). */
export function serializeBitmapDirectory(entries: BitmapEntry[]): Uint8Array {
  const parts = entries.map((e) => serializeBitmapEntry(e.tableOffset, e.tableSize, e.flags, e.granularityBits, e.name));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** The bitmaps header extension's data (qcow2.txt "Bitmaps extension"). */
export function serializeBitmapExtension(ext: BitmapExtension): Uint8Array {
  const b = new Uint8Array(24);
  const v = new DataView(b.buffer);
  v.setUint32(0, ext.count, false);
  v.setBigUint64(8, BigInt(ext.directorySize), false);
  v.setBigUint64(16, BigInt(ext.directoryOffset), false);
  return b;
}
