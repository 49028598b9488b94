/** XFS: the superblock at byte 0, big-endian ("XFSB"; xfs_format.h struct xfs_dsb, declared in ../xfs/layout.ts). */
import { SUPERBLOCK, XFS_SB_MAGIC } from '../xfs/layout.js';
import { type Prober, cString, uuidString, isPowerOfTwo } from './model.js';

export const probeXfs: Prober = (ctx) => {
  const head = ctx.at(0, SUPERBLOCK.size);
  if (!head || SUPERBLOCK.get(head, 'magic') !== XFS_SB_MAGIC) return null;
  const sb = SUPERBLOCK.decode(head);
  const dblocks = Number(sb.dataBlocks);
  // Sanity as xfs_repair would see it: power-of-two sizes within XFS's limits.
  if (!isPowerOfTwo(sb.blockSize) || sb.blockSize < 512 || sb.blockSize > 65536) return null;
  if (!isPowerOfTwo(sb.sectSize) || sb.sectSize < 512 || sb.sectSize > 32768 || dblocks === 0) return null;
  const label = cString(sb.fname);
  return {
    type: 'xfs', usage: 'filesystem',
    ...(label ? { label } : {}),
    uuid: uuidString(sb.uuid),
    blockSize: sb.sectSize,
    size: dblocks * sb.blockSize,
  };
};
