/**
 * The on-disk structures of ext2/ext3/ext4, declared once as field tables (byte offset and
 * size, little-endian), as the kernel's documentation describes them
 * (Documentation/filesystems/ext4/: "Super Block" §4.1, "Block Group Descriptors" §4.4,
 * "Index Nodes" §4.6, "The Contents of inode.i_block" §4.7, "Directory Entries" §4.8,
 * "Extended Attributes" §4.9, "Checksums" §3.5). The reader (reader.ts) decodes through
 * these tables only.
 */
import { DiskError } from '../errors.js';

/** A field: [byte offset, size in bytes (1, 2, 4), or 16 for a byte array]. */
export type Field = readonly [offset: number, size: 1 | 2 | 4 | 16];
export type FieldTable = Readonly<Record<string, Field>>;

/** Read an unsigned little-endian integer field (1, 2 or 4 bytes). */
export function u(b: Uint8Array, field: Field, base = 0): number {
  const at = base + field[0];
  switch (field[1]) {
    case 1: return b[at]!;
    case 2: return b[at]! | (b[at + 1]! << 8);
    case 4: return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
    default: throw new DiskError('EINVAL', `field of ${field[1]} bytes is not an integer`);
  }
}

/** Check that every field of a table lies inside a structure of `size` bytes. */
function sized<T extends FieldTable>(name: string, size: number, table: T): T {
  for (const [key, [offset, width]] of Object.entries(table)) {
    if (offset + width > size) throw new Error(`${name}.${key} at ${offset}+${width} lies outside its ${size} bytes`);
  }
  return table;
}

/** The superblock: 1024 bytes at byte 1024 of the filesystem (§4.1). */
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const SB = sized('superblock', SUPERBLOCK_SIZE, {
  inodesCount: [0x00, 4],
  blocksCountLo: [0x04, 4],
  firstDataBlock: [0x14, 4],
  logBlockSize: [0x18, 4],
  blocksPerGroup: [0x20, 4],
  inodesPerGroup: [0x28, 4],
  magic: [0x38, 2],
  state: [0x3a, 2],
  revLevel: [0x4c, 4],
  firstIno: [0x54, 4],
  inodeSize: [0x58, 2],
  featureCompat: [0x5c, 4],
  featureIncompat: [0x60, 4],
  featureRoCompat: [0x64, 4],
  uuid: [0x68, 16],
  descSize: [0xfe, 2],
  firstMetaBg: [0x104, 4],
  blocksCountHi: [0x150, 4],
  logGroupsPerFlex: [0x174, 1],
  checksumType: [0x175, 1],
  checksumSeed: [0x270, 4],
  checksum: [0x3fc, 4],
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
export const GD = sized('group descriptor', 64, {
  inodeTableLo: [0x08, 4],
  flags: [0x12, 2],
  checksum: [0x1e, 2],
  inodeTableHi: [0x28, 4],
});
/** bg_flags: the inode table is not initialised (reads as zeroes; no inode in it is in use). */
export const BG_INODE_UNINIT = 0x1;

/** The inode (§4.6): 128 bytes, then i_extra_isize bytes of extra fields within s_inode_size. */
export const GOOD_OLD_INODE_SIZE = 128;
export const INODE = sized('inode', 0xa0, {
  mode: [0x00, 2],
  uidLo: [0x02, 2],
  sizeLo: [0x04, 4],
  atime: [0x08, 4],
  ctime: [0x0c, 4],
  mtime: [0x10, 4],
  dtime: [0x14, 4],
  gidLo: [0x18, 2],
  linksCount: [0x1a, 2],
  blocksLo: [0x1c, 4],
  flags: [0x20, 4],
  block: [0x28, 4], // i_block[15]: 60 bytes
  generation: [0x64, 4],
  fileAclLo: [0x68, 4],
  sizeHigh: [0x6c, 4],
  blocksHigh: [0x74, 2],
  fileAclHigh: [0x76, 2],
  uidHigh: [0x78, 2],
  gidHigh: [0x7a, 2],
  checksumLo: [0x7c, 2],
  extraIsize: [0x80, 2],
  checksumHi: [0x82, 2],
  ctimeExtra: [0x84, 4],
  mtimeExtra: [0x88, 4],
  atimeExtra: [0x8c, 4],
  crtime: [0x90, 4],
  crtimeExtra: [0x94, 4],
});
export const I_BLOCK_OFFSET = 0x28;
export const I_BLOCK_SIZE = 60;

/** i_flags (§4.6). */
export const INODE_FLAG = { index: 0x1000, hugeFile: 0x40000, extents: 0x80000, eaInode: 0x200000, inlineData: 0x10000000 } as const;

/** i_mode's file type bits (§4.6). */
export const S_IFMT = 0xf000;
export const MODE_KIND = new Map<number, 'fifo' | 'char' | 'directory' | 'block' | 'file' | 'symlink' | 'socket'>([
  [0x1000, 'fifo'], [0x2000, 'char'], [0x4000, 'directory'], [0x6000, 'block'], [0x8000, 'file'], [0xa000, 'symlink'], [0xc000, 'socket'],
]);

/** Directory entry file_type (with the filetype feature, §4.8.1). */
export const DIRENT_KIND = ['unknown', 'file', 'directory', 'char', 'block', 'fifo', 'socket', 'symlink'] as const;
/** ext4_dir_entry_2 (§4.8.1); without the filetype feature, name_len is 16 bits and there is no file_type. */
export const DIRENT = sized('directory entry', 8, {
  inode: [0x0, 4],
  recLen: [0x4, 2],
  nameLen: [0x6, 1],
  nameLen16: [0x6, 2],
  fileType: [0x7, 1],
});
export const DIRENT_HEADER = 8;
/** The checksum tail of a leaf block with metadata_csum: a fake entry of 12 bytes, file_type 0xDE (§4.8.3). */
export const DIRENT_TAIL_SIZE = 12;
export const DIRENT_TAIL_FILETYPE = 0xde;
/** An inline directory's i_block starts with the parent's inode number (§4.8.2 "Inline Directories"). */
export const INLINE_DIR_PARENT_SIZE = 4;

/** Extent tree (§4.7.1/§4.7.2): a 12-byte header, then 12-byte index or leaf entries; blocks end in a 4-byte checksum tail. */
export const EXTENT_MAGIC = 0xf30a;
export const EXTENT_HEADER = sized('extent header', 12, { magic: [0x0, 2], entries: [0x2, 2], max: [0x4, 2], depth: [0x6, 2] });
export const EXTENT_ENTRY_SIZE = 12;
export const EXTENT_LEAF = sized('extent', 12, { block: [0x0, 4], len: [0x4, 2], startHi: [0x6, 2], startLo: [0x8, 4] });
export const EXTENT_INDEX = sized('extent index', 12, { block: [0x0, 4], leafLo: [0x4, 4], leafHi: [0x8, 2] });
/** ee_len above this marks an uninitialized (unwritten) extent of ee_len - 32768 blocks, read as zeroes (§4.7.2). */
export const EXTENT_INIT_MAX_LEN = 32768;
/** The kernel's EXT4_MAX_EXTENT_DEPTH. */
export const EXTENT_MAX_DEPTH = 5;

/** Indirect block maps (§4.7.3): 12 direct pointers, then single, double and triple indirect. */
export const DIRECT_BLOCKS = 12;

/** In-inode extended attributes after the extra fields (§4.9.2): a magic, then entries; values are relative to the first entry. */
export const XATTR_MAGIC = 0xea020000;
export const XATTR_ENTRY = sized('xattr entry', 16, { nameLen: [0x0, 1], nameIndex: [0x1, 1], valueOffs: [0x2, 2], valueInum: [0x4, 4], valueSize: [0x8, 4] });
export const XATTR_ENTRY_SIZE = 16;
/** Attribute name index 7: "system." — system.data holds inline data past i_block (§4.9.3, §4.6.1). */
export const XATTR_INDEX_SYSTEM = 7;
