/**
 * ext2/3/4: the superblock at byte 1024 (magic 0xEF53). Which name it gets follows from its
 * feature flags, the way libblkid decides: a journal makes ext3, features beyond what
 * ext3 knows make ext4, a separate journal device is "jbd".
 */
import { type Prober, view, cString, uuidString, isZero } from './model.js';

const SB = 1024;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_64BIT = 0x80;
const RO_COMPAT_EXT2_SUPP = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
const INCOMPAT_EXT2_SUPP = INCOMPAT_FILETYPE | INCOMPAT_META_BG;
const INCOMPAT_EXT3_SUPP = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
const FLAGS_TEST_FILESYS = 0x4;

export const probeExt: Prober = (ctx) => {
  const sb = ctx.at(SB, 1024);
  if (!sb) return null;
  const v = view(sb);
  if (v.getUint16(0x38, true) !== 0xef53) return null;
  const logBlock = v.getUint32(0x18, true);
  if (logBlock > 6) return null; // blocks of 1 KiB .. 64 KiB
  const blockSize = 1024 << logBlock;
  const compat = v.getUint32(0x5c, true);
  const incompat = v.getUint32(0x60, true);
  const roCompat = v.getUint32(0x64, true);
  const hasJournal = (compat & COMPAT_HAS_JOURNAL) !== 0;
  let type: string;
  let secType: string | undefined;
  if (incompat & INCOMPAT_JOURNAL_DEV) type = 'jbd';
  else if (!hasJournal && (incompat & ~INCOMPAT_EXT2_SUPP) === 0 && (roCompat & ~RO_COMPAT_EXT2_SUPP) === 0) type = 'ext2';
  else if (hasJournal && (incompat & ~INCOMPAT_EXT3_SUPP) === 0 && (roCompat & ~RO_COMPAT_EXT2_SUPP) === 0) { type = 'ext3'; secType = 'ext2'; }
  else type = v.getUint32(0x160, true) & FLAGS_TEST_FILESYS ? 'ext4dev' : 'ext4';
  let blocks = v.getUint32(0x04, true);
  if (incompat & INCOMPAT_64BIT) blocks += v.getUint32(0x150, true) * 2 ** 32;
  const uuid = sb.subarray(0x68, 0x78);
  const label = cString(sb.subarray(0x78, 0x88));
  // s_journal_uuid: set when the journal lives on another device (a jbd device's UUID).
  const journalUuid = sb.subarray(0xd0, 0xe0);
  return {
    type, usage: type === 'jbd' ? 'other' : 'filesystem',
    ...(label ? { label } : {}),
    ...(isZero(uuid) ? {} : { uuid: uuidString(uuid) }),
    ...(type === 'jbd' && !isZero(uuid) ? { logUuid: uuidString(uuid) } : {}),
    ...(hasJournal && type !== 'jbd' && !isZero(journalUuid) ? { externalJournal: uuidString(journalUuid) } : {}),
    ...(secType ? { secType } : {}),
    version: `${v.getUint32(0x4c, true)}.${v.getUint16(0x3e, true)}`,
    blockSize,
    size: blocks * blockSize,
  };
};
