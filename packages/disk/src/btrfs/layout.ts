/**
 * btrfs on-disk structures as data (struct.ts tables), little-endian throughout. Source: the
 * Linux kernel's include/uapi/linux/btrfs_tree.h ("btrfs_tree.h") and the btrfs
 * documentation's "On-disk format" page, whose structure names are cited.
 *
 * Everything but the superblock lives in B-trees of fixed-size nodes ("tree blocks"): a
 * header, then (leaves) items with their data packed from the block's end, or (internal
 * nodes) key pointers. Items are addressed by a key (objectid, type, offset), ordered by
 * the three in turn. Tree blocks and chunks are addressed by logical bytes, mapped to the
 * device by the chunk tree (bootstrapped from the superblock's sys_chunk_array).
 */
import { bytes, defineStruct, u16le, u32le, u64le, u8 } from '../struct.js';

/** The primary superblock's byte position (the copies at 64 MiB and 256 GiB are not read). */
export const BTRFS_SUPER_INFO_OFFSET = 0x10000;
export const BTRFS_SUPER_INFO_SIZE = 4096;
export const BTRFS_MAGIC = 0x4d5f53665248425fn; // "_BHRfS_M"
/** Checksums cover a structure from this byte on (the csum field comes first). */
export const BTRFS_CSUM_SIZE = 32;
export const BTRFS_SYSTEM_CHUNK_ARRAY_SIZE = 2048;
/** Tree heights are below 8 (BTRFS_MAX_LEVEL). */
export const BTRFS_MAX_LEVEL = 8;

/** btrfs_super_block. */
export const SUPERBLOCK = defineStruct('btrfs superblock', BTRFS_SUPER_INFO_SIZE, {
  csum: [0x00, bytes(32)],
  fsid: [0x20, bytes(16)],
  bytenr: [0x30, u64le],
  flags: [0x38, u64le],
  magic: [0x40, u64le],
  generation: [0x48, u64le],
  root: [0x50, u64le],
  chunkRoot: [0x58, u64le],
  logRoot: [0x60, u64le],
  totalBytes: [0x70, u64le],
  bytesUsed: [0x78, u64le],
  rootDirObjectid: [0x80, u64le],
  numDevices: [0x88, u64le],
  sectorSize: [0x90, u32le],
  nodeSize: [0x94, u32le],
  stripeSize: [0x9c, u32le],
  sysChunkArraySize: [0xa0, u32le],
  compatRoFlags: [0xb4, u64le],
  incompatFlags: [0xbc, u64le],
  csumType: [0xc4, u16le],
  rootLevel: [0xc6, u8],
  chunkRootLevel: [0xc7, u8],
  logRootLevel: [0xc8, u8],
  /** btrfs_dev_item: this device's id first. */
  devid: [0xc9, u64le],
  label: [0x12b, bytes(256)],
  metadataUuid: [0x23b, bytes(16)],
  sysChunkArray: [0x32b, bytes(BTRFS_SYSTEM_CHUNK_ARRAY_SIZE)],
});

// Superblock csum_type values and their digest sizes (btrfs_tree.h BTRFS_CSUM_TYPE_*).
export const BTRFS_CSUM_TYPE_CRC32 = 0;
export const BTRFS_CSUM_TYPE_XXHASH = 1;
export const BTRFS_CSUM_TYPE_SHA256 = 2;
export const BTRFS_CSUM_TYPE_BLAKE2 = 3;

// incompat_flags (the kernel's fs.h BTRFS_FEATURE_INCOMPAT_*): those a reader of trees, inodes and extents can ignore.
export const INCOMPAT_MIXED_BACKREF = 0x1n;
export const INCOMPAT_DEFAULT_SUBVOL = 0x2n;
export const INCOMPAT_MIXED_GROUPS = 0x4n;
export const INCOMPAT_COMPRESS_LZO = 0x8n;
export const INCOMPAT_COMPRESS_ZSTD = 0x10n;
export const INCOMPAT_BIG_METADATA = 0x20n;
export const INCOMPAT_EXTENDED_IREF = 0x40n;
export const INCOMPAT_RAID56 = 0x80n;
export const INCOMPAT_SKINNY_METADATA = 0x100n;
export const INCOMPAT_NO_HOLES = 0x200n;
export const INCOMPAT_METADATA_UUID = 0x400n;
export const INCOMPAT_RAID1C34 = 0x800n;
export const INCOMPAT_READABLE = INCOMPAT_MIXED_BACKREF | INCOMPAT_DEFAULT_SUBVOL | INCOMPAT_MIXED_GROUPS | INCOMPAT_COMPRESS_LZO
  | INCOMPAT_COMPRESS_ZSTD | INCOMPAT_BIG_METADATA | INCOMPAT_EXTENDED_IREF | INCOMPAT_RAID56 | INCOMPAT_SKINNY_METADATA
  | INCOMPAT_NO_HOLES | INCOMPAT_METADATA_UUID | INCOMPAT_RAID1C34;

/** btrfs_header: the start of every tree block. */
export const HEADER = defineStruct('btrfs tree block header', 101, {
  csum: [0x00, bytes(32)],
  fsid: [0x20, bytes(16)],
  bytenr: [0x30, u64le],
  flags: [0x38, u64le],
  chunkTreeUuid: [0x40, bytes(16)],
  generation: [0x50, u64le],
  owner: [0x58, u64le],
  nritems: [0x60, u32le],
  level: [0x64, u8],
});

/** btrfs_disk_key: 17 bytes. */
export const DISK_KEY_SIZE = 17;
/** btrfs_item (a leaf's item: key, then its data's offset from the end of the header and size). */
export const ITEM = defineStruct('btrfs item', 25, {
  objectid: [0, u64le],
  type: [8, u8],
  offset: [9, u64le],
  dataOffset: [17, u32le],
  dataSize: [21, u32le],
});
/** btrfs_key_ptr (an internal node's pointer: key, child's logical address, generation). */
export const KEY_PTR = defineStruct('btrfs key pointer', 33, {
  objectid: [0, u64le],
  type: [8, u8],
  offset: [9, u64le],
  blockptr: [17, u64le],
  generation: [25, u64le],
});

// Item types (btrfs_tree.h *_KEY).
export const INODE_ITEM_KEY = 1;
export const INODE_REF_KEY = 12;
export const XATTR_ITEM_KEY = 24;
export const DIR_ITEM_KEY = 84;
export const DIR_INDEX_KEY = 96;
export const EXTENT_DATA_KEY = 108;
export const ROOT_ITEM_KEY = 132;
export const ROOT_REF_KEY = 156;
export const ROOT_BACKREF_KEY = 144;
export const CHUNK_ITEM_KEY = 228;

// Object ids (btrfs_tree.h).
export const ROOT_TREE_OBJECTID = 1n;
export const FS_TREE_OBJECTID = 5n;
export const ROOT_TREE_DIR_OBJECTID = 6n;
/** The inode number of the empty directory shown for a subvolume a snapshot does not hold. */
export const EMPTY_SUBVOL_DIR_OBJECTID = 2n;
export const FIRST_FREE_OBJECTID = 256n;
/** Subvolume ids run from 256 to -256 (BTRFS_LAST_FREE_OBJECTID). */
export const LAST_FREE_OBJECTID = 0xffffffffffffff00n;
export const FIRST_CHUNK_TREE_OBJECTID = 256n;

/** btrfs_chunk, without its stripes. */
export const CHUNK = defineStruct('btrfs chunk', 48, {
  length: [0, u64le],
  owner: [8, u64le],
  stripeLen: [16, u64le],
  type: [24, u64le],
  ioAlign: [32, u32le],
  ioWidth: [36, u32le],
  sectorSize: [40, u32le],
  numStripes: [44, u16le],
  subStripes: [46, u16le],
});
/** btrfs_stripe. */
export const STRIPE = defineStruct('btrfs stripe', 32, {
  devid: [0, u64le],
  offset: [8, u64le],
  devUuid: [16, bytes(16)],
});

// Block group profile bits in a chunk's type (btrfs_tree.h BTRFS_BLOCK_GROUP_*): SINGLE is none of them.
export const BLOCK_GROUP_RAID0 = 1n << 3n;
export const BLOCK_GROUP_RAID1 = 1n << 4n;
export const BLOCK_GROUP_DUP = 1n << 5n;
export const BLOCK_GROUP_RAID10 = 1n << 6n;
export const BLOCK_GROUP_RAID5 = 1n << 7n;
export const BLOCK_GROUP_RAID6 = 1n << 8n;
export const BLOCK_GROUP_RAID1C3 = 1n << 9n;
export const BLOCK_GROUP_RAID1C4 = 1n << 10n;
export const BLOCK_GROUP_PROFILES: [bigint, string][] = [
  [BLOCK_GROUP_RAID0, 'RAID0'], [BLOCK_GROUP_RAID1, 'RAID1'], [BLOCK_GROUP_RAID10, 'RAID10'], [BLOCK_GROUP_RAID5, 'RAID5'],
  [BLOCK_GROUP_RAID6, 'RAID6'], [BLOCK_GROUP_RAID1C3, 'RAID1C3'], [BLOCK_GROUP_RAID1C4, 'RAID1C4'],
];

/** btrfs_timespec: seconds (signed 64) and nanoseconds. */
export const TIMESPEC_SIZE = 12;
/** btrfs_inode_item. */
export const INODE_ITEM = defineStruct('btrfs inode item', 160, {
  generation: [0, u64le],
  transid: [8, u64le],
  size: [16, u64le],
  nbytes: [24, u64le],
  blockGroup: [32, u64le],
  nlink: [40, u32le],
  uid: [44, u32le],
  gid: [48, u32le],
  mode: [52, u32le],
  rdev: [56, u64le],
  flags: [64, u64le],
  sequence: [72, u64le],
  atimeSec: [112, u64le],
  atimeNsec: [120, u32le],
  ctimeSec: [124, u64le],
  ctimeNsec: [132, u32le],
  mtimeSec: [136, u64le],
  mtimeNsec: [144, u32le],
  otimeSec: [148, u64le],
  otimeNsec: [156, u32le],
});

/** btrfs_root_item, as far as it is read: an inode item, then the tree's root block and level. */
export const ROOT_ITEM = defineStruct('btrfs root item', 239, {
  generation: [160, u64le],
  rootDirid: [168, u64le],
  bytenr: [176, u64le],
  flags: [208, u64le],
  refs: [216, u32le],
  level: [238, u8],
});

/** btrfs_dir_item (DIR_ITEM, DIR_INDEX and XATTR_ITEM): the location key, then the name (and an xattr's value). */
export const DIR_ITEM = defineStruct('btrfs dir item', 30, {
  locationObjectid: [0, u64le],
  locationType: [8, u8],
  locationOffset: [9, u64le],
  transid: [17, u64le],
  dataLen: [25, u16le],
  nameLen: [27, u16le],
  type: [29, u8],
});

/** btrfs_inode_ref: the index in the parent directory and the name (several may follow each other in one item). */
export const INODE_REF = defineStruct('btrfs inode ref', 10, {
  index: [0, u64le],
  nameLen: [8, u16le],
});

/** btrfs_root_ref (ROOT_REF: parent → subvolume, ROOT_BACKREF: subvolume → parent; the directory of the parent that holds it, and its name). */
export const ROOT_REF = defineStruct('btrfs root ref', 18, {
  dirid: [0, u64le],
  sequence: [8, u64le],
  nameLen: [16, u16le],
});

/** btrfs_file_extent_item: the header every extent has; inline extents carry their data from INLINE_DATA_START. */
export const FILE_EXTENT = defineStruct('btrfs file extent item', 53, {
  generation: [0, u64le],
  ramBytes: [8, u64le],
  compression: [16, u8],
  encryption: [17, u8],
  otherEncoding: [18, u16le],
  type: [20, u8],
  diskBytenr: [21, u64le],
  diskNumBytes: [29, u64le],
  offset: [37, u64le],
  numBytes: [45, u64le],
});
export const FILE_EXTENT_INLINE_DATA_START = 21;
export const FILE_EXTENT_INLINE = 0;
export const FILE_EXTENT_REG = 1;
export const FILE_EXTENT_PREALLOC = 2;
export const COMPRESS_NONE = 0;
export const COMPRESS_ZLIB = 1;
export const COMPRESS_LZO = 2;
export const COMPRESS_ZSTD = 3;

/** Directory entry types (btrfs_tree.h BTRFS_FT_*), the same numbers as ext's. */
export const BTRFS_FT = ['unknown', 'file', 'directory', 'char', 'block', 'fifo', 'socket', 'symlink'] as const;
