/** btrfs (single device), read-only: the on-disk layout, the reader and btrfs's LZO framing. */
export * from './layout.js';
export { Btrfs, openBtrfs, compareKeys, xxhash64, MAX_EXTENTS as BTRFS_MAX_EXTENTS, type BtrfsNode, type Key as BtrfsKey, type Subvolume } from './reader.js';
export { lzo1xDecompress, btrfsLzoDecompress } from './lzo.js';
