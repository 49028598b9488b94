/**
 * XFS on-disk structures as data (struct.ts tables), big-endian throughout. Source: the Linux
 * kernel's fs/xfs/libxfs/xfs_format.h ("format.h"), xfs_da_format.h ("da_format.h") and
 * xfs_log_format.h, and the "XFS Algorithms & Data Structures" book (3rd edition), whose
 * chapter names are cited. v4 filesystems have no self-describing headers; v5 (CRC)
 * filesystems add magic numbers, owners, UUIDs and a CRC-32C to every metadata block.
 *
 * CRCs: CRC-32C over the whole structure with its CRC field taken as zero, stored
 * little-endian (xfs_cksum.h); the offsets are the *_CRC_OFF constants below.
 */
import { bytes, defineStruct, u16be, u32be, u32le, u64be, u8 } from '../struct.js';

// ---------------------------------------------------------------------------------------------
// Superblock (format.h struct xfs_dsb; "Superblocks")

export const XFS_SB_MAGIC = 0x58465342; // "XFSB"
export const SUPERBLOCK = defineStruct('XFS superblock', 264, {
  magic: [0, u32be],
  blockSize: [4, u32be],
  dataBlocks: [8, u64be],
  rtBlocks: [16, u64be],
  rtExtents: [24, u64be],
  uuid: [32, bytes(16)],
  logStart: [48, u64be],
  rootIno: [56, u64be],
  rbmIno: [64, u64be],
  rsumIno: [72, u64be],
  rtExtSize: [80, u32be],
  agBlocks: [84, u32be],
  agCount: [88, u32be],
  rbmBlocks: [92, u32be],
  logBlocks: [96, u32be],
  versionNum: [100, u16be],
  sectSize: [102, u16be],
  inodeSize: [104, u16be],
  inodesPerBlock: [106, u16be],
  fname: [108, bytes(12)],
  blockLog: [120, u8],
  sectLog: [121, u8],
  inodeLog: [122, u8],
  inopbLog: [123, u8],
  agBlkLog: [124, u8],
  rextsLog: [125, u8],
  inProgress: [126, u8],
  imaxPct: [127, u8],
  icount: [128, u64be],
  ifree: [136, u64be],
  fdblocks: [144, u64be],
  frextents: [152, u64be],
  uquotIno: [160, u64be],
  gquotIno: [168, u64be],
  qflags: [176, u16be],
  flags: [178, u8],
  sharedVn: [179, u8],
  inoAlignment: [180, u32be],
  unit: [184, u32be],
  width: [188, u32be],
  dirBlkLog: [192, u8],
  logSectLog: [193, u8],
  logSectSize: [194, u16be],
  logSUnit: [196, u32be],
  features2: [200, u32be],
  badFeatures2: [204, u32be],
  featuresCompat: [208, u32be],
  featuresRoCompat: [212, u32be],
  featuresIncompat: [216, u32be],
  featuresLogIncompat: [220, u32be],
  crc: [224, u32le],
  sparseInodeAlign: [228, u32be],
  pquotIno: [232, u64be],
  lsn: [240, u64be],
  metaUuid: [248, bytes(16)],
});
export const SB_CRC_OFF = 224;

/** sb_versionnum: the low nibble is the version; v5 has CRCs and self-describing metadata. */
export const XFS_SB_VERSION_NUMBITS = 0x000f;
export const XFS_SB_VERSION_4 = 4;
export const XFS_SB_VERSION_5 = 5;
export const XFS_SB_VERSION_DIRV2BIT = 0x2000;
export const XFS_SB_VERSION_MOREBITSBIT = 0x8000;
/** sb_features2 (v4): directory entries carry the file type. */
export const XFS_SB_VERSION2_FTYPE = 0x0200;
/** sb_features_incompat (v5). */
export const XFS_SB_FEAT_INCOMPAT_FTYPE = 1 << 0;
export const XFS_SB_FEAT_INCOMPAT_SPINODES = 1 << 1;
export const XFS_SB_FEAT_INCOMPAT_META_UUID = 1 << 2;
export const XFS_SB_FEAT_INCOMPAT_BIGTIME = 1 << 3;
export const XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR = 1 << 4;
export const XFS_SB_FEAT_INCOMPAT_NREXT64 = 1 << 5;
/** Incompatible features this reader understands (the rest change the layout: refused). */
export const XFS_SB_FEAT_INCOMPAT_KNOWN = XFS_SB_FEAT_INCOMPAT_FTYPE | XFS_SB_FEAT_INCOMPAT_SPINODES | XFS_SB_FEAT_INCOMPAT_META_UUID
  | XFS_SB_FEAT_INCOMPAT_BIGTIME | XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR | XFS_SB_FEAT_INCOMPAT_NREXT64;

// ---------------------------------------------------------------------------------------------
// Allocation group headers (format.h struct xfs_agf, xfs_agi; "AG Free Space Block", "AG Inode Management"):
// the AGF in the AG's second sector, the AGI in its third. Only the fields the reader checks.

export const XFS_AGF_MAGIC = 0x58414746; // "XAGF"
export const XFS_AGI_MAGIC = 0x58414749; // "XAGI"
export const AGF = defineStruct('XFS AGF', 224, {
  magic: [0, u32be], version: [4, u32be], seqno: [8, u32be], length: [12, u32be],
  uuid: [64, bytes(16)], crc: [216, u32le],
});
export const AGF_CRC_OFF = 216;
export const AGI = defineStruct('XFS AGI', 344, {
  magic: [0, u32be], version: [4, u32be], seqno: [8, u32be], length: [12, u32be],
  count: [16, u32be], root: [20, u32be], level: [24, u32be],
  uuid: [296, bytes(16)], crc: [312, u32le],
});
export const AGI_CRC_OFF = 312;

// ---------------------------------------------------------------------------------------------
// Inodes (format.h struct xfs_dinode; "On-disk Inode")

export const XFS_DINODE_MAGIC = 0x494e; // "IN"
/** The inode core: 100 bytes in versions 1 and 2, 176 in version 3 (v5 filesystems). */
export const INODE_CORE = defineStruct('XFS inode core', 176, {
  magic: [0, u16be],
  mode: [2, u16be],
  version: [4, u8],
  format: [5, u8],
  onlink: [6, u16be],
  uid: [8, u32be],
  gid: [12, u32be],
  nlink: [16, u32be],
  projidLo: [20, u16be],
  projidHi: [22, u16be],
  /** NREXT64: the data fork's extent count (64-bit); otherwise padding and di_flushiter. */
  bigNextents: [24, u64be],
  atime: [32, u64be],
  mtime: [40, u64be],
  ctime: [48, u64be],
  size: [56, u64be],
  nblocks: [64, u64be],
  extsize: [72, u32be],
  /** The data fork's extent count (without NREXT64; with it, the attribute fork's). */
  nextents: [76, u32be],
  anextents: [80, u16be],
  forkOff: [82, u8],
  aformat: [83, u8],
  dmevmask: [84, u32be],
  dmstate: [88, u16be],
  flags: [90, u16be],
  gen: [92, u32be],
  nextUnlinked: [96, u32be],
  // Version 3 only:
  crc: [100, u32le],
  changeCount: [104, u64be],
  lsn: [112, u64be],
  flags2: [120, u64be],
  cowExtSize: [128, u32be],
  pad2: [132, bytes(12)],
  crtime: [144, u64be],
  ino: [152, u64be],
  uuid: [160, bytes(16)],
});
export const INODE_CORE_V2_SIZE = 100;
export const INODE_CORE_V3_SIZE = 176;
export const INODE_CRC_OFF = 100;

/** di_format: what the data fork holds. */
export const XFS_DINODE_FMT_DEV = 0;
export const XFS_DINODE_FMT_LOCAL = 1;
export const XFS_DINODE_FMT_EXTENTS = 2;
export const XFS_DINODE_FMT_BTREE = 3;
/** di_flags2: timestamps are 64-bit nanosecond counters from the 1901 epoch. */
export const XFS_DIFLAG2_BIGTIME = 1n << 3n;
/** di_flags2: the inode counts extents in 64 bits (NREXT64). */
export const XFS_DIFLAG2_NREXT64 = 1n << 4n;
/** Bigtime counters start at the smallest 32-bit time (format.h XFS_BIGTIME_EPOCH_OFFSET). */
export const XFS_BIGTIME_EPOCH_OFFSET = 2 ** 31;
/** xfs_dev_t: 14-bit major, 18-bit minor (format.h XFS_DEV_BITSMINOR). */
export const XFS_DEV_BITSMINOR = 18;

// ---------------------------------------------------------------------------------------------
// Extents and the BMBT (format.h xfs_bmbt_rec, xfs_bmdr_block, xfs_btree_block; "Data Extents", "B+tree Extent List")

/** One extent record: 128 bits packed as flag:1, startoff:54, startblock:52, blockcount:21. */
export const BMBT_REC_SIZE = 16;
export interface XfsExtent { offset: number; block: number; count: number; unwritten: boolean }

export function decodeExtent(b: Uint8Array, at: number): XfsExtent {
  const l0 = u64be.read(b, at);
  const l1 = u64be.read(b, at + 8);
  return {
    unwritten: l0 >> 63n === 1n,
    offset: Number((l0 & ((1n << 63n) - 1n)) >> 9n),
    block: Number(((l0 & 0x1ffn) << 43n) | (l1 >> 21n)),
    count: Number(l1 & 0x1fffffn),
  };
}

/** The B-tree root in the inode's fork: level and record count, then keys and pointers (8 bytes each). */
export const BMDR_BLOCK = defineStruct('XFS bmdr root', 4, { level: [0, u16be], numrecs: [2, u16be] });
export const XFS_BMAP_MAGIC = 0x424d4150; // "BMAP"
export const XFS_BMAP_CRC_MAGIC = 0x424d4133; // "BMA3"
/** A long-format B-tree block header (v4: 24 bytes; v5 adds blkno, lsn, uuid, owner, crc: 72). */
export const BTREE_BLOCK_LONG = defineStruct('XFS long btree block', 72, {
  magic: [0, u32be],
  level: [4, u16be],
  numrecs: [6, u16be],
  leftSib: [8, u64be],
  rightSib: [16, u64be],
  blkno: [24, u64be],
  lsn: [32, u64be],
  uuid: [40, bytes(16)],
  owner: [56, u64be],
  crc: [64, u32le],
});
export const BTREE_LONG_V4_SIZE = 24;
export const BTREE_LONG_CRC_OFF = 64;
/** format.h XFS_BM_MAXLEVELS: no BMBT is deeper. */
export const XFS_BM_MAXLEVELS = 9;

// ---------------------------------------------------------------------------------------------
// Directories (da_format.h; "Directories")

/** Short-form directory header: entry count, count of 8-byte inode numbers, parent (4 or 8 bytes). */
export const DIR2_SF_HDR = defineStruct('XFS short-form directory header', 2, { count: [0, u8], i8count: [1, u8] });
/** A short-form entry: name length, offset tag (2 bytes), name, [file type], inode number (4 or 8 bytes). */
export const DIR2_SF_ENTRY = defineStruct('XFS short-form directory entry', 3, { nameLength: [0, u8], offset: [1, u16be] });

export const XFS_DIR2_BLOCK_MAGIC = 0x58443242; // "XD2B": single-block directory
export const XFS_DIR2_DATA_MAGIC = 0x58443244; // "XD2D": data block of a leaf or node directory
export const XFS_DIR3_BLOCK_MAGIC = 0x58444233; // "XDB3"
export const XFS_DIR3_DATA_MAGIC = 0x58444433; // "XDD3"
/** Data block headers: v4 magic + 3 best-free pairs (16 bytes); v5 xfs_dir3_blk_hdr + best-free + pad (64). */
export const DIR2_DATA_HDR_SIZE = 16;
export const DIR3_BLK_HDR = defineStruct('XFS dir3 block header', 48, {
  magic: [0, u32be],
  crc: [4, u32le],
  blkno: [8, u64be],
  lsn: [16, u64be],
  uuid: [24, bytes(16)],
  owner: [40, u64be],
});
export const DIR3_DATA_HDR_SIZE = 64;
export const DIR3_CRC_OFF = 4;
/** A data entry: inode number, name length, name, [file type], 2-byte tag; padded to 8 bytes. An unused entry starts with this tag. */
export const DIR2_DATA_ENTRY = defineStruct('XFS directory data entry', 9, { ino: [0, u64be], nameLength: [8, u8] });
export const DIR2_DATA_UNUSED = defineStruct('XFS directory unused entry', 4, { freetag: [0, u16be], length: [2, u16be] });
export const XFS_DIR2_DATA_FREE_TAG = 0xffff;
/** The tail of a single-block directory: leaf entry count and stale count; the leaf entries (8 bytes each) precede it. */
export const DIR2_BLOCK_TAIL = defineStruct('XFS directory block tail', 8, { count: [0, u32be], stale: [4, u32be] });
export const DIR2_LEAF_ENTRY_SIZE = 8;
/** Data blocks live below this byte offset of a directory's data fork; leaf and free-index blocks above (da_format.h XFS_DIR2_LEAF_OFFSET). */
export const XFS_DIR2_LEAF_OFFSET = 2 ** 35;

/** Directory entry file types (da_format.h XFS_DIR3_FT_*), index = value. */
export const XFS_DIR3_FT = ['unknown', 'file', 'directory', 'char', 'block', 'fifo', 'socket', 'symlink'] as const;

// ---------------------------------------------------------------------------------------------
// Remote symlinks (format.h struct xfs_dsymlink_hdr; "Symbolic Links"): v5 blocks start with a header.

export const XFS_SYMLINK_MAGIC = 0x58534c4d; // "XSLM"
export const DSYMLINK_HDR = defineStruct('XFS symlink header', 56, {
  magic: [0, u32be],
  offset: [4, u32be],
  bytes: [8, u32be],
  crc: [12, u32le],
  uuid: [16, bytes(16)],
  owner: [32, u64be],
  blkno: [40, u64be],
  lsn: [48, u64be],
});
export const SYMLINK_CRC_OFF = 12;
/** format.h XFS_SYMLINK_MAXLEN. */
export const XFS_SYMLINK_MAXLEN = 1024;
