/**
 * An operating system's files, read the way inspection and lint read them: whole small files,
 * directory listings, kinds, with missing files as null and other failures collected as
 * problems. Over the root filesystem with its fstab mounts joined (inside/mounts.ts), so
 * paths and symlinks cross into a separate /boot or /var as they do on a running system.
 */
import { isDiskError } from '../errors.js';
import type { FileKind, Filesystem } from '../filesystem.js';
import { resolvePath } from '../filesystems.js';

/** The most bytes read from one file (a dpkg status of a large install is a few MiB). */
export const MAX_FILE_BYTES = 64 << 20;
/** The most entries listed from one directory. */
const MAX_DIR_ENTRIES = 65536;

export class OsTree {
  /** Files that could not be read for another reason than not existing (corrupt metadata, too large). */
  readonly problems: string[] = [];

  /** `fs`: the system's root, with its other filesystems mounted (inside/mounts.ts). */
  constructor(private readonly fs: Filesystem) {}

  /** A regular file's bytes, or null when it does not exist (or is not a regular file). */
  async read(path: string, max = MAX_FILE_BYTES): Promise<Buffer | null> {
    const { fs } = this;
    try {
      const node = await resolvePath(fs, path, { follow: true });
      if (node.stat.kind !== 'file') return null;
      if (node.stat.size > max) { this.problems.push(`${path}: larger than ${max} bytes, not read`); return null; }
      const buf = Buffer.alloc(node.stat.size);
      let at = 0;
      while (at < buf.length) {
        const n = await fs.read(node, buf.subarray(at), at);
        if (n <= 0) break;
        at += n;
      }
      return buf.subarray(0, at);
    } catch (e) {
      return this.missing(path, e);
    }
  }

  /** A text file (UTF-8), or null. */
  async text(path: string, max?: number): Promise<string | null> {
    const b = await this.read(path, max);
    return b === null ? null : b.toString('utf8');
  }

  /** The first `n` bytes of a regular file, or null. */
  async head(path: string, n: number): Promise<Buffer | null> {
    const f = await this.open(path);
    return f === null ? null : Buffer.from(await f.read(0, n));
  }

  /** A regular file for reads anywhere in it (a database too large to read whole), or null. */
  async open(path: string): Promise<{ size: number; read: (offset: number, length: number) => Promise<Uint8Array> } | null> {
    const { fs } = this;
    try {
      const node = await resolvePath(fs, path, { follow: true });
      if (node.stat.kind !== 'file') return null;
      const size = node.stat.size;
      return {
        size,
        read: async (offset, length) => {
          const buf = Buffer.alloc(Math.max(0, Math.min(length, size - offset)));
          const got = buf.length > 0 ? await fs.read(node, buf, offset) : 0;
          return buf.subarray(0, got);
        },
      };
    } catch (e) {
      return this.missing(path, e);
    }
  }

  /** The names in a directory (sorted), or null when it does not exist. */
  async list(path: string): Promise<string[] | null> {
    const { fs } = this;
    try {
      const node = await resolvePath(fs, path, { follow: true });
      if (node.stat.kind !== 'directory') return null;
      const names: string[] = [];
      for await (const e of fs.readdir(node)) {
        if (names.length >= MAX_DIR_ENTRIES) { this.problems.push(`${path}: more than ${MAX_DIR_ENTRIES} entries, the rest not listed`); break; }
        names.push(e.name);
      }
      return names.sort();
    } catch (e) {
      return this.missing(path, e);
    }
  }

  /** What a path is, without following a last symlink (lstat's file type), or null when it does not exist. */
  async kind(path: string): Promise<FileKind | null> {
    const { fs } = this;
    try {
      return (await resolvePath(fs, path)).stat.kind;
    } catch (e) {
      return this.missing(path, e);
    }
  }

  /** Whether a path exists (any kind). */
  async exists(path: string): Promise<boolean> {
    const { fs } = this;
    try {
      await resolvePath(fs, path);
      return true;
    } catch (e) {
      this.missing(path, e);
      return false;
    }
  }

  private missing(path: string, e: unknown): null {
    if (!isDiskError(e)) throw e;
    if (e.code !== 'ENOENT' && e.code !== 'EINVAL') this.problems.push(`${path}: ${e.message}`);
    return null;
  }
}
