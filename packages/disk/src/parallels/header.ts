/**
 * The Parallels / ploop image header (QEMU 7.2 docs/interop/parallels.txt, block/parallels.c):
 * 64 little-endian bytes — magic, version 2, heads, cylinders, sectors per cluster ("tracks"),
 * BAT entries, disk size in sectors, the in-use marker, data offset, flags. Pure: the reader
 * and the safety inspection both decode it here.
 */
import { DiskError } from '../errors.js';

export const PARALLELS_MAGIC = 'WithoutFreeSpace';
export const PARALLELS_MAGIC_EXT = 'WithouFreSpacExt';
export const PARALLELS_VERSION = 2;
export const PARALLELS_HEADER_BYTES = 64;
/** The header's in-use marker: the image was open for writing and not closed. */
export const PARALLELS_INUSE = 0x746f6e59;
/** The engine's limit on the BAT (QEMU's is INT_MAX/4 entries, 2 GiB of memory). */
export const PARALLELS_MAX_BAT_ENTRIES = 32 * 1024 * 1024;

const magicOf = (head: Uint8Array) => new TextDecoder('latin1').decode(head.subarray(0, 16));

/** The signature: either magic (the version is checked by parseParallelsHeader). */
export function hasParallelsMagic(head: Uint8Array): boolean {
  const magic = magicOf(head);
  return magic === PARALLELS_MAGIC || magic === PARALLELS_MAGIC_EXT;
}

export function isParallels(head: Uint8Array): boolean {
  return head.length >= PARALLELS_HEADER_BYTES && hasParallelsMagic(head)
    && new DataView(head.buffer, head.byteOffset, PARALLELS_HEADER_BYTES).getUint32(16, true) === PARALLELS_VERSION;
}

export interface ParallelsHeader {
  size: number;
  /** Sectors per cluster ("tracks"). */
  tracks: number;
  /** Sectors a BAT entry counts in. */
  offMultiplier: number;
  batEntries: number;
  inUse: boolean;
}

/** Decode and check the header (`head`: the file's first 64 bytes, or fewer if it is shorter). */
export function parseParallelsHeader(head: Uint8Array, name: string): ParallelsHeader {
  if (!isParallels(head)) throw new DiskError('EFORMAT', `${name}: Image not in Parallels format`);
  const v = new DataView(head.buffer, head.byteOffset, PARALLELS_HEADER_BYTES);
  const magic = magicOf(head);
  const tracks = v.getUint32(28, true);
  let sectors = v.getBigUint64(36, true);
  // The old format keeps a 32-bit sector count (the high word is not part of it).
  if (magic === PARALLELS_MAGIC) sectors &= 0xffffffffn;
  if (tracks === 0) throw new DiskError('ECORRUPT', `${name}: Invalid image: Zero sectors per track`);
  if (tracks > Math.floor(0x7fffffff / 513)) throw new DiskError('ECORRUPT', `${name}: Invalid image: Too big cluster`);
  if (sectors > BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 512))) throw new DiskError('ECORRUPT', `${name}: parallels sector count ${sectors} is out of range`);
  const batEntries = v.getUint32(32, true);
  if (batEntries > 0x7fffffff / 4) throw new DiskError('ECORRUPT', `${name}: Catalog too large`);
  if (batEntries > PARALLELS_MAX_BAT_ENTRIES) {
    throw new DiskError('ELIMIT', `${name}: parallels BAT of ${batEntries} entries is larger than the engine's limit of ${PARALLELS_MAX_BAT_ENTRIES}`);
  }
  return {
    size: Number(sectors) * 512,
    tracks,
    offMultiplier: magic === PARALLELS_MAGIC ? 1 : tracks,
    batEntries,
    inUse: v.getUint32(44, true) === PARALLELS_INUSE,
  };
}
