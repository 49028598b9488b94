/**
 * The on-disk structures of ext2/ext3/ext4, declared once as field tables (byte offset and
 * size, little-endian), as the kernel's documentation describes them
 * (Documentation/filesystems/ext4/: "Super Block" §4.1, "Block Group Descriptors" §4.4,
 * "Index Nodes" §4.6, "The Contents of inode.i_block" §4.7, "Directory Entries" §4.8,
 * "Extended Attributes" §4.9, "Checksums" §3.5). The reader (reader.ts) decodes through
 * these tables only (struct.ts).
 */
import { defineStruct, u8, u16le, u32le, bytes } from '../struct.js';

/** The superblock: 1024 bytes at byte 1024 of the filesystem (§4.1). */
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const SB = defineStruct('superblock', SUPERBLOCK_SIZE, {
  inodesCount: [0x00, u32le],
  blocksCountLo: [0x04, u32le],
  firstDataBlock: [0x14, u32le],
  logBlockSize: [0x18, u32le],
  blocksPerGroup: [0x20, u32le],
  inodesPerGroup: [0x28, u32le],
  magic: [0x38, u16le],
  state: [0x3a, u16le],
  revLevel: [0x4c, u32le],
  firstIno: [0x54, u32le],
  inodeSize: [0x58, u16le],
  featureCompat: [0x5c, u32le],
  featureIncompat: [0x60, u32le],
  featureRoCompat: [0x64, u32le],
  uuid: [0x68, bytes(16)],
  journalInum: [0xe0, u32le],
  journalDev: [0xe4, u32le],
  descSize: [0xfe, u16le],
  firstMetaBg: [0x104, u32le],
  blocksCountHi: [0x150, u32le],
  logGroupsPerFlex: [0x174, u8],
  checksumType: [0x175, u8],
  checksumSeed: [0x270, u32le],
  checksum: [0x3fc, u32le],
});

export const EXT_MAGIC = 0xef53;
/** s_state: cleanly unmounted (§4.1). */
export const STATE_VALID = 0x1;
export const STATE_ERROR = 0x2;

/** s_feature_compat (§4.1). */
export const COMPAT_HAS_JOURNAL = 0x4;
/** s_feature_incompat (§4.1). */
export const INCOMPAT = {
  compression: 0x1, filetype: 0x2, recover: 0x4, journalDev: 0x8, metaBg: 0x10, extents: 0x40, bit64: 0x80, mmp: 0x100,
  flexBg: 0x200, eaInode: 0x400, dirdata: 0x1000, csumSeed: 0x2000, largedir: 0x4000, inlineData: 0x8000, encrypt: 0x10000, casefold: 0x20000,
} as const;
/** The incompat features this reader understands; any other bit makes the filesystem unreadable, as it makes the kernel refuse to mount. */
export const INCOMPAT_READABLE = INCOMPAT.filetype | INCOMPAT.recover | INCOMPAT.metaBg | INCOMPAT.extents | INCOMPAT.bit64 | INCOMPAT.mmp |
  INCOMPAT.flexBg | INCOMPAT.eaInode | INCOMPAT.csumSeed | INCOMPAT.largedir | INCOMPAT.inlineData | INCOMPAT.encrypt | INCOMPAT.casefold;
/** s_feature_ro_compat (§4.1). */
export const RO_COMPAT = { sparseSuper: 0x1, largeFile: 0x2, hugeFile: 0x8, gdtCsum: 0x10, metadataCsum: 0x400 } as const;

/** A block group descriptor: 32 bytes, or s_desc_size (64) with the 64bit feature (§4.4). */
export const GD_SIZE_32 = 32;
export const GD = defineStruct('group descriptor', 64, {
  inodeTableLo: [0x08, u32le],
  flags: [0x12, u16le],
  checksum: [0x1e, u16le],
  inodeTableHi: [0x28, u32le],
});
/** bg_flags: the inode table is not initialised (reads as zeroes; no inode in it is in use). */
export const BG_INODE_UNINIT = 0x1;

/** The inode (§4.6): 128 bytes, then i_extra_isize bytes of extra fields within s_inode_size. */
export const GOOD_OLD_INODE_SIZE = 128;
export const INODE = defineStruct('inode', 0xa0, {
  mode: [0x00, u16le],
  uidLo: [0x02, u16le],
  sizeLo: [0x04, u32le],
  atime: [0x08, u32le],
  ctime: [0x0c, u32le],
  mtime: [0x10, u32le],
  dtime: [0x14, u32le],
  gidLo: [0x18, u16le],
  linksCount: [0x1a, u16le],
  blocksLo: [0x1c, u32le],
  flags: [0x20, u32le],
  block: [0x28, u32le], // i_block[15]: 60 bytes
  generation: [0x64, u32le],
  fileAclLo: [0x68, u32le],
  sizeHigh: [0x6c, u32le],
  blocksHigh: [0x74, u16le],
  fileAclHigh: [0x76, u16le],
  uidHigh: [0x78, u16le],
  gidHigh: [0x7a, u16le],
  checksumLo: [0x7c, u16le],
  extraIsize: [0x80, u16le],
  checksumHi: [0x82, u16le],
  ctimeExtra: [0x84, u32le],
  mtimeExtra: [0x88, u32le],
  atimeExtra: [0x8c, u32le],
  crtime: [0x90, u32le],
  crtimeExtra: [0x94, u32le],
});
export const I_BLOCK_OFFSET = 0x28;
export const I_BLOCK_SIZE = 60;

/** i_flags (§4.6). */
export const INODE_FLAG = { index: 0x1000, hugeFile: 0x40000, extents: 0x80000, eaInode: 0x200000, inlineData: 0x10000000 } as const;

/** Directory entry file_type (with the filetype feature, §4.8.1). */
export const DIRENT_KIND = ['unknown', 'file', 'directory', 'char', 'block', 'fifo', 'socket', 'symlink'] as const;
/** ext4_dir_entry_2 (§4.8.1); without the filetype feature, name_len is 16 bits and there is no file_type. */
export const DIRENT = defineStruct('directory entry', 8, {
  inode: [0x0, u32le],
  recLen: [0x4, u16le],
  nameLen: [0x6, u8],
  fileType: [0x7, u8],
});
/** ext4_dir_entry, without the filetype feature: a 16-bit name length. */
export const DIRENT_NO_FILETYPE = defineStruct('directory entry (no filetype)', 8, {
  inode: [0x0, u32le],
  recLen: [0x4, u16le],
  nameLen: [0x6, u16le],
});
export const DIRENT_HEADER = 8;
/** The checksum tail of a leaf block with metadata_csum: a fake entry of 12 bytes, file_type 0xDE (§4.8.3). */
export const DIRENT_TAIL_SIZE = 12;
export const DIRENT_TAIL_FILETYPE = 0xde;
/** An inline directory's i_block starts with the parent's inode number (§4.8.2 "Inline Directories"). */
export const INLINE_DIR_PARENT_SIZE = 4;

/** Extent tree (§4.7.1/§4.7.2): a 12-byte header, then 12-byte index or leaf entries; blocks end in a 4-byte checksum tail. */
export const EXTENT_MAGIC = 0xf30a;
export const EXTENT_HEADER = defineStruct('extent header', 12, { magic: [0x0, u16le], entries: [0x2, u16le], max: [0x4, u16le], depth: [0x6, u16le] });
export const EXTENT_ENTRY_SIZE = 12;
export const EXTENT_LEAF = defineStruct('extent', 12, { block: [0x0, u32le], len: [0x4, u16le], startHi: [0x6, u16le], startLo: [0x8, u32le] });
export const EXTENT_INDEX = defineStruct('extent index', 12, { block: [0x0, u32le], leafLo: [0x4, u32le], leafHi: [0x8, u16le] });
/** ee_len above this marks an uninitialized (unwritten) extent of ee_len - 32768 blocks, read as zeroes (§4.7.2). */
export const EXTENT_INIT_MAX_LEN = 32768;
/** The kernel's EXT4_MAX_EXTENT_DEPTH. */
export const EXTENT_MAX_DEPTH = 5;

/** Indirect block maps (§4.7.3): 12 direct pointers, then single, double and triple indirect. */
export const DIRECT_BLOCKS = 12;

/** In-inode extended attributes after the extra fields (§4.9.2): a magic, then entries; values are relative to the first entry. */
export const XATTR_MAGIC = 0xea020000;
export const XATTR_ENTRY = defineStruct('xattr entry', 16, { nameLen: [0x0, u8], nameIndex: [0x1, u8], valueOffs: [0x2, u16le], valueInum: [0x4, u32le], valueSize: [0x8, u32le] });
export const XATTR_ENTRY_SIZE = 16;
/** Attribute name index 7: "system." — system.data holds inline data past i_block (§4.9.3, §4.6.1). */
export const XATTR_INDEX_SYSTEM = 7;
