/**
 * The ext2/3/4 reader against real peers: filesystems made by mkfs.ext4 -d from a source tree
 * (every kind of file, see testkit's makeSourceTree) in each layout mke2fs makes — extents or
 * indirect blocks, 1 KiB blocks, 64bit, meta_bg, inline data, metadata_csum or gdt_csum,
 * 128-byte inodes — with directories indexed by e2fsck -D (htree), nanosecond times and
 * unwritten extents set by debugfs. Every file must read back as put in, and every field
 * `find -printf` shows of a read-only loop mount must match. Hostile images end in a typed error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir, needs, runOk, makeSourceTree } from '@diskhub/testkit';
import { resolvePath, walk, isDiskError, MemorySource, rawDriver, ExtNode, ExtFilesystem, type Filesystem, type BlockDevice } from '../src/index.js';
import { VARIANTS, checkVariant, openRaw } from './ext-peer.js';

test('ext: mkfs.ext4 -d filesystems (extents) read back as put in, and as a read-only loop mount shows them', needs('mkfs.ext4', 'e2fsck', 'debugfs', 'find'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await makeSourceTree(src);
  for (const v of VARIANTS.filter((x) => x.extents)) await t.test(v.name, () => checkVariant(dir, src, v));
});

test('ext: a journal that needs recovery (here an empty one: nothing to replay) and recorded errors are reported as warnings', needs('mkfs.ext4', 'debugfs'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'fs.img');
  await runOk('mkfs.ext4', ['-q', '-F', img, '16M']);
  await runOk('debugfs', ['-w', '-R', 'feature needs_recovery', img]);
  let { fs, close } = await openRaw(img);
  assert.equal(fs.type, 'ext4');
  assert.match(fs.warnings.join('\n'), /journal needed recovery .*: 0 committed transactions replayed in memory/);
  await close();
  await runOk('debugfs', ['-w', '-f', '-', img], { input: 'feature ^needs_recovery\nssv state 2\n' });
  ({ fs, close } = await openRaw(img));
  assert.match(fs.warnings.join('\n'), /has errors recorded/);
  assert.doesNotMatch(fs.warnings.join('\n'), /journal/);
  await close();
});

/** An in-memory raw device over `bytes` (mutated by hostile tests). */
async function memoryDevice(bytes: Uint8Array): Promise<BlockDevice> {
  return rawDriver.open(new MemorySource(bytes, 'mutant', true), {});
}

async function expectTyped(work: () => Promise<unknown>, codes: string[], pattern?: RegExp): Promise<void> {
  const started = Date.now();
  try {
    await work();
  } catch (e) {
    assert.ok(isDiskError(e), `not a DiskError: ${(e as Error)?.stack}`);
    assert.ok(codes.includes(e.code), `${e.code}: ${e.message}`);
    if (pattern) assert.match(e.message, pattern);
    assert.ok(Date.now() - started < 5000, 'ended quickly');
    return;
  }
  assert.fail('no error');
}

async function walkAll(fs: Filesystem): Promise<void> {
  for await (const e of walk(fs, await fs.root(), '/')) {
    if (e.node.stat.kind === 'file') await fs.read(e.node, new Uint8Array(4096), 0);
  }
}

test('ext: hostile images (inode table outside the device, extent tree loop, directory loop, symlink loop, bad checksums) end in typed errors quickly', needs('mkfs.ext4', 'debugfs'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await runOk('mkdir', ['-p', join(src, 'd', 'e')]);
  await writeFile(join(src, 'd', 'file'), 'data\n');
  const frag = Buffer.alloc(0);
  await writeFile(join(src, 'frag'), frag);
  const fragFile = join(src, 'frag');
  const fh = await import('node:fs/promises').then((m) => m.open(fragFile, 'w'));
  for (let i = 0; i < 10; i++) await fh.write(Buffer.from('x'), 0, 1, i * 65536);
  await fh.close();
  const img = join(dir, 'fs.img');
  // Without metadata_csum, so a mutation reaches the structure rather than its checksum.
  await runOk('mkfs.ext4', ['-q', '-F', '-O', '^metadata_csum', '-b', '1024', '-d', src, img, '8M']);
  await runOk('debugfs', ['-w', '-f', '-', img], { input: 'ln / /d/e/loop\nsymlink /a /b\nsymlink /b /a\n' });
  const good = new Uint8Array(await readFile(img));
  const fresh = async (bytes = good) => ExtFilesystem.open(await memoryDevice(bytes));

  // Directory loop: /d/e/loop is the root again.
  await expectTyped(async () => walkAll(await fresh()), ['ELOOP'], /reachable twice/);
  // Symlink loop.
  await expectTyped(async () => resolvePath(await fresh(), '/a', { follow: true }), ['ELOOP'], /Too many levels of symbolic links/);
  // The path helper's '..' at the root stays at the root.
  assert.equal((await resolvePath(await fresh(), '/../../d/../d/file')).stat.size, 5);

  // Group 0's inode table pointer set past the end of the device.
  const fs0 = await fresh();
  const gdOffset = 2 * 1024; // 1 KiB blocks: the descriptors follow the superblock in block 2
  const badTable = good.slice();
  new DataView(badTable.buffer).setUint32(gdOffset + 8, 0x7fffffff, true);
  await expectTyped(async () => (await fresh(badTable)).root(), ['ECORRUPT'], /inode table/);

  // The extent tree of /frag (depth 1 with 10 extents in a leaf block): the leaf made an index pointing at itself.
  const fragNode = (await resolvePath(fs0, '/frag')) as ExtNode;
  const ib = fragNode.inode.iBlock;
  assert.equal(ib[6]! | (ib[7]! << 8), 1, 'the extent tree has depth 1');
  const leaf = new DataView(ib.buffer, ib.byteOffset).getUint32(12 + 4, true);
  const looped = good.slice();
  const lv = new DataView(looped.buffer, leaf * 1024);
  lv.setUint16(6, 1, true); // depth 1: an index node
  lv.setUint32(12 + 4, leaf, true); // whose first entry points to itself
  lv.setUint16(12 + 8, 0, true);
  await expectTyped(async () => { const f = await fresh(looped); await f.read(await resolvePath(f, '/frag'), new Uint8Array(10), 0); }, ['ECORRUPT', 'ELOOP'], /extent tree/);

  // An extent pointing outside the filesystem.
  const outside = good.slice();
  new DataView(outside.buffer, leaf * 1024).setUint32(12 + 8, 0x00ffffff, true);
  await expectTyped(async () => { const f = await fresh(outside); await f.read(await resolvePath(f, '/frag'), new Uint8Array(10), 0); }, ['ECORRUPT'], /outside the filesystem/);

  // Counts past the geometry: more inodes than the groups hold; more blocks than the device.
  const inodes = good.slice();
  new DataView(inodes.buffer).setUint32(1024, 0xffffffff, true);
  await expectTyped(() => fresh(inodes), ['ECORRUPT']);
  const blocks = good.slice();
  new DataView(blocks.buffer).setUint32(1024 + 4, 0x7fffffff, true);
  await expectTyped(() => fresh(blocks), ['ETRUNCATED', 'ECORRUPT']);

  // A directory entry whose record length is zero.
  const root = (await fs0.root()) as ExtNode;
  const rootBlock = new DataView(root.inode.iBlock.buffer, root.inode.iBlock.byteOffset).getUint32(12 + 8, true);
  const badDirent = good.slice();
  new DataView(badDirent.buffer, rootBlock * 1024).setUint16(4, 0, true);
  await expectTyped(async () => walkAll(await fresh(badDirent)), ['ECORRUPT'], /bad entry/);
});

test('ext: metadata checksums — a flipped bit in the superblock, an inode or a directory block is ECORRUPT; in a group descriptor a warning', needs('mkfs.ext4'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await runOk('mkdir', ['-p', join(src, 'd')]);
  await writeFile(join(src, 'd', 'file'), 'data\n');
  const img = join(dir, 'fs.img');
  await runOk('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, img, '8M']);
  const good = new Uint8Array(await readFile(img));
  const fresh = async (bytes: Uint8Array) => ExtFilesystem.open(await memoryDevice(bytes));
  const fs0 = await fresh(good);
  await walkAll(fs0);

  const sb = good.slice();
  sb[1024 + 0x78] ^= 1; // the volume label
  await expectTyped(() => fresh(sb), ['ECORRUPT'], /superblock checksum/);

  const gd = good.slice();
  gd[4096 + 0x0c] ^= 1; // group 0's free blocks count
  const withBadGd = await fresh(gd);
  await walkAll(withBadGd);
  assert.match(withBadGd.warnings.join('\n'), /group descriptor 0 checksum/);

  // The file's inode: find its byte offset from the group descriptor's inode table.
  const file = (await resolvePath(fs0, '/d/file')) as ExtNode;
  const table = new DataView(good.buffer).getUint32(4096 + 8, true);
  const inodeAt = table * 4096 + (file.inode.ino - 1) * fs0.inodeSize;
  const inode = good.slice();
  inode[inodeAt + 0x20 + 3] ^= 0x01; // a flag bit nobody reads
  await expectTyped(async () => resolvePath(await fresh(inode), '/d/file'), ['ECORRUPT'], /inode \d+ checksum/);

  const d = (await resolvePath(fs0, '/d')) as ExtNode;
  const dirBlock = new DataView(d.inode.iBlock.buffer, d.inode.iBlock.byteOffset).getUint32(12 + 8, true);
  const dirent = good.slice();
  dirent[dirBlock * 4096 + 30] ^= 0x20; // a byte of an entry's name
  await expectTyped(async () => walkAll(await fresh(dirent)), ['ECORRUPT'], /checksum does not match/);

});
