/** XFS: the superblock at byte 0, big-endian ("XFSB"; xfs_format.h struct xfs_dsb). */
import { type Prober, view, ascii, cString, uuidString, isPowerOfTwo } from './model.js';

export const probeXfs: Prober = (ctx) => {
  const sb = ctx.at(0, 512);
  if (!sb || ascii(sb.subarray(0, 4)) !== 'XFSB') return null;
  const v = view(sb);
  const blockSize = v.getUint32(4, false);
  const dblocks = Number(v.getBigUint64(8, false));
  const sectorSize = v.getUint16(102, false);
  // Sanity as xfs_repair would see it: power-of-two sizes within XFS's limits.
  if (!isPowerOfTwo(blockSize) || blockSize < 512 || blockSize > 65536) return null;
  if (!isPowerOfTwo(sectorSize) || sectorSize < 512 || sectorSize > 32768 || dblocks === 0) return null;
  const label = cString(sb.subarray(108, 120));
  return {
    type: 'xfs', usage: 'filesystem',
    ...(label ? { label } : {}),
    uuid: uuidString(sb.subarray(32, 48)),
    blockSize: sectorSize,
    size: dblocks * blockSize,
  };
};
