/**
 * A read-only filesystem over a BlockDevice: what `img ls/cat/copy-out`, `inspect` and `lint`
 * read through, without root, kernel mounts or a temporary raw copy. Each filesystem lives in
 * its own folder (`ext/`, `xfs/`, `fat/`, `iso9660/`), as the formats do, and is found by the
 * registry in `filesystems.ts` from what `fsid` identifies.
 *
 * The shape follows POSIX (lstat, readdir, pread, readlink): the names and stat fields are
 * the ones `ls -l`, `find -ls` and virt-ls print. Hostile metadata (directory or extent loops,
 * huge counts, blocks outside the device) is a DiskError (ECORRUPT, ELIMIT, ELOOP), never a
 * hang or unbounded memory: readdir streams, and every walk is bounded.
 */
import type { BlockDevice } from './blockdev.js';

export type FileKind = 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface FileStat {
  /** The inode number, or the filesystem's stable equivalent (FAT and iso9660: the directory entry's byte position). */
  ino: bigint;
  kind: FileKind;
  /** st_mode's permission and set-id bits (mode & 0o7777); the file type is `kind`. */
  perm: number;
  uid: number;
  gid: number;
  /** Bytes (a symlink: the target's length). */
  size: number;
  nlink: number;
  /** Seconds since the epoch, with the fractions the filesystem stores. */
  atime: number;
  mtime: number;
  ctime: number;
  birthtime?: number;
  /** Device numbers of character and block special files. */
  rdev?: { major: number; minor: number };
  /** st_blocks: 512-byte units allocated, where the filesystem records it. */
  blocks?: number;
}

export interface DirEntry {
  name: string;
  ino: bigint;
  /** From the directory entry where the filesystem records it; 'unknown' otherwise (read the inode to know). */
  kind: FileKind | 'unknown';
}

/** A file, directory or other node, as one reader opened it; `handle` is the reader's own. */
export interface FsNode {
  readonly stat: FileStat;
}

export interface Filesystem {
  /** blkid's TYPE: ext2, ext3, ext4, xfs, vfat, iso9660, ... */
  readonly type: string;
  readonly device: BlockDevice;
  root(): Promise<FsNode>;
  /** The entries of a directory, without '.' and '..', in on-disk order. */
  readdir(dir: FsNode): AsyncIterable<DirEntry>;
  /** One entry of a directory by name (as stored: case rules are the filesystem's), or null. */
  lookup(dir: FsNode, name: string): Promise<FsNode | null>;
  /**
   * The node a readdir entry of `dir` names. Optional: readers that can go straight to the
   * inode implement it (a walk of a large directory then costs one read per entry instead of
   * a lookup per entry); without it callers use lookup.
   */
  open?(dir: FsNode, entry: DirEntry): Promise<FsNode>;
  /** Up to buf.length bytes of a regular file from `offset`; the count read (short at the end). Holes read as zeroes. */
  read(file: FsNode, buf: Uint8Array, offset: number): Promise<number>;
  /** A symlink's target. */
  readlink(link: FsNode): Promise<string>;
  /**
   * The same filesystem seen from each of its other subvolumes (btrfs), where an operating
   * system may be installed as libguestfs inspection looks for one (Fedora's root in subvolume
   * "root"). Optional: filesystems without subvolumes have none.
   */
  subvolumeViews?(): Promise<Filesystem[]>;
  /** Anything the filesystem found while opening that a user should know (a journal needing recovery, ...). */
  readonly warnings: string[];
}
