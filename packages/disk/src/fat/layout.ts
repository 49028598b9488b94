/**
 * FAT12/16/32 on-disk structures as data (struct.ts tables). Source: Microsoft's "FAT: General
 * Overview of On-Disk Format" 1.03 (the FAT specification, "§" below): the BIOS parameter block
 * (§3.1-§3.3; parsed for identification in fsid/fat.ts), 32-byte directory entries (§6),
 * long-name entries (§7), FAT entry values (§4). The NT case bits are what Windows NT and
 * Linux's vfat use to show an 8.3 name in lower case without a long name.
 */
import { bytes, defineStruct, u16le, u32le, u8 } from '../struct.js';

/** §6: a directory entry. */
export const DIR_ENTRY = defineStruct('FAT directory entry', 32, {
  name: [0, bytes(11)],
  attr: [11, u8],
  ntRes: [12, u8],
  createTimeTenth: [13, u8],
  createTime: [14, u16le],
  createDate: [16, u16le],
  accessDate: [18, u16le],
  firstClusterHigh: [20, u16le],
  writeTime: [22, u16le],
  writeDate: [24, u16le],
  firstClusterLow: [26, u16le],
  fileSize: [28, u32le],
});

/** §7: a long-name entry; 13 UCS-2 characters in three pieces. */
export const LFN_ENTRY = defineStruct('FAT long-name entry', 32, {
  ord: [0, u8],
  name1: [1, bytes(10)],
  attr: [11, u8],
  type: [12, u8],
  checksum: [13, u8],
  name2: [14, bytes(12)],
  firstClusterLow: [26, u16le],
  name3: [28, bytes(4)],
});
export const LFN_CHARS = 13;
/** §7: the ord of the last (first stored) entry of a long name has this bit; at most 20 entries (255 characters). */
export const LAST_LONG_ENTRY = 0x40;
export const MAX_LFN_ENTRIES = 20;

/** §6 DIR_Attr. */
export const ATTR_READ_ONLY = 0x01;
export const ATTR_HIDDEN = 0x02;
export const ATTR_SYSTEM = 0x04;
export const ATTR_VOLUME_ID = 0x08;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_ARCHIVE = 0x20;
export const ATTR_LONG_NAME = 0x0f;

/** §6.1 DIR_Name[0]: the entry is free, and every entry after it too; the entry is free; a name starting with 0xE5 (KANJI). */
export const ENTRY_END = 0x00;
export const ENTRY_FREE = 0xe5;
export const ENTRY_KANJI_E5 = 0x05;

/** DIR_NTRes bits (Windows NT, Linux vfat's CASE_LOWER_BASE/EXT): base name, extension shown in lower case. */
export const NT_LOWER_BASE = 0x08;
export const NT_LOWER_EXT = 0x10;

/** §4: FAT entry values at or above these end a cluster chain; one below marks a bad cluster. */
export const EOC = { 12: 0xff8, 16: 0xfff8, 32: 0x0ffffff8 } as const;
export const BAD_CLUSTER = { 12: 0xff7, 16: 0xfff7, 32: 0x0ffffff7 } as const;
/** §4: FAT32 entries are 28 bits; the high 4 are reserved. */
export const FAT32_MASK = 0x0fffffff;
/** §3.5: data clusters are numbered from 2. */
export const FIRST_CLUSTER = 2;
/** §6: a directory holds at most 65536 entries (2 MiB); Linux's FAT_MAX_DIR_ENTRIES. */
export const MAX_DIR_ENTRIES = 65536;

/** §7.2: the checksum of an 11-byte short name that its long-name entries carry. */
export function shortNameChecksum(name: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) + (sum >> 1) + name[i]!) & 0xff;
  return sum;
}

/**
 * §6.4 dates (years from 1980, month, day) and times (hours, minutes, 2-second units) as
 * seconds since the epoch, read as UTC (Linux's default tz); a month or day of 0 counts as 1,
 * as Linux's fat_time_fat2unix has it.
 */
export function fatTime(date: number, time: number, hundredths = 0): number {
  const year = 1980 + (date >> 9);
  const month = Math.max(1, (date >> 5) & 0xf);
  const day = Math.max(1, date & 0x1f);
  return Date.UTC(year, month - 1, day, time >> 11, (time >> 5) & 0x3f, (time & 0x1f) * 2) / 1000 + hundredths / 100;
}
