/**
 * The filesystem registry: which reader opens what `fsid` identified, and what every caller
 * of a Filesystem needs on top of the interface — resolving a path the way the kernel does
 * (symlinks followed within the filesystem, at most 40 of them as Linux's MAXSYMLINKS, `..`
 * at the root staying at the root) and a bounded recursive walk (`ls -R`, copy-out).
 */
import type { BlockDevice } from './blockdev.js';
import { DiskError } from './errors.js';
import type { DirEntry, Filesystem, FsNode } from './filesystem.js';
import { identifyFilesystem } from './fsid/index.js';
import { openExt } from './ext/index.js';
import { openXfs } from './xfs/index.js';
import { openFat } from './fat/index.js';
import { openIso9660 } from './iso9660/index.js';
import { openBtrfs } from './btrfs/index.js';

export type FilesystemOpener = (device: BlockDevice, type: string) => Promise<Filesystem>;

/** Readers by blkid TYPE. */
const OPENERS = new Map<string, FilesystemOpener>([
  ['ext2', openExt],
  ['ext3', openExt],
  ['ext4', openExt],
  ['ext4dev', openExt],
  ['xfs', openXfs],
  ['vfat', openFat],
  ['iso9660', openIso9660],
  ['btrfs', openBtrfs],
]);

/** The filesystem types a reader exists for. */
export function readableFilesystemTypes(): string[] {
  return [...OPENERS.keys()];
}

/** Open the filesystem on `device` with the reader for what it holds; EFORMAT when nothing we read is there. */
export async function openFilesystem(device: BlockDevice, type?: string): Promise<Filesystem> {
  const kind = type ?? (await identifyFilesystem(device))?.type;
  if (kind === undefined) throw new DiskError('EFORMAT', 'no filesystem found');
  const opener = OPENERS.get(kind);
  if (!opener) throw new DiskError('EUNSUPPORTED', `cannot read the files of a ${kind} filesystem`);
  return opener(device, kind);
}

/** Entries one directory may have in a walk (they are held to be sorted): ext4's largest htree holds about 10 million names of 255 bytes. */
export const MAX_DIRECTORY_ENTRIES = 1 << 24;
/** Directory entries whose nodes a walk opens at once. */
const OPEN_BATCH = 64;

/** Linux's MAXSYMLINKS: symlinks followed while resolving one path. */
export const MAX_SYMLINKS = 40;
/** PATH_MAX: longer paths are refused. */
const PATH_MAX = 4096;

/** The node a readdir entry of `dir` names. */
export async function entryNode(fs: Filesystem, dir: FsNode, entry: DirEntry): Promise<FsNode> {
  if (fs.open) return fs.open(dir, entry);
  const node = await fs.lookup(dir, entry.name);
  if (!node) throw new DiskError('ECORRUPT', `${entry.name}: listed in its directory but not found there`);
  return node;
}

export interface ResolveOptions {
  /** Follow a symlink in the last component too (stat rather than lstat). Default false. */
  follow?: boolean;
}

/**
 * The node at an absolute `path` (relative paths are taken from the root). ENOENT when a
 * component is missing, EINVAL when a non-directory is traversed, ELOOP past 40 symlinks.
 */
export async function resolvePath(fs: Filesystem, path: string, options: ResolveOptions = {}): Promise<FsNode> {
  let links = 0;
  const root = await fs.root();
  // Components still to walk, and the directories walked so far (for '..').
  const todo = splitPath(path).reverse();
  const stack: FsNode[] = [root];
  while (todo.length > 0) {
    const name = todo.pop()!;
    const dir = stack[stack.length - 1]!;
    if (name === '.') continue;
    if (name === '..') {
      if (stack.length > 1) stack.pop();
      continue;
    }
    if (dir.stat.kind !== 'directory') throw new DiskError('EINVAL', `${path}: Not a directory`);
    const node = await fs.lookup(dir, name);
    if (!node) throw new DiskError('ENOENT', `${path}: No such file or directory`);
    if (node.stat.kind === 'symlink' && (todo.length > 0 || options.follow)) {
      if (++links > MAX_SYMLINKS) throw new DiskError('ELOOP', `${path}: Too many levels of symbolic links`);
      const target = await fs.readlink(node);
      if (target.length === 0) throw new DiskError('ENOENT', `${path}: No such file or directory`);
      if (target.startsWith('/')) stack.length = 1;
      const parts = splitPath(target);
      if (todo.length + parts.length > PATH_MAX) throw new DiskError('ELOOP', `${path}: Too many levels of symbolic links`);
      for (let i = parts.length - 1; i >= 0; i--) todo.push(parts[i]!);
      continue;
    }
    stack.push(node);
  }
  return stack[stack.length - 1]!;
}

function splitPath(path: string): string[] {
  if (path.length > PATH_MAX) throw new DiskError('EINVAL', `${path.slice(0, 64)}...: File name too long`);
  return path.split('/').filter((c) => c !== '');
}

/** Join a directory path and a name as virt-ls prints them ("/" + "etc" → "/etc"). */
export function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

export interface WalkEntry {
  /** The path from the walk's start ("/etc/passwd"; the start itself is `path` as given). */
  path: string;
  /** Depth below the start (0: the start). */
  depth: number;
  node: FsNode;
}

export interface WalkOptions {
  /** Deepest directory level entered (default 4096: Linux paths stop at PATH_MAX anyway). */
  maxDepth?: number;
  /** Entries in one directory, sorted by name before they are visited (as virt-ls lists them). Default true. */
  sorted?: boolean;
}

/**
 * Every node under `start` (itself first), depth first, a directory's entries in name order
 * (strcmp, as virt-ls sorts them). Bounded: a directory met twice (a hard-linked directory,
 * so a loop or a fan-out that would repeat work without end) is ELOOP, and depth is capped.
 * Symlinks are not followed.
 */
export async function* walk(fs: Filesystem, start: FsNode, path: string, options: WalkOptions = {}): AsyncIterable<WalkEntry> {
  const maxDepth = options.maxDepth ?? 4096;
  const sorted = options.sorted !== false;
  const seen = new Set<bigint>();
  /**
   * The directories being walked, innermost last (an explicit stack: nested async generators
   * would pass every entry up through one generator per level). `nodes` are the opened nodes
   * of entries [opened, opened + nodes.length).
   */
  const stack: { path: string; depth: number; dir: FsNode; entries: DirEntry[]; next: number; opened: number; nodes: FsNode[] }[] = [];
  const enter = async (node: FsNode, p: string, depth: number): Promise<void> => {
    if (node.stat.kind !== 'directory') return;
    if (seen.has(node.stat.ino)) throw new DiskError('ELOOP', `${p}: directory inode ${node.stat.ino} is reachable twice (a directory loop)`);
    seen.add(node.stat.ino);
    if (depth >= maxDepth) throw new DiskError('ELIMIT', `${p}: directories nested deeper than ${maxDepth}`);
    stack.push({ path: p, depth, dir: node, entries: await listDirectory(fs, node, p, sorted), next: 0, opened: 0, nodes: [] });
  };
  yield { path, depth: 0, node: start };
  await enter(start, path, 0);
  while (stack.length > 0) {
    const f = stack[stack.length - 1]!;
    if (f.next >= f.entries.length) {
      stack.pop();
      continue;
    }
    if (f.next >= f.opened + f.nodes.length) {
      // The entries' nodes are opened a batch at a time, concurrently: on an image file each is a read, and
      // waiting for them one by one costs a thread-pool round trip each.
      f.opened = f.next;
      f.nodes = await Promise.all(f.entries.slice(f.next, f.next + OPEN_BATCH).map((e) => entryNode(fs, f.dir, e)));
    }
    const node = f.nodes[f.next - f.opened]!;
    const p = joinPath(f.path, f.entries[f.next]!.name);
    f.next++;
    yield { path: p, depth: f.depth + 1, node };
    await enter(node, p, f.depth + 1);
  }
}

/**
 * A directory's entries, checked — a name is never empty, '.', '..' or holds a slash or NUL
 * (POSIX; such an entry would name another path) — bounded in number, and sorted by name
 * unless `sorted` is false.
 */
export async function listDirectory(fs: Filesystem, dir: FsNode, path: string, sorted = true): Promise<DirEntry[]> {
  const entries: DirEntry[] = [];
  for await (const e of fs.readdir(dir)) {
    if (e.name === '' || e.name === '.' || e.name === '..' || /[/\0]/.test(e.name)) throw new DiskError('ECORRUPT', `${path}: a directory entry has the invalid name ${JSON.stringify(e.name)}`);
    if (entries.length >= MAX_DIRECTORY_ENTRIES) throw new DiskError('ELIMIT', `${path}: more than ${MAX_DIRECTORY_ENTRIES} entries in one directory`);
    entries.push(e);
  }
  return sorted ? sortEntries(entries) : entries;
}

const SURROGATE = /[\uD800-\uDFFF]/;

/** Entries in strcmp order of their names' UTF-8 bytes (what guestfs_ls and sort(1) in the C locale give). */
export function sortEntries<T extends { name: string }>(entries: T[]): T[] {
  // Without surrogate pairs, UTF-16 code unit order is code point order, which is UTF-8 byte
  // order: the names compare as they are, without encoding each (the usual case).
  if (!entries.some((e) => SURROGATE.test(e.name))) return [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return entries.map((e) => ({ key: Buffer.from(e.name), e })).sort((a, b) => Buffer.compare(a.key, b.key)).map((x) => x.e);
}
