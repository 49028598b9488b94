/**
 * POSIX st_mode file types (the values in ext and XFS inodes and in Rock Ridge PX entries) and
 * the FileKind each is, for the filesystem readers.
 */
import type { FileKind } from './filesystem.js';

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

const KINDS = new Map<number, FileKind>([
  [S_IFSOCK, 'socket'], [S_IFLNK, 'symlink'], [S_IFREG, 'file'], [S_IFBLK, 'block'],
  [S_IFDIR, 'directory'], [S_IFCHR, 'char'], [S_IFIFO, 'fifo'],
]);

/** The kind a mode's type bits name, or undefined for a type POSIX does not have. */
export const kindOfMode = (mode: number): FileKind | undefined => KINDS.get(mode & S_IFMT);

/** Linux's new_decode_dev: a 32-bit dev_t as the kernel encodes it (12-bit major, 20-bit minor, minor's low byte first). */
export function decodeDev(dev: number): { major: number; minor: number } {
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}
