/**
 * The cloop header (QEMU 7.2 block/cloop.c): a 128-byte shell-script preamble, then the block
 * size and block count as big-endian uint32s; the n+1 big-endian uint64 block offsets follow.
 * Pure: the reader and the safety inspection both decode it here.
 */
import { DiskError } from '../errors.js';

export const CLOOP_PREAMBLE = '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n';
export const CLOOP_HEADER_BYTES = 128 + 8;
/** QEMU's limits: blocks of at most 64 MiB, at most 512 MiB of offsets. */
export const CLOOP_MAX_BLOCK_SIZE = 64 * 1024 * 1024;
const MAX_OFFSETS_BYTES = 512 * 1024 * 1024;
/** The engine's limit on the offsets table it holds (QEMU allows 512 MiB). */
export const CLOOP_MAX_BLOCKS = 8 * 1024 * 1024;

export function probeCloop(head: Uint8Array): number {
  // QEMU compares the preamble (or as much of it as it was given) and answers a low score.
  const n = Math.min(CLOOP_PREAMBLE.length, head.length);
  if (n === 0) return 0;
  for (let i = 0; i < n; i++) if (head[i] !== CLOOP_PREAMBLE.charCodeAt(i)) return 0;
  return 2;
}

export interface CloopHeader {
  blockSize: number;
  blocks: number;
}

/** Decode and check the block size and count (`head`: the file's first 136 bytes). */
export function parseCloopHeader(head: Uint8Array, name: string): CloopHeader {
  if (head.length < CLOOP_HEADER_BYTES) throw new DiskError('ETRUNCATED', `${name}: cloop header is truncated`);
  const v = new DataView(head.buffer, head.byteOffset, CLOOP_HEADER_BYTES);
  const blockSize = v.getUint32(128);
  const corrupt = (m: string) => new DiskError('ECORRUPT', `${name}: ${m}`);
  if (blockSize % 512) throw corrupt(`block_size ${blockSize} must be a multiple of 512`);
  if (blockSize === 0) throw corrupt('block_size cannot be zero');
  if (blockSize > CLOOP_MAX_BLOCK_SIZE) throw corrupt(`block_size ${blockSize} must be ${CLOOP_MAX_BLOCK_SIZE / (1024 * 1024)} MB or less`);
  const blocks = v.getUint32(132);
  if (blocks > Math.floor((0xffffffff - 1) / 8)) throw corrupt(`n_blocks ${blocks} must be ${Math.floor((0xffffffff - 1) / 8)} or less`);
  if ((blocks + 1) * 8 > MAX_OFFSETS_BYTES) throw corrupt('image requires too many offsets, try increasing block size');
  if (blocks > CLOOP_MAX_BLOCKS) throw new DiskError('ELIMIT', `${name}: cloop image of ${blocks} blocks is larger than the engine's limit of ${CLOOP_MAX_BLOCKS}`);
  return { blockSize, blocks };
}
