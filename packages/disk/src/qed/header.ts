/**
 * QED on-disk header (QEMU's docs/interop/qed_spec.txt): "QED\0", little-endian fields,
 * an L1 table, and optionally a backing file named inside the header clusters.
 */
import { DiskError } from '../errors.js';

export const QED_MAGIC = 0x00444551; // "QED\0" read little-endian
export const QED_F_BACKING_FILE = 1n;
export const QED_F_NEED_CHECK = 2n;
export const QED_F_BACKING_FORMAT_NO_PROBE = 4n;
export const QED_FEATURE_MASK = QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE;
export const QED_MIN_CLUSTER_SIZE = 4096;
export const QED_MAX_CLUSTER_SIZE = 64 * 1024 * 1024;
export const QED_MIN_TABLE_SIZE = 1;
export const QED_MAX_TABLE_SIZE = 16;

export interface QedHeader {
  clusterSize: number;
  /** Table size in clusters. */
  tableSize: number;
  /** Header size in clusters. */
  headerSize: number;
  features: bigint;
  compatFeatures: bigint;
  autoclearFeatures: bigint;
  l1TableOffset: number;
  imageSize: number;
  backingFilenameOffset: number;
  backingFilenameSize: number;
  /** Read from the header clusters when the backing-file feature is set. */
  backingFile?: string;
}

/** Bytes of the fixed header fields (the backing file name, if any, follows them). */
export const QED_HEADER_BYTES = 64;
/** An L2 entry that reads as zeroes without a data cluster (QEMU's QED_CLUSTER_ZERO). */
export const QED_ZERO_CLUSTER = 1;
export const QED_DEFAULT_CLUSTER_SIZE = 64 * 1024;
export const QED_DEFAULT_TABLE_SIZE = 4;

/** Largest virtual size a geometry can map: (entries per table)^2 clusters. */
export function qedMaxImageSize(clusterSize: number, tableSize: number): number {
  const entries = (tableSize * clusterSize) / 8;
  return entries * entries * clusterSize;
}

/** The fixed header fields as stored at offset 0 (the backing file name is written separately). */
export function serializeQedHeader(h: QedHeader): Uint8Array {
  const b = new Uint8Array(QED_HEADER_BYTES);
  const v = new DataView(b.buffer);
  v.setUint32(0, QED_MAGIC, true);
  v.setUint32(4, h.clusterSize, true);
  v.setUint32(8, h.tableSize, true);
  v.setUint32(12, h.headerSize, true);
  v.setBigUint64(16, h.features, true);
  v.setBigUint64(24, h.compatFeatures, true);
  v.setBigUint64(32, h.autoclearFeatures, true);
  v.setBigUint64(40, BigInt(h.l1TableOffset), true);
  v.setBigUint64(48, BigInt(h.imageSize), true);
  v.setUint32(56, h.backingFilenameOffset, true);
  v.setUint32(60, h.backingFilenameSize, true);
  return b;
}

/** Header flags for a new image's backing file (QEMU stores only "raw, do not probe"). */
export function backingFeatures(backingFormat: string | undefined): bigint {
  return QED_F_BACKING_FILE | (backingFormat === 'raw' ? QED_F_BACKING_FORMAT_NO_PROBE : 0n);
}

export function isQed(b: Uint8Array): boolean {
  return b.length >= 4 && new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true) === QED_MAGIC;
}

const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

/** Parse the header from the first bytes of the file (enough to include the backing file name). */
export function parseQedHeader(b: Uint8Array, file = 'image'): QedHeader {
  if (b.length < 64) throw new DiskError('ETRUNCATED', `${file}: qed header is truncated`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (v.getUint32(0, true) !== QED_MAGIC) throw new DiskError('EFORMAT', `${file}: not a qed image (bad magic)`);
  const big = (at: number, what: string) => {
    const n = v.getBigUint64(at, true);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: qed ${what} ${n} is out of range`);
    return Number(n);
  };
  const h: QedHeader = {
    clusterSize: v.getUint32(4, true),
    tableSize: v.getUint32(8, true),
    headerSize: v.getUint32(12, true),
    features: v.getBigUint64(16, true),
    compatFeatures: v.getBigUint64(24, true),
    autoclearFeatures: v.getBigUint64(32, true),
    l1TableOffset: big(40, 'l1_table_offset'),
    imageSize: big(48, 'image_size'),
    backingFilenameOffset: v.getUint32(56, true),
    backingFilenameSize: v.getUint32(60, true),
  };
  if (!pow2(h.clusterSize) || h.clusterSize < QED_MIN_CLUSTER_SIZE || h.clusterSize > QED_MAX_CLUSTER_SIZE) {
    throw new DiskError('ECORRUPT', `${file}: qed cluster size ${h.clusterSize} is invalid`);
  }
  if (!pow2(h.tableSize) || h.tableSize < QED_MIN_TABLE_SIZE || h.tableSize > QED_MAX_TABLE_SIZE) {
    throw new DiskError('ECORRUPT', `${file}: qed table size ${h.tableSize} is invalid`);
  }
  if (h.headerSize === 0 || h.headerSize > 16) throw new DiskError('ECORRUPT', `${file}: qed header size ${h.headerSize} clusters is invalid`);
  if (h.features & ~QED_FEATURE_MASK) {
    throw new DiskError('EUNSUPPORTED', `${file}: Unsupported QED features 0x${(h.features & ~QED_FEATURE_MASK).toString(16)}`);
  }
  if (h.features & QED_F_BACKING_FILE) {
    const end = h.backingFilenameOffset + h.backingFilenameSize;
    if (h.backingFilenameSize === 0 || h.backingFilenameSize > 1023 || end > h.headerSize * h.clusterSize) {
      throw new DiskError('ECORRUPT', `${file}: qed backing file name (offset ${h.backingFilenameOffset}, ${h.backingFilenameSize} bytes) is invalid`);
    }
    if (end > b.length) throw new DiskError('ETRUNCATED', `${file}: qed backing file name lies past the bytes read`);
    h.backingFile = new TextDecoder().decode(b.subarray(h.backingFilenameOffset, end));
  }
  return h;
}
