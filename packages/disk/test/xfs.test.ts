/**
 * The XFS reader against mkfs.xfs -p (a proto file: files, modes with set-id bits, owners,
 * symlinks local and remote, devices, FIFOs, directories of every size), xfs_db (the forms
 * each directory and file ended up in) and, for v5, the kernel: the image is loop-mounted to
 * fragment it (a B-tree directory, a fragmented file, a sparse file of hundreds of extents)
 * and then mounted read-only as the oracle every field is compared against. v4 (-m crc=0),
 * which this kernel no longer mounts, is compared against the proto file and xfs_db. Hostile
 * images (CRC mismatches, a directory containing its ancestor, extents and B-tree pointers
 * outside the filesystem, huge extent counts) end in typed errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, statfs, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, needsLoopDevices, tempDir } from '@diskhub/testkit';
import { crc32c } from '../src/crc32c.js';
import { INODE_CORE, openXfs, type Xfs, type XfsNode } from '../src/xfs/index.js';
import { directoryTree, expectDiskError, openBytes, openRaw, readerTree, readWhole, sorted, without, type Tree, type TreeEntry, lookupPath } from './fs-tree.js';

interface ProtoNode {
  name: string;
  type: '-' | 'd' | 'l' | 'c' | 'b' | 'p';
  perm: number;
  uid: number;
  gid: number;
  data?: Uint8Array;
  target?: string;
  dev?: [number, number];
  children?: ProtoNode[];
}

const file = (name: string, data: string | Uint8Array, perm = 0o644, uid = 0, gid = 0): ProtoNode =>
  ({ name, type: '-', perm, uid, gid, data: typeof data === 'string' ? new TextEncoder().encode(data) : data });
const dir = (name: string, children: ProtoNode[], perm = 0o755, uid = 0, gid = 0): ProtoNode => ({ name, type: 'd', perm, uid, gid, children });
const LONG_TARGET = `/${'segment/'.repeat(100)}end`;
const entries = (n: number, nameLength: number) =>
  Array.from({ length: n }, (_, i) => file(`e${String(i).padStart(5, '0')}-${'n'.repeat(nameLength)}`, i % 7 === 0 ? `entry ${i}\n` : ''));

/** What mkfs.xfs -p is given: every kind of node, and directories sized for each directory form. */
function protoTree(): ProtoNode[] {
  const big = new Uint8Array(3 << 20);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  return [
    file('hello.txt', 'hello, xfs\n'),
    file('empty', ''),
    file('big.bin', big, 0o600, 1000, 1000),
    file('setuid', '#!/bin/sh\n', 0o4755),
    file('setgid', 'x', 0o2750, 0, 50),
    { name: 'short-link', type: 'l', perm: 0o777, uid: 0, gid: 0, target: '../etc/hostname' },
    // Longer than an inode's data fork: a remote symlink.
    { name: 'long-link', type: 'l', perm: 0o777, uid: 7, gid: 8, target: LONG_TARGET },
    { name: 'null', type: 'c', perm: 0o666, uid: 0, gid: 0, dev: [1, 3] },
    { name: 'sda7', type: 'b', perm: 0o660, uid: 0, gid: 6, dev: [8, 7] },
    { name: 'fifo', type: 'p', perm: 0o600, uid: 0, gid: 0 },
    dir('shortform', [file('a', 'a'), dir('inner', [file('b', 'b')], 0o700, 3, 4)]),
    dir('block', entries(40, 20)),
    dir('leaf', entries(250, 40)),
    dir('node', entries(2000, 40), 0o750, 10, 20),
    // Proto files split on white space: no spaces in names.
    dir('Ünïcödé-dïr', [file('ñame.txt', 'unicode\n')]),
  ];
}

/** A proto file for the tree, its regular files' bytes written under `srcDir`. */
async function writeProto(nodes: ProtoNode[], srcDir: string): Promise<string> {
  let n = 0;
  const lines = ['boot-image-unused', '0 0', 'd--755 0 0'];
  const mode = (p: ProtoNode) => `${p.type}${p.perm & 0o4000 ? 'u' : '-'}${p.perm & 0o2000 ? 'g' : '-'}${(p.perm & 0o777).toString(8).padStart(3, '0')}`;
  const emit = async (list: ProtoNode[], depth: number) => {
    for (const p of list) {
      const head = `${' '.repeat(depth)}${p.name} ${mode(p)} ${p.uid} ${p.gid}`;
      if (p.type === '-') {
        const path = join(srcDir, `f${n++}`);
        await writeFile(path, p.data!);
        lines.push(`${head} ${path}`);
      } else if (p.type === 'l') lines.push(`${head} ${p.target}`);
      else if (p.type === 'c' || p.type === 'b') lines.push(`${head} ${p.dev![0]} ${p.dev![1]}`);
      else if (p.type === 'p') lines.push(head);
      else {
        lines.push(head);
        await emit(p.children!, depth + 1);
        lines.push(`${' '.repeat(depth + 1)}$`);
      }
    }
  };
  await emit(nodes, 1);
  lines.push('$', '');
  const proto = join(srcDir, 'proto');
  await writeFile(proto, lines.join('\n'));
  return proto;
}

/** The tree the proto describes, as the reader should show it (mtimes left out: mkfs stamps its own). */
function expectedTree(nodes: ProtoNode[]): Map<string, Partial<TreeEntry>> {
  const out = new Map<string, Partial<TreeEntry>>();
  const kinds = { '-': 'file', d: 'directory', l: 'symlink', c: 'char', b: 'block', p: 'fifo' } as const;
  const walk = (list: ProtoNode[], path: string) => {
    for (const p of list) {
      const e: Partial<TreeEntry> = { kind: kinds[p.type], perm: p.perm, uid: p.uid, gid: p.gid, nlink: 1 };
      if (p.type === '-') Object.assign(e, { size: p.data!.length, md5: createHash('md5').update(p.data!).digest('hex') });
      if (p.type === 'l') Object.assign(e, { size: Buffer.byteLength(p.target!), target: p.target });
      if (p.type === 'c' || p.type === 'b') Object.assign(e, { size: 0, rdev: `${p.dev![0]}:${p.dev![1]}` });
      if (p.type === 'p') e.size = 0;
      if (p.type === 'd') e.nlink = 2 + p.children!.filter((c) => c.type === 'd').length;
      out.set(`${path}/${p.name}`, e);
      if (p.children) walk(p.children, `${path}/${p.name}`);
    }
  };
  walk(nodes, '');
  return out;
}

async function makeXfs(t: Parameters<typeof tempDir>[0], mkfsArgs: string[], keep: (n: ProtoNode) => boolean = () => true) {
  const tmp = await tempDir(t);
  const src = join(tmp, 'src');
  await mkdir(src);
  const nodes = protoTree().filter(keep);
  const proto = await writeProto(nodes, src);
  const img = join(tmp, 'xfs.img');
  execFileSync('truncate', ['-s', '64M', img]);
  // mkfs.xfs refuses filesystems under 300 MB unless it runs under fstests (these variables); small keeps the tests quick.
  const env = { ...process.env, TEST_DIR: tmp, TEST_DEV: img, QA_CHECK_FS: 'xfs' };
  execFileSync('mkfs.xfs', ['-q', ...mkfsArgs, '-p', proto, img], { stdio: ['ignore', 'ignore', 'pipe'], env });
  return { img, nodes, tmp };
}

/** xfs_db's view of an inode: its data fork format and the file offsets (in blocks) of its extents. */
function xfsDbInode(img: string, ino: bigint): { format: string; offsets: number[] } {
  const out = execFileSync('xfs_db', ['-r', '-c', `inode ${ino}`, '-c', 'print core.format', '-c', 'bmap', img]).toString();
  const format = /core\.format = \d+ \((\w+)\)/.exec(out)?.[1] ?? '?';
  const offsets = [...out.matchAll(/data offset (\d+) startblock/g)].map((m) => Number(m[1]));
  return { format, offsets };
}

/** Directory forms (da_format.h): leaf blocks sit at 32 GiB in the data fork, the free index of a node directory at 64 GiB. */
const LEAF_BLOCK = 2 ** 35 / 4096;
const FREE_BLOCK = 2 ** 36 / 4096;

async function checkDirectoryForms(fs: Xfs, img: string) {
  const form = async (path: string) => xfsDbInode(img, (await lookupPath(fs, path)).ino);
  assert.equal((await form('/shortform')).format, 'local');
  const block = await form('/block');
  assert.deepEqual([block.format, block.offsets.includes(LEAF_BLOCK)], ['extents', false]);
  const leaf = await form('/leaf');
  assert.deepEqual([leaf.offsets.includes(LEAF_BLOCK), leaf.offsets.includes(FREE_BLOCK)], [true, false], JSON.stringify(leaf));
  const node = await form('/node');
  assert.ok(node.offsets.includes(FREE_BLOCK), JSON.stringify(node));
}

test('xfs v4 (mkfs.xfs -m crc=0 -p proto): every node as the proto file says, directories in short-form, block, leaf and node form', needs('mkfs.xfs', 'xfs_db'), async (t) => {
  const { img, nodes } = await makeXfs(t, ['-m', 'crc=0']);
  const dev = await openRaw(img);
  t.after(() => dev.close());
  const fs = await openXfs(dev);
  assert.equal(fs.v5, false);
  const ours = await readerTree(fs);
  const got = without(ours, 'mtime');
  for (const e of got.values()) if (e.kind === 'directory') delete e.size;
  assert.deepEqual(sorted(got), sorted(expectedTree(nodes)));
  await checkDirectoryForms(fs, img);
  // Times and sizes as xfs_db prints them.
  const hello = await lookupPath(fs, '/hello.txt');
  const db = execFileSync('xfs_db', ['-r', '-c', `inode ${hello.ino}`, '-c', 'print core.mtime.sec core.mtime.nsec core.size', img]).toString();
  assert.equal(Number(/core\.size = (\d+)/.exec(db)![1]), hello.stat.size);
  // Seconds since 1970 in a double keep the nanoseconds to within a microsecond.
  assert.ok(Math.abs(Number(/core\.mtime\.nsec = (\d+)/.exec(db)![1]) - (hello.stat.mtime % 1) * 1e9) < 1000, db);
});

test('xfs v5 (mkfs.xfs -p proto, then fragmented through a loop mount): the tree equals a read-only kernel mount field by field; B-tree directory and extent lists, sparse files', { ...needs('mkfs.xfs', 'xfs_db', 'xfs_io'), ...needsLoopDevices() }, async (t) => {
  // mkfs.xfs 6.1 writes a v5 remote symlink without its block header (the hostile test shows the kernel's verdict): the mount makes this one.
  const { img, nodes, tmp } = await makeXfs(t, ['-d', 'agcount=2'], (n) => n.name !== 'long-link');
  const mnt = join(tmp, 'mnt');
  await mkdir(mnt);
  execFileSync('mount', ['-o', 'loop', img, mnt]);
  try {
    await symlink(LONG_TARGET, join(mnt, 'long-link'));
    // Fragment the free space: fill it, leave 4 KiB holes, then grow a directory and a file into them.
    const space = await statfs(mnt);
    const free = Number(space.bavail) * Number(space.bsize);
    execFileSync('xfs_io', ['-f', '-c', `falloc 0 ${free - (16 << 20)}`, join(mnt, 'filler')]);
    await mkdir(join(mnt, 'holes'));
    for (let i = 0; i < 2000; i++) await writeFile(join(mnt, 'holes', `h${i}`), Buffer.alloc(4096, 1));
    for (let i = 0; i < 2000; i += 2) await rm(join(mnt, 'holes', `h${i}`));
    execFileSync('sync');
    await mkdir(join(mnt, 'btree-dir'));
    for (let i = 0; i < 1500; i++) await writeFile(join(mnt, 'btree-dir', `${String(i).padStart(5, '0')}-${'long-name-'.repeat(10)}`), '');
    // Two files grown 4 KiB at a time in turn, each piece allocated by its fsync: their blocks interleave.
    const frag = Buffer.alloc(600 << 10);
    for (let i = 0; i < frag.length; i++) frag[i] = (i * 7) & 0xff;
    const a = openSync(join(mnt, 'fragmented.bin'), 'w');
    const b = openSync(join(mnt, 'holes', 'interleaved'), 'w');
    for (let i = 0; i < frag.length; i += 4096) {
      for (const fd of [a, b]) {
        writeSync(fd, frag, i, 4096, i);
        fsyncSync(fd);
      }
    }
    closeSync(a);
    closeSync(b);
    await rm(join(mnt, 'filler'));
    // Data at every other 64 KiB, holes between: hundreds of extents.
    execFileSync('xfs_io', ['-f', ...Array.from({ length: 400 }, (_, i) => ['-c', `pwrite -q -S ${i & 0xff} ${i * 131072} 4096`]).flat(), join(mnt, 'sparse.bin')]);
  } finally {
    execFileSync('umount', [mnt]);
  }
  const dev = await openRaw(img);
  t.after(() => dev.close());
  const fs = await openXfs(dev);
  assert.equal(fs.v5, true);
  const ours = await readerTree(fs, { chunk: 100_003 });
  execFileSync('mount', ['-o', 'loop,ro', img, mnt]);
  let kernel: Tree;
  try {
    kernel = await directoryTree(mnt);
  } finally {
    execFileSync('umount', [mnt]);
  }
  assert.deepEqual(sorted(ours), sorted(kernel));
  // And the proto's nodes are all there as given.
  const fromProto = expectedTree(nodes);
  for (const [p, e] of fromProto) {
    const got: Partial<TreeEntry> = { ...ours.get(p) };
    delete got.mtime;
    if (e.kind === 'directory') delete got.size;
    assert.deepEqual(got, e, p);
  }
  await checkDirectoryForms(fs, img);
  // The forms the mount left: a B-tree directory, a fragmented file and a sparse file with B-tree extent lists.
  for (const p of ['/btree-dir', '/fragmented.bin', '/sparse.bin']) {
    const node = await lookupPath(fs, p);
    assert.equal(xfsDbInode(img, node.ino).format, 'btree', p);
  }
  const sparse = await lookupPath(fs, '/sparse.bin');
  const bytes = await readWhole(fs, sparse, 5000);
  assert.deepEqual([bytes[0], bytes[4095], bytes[4096], bytes[131072], bytes[399 * 131072 + 4095]], [0, 0, 0, 1, 399 & 0xff]);
});

/** Where an inode lies in the image (the same arithmetic as the reader; checked against xfs_db's 'convert'). */
function inodePos(fs: Xfs, ino: bigint): number {
  const sb = fs.sb;
  const agno = Number(ino >> BigInt(sb.inopbLog + sb.agBlkLog));
  const agbno = Number((ino >> BigInt(sb.inopbLog)) & BigInt(2 ** sb.agBlkLog - 1));
  return (agno * sb.agBlocks + agbno) * sb.blockSize + Number(ino & BigInt(sb.inodesPerBlock - 1)) * sb.inodeSize;
}

test('xfs hostile: CRC mismatches (the headerless v5 remote symlink among them), a directory containing its ancestor, an extent and an inode number outside the filesystem, a huge extent count', needs('mkfs.xfs', 'xfs_db'), async (t) => {
  const { img } = await makeXfs(t, []);
  const pristine = new Uint8Array(await readFile(img));
  const dev0 = await openRaw(img);
  const fs0 = await openXfs(dev0);
  const ino = async (p: string) => (await lookupPath(fs0, p)).ino;
  const shortform = await ino('/shortform');
  const big = await ino('/big.bin');
  const hello = await ino('/hello.txt');
  const rootIno = fs0.sb.rootIno;
  const at = (i: bigint) => {
    const p = inodePos(fs0, i);
    const db = execFileSync('xfs_db', ['-r', '-c', `convert inode ${i} byte`, img]).toString();
    assert.equal(Number(/\((\d+)\)/.exec(db)?.[1]), p, `xfs_db places inode ${i} at ${db}`);
    return p;
  };
  const inodeSize = fs0.sb.inodeSize;
  const fixCrc = (b: Uint8Array, pos: number) => {
    const one = b.slice(pos, pos + inodeSize);
    one.fill(0, 100, 104);
    new DataView(b.buffer).setUint32(pos + 100, crc32c(one), true);
  };
  t.after(() => dev0.close());
  const variant = async (name: string, patch: (b: Uint8Array) => void): Promise<Xfs> => {
    const b = pristine.slice();
    patch(b);
    const dev = await openBytes(b, name);
    t.after(() => dev.close());
    return openXfs(dev);
  };
  // A bit flipped in hello.txt's inode: its CRC no longer matches.
  const flipped = await variant('flip', (b) => { b[at(hello) + 9] ^= 1; });
  await assert.rejects(flipped.lookup(await flipped.root(), 'hello.txt'), /CRC mismatch in inode/);
  await expectDiskError(flipped.lookup(await flipped.root(), 'hello.txt'), 'ECORRUPT');
  // mkfs.xfs -p wrote long-link's block without the v5 header: xfs_db finds the CRC bad, the reader refuses it.
  const longLink = (await fs0.lookup(await fs0.root(), 'long-link'))!;
  assert.match(execFileSync('xfs_db', ['-r', '-c', `inode ${longLink.ino}`, '-c', 'dblock 0', '-c', 'print crc', img], { stdio: ['ignore', 'pipe', 'pipe'] }).toString(), /\(bad\)/);
  await expectDiskError(fs0.readlink(longLink), 'ECORRUPT');
  // The superblock's CRC.
  await expectDiskError(variant('sb', (b) => { b[130] ^= 1; }), 'ECORRUPT');
  // shortform/inner's entry names the root (CRC made right): a walk would not end.
  const loop = await variant('loop', (b) => {
    const pos = at(shortform);
    const fork = pos + 176;
    const sf = Buffer.from(b.subarray(fork, fork + 200));
    const nameAt = sf.indexOf('inner');
    // Short-form entry: name, file type, 4-byte inode number.
    new DataView(b.buffer).setUint32(fork + nameAt + 5 + 1, Number(rootIno), false);
    fixCrc(b, pos);
  });
  await expectDiskError(loop.lookup((await loop.lookup(await loop.root(), 'shortform'))!, 'inner'), 'ELOOP');
  // big.bin's extent moved past the end of the filesystem.
  const outside = await variant('outside', (b) => {
    const pos = at(big);
    const rec = pos + 176;
    // startblock is bits 21-72 of the 128-bit record: set its high bits.
    b[rec + 7] |= 0x1f;
    b[rec + 8] = 0xff;
    fixCrc(b, pos);
  });
  const bigNode = (await outside.lookup(await outside.root(), 'big.bin'))!;
  await expectDiskError(outside.read(bigNode, new Uint8Array(10), 0), 'ECORRUPT');
  // big.bin claims four billion extents.
  const many = await variant('many', (b) => {
    const pos = at(big);
    INODE_CORE.encode({ nextents: 0xffffffff }, b, pos);
    fixCrc(b, pos);
  });
  await expectDiskError(many.read((await many.lookup(await many.root(), 'big.bin'))!, new Uint8Array(10), 0), 'ELIMIT');
  // An inode number outside the filesystem in a directory entry.
  const badIno = await variant('bad-ino', (b) => {
    const pos = at(shortform);
    const fork = pos + 176;
    const nameAt = Buffer.from(b.subarray(fork, fork + 200)).indexOf('inner');
    new DataView(b.buffer).setUint32(fork + nameAt + 5 + 1, 0xfffffff0, false);
    fixCrc(b, pos);
  });
  await expectDiskError(badIno.lookup((await badIno.lookup(await badIno.root(), 'shortform'))!, 'inner'), 'ECORRUPT');
});
