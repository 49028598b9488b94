/** What filesystem identification reports, in blkid's terms (its `-o export` keys in comments). */
import type { BlockDevice } from '../blockdev.js';

export interface FilesystemInfo {
  /** TYPE: ext4, xfs, btrfs, vfat, ntfs, swap, LVM2_member, crypto_LUKS, iso9660, ... */
  type: string;
  /** USAGE: what the content is for. */
  usage: 'filesystem' | 'other' | 'crypto' | 'raid';
  /** LABEL */
  label?: string;
  /** UUID, formatted as blkid prints it for this type. */
  uuid?: string;
  /** UUID_SUB (btrfs device UUID) */
  uuidSub?: string;
  /** VERSION */
  version?: string;
  /** LOGUUID (an ext3/4 journal device: its own UUID) */
  logUuid?: string;
  /** EXT_JOURNAL (an ext3/4 filesystem with its journal on another device: that device's UUID) */
  externalJournal?: string;
  /** SEC_TYPE: the type an older tool would call it (ext3 → ext2, FAT12/16 → msdos). */
  secType?: string;
  /** BLOCK_SIZE */
  blockSize?: number;
  /** SUBSYSTEM (LUKS2) */
  subsystem?: string;
  /** Bytes the filesystem (or swap area, PV, volume) says it spans; blkid 2.39's FSSIZE where it has one. */
  size?: number;
}

/**
 * The bytes a prober looks at: the start of the device read once (every superblock we know
 * sits in the first 72 KiB), and bounded reads elsewhere for the few that need them (a FAT
 * root directory, the NTFS $Volume record).
 */
export class ProbeContext {
  constructor(readonly dev: BlockDevice, readonly head: Uint8Array) {}

  /** `length` bytes at `offset`, or null when that lies outside the device. */
  async read(offset: number, length: number): Promise<Uint8Array | null> {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.dev.size) return null;
    if (offset + length <= this.head.length) return this.head.subarray(offset, offset + length);
    const buf = new Uint8Array(length);
    await this.dev.read(buf, offset);
    return buf;
  }

  /** Bytes [offset, offset+length) of the head, or null if the head is shorter (a small device). */
  at(offset: number, length: number): Uint8Array | null {
    return offset + length <= this.head.length ? this.head.subarray(offset, offset + length) : null;
  }
}

export type Prober = (ctx: ProbeContext) => Promise<FilesystemInfo | null> | FilesystemInfo | null;

export const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export function ascii(b: Uint8Array): string {
  let s = '';
  for (const c of b) s += String.fromCharCode(c);
  return s;
}

/** A fixed-size text field: up to the first NUL, decoded as UTF-8 (ext, xfs, btrfs, LUKS labels). */
export function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}

/** 16 bytes as the usual lower-case 8-4-4-4-12 UUID (byte order as stored). */
export function uuidString(b: Uint8Array): string {
  const h = Buffer.from(b.subarray(0, 16)).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const isZero = (b: Uint8Array) => b.every((x) => x === 0);
export const isPowerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
