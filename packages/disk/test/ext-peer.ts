/**
 * The ext reader checked against what mkfs.ext4 -d was given and against a read-only loop
 * mount, for one mke2fs layout (used by ext.test.ts and ext-indirect.test.ts, split to keep
 * each file short).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk, run, findListing, withLoopMount, loopDevicesUsable, MiB } from '@diskhub/testkit';
import { openImage, openFilesystem, resolvePath, walk, ExtNode, type Filesystem, type FsNode, type DirEntry } from '../src/index.js';

export interface Variant { name: string; args: string[]; inodeSize: number; extents: boolean; inline?: boolean }

export const VARIANTS: Variant[] = [
  { name: 'ext4 (metadata_csum, extents, flex_bg)', args: ['-t', 'ext4'], inodeSize: 256, extents: true },
  { name: 'ext4 64bit with 1 KiB blocks', args: ['-t', 'ext4', '-O', '64bit', '-b', '1024'], inodeSize: 256, extents: true },
  { name: 'ext4 inline_data', args: ['-t', 'ext4', '-O', 'inline_data'], inodeSize: 256, extents: true, inline: true },
  { name: 'ext4 gdt_csum without metadata_csum, meta_bg', args: ['-t', 'ext4', '-O', '^metadata_csum,uninit_bg,meta_bg,^resize_inode'], inodeSize: 256, extents: true },
  { name: 'ext4 -O ^extent (indirect blocks)', args: ['-t', 'ext4', '-O', '^extent,^64bit'], inodeSize: 256, extents: false },
  { name: 'ext3 with 1 KiB blocks (triple indirect)', args: ['-t', 'ext3', '-b', '1024'], inodeSize: 256, extents: false },
  { name: 'ext2 with 128-byte inodes', args: ['-t', 'ext2', '-I', '128'], inodeSize: 128, extents: false },
];

const TYPE_LETTER = { file: 'f', directory: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' } as const;

/** find's %T@: seconds, a dot, nine digits of nanoseconds and a zero. */
const findTime = (t: { sec: number; nsec: number }) => `${t.sec}.${String(t.nsec).padStart(9, '0')}0`;

/** Our reader's view in find's format (see testkit findListing). */
async function ourListing(fs: Filesystem): Promise<string[]> {
  const lines: string[] = [];
  for await (const e of walk(fs, await fs.root(), '')) {
    if (e.depth === 0) continue;
    const n = e.node as ExtNode;
    const s = n.stat;
    const target = s.kind === 'symlink' ? await fs.readlink(n) : '';
    lines.push([e.path.slice(1), TYPE_LETTER[s.kind], s.perm.toString(8), s.size, s.uid, s.gid, s.nlink, findTime(n.inode.times.mtime), findTime(n.inode.times.atime), s.blocks, target].join('|'));
  }
  return lines.sort();
}

export async function readAll(fs: Filesystem, node: FsNode): Promise<Buffer> {
  const b = Buffer.alloc(node.stat.size);
  // In uneven pieces, so reads start and end inside blocks and extents.
  for (let at = 0, n = 3000; at < b.length; at += n, n = Math.min(n * 3, 5 * MiB + 7)) {
    assert.equal(await fs.read(node, b.subarray(at, at + n), at), Math.min(n, b.length - at));
  }
  return b;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Compare every node under `src` with the filesystem: what mkfs.ext4 -d was given. */
async function compareWithSource(fs: Filesystem, src: string, rel = ''): Promise<number> {
  let count = 0;
  const names = (await readdir(join(src, rel))).sort();
  const node = await resolvePath(fs, rel || '/');
  const ours = new Map<string, DirEntry>();
  for await (const e of fs.readdir(node)) ours.set(e.name, e);
  // lost+found is mke2fs's; unwritten and timed the test's own (debugfs).
  assert.deepEqual([...ours.keys()].filter((n) => !(rel === '' && ['lost+found', 'unwritten', 'timed'].includes(n))).sort(), names, `listing of /${rel}`);
  for (const [i, name] of names.entries()) {
    const p = join(rel, name);
    const st = await lstat(join(src, p));
    // Through the entry (a lookup per name would scan the 5000-entry directory 5000 times); lookup is tested on a sample.
    const n = await fs.open!(node, ours.get(name)!);
    if (i % 97 === 0 || names.length < 100) assert.equal((await resolvePath(fs, '/' + p)).stat.ino, n.stat.ino, `lookup of ${p}`);
    const what = `/${p}`;
    assert.equal(n.stat.perm, st.mode & 0o7777, `${what} mode`);
    assert.equal(n.stat.uid, st.uid, `${what} uid`);
    assert.equal(n.stat.gid, st.gid, `${what} gid`);
    assert.equal(Math.floor(n.stat.mtime), Math.floor(st.mtimeMs / 1000), `${what} mtime`);
    count++;
    if (st.isDirectory()) {
      assert.equal(n.stat.kind, 'directory', what);
      count += await compareWithSource(fs, src, p);
    } else if (st.isSymbolicLink()) {
      assert.equal(n.stat.kind, 'symlink', what);
      assert.equal(await fs.readlink(n), await readlink(join(src, p)), `${what} target`);
      assert.equal(n.stat.size, st.size, `${what} size`);
    } else if (st.isFile()) {
      assert.equal(n.stat.kind, 'file', what);
      assert.equal(n.stat.size, st.size, `${what} size`);
      assert.equal(n.stat.nlink, st.nlink, `${what} links`);
      assert.equal(sha(await readAll(fs, n)), sha(await readFile(join(src, p))), `${what} bytes`);
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      assert.equal(n.stat.kind, st.isCharacterDevice() ? 'char' : 'block', what);
      const [major, minor] = (await runOk('stat', ['-c', '%t %T', join(src, p)])).trim().split(' ').map((h) => parseInt(h, 16));
      assert.deepEqual(n.stat.rdev, { major, minor }, `${what} device numbers`);
    } else if (st.isFIFO()) assert.equal(n.stat.kind, 'fifo', what);
    else if (st.isSocket()) assert.equal(n.stat.kind, 'socket', what);
  }
  return count;
}

export async function openRaw(path: string): Promise<{ fs: Filesystem; close: () => Promise<void> }> {
  const image = await openImage(path, { format: 'raw' });
  return { fs: await openFilesystem(image), close: () => image.close() };
}

/** The inode flags debugfs reports for a path. */
async function debugfsFlags(image: string, path: string): Promise<number> {
  const out = await runOk('debugfs', ['-R', `stat "${path}"`, image]);
  return parseInt(/Flags: (0x[0-9a-f]+)/.exec(out)![1]!, 16);
}

/** Make the layout `v` from `src` in `dir`, then compare it with `src` and with the kernel's view of it. */
export async function checkVariant(dir: string, src: string, v: Variant): Promise<void> {
  const img = join(dir, 'fs.img');
  await runOk('mkfs.ext4', ['-q', '-F', ...v.args, '-d', src, img, '128M']);
  // e2fsck -D indexes the large directories (mkfs -d writes them linear): htree.
  const fsck = await run('e2fsck', ['-fyD', img]);
  assert.ok(fsck.code <= 1, fsck.stdout + fsck.stderr);
  assert.ok((await debugfsFlags(img, '/big')) & 0x1000, 'e2fsck -D made /big an htree directory');
  assert.equal(((await debugfsFlags(img, '/rand-6M')) & 0x80000) !== 0, v.extents, 'extents as the variant says');
  if (v.inline) assert.ok((await debugfsFlags(img, '/hello.txt')) & 0x10000000, 'small files have inline data');
  const debugfs: string[] = [];
  if (v.inodeSize > 128) debugfs.push('write /dev/null timed', 'sif /timed mtime @1234567890', 'sif /timed mtime_extra 493827157', 'sif /timed atime_extra 4');
  if (v.extents && !v.inline) debugfs.push('write /dev/null unwritten', 'fallocate /unwritten 0 40', 'sif /unwritten size 100000');
  if (debugfs.length) await runOk('debugfs', ['-w', '-f', '-', img], { input: debugfs.join('\n') + '\n' });

  const { fs, close } = await openRaw(img);
  try {
    assert.deepEqual(fs.warnings, []);
    const count = await compareWithSource(fs, src);
    assert.ok(count > 5050, `${count} files compared`);
    if (v.inodeSize > 128) {
      const timed = (await resolvePath(fs, '/timed')) as ExtNode;
      // 493827157 = nanoseconds 123456789 << 2 | epoch 1: 2^32 seconds later.
      assert.deepEqual(timed.inode.times.mtime, { sec: 1_234_567_890 + 2 ** 32, nsec: 123_456_789 });
    }
    if (v.extents && !v.inline) {
      const unwritten = await resolvePath(fs, '/unwritten');
      assert.deepEqual(await readAll(fs, unwritten), Buffer.alloc(100000));
    }
    const sparse = await resolvePath(fs, '/sparse');
    assert.ok(sparse.stat.blocks! < 100, `sparse file has ${sparse.stat.blocks} blocks`);
    const target = await resolvePath(fs, '/abs-dir-link/level1/../level1/level2', { follow: true });
    assert.equal(target.stat.kind, 'directory');
    if (loopDevicesUsable()) {
      const mnt = join(dir, 'mnt');
      const peer = await withLoopMount(img, mnt, () => findListing(mnt));
      assert.deepEqual(await ourListing(fs), peer);
      if (v.extents && !v.inline) assert.deepEqual(await readAll(fs, await resolvePath(fs, '/unwritten')), Buffer.alloc(100000));
    }
  } finally {
    await close();
  }
}
