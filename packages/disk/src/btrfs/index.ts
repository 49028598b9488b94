/** btrfs (single device), read-only: the on-disk layout, the reader, btrfs's LZO framing and checksums. */
export * from './layout.js';
export { Btrfs, openBtrfs, compareKeys, MAX_EXTENTS as BTRFS_MAX_EXTENTS, type BtrfsNode, type Key as BtrfsKey, type Subvolume } from './reader.js';
export { lzo1xDecompress, btrfsLzoDecompress } from './lzo.js';
export { blake2b, xxhash64 } from './checksum.js';
