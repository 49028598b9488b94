/**
 * Test helpers for the filesystem readers: a whole tree as one comparable map (path → what
 * `ls -l` shows plus the bytes' digest), read through a reader or from a real directory (the
 * source a mkfs was given, or a read-only loop mount of the image), so a test compares the
 * reader against the real tools field by field.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileKind, FileStat, Filesystem, FsNode } from '../src/filesystem.js';
import { MemorySource, isDiskError, openImage, openSource, type DiskErrorCode, type Image } from '../src/index.js';
import assert from 'node:assert/strict';

export interface TreeEntry extends Pick<FileStat, 'kind' | 'perm' | 'uid' | 'gid' | 'size' | 'nlink'> {
  /** Whole seconds (the finest every filesystem here keeps in common with its source). */
  mtime: number;
  target?: string;
  md5?: string;
  rdev?: string;
}

export type Tree = Map<string, TreeEntry>;

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

export const openRaw = (path: string): Promise<Image> => openImage(path, { format: 'raw' });
/** Bytes in memory as a raw device (hostile variants of an image without writing each to disk). */
export const openBytes = (bytes: Uint8Array, name = 'memory'): Promise<Image> => openSource(new MemorySource(bytes, name, true), { format: 'raw' });

/** Every node below the root, through readdir and lookup; files read whole in uneven pieces. */
export async function readerTree(fs: Filesystem, opts: { chunk?: number } = {}): Promise<Tree> {
  const out: Tree = new Map();
  const walk = async (dir: FsNode, path: string) => {
    const names: string[] = [];
    for await (const e of fs.readdir(dir)) names.push(e.name);
    for (const name of names) {
      const node = await fs.lookup(dir, name);
      if (!node) throw new Error(`readdir lists ${path}/${name} but lookup does not find it`);
      const s = node.stat;
      const p = `${path}/${name}`;
      const entry: TreeEntry = { kind: s.kind, perm: s.perm, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, mtime: Math.floor(s.mtime) };
      if (s.kind === 'symlink') entry.target = await fs.readlink(node);
      if (s.kind === 'file') entry.md5 = md5(await readWhole(fs, node, opts.chunk ?? 65536 + 17));
      if (s.rdev) entry.rdev = `${s.rdev.major}:${s.rdev.minor}`;
      out.set(p, entry);
      if (s.kind === 'directory') await walk(node, p);
    }
  };
  await walk(await fs.root(), '');
  return out;
}

/** A file's bytes through `read`, in pieces of `chunk` bytes; the last read must come up short or empty. */
export async function readWhole(fs: Filesystem, node: FsNode, chunk = 65536): Promise<Uint8Array> {
  const out = new Uint8Array(node.stat.size);
  for (let at = 0; at < out.length; ) {
    const n = await fs.read(node, out.subarray(at, Math.min(out.length, at + chunk)), at);
    if (n === 0) throw new Error(`read returned 0 at ${at} of ${out.length}`);
    at += n;
  }
  const tail = new Uint8Array(16);
  const n = await fs.read(node, tail, out.length);
  if (n !== 0) throw new Error(`read past the end returned ${n} bytes`);
  return out;
}

/** The same map for a real directory tree (lstat, readlink, file bytes). */
export async function directoryTree(root: string): Promise<Tree> {
  const out: Tree = new Map();
  const walk = async (dir: string, path: string) => {
    for (const name of await readdir(dir)) {
      const full = join(dir, name);
      const s = await lstat(full);
      const kind: FileKind = s.isFile() ? 'file' : s.isDirectory() ? 'directory' : s.isSymbolicLink() ? 'symlink'
        : s.isCharacterDevice() ? 'char' : s.isBlockDevice() ? 'block' : s.isFIFO() ? 'fifo' : 'socket';
      const p = `${path}/${name}`;
      const entry: TreeEntry = { kind, perm: s.mode & 0o7777, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, mtime: Math.floor(s.mtimeMs / 1000) };
      if (kind === 'symlink') entry.target = await readlink(full);
      if (kind === 'file') entry.md5 = md5(await readFile(full));
      if (kind === 'char' || kind === 'block') entry.rdev = `${Math.floor(s.rdev / 256) & 0xfff}:${(s.rdev & 0xff) | ((s.rdev >>> 12) & 0xfff00)}`;
      out.set(p, entry);
      if (kind === 'directory') await walk(full, p);
    }
  };
  await walk(root, '');
  return out;
}

/** `tree` with some fields of every entry left out (those a comparison does not hold for). */
export function without(tree: Tree, ...fields: (keyof TreeEntry)[]): Map<string, Partial<TreeEntry>> {
  const out = new Map<string, Partial<TreeEntry>>();
  for (const [p, e] of tree) {
    const c: Partial<TreeEntry> = { ...e };
    for (const f of fields) delete c[f];
    out.set(p, c);
  }
  return out;
}

/** A sorted array (assert.deepEqual then shows the first difference by path). */
export const sorted = <T>(m: Map<string, T>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

/** `p` rejects with a DiskError of this code. */
export async function expectDiskError(p: Promise<unknown>, code: DiskErrorCode): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isDiskError(e), `not a DiskError: ${e}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

/** The node at a slash-separated path from the root, through lookups. */
export async function lookupPath<N extends FsNode>(fs: { root(): Promise<N>; lookup(dir: FsNode, name: string): Promise<N | null> }, path: string): Promise<N> {
  let node = await fs.root();
  for (const part of path.split('/').filter(Boolean)) {
    const next = await fs.lookup(node, part);
    if (!next) throw new Error(`${path}: ${part} not found`);
    node = next;
  }
  return node;
}
