/**
 * The btrfs reader against the real tools: mkfs.btrfs --rootdir (the testkit's source tree:
 * every kind of node, sparse and fragmented files, a 5000-entry directory that spans several
 * leaves, devices), with each checksum type (crc32c, xxhash64, sha256, blake2b); then files written through a loop mount with
 * zlib, lzo and zstd compression, and subvolumes (nested, the default changed, a snapshot),
 * with a read-only kernel mount as the oracle every field is compared against.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhub, makeSourceTree, needs, needsLoopDevices, loopDevicesUsable, tempDir, runOk, run, withLoopMount } from '@diskhub/testkit';
import { inspectOperatingSystems, isDiskError, openFilesystem, resolvePath, Btrfs, type BtrfsNode } from '../src/index.js';
import { BTRFS_SUPER_INFO_OFFSET, HEADER, KEY_PTR, SUPERBLOCK, blake2b, xxhash64 } from '../src/btrfs/index.js';
import { createHash, randomBytes } from 'node:crypto';
import { crc32c } from '../src/crc32c.js';
import { directoryTree, expectDiskError, openBytes, openRaw, readerTree, sorted, without, type Tree } from './fs-tree.js';

/** The kernel's view of the image (a read-only loop mount). */
async function kernelTree(img: string, dir: string): Promise<Tree> {
  const mnt = join(dir, 'ro');
  return withLoopMount(img, mnt, () => directoryTree(mnt));
}

/** Make `img` a btrfs of `size`, mount it read-write at `mnt` with `options`, run `fn`, unmount. */
async function withMounted(img: string, mnt: string, options: string, fn: () => Promise<void>): Promise<void> {
  await mkdir(mnt, { recursive: true });
  await runOk('mount', ['-o', `loop${options ? `,${options}` : ''}`, img, mnt]);
  try {
    await fn();
  } finally {
    await run('umount', [mnt]);
  }
}

/** A small tree for the other checksum types: a directory of 800 entries spans several leaves under an internal node. */
async function makeSmallTree(root: string): Promise<void> {
  await mkdir(join(root, 'many'), { recursive: true });
  await writeFile(join(root, 'hello.txt'), 'hello\n');
  await writeFile(join(root, 'data.bin'), Buffer.alloc(300_000).map((_, i) => (i * 7) & 0xff));
  for (let i = 0; i < 800; i++) await writeFile(join(root, 'many', `entry-${i}-with-a-longer-name`), `${i}\n`);
}

for (const csum of ['crc32c', 'xxhash', 'sha256', 'blake2']) {
  const what = csum === 'crc32c' ? 'every kind of node, large and fragmented files, 5000 entries in a directory' : 'a smaller tree';
  test(`btrfs (mkfs.btrfs --csum ${csum} --rootdir, ${what}): every node as the source tree and the kernel show it`, needs('mkfs.btrfs'), async (t) => {
    const dir = await tempDir(t);
    const src = join(dir, 'src');
    await (csum === 'crc32c' ? makeSourceTree(src) : makeSmallTree(src));
    const img = join(dir, 'fs.img');
    await runOk('mkfs.btrfs', ['-q', '-f', '--csum', csum, '-L', `label-${csum}`, '--rootdir', src, '-b', '512M', img]);
    const dev = await openRaw(img);
    t.after(() => dev.close());
    const fs = await openFilesystem(dev);
    assert.ok(fs instanceof Btrfs);
    assert.equal(fs.type, 'btrfs');
    assert.equal(fs.label, `label-${csum}`);
    assert.deepEqual(fs.warnings, []);
    const ours = await readerTree(fs, { chunk: 100_003 });
    // btrfs keeps no link count for directories (always 1) and sizes them by their names' lengths;
    // mkfs.btrfs 6.2 --rootdir writes devices with rdev 0 (the kernel then shows 0:0 too: devices made on a mount are compared below).
    const fromSource = (tree: Tree) => {
      const m = without(tree, 'rdev');
      for (const e of m.values()) if (e.kind === 'directory') { delete e.nlink; delete e.size; }
      return m;
    };
    assert.deepEqual(sorted(fromSource(ours)), sorted(fromSource(await directoryTree(src))));
    if (loopDevicesUsable()) assert.deepEqual(sorted(ours), sorted(await kernelTree(img, dir)));
  });
}

test('btrfs compression (a loop mount with compress=zlib, lzo, zstd): compressed regular and inline extents read as the kernel reads them', { ...needs('mkfs.btrfs'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'fs.img');
  await runOk('truncate', ['-s', '512M', img]);
  await runOk('mkfs.btrfs', ['-q', '-f', img]);
  const mnt = join(dir, 'mnt');
  // Text compresses; a pattern with a little noise shows matches at every distance.
  const text = Buffer.from(Array.from({ length: 40000 }, (_, i) => `line ${i}: the quick brown fox ${i % 97}\n`).join(''));
  const noisy = Buffer.alloc(3 << 20);
  for (let i = 0; i < noisy.length; i++) noisy[i] = (i % 251) ^ ((i * 2654435761) >>> 29);
  for (const algo of ['zlib', 'lzo', 'zstd']) {
    await withMounted(img, mnt, `compress-force=${algo}`, async () => {
      await mkdir(join(mnt, algo));
      if (algo === 'zlib') {
        await runOk('mknod', [join(mnt, 'null'), 'c', '1', '3']);
        await runOk('mknod', [join(mnt, 'bigdev'), 'b', '300', '70000']);
        await runOk('mkfifo', [join(mnt, 'fifo')]);
      }
      await writeFile(join(mnt, algo, 'text'), text);
      await writeFile(join(mnt, algo, 'noisy'), noisy);
      await writeFile(join(mnt, algo, 'small'), 'a small file, inline and compressed '.repeat(20));
      // Data at 1 MiB and 5 MiB of a sparse file.
      const sparse = await open(join(mnt, algo, 'sparse'), 'w');
      await sparse.truncate(6 << 20);
      await sparse.write(Buffer.alloc(70000, 'A'), 0, 70000, 1 << 20);
      await sparse.write(Buffer.alloc(5000, 'B'), 0, 5000, 5 << 20);
      await sparse.close();
    });
  }
  const dev = await openRaw(img);
  t.after(() => dev.close());
  const fs = (await openFilesystem(dev)) as Btrfs;
  const ours = await readerTree(fs, { chunk: 65536 + 17 });
  assert.deepEqual(sorted(ours), sorted(await kernelTree(img, dir)));
  // Holes stay holes, compressed files count their compressed bytes: st_blocks as the kernel counts them.
  const paths = ['zlib', 'lzo', 'zstd'].flatMap((a) => ['sparse', 'small', 'text', 'noisy'].map((f) => `/${a}/${f}`));
  const blocks = await withLoopMount(img, join(dir, 'ro'), async () => Promise.all(paths.map(async (p) => Number(await runOk('stat', ['-c', '%b', join(dir, 'ro', p)])))));
  assert.deepEqual(await Promise.all(paths.map(async (p) => (await resolvePath(fs, p)).stat.blocks)), blocks);
  assert.ok(blocks.filter((_, i) => paths[i]!.endsWith('sparse')).every((b) => b < 1000), `${blocks}`);
  assert.deepEqual([ours.get('/null')!.rdev, ours.get('/bigdev')!.rdev], ['1:3', '300:70000']);
  // The kernel did compress: each algorithm's files have compressed regular and inline extents.
  for (const [i, algo] of ['zlib', 'lzo', 'zstd'].entries()) {
    const types = new Set<string>();
    for (const name of ['text', 'noisy', 'small']) {
      const node = (await resolvePath(fs, `/${algo}/${name}`)) as BtrfsNode;
      await fs.read(node, new Uint8Array(1), 0);
      for (const e of node.extents!) if (e.compression) types.add(`${e.compression}:${e.inline ? 'inline' : 'regular'}`);
    }
    assert.deepEqual([...types].sort(), [`${i + 1}:inline`, `${i + 1}:regular`], algo);
  }
});

test('btrfs subvolumes: shown as directories where the kernel shows them, the default subvolume as the root, a snapshot, and a Fedora-style root found by inspection', { ...needs('mkfs.btrfs', 'btrfs'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'fs.img');
  await runOk('truncate', ['-s', '256M', img]);
  await runOk('mkfs.btrfs', ['-q', '-f', img]);
  const mnt = join(dir, 'mnt');
  await withMounted(img, mnt, '', async () => {
    await runOk('btrfs', ['subvolume', 'create', join(mnt, 'root')]);
    await runOk('btrfs', ['subvolume', 'create', join(mnt, 'home')]);
    await mkdir(join(mnt, 'root', 'etc'));
    await writeFile(join(mnt, 'root', 'etc', 'fstab'), 'UUID=x / btrfs subvol=root 0 0\n');
    await writeFile(join(mnt, 'root', 'etc', 'os-release'), 'ID=fedora\nVERSION_ID=39\n');
    await mkdir(join(mnt, 'root', 'var', 'lib'), { recursive: true });
    await runOk('btrfs', ['subvolume', 'create', join(mnt, 'root', 'var', 'lib', 'machines')]);
    await writeFile(join(mnt, 'root', 'var', 'lib', 'machines', 'inside'), 'nested\n');
    await writeFile(join(mnt, 'home', 'notes'), 'home\n');
    await runOk('btrfs', ['subvolume', 'snapshot', '-r', join(mnt, 'home'), join(mnt, 'home-snap')]);
    // A snapshot of a subvolume with one nested in it: the kernel shows an empty directory in its place.
    await runOk('btrfs', ['subvolume', 'snapshot', join(mnt, 'root'), join(mnt, 'root-snap')]);
    await writeFile(join(mnt, 'home', 'notes'), 'changed after the snapshot\n');
  });
  const dev = await openRaw(img);
  t.after(() => dev.close());
  const fs = (await openFilesystem(dev)) as Btrfs;
  assert.equal(fs.subvolumeId, 5n);
  const list = (await fs.subvolumes()).map((s) => `${s.id} ${s.path}`);
  const peer = await withLoopMount(img, join(dir, 'ro'), async () => (await runOk('btrfs', ['subvolume', 'list', join(dir, 'ro')])).trim().split('\n').map((l) => {
    const m = /^ID (\d+) .* path (.*)$/.exec(l)!;
    return `${m[1]} ${m[2]}`;
  }));
  assert.deepEqual(list, peer);
  // The top level: subvolumes are directories, nested ones too, as the kernel shows them.
  const ours = await readerTree(fs);
  const kernel = await kernelTree(img, dir);
  // The kernel stamps that placeholder directory with the time it made it in memory.
  const placeholder = '/root-snap/var/lib/machines';
  assert.deepEqual([ours.get(placeholder)?.kind, kernel.get(placeholder)?.kind], ['directory', 'directory']);
  assert.ok(!ours.has(`${placeholder}/inside`) && !kernel.has(`${placeholder}/inside`));
  ours.get(placeholder)!.mtime = kernel.get(placeholder)!.mtime;
  assert.deepEqual(sorted(ours), sorted(kernel));
  assert.equal(ours.get('/root-snap/etc/os-release')!.size, 24);
  assert.equal(ours.get('/home-snap/notes')!.size, 5);
  // Inode numbers stay distinct across subvolumes (each subvolume's root is inode 256).
  const roots = await Promise.all(['/root', '/home', '/home-snap'].map(async (p) => (await resolvePath(fs, p)).stat.ino));
  assert.equal(new Set(roots).size, 3);
  // A named subvolume as the root, as mount -o subvol= shows it.
  const root = await Btrfs.open(dev, { subvolume: 'root' });
  assert.equal((await resolvePath(root, '/etc/os-release')).stat.size, 24);

  // Inspection and the file commands find the operating system in subvolume "root", as libguestfs does.
  const inspection = await inspectOperatingSystems(dev);
  assert.deepEqual(inspection.operatingSystems.map((o) => [o.type, o.distro, o.majorVersion]), [['linux', 'fedora', 39]]);
  const cat = await diskhub(['img', 'cat', '-f', 'raw', img, '/etc/os-release']);
  assert.equal(cat.stdout, 'ID=fedora\nVERSION_ID=39\n', cat.stderr);
  const ls = await diskhub(['img', 'ls', '-R', '-f', 'raw', img, '/var']);
  assert.equal(ls.stdout, 'lib\nlib/machines\nlib/machines/inside\n', ls.stderr);

  // The default changed to "root": the reader shows what a plain mount shows.
  const rootId = (await fs.subvolumes()).find((s) => s.path === 'root')!.id;
  await withMounted(img, mnt, '', () => runOk('btrfs', ['subvolume', 'set-default', String(rootId), mnt]).then(() => undefined));
  const dev2 = await openRaw(img);
  t.after(() => dev2.close());
  const fs2 = (await openFilesystem(dev2)) as Btrfs;
  assert.equal(fs2.subvolumeId, rootId);
  assert.deepEqual(sorted(await readerTree(fs2)), sorted(await kernelTree(img, dir)));
});

test('btrfs RAID profiles: RAID0 on one device (one stripe) reads as the kernel reads it; a filesystem over two devices (RAID1) is refused clearly', { ...needs('mkfs.btrfs'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'raid0.img');
  await runOk('truncate', ['-s', '300M', img]);
  await runOk('mkfs.btrfs', ['-q', '-f', '-d', 'raid0', img]);
  assert.match(await runOk('btrfs', ['inspect-internal', 'dump-tree', '-t', 'chunk', img]), /type DATA\|RAID0/);
  const mnt = join(dir, 'mnt');
  await withMounted(img, mnt, '', async () => {
    await writeFile(join(mnt, 'striped'), Buffer.alloc(1 << 20).map((_, i) => (i * 13) & 0xff));
    await writeFile(join(mnt, 'small'), 'small\n');
  });
  const dev = await openRaw(img);
  t.after(() => dev.close());
  assert.deepEqual(sorted(await readerTree(await openFilesystem(dev))), sorted(await kernelTree(img, dir)));
  const [a, b] = [join(dir, 'a.img'), join(dir, 'b.img')];
  await runOk('truncate', ['-s', '200M', a, b]);
  await runOk('mkfs.btrfs', ['-q', '-f', '-d', 'raid1', '-m', 'raid1', a, b]);
  const two = await openRaw(a);
  t.after(() => two.close());
  await assert.rejects(openFilesystem(two), (e: Error) => isDiskError(e, 'EUNSUPPORTED') && /spans 2 devices/.test(e.message));
});

test('btrfs: a log tree left by an fsync before a crash is reported (not replayed)', { ...needs('mkfs.btrfs', 'btrfs'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'fs.img');
  const crash = join(dir, 'crash.img');
  await runOk('truncate', ['-s', '256M', img]);
  await runOk('mkfs.btrfs', ['-q', '-f', img]);
  // A long commit interval: the fsync'd file is only in the log tree when the image is copied.
  await withMounted(img, join(dir, 'mnt'), 'commit=300', async () => {
    const f = await open(join(dir, 'mnt', 'fsynced'), 'w');
    await f.write(Buffer.alloc(5000, 'x'));
    await f.sync();
    await f.close();
    await copyFile(img, crash);
  });
  assert.match(await runOk('btrfs', ['inspect-internal', 'dump-super', crash]), /^log_root\s+[1-9]/m);
  const dev = await openRaw(crash);
  t.after(() => dev.close());
  const fs = await openFilesystem(dev);
  assert.match(fs.warnings.join('\n'), /the log tree needs replay .* not shown/);
});

test('btrfs checksums: BLAKE2b equals Node\'s blake2b512 at 64 bytes (and RFC 7693\'s "abc" vector at 32), xxHash64 the reference vectors', () => {
  for (const n of [0, 1, 127, 128, 129, 1000, 16384]) {
    const data = randomBytes(n);
    assert.equal(Buffer.from(blake2b(data, 64)).toString('hex'), createHash('blake2b512').update(data).digest('hex'), `${n} bytes`);
  }
  assert.equal(Buffer.from(blake2b(Buffer.from('abc'), 32)).toString('hex'), 'bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319');
  assert.equal(xxhash64(new Uint8Array(0)), 0xef46db3751d8e999n);
  assert.equal(xxhash64(Buffer.from('abc')), 0x44bc2cf5ad770999n);
});

test('btrfs hostile: checksum mismatches, keys out of order, a pointer repeated or outside every chunk, a huge item count, an unknown checksum type and several devices end in typed errors', needs('mkfs.btrfs'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await makeSmallTree(src);
  const img = join(dir, 'fs.img');
  await runOk('truncate', ['-s', '16M', img]);
  // Mixed block groups with 4 KiB nodes: the 800-entry directory puts an internal node above the fs tree's leaves.
  await runOk('mkfs.btrfs', ['-q', '-f', '-M', '--rootdir', src, img]);
  const pristine = new Uint8Array(await readFile(img));
  const SB = BTRFS_SUPER_INFO_OFFSET;
  // The fs tree's root, an internal node (level 1 or 2: mkfs --rootdir keeps the source's inode numbers, which order the keys): the block stamped with the filesystem's UUID and the root's address.
  const dev0 = await openBytes(pristine);
  t.after(() => dev0.close());
  const top = (await Btrfs.open(dev0)).top;
  assert.ok(top.level >= 1, `fs tree level ${top.level}`);
  const fsid = pristine.slice(SB + 0x20, SB + 0x30);
  let node = -1;
  for (let at = 0; at + 4096 <= pristine.length && node < 0; at += 4096) {
    if (at !== SB && fsid.every((x, i) => pristine[at + 0x20 + i] === x) && HEADER.get(pristine, 'bytenr', at) === BigInt(top.bytenr)) node = at;
  }
  assert.ok(node > 0, 'an internal node of the fs tree');
  const nritems = HEADER.get(pristine, 'nritems', node);
  assert.ok(nritems >= 2, `${nritems} pointers`);
  const ptr = (i: number) => node + HEADER.size + i * KEY_PTR.size;
  const fixCsum = (b: Uint8Array, at: number, size: number) => new DataView(b.buffer).setUint32(at, crc32c(b.subarray(at + 32, at + size)), true);
  const walkAll = async (b: Uint8Array) => {
    const dev = await openBytes(b);
    t.after(() => dev.close());
    const fs = await Btrfs.open(dev);
    return readerTree(fs);
  };
  const variant = (patch: (b: Uint8Array) => void, fix = true) => {
    const b = pristine.slice();
    patch(b);
    if (fix) fixCsum(b, node, 4096);
    return b;
  };
  assert.equal((await walkAll(pristine)).size, 803);
  await assert.rejects(walkAll(variant((b) => { b[ptr(0) + 20] ^= 1; }, false)), /checksum mismatch in tree block/);
  // Two pointers swapped: keys out of order.
  await expectDiskError(walkAll(variant((b) => {
    const first = b.slice(ptr(0), ptr(1));
    b.copyWithin(ptr(0), ptr(1), ptr(2));
    b.set(first, ptr(1));
  })), 'ECORRUPT');
  // The last pointer (to the last files' inodes, which a walk reads) to the block before it (a fan-out of one
  // block, or a loop): its first key is not the pointer's.
  const last = ptr(nritems - 1);
  await expectDiskError(walkAll(variant((b) => KEY_PTR.encode({ blockptr: KEY_PTR.get(b, 'blockptr', ptr(nritems - 2)) }, b, last))), 'ECORRUPT');
  // A pointer to itself, and one outside every chunk.
  await expectDiskError(walkAll(variant((b) => KEY_PTR.encode({ blockptr: HEADER.get(b, 'bytenr', node) }, b, last))), 'ECORRUPT');
  await assert.rejects(walkAll(variant((b) => KEY_PTR.encode({ blockptr: 1n << 50n }, b, last))), /in no chunk/);
  await expectDiskError(walkAll(variant((b) => HEADER.encode({ nritems: 0x7fffffff }, b, node))), 'ECORRUPT');
  // Superblock: an unknown checksum type, several devices, an unknown incompatible feature.
  const sbVariant = (values: Parameters<typeof SUPERBLOCK.encode>[0]) => {
    const b = pristine.slice();
    SUPERBLOCK.encode(values, b, SB);
    fixCsum(b, SB, 4096);
    return b;
  };
  await assert.rejects(walkAll(sbVariant({ csumType: 7 })), (e: Error) => isDiskError(e, 'EUNSUPPORTED') && /checksum type 7/.test(e.message));
  await expectDiskError(walkAll(sbVariant({ numDevices: 2n })), 'EUNSUPPORTED');
  await expectDiskError(walkAll(sbVariant({ incompatFlags: 1n << 13n })), 'EUNSUPPORTED');
});
