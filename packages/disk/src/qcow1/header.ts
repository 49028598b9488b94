/**
 * The qcow (version 1) header, QEMU 7.2 block/qcow.c: 48 big-endian bytes — magic "QFI\xfb",
 * version 1, backing file name (offset, length), mtime, size, cluster and L2 bits, crypt
 * method, L1 table offset. Pure: the reader and the safety inspection both decode it here.
 */
import { DiskError } from '../errors.js';

export const QCOW1_MAGIC = 0x514649fb; // "QFI\xfb"
export const QCOW1_HEADER_BYTES = 48;
/** QEMU refuses longer backing file names. */
export const QCOW1_MAX_BACKING_NAME = 1023;

export function isQcow1(head: Uint8Array): boolean {
  if (head.length < 8) return false;
  const v = new DataView(head.buffer, head.byteOffset, 8);
  return v.getUint32(0) === QCOW1_MAGIC && v.getUint32(4) === 1;
}

export interface Qcow1Header {
  backingOffset: number;
  backingSize: number;
  size: number;
  clusterBits: number;
  l2Bits: number;
  /** 0 none, 1 AES (QEMU's checks refuse anything else). */
  cryptMethod: number;
  l1Offset: number;
}

/** Decode and check the header (`head` holds the file's first bytes, as many as there are). */
export function parseQcow1Header(head: Uint8Array, name: string): Qcow1Header {
  const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (head.length < 8 || v.getUint32(0) !== QCOW1_MAGIC) throw new DiskError('EFORMAT', `${name}: Image not in qcow format`);
  const version = v.getUint32(4);
  if (version !== 1) throw new DiskError('EUNSUPPORTED', `${name}: Unsupported qcow version ${version}`);
  if (head.length < QCOW1_HEADER_BYTES) throw new DiskError('ETRUNCATED', `${name}: qcow header is truncated`);
  const big = (at: number, what: string) => {
    const n = v.getBigUint64(at);
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${name}: qcow ${what} ${n} is out of range`);
    return Number(n);
  };
  const h: Qcow1Header = {
    backingOffset: big(8, 'backing file offset'),
    backingSize: v.getUint32(16),
    size: big(24, 'image size'),
    clusterBits: v.getUint8(32),
    l2Bits: v.getUint8(33),
    cryptMethod: v.getUint32(36),
    l1Offset: big(40, 'L1 table offset'),
  };
  if (h.size <= 1) throw new DiskError('ECORRUPT', `${name}: Image size is too small (must be at least 2 bytes)`);
  if (h.clusterBits < 9 || h.clusterBits > 16) throw new DiskError('ECORRUPT', `${name}: Cluster size must be between 512 and 64k`);
  // L2 tables of 512 bytes to 64 KiB, as QEMU requires.
  if (h.l2Bits < 6 || h.l2Bits > 13) throw new DiskError('ECORRUPT', `${name}: L2 table size must be between 512 and 64k`);
  if (h.cryptMethod > 1) throw new DiskError('ECORRUPT', `${name}: invalid encryption method in qcow header`);
  if (h.backingOffset !== 0 && h.backingSize > QCOW1_MAX_BACKING_NAME) throw new DiskError('ECORRUPT', `${name}: Backing file name too long`);
  return h;
}
