/**
 * The ISO 9660 reader against genisoimage (the maker) and isoinfo (a second reader): Rock
 * Ridge trees equal the source directory genisoimage was given (names, kinds, modes, owners,
 * links, symlink targets, device numbers, mtimes, bytes), deep directories come back from
 * rr_moved, Joliet and plain ISO names equal isoinfo's listings as isofs shows them, and
 * hostile images end in typed errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lutimes, mkdir, readFile, symlink, utimes, writeFile, chown, link, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir } from '@diskhub/testkit';
import {
  DIRECTORY_RECORD, PRIMARY_VOLUME_DESCRIPTOR, SUSP_CE, openIso9660, isoName, u32both, systemUseOffset,
} from '../src/iso9660/index.js';
import { directoryTree, openRaw, readerTree, readWhole, sorted, without, type Tree, expectDiskError, lookupPath } from './fs-tree.js';

const isRoot = process.getuid?.() === 0;
const T0 = new Date('2021-03-04T05:06:07Z');

/** A source tree with what Rock Ridge carries: modes, owners, hard links, symlinks, devices, a FIFO, long names, deep and wide directories. */
async function makeSource(dir: string): Promise<void> {
  const w = async (p: string, data: string | Uint8Array, mode = 0o644) => {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), data);
    await chmod(join(dir, p), mode);
  };
  await w('hello.txt', 'hello, world\n');
  await w('empty', '', 0o600);
  await w('tools/run.sh', '#!/bin/sh\necho hi\n', 0o755);
  await w('tools/setuid', 'x', 0o4755);
  const big = new Uint8Array((1 << 20) + 12345);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  await w('big.bin', big);
  await w('Mixed Case Name.TXT', 'case\n');
  await w(`${'long-name-'.repeat(15)}.txt`, 'long\n');
  for (let i = 0; i < 300; i++) await w(`many/file-${String(i).padStart(3, '0')}.dat`, `entry ${i}\n`);
  await w('deep/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/leaf.txt', 'deep leaf\n');
  await w('deep/d1/d2/d3/d4/d5/d6/d7/d8/other/x', 'x\n');
  await mkdir(join(dir, 'links'));
  await symlink('../hello.txt', join(dir, 'links/rel'));
  await symlink('/etc/passwd', join(dir, 'links/abs'));
  await symlink('./a/../b/./c', join(dir, 'links/dots'));
  await symlink('/', join(dir, 'links/root'));
  // Long enough to continue in a CE area; genisoimage 1.1.11 wraps an SL entry's length past 255 bytes, so not longer.
  await symlink(`${'component/'.repeat(20)}end`, join(dir, 'links/long'));
  await symlink('../tools', join(dir, 'links/dir'));
  await link(join(dir, 'hello.txt'), join(dir, 'links/hard'));
  execFileSync('mkfifo', [join(dir, 'fifo')]);
  if (isRoot) {
    execFileSync('mknod', [join(dir, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [join(dir, 'loop7'), 'b', '7', '7']);
    await chown(join(dir, 'tools/run.sh'), 1000, 100);
    await chown(join(dir, 'tools'), 1001, 1001);
  }
  // Every mtime fixed (after the last change inside each directory).
  for (const [p, e] of await directoryTree(dir)) await (e.kind === 'symlink' ? lutimes : utimes)(join(dir, p), T0, T0);
  await utimes(dir, T0, T0);
}

async function isoFrom(t: Parameters<typeof tempDir>[0], flags: string[]) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(src);
  await makeSource(src);
  const iso = join(dir, 'image.iso');
  execFileSync('genisoimage', ['-quiet', ...flags, '-V', 'TESTVOL', '-o', iso, src]);
  return { src, iso, dir };
}

/** isoinfo's listing (-l, with -J or -R as given): path → kind and size. */
function isoinfoTree(iso: string, flags: string[]): Map<string, { dir: boolean; size: number }> {
  const out = new Map<string, { dir: boolean; size: number }>();
  let dir = '';
  for (const line of execFileSync('isoinfo', ['-l', ...flags, '-i', iso], { maxBuffer: 64 << 20 }).toString('latin1').split('\n')) {
    const head = /^Directory listing of (.*)$/.exec(line);
    if (head) { dir = head[1]!.replace(/\/$/, ''); continue; }
    const m = /^([d-])\S+\s+\d+\s+\d+\s+\d+\s+(\d+)\s+\w+\s+\d+\s+\d+\s+\[\s*\d+\s+\d+\]\s+(.*?) ?$/.exec(line);
    if (!m || m[3] === '.' || m[3] === '..') continue;
    out.set(`${dir}/${m[3]}`, { dir: m[1] === 'd', size: Number(m[2]) });
  }
  return out;
}

test('iso9660 Rock Ridge (genisoimage -R -J): the tree equals the source, deep directories relocated back, Joliet ignored', needs('genisoimage', 'isoinfo'), async (t) => {
  const { src, iso } = await isoFrom(t, ['-R', '-J', '-joliet-long']);
  const dev = await openRaw(iso);
  t.after(() => dev.close());
  const fs = await openIso9660(dev);
  assert.equal(fs.type, 'iso9660');
  const ours = await readerTree(fs);
  // genisoimage relocates directories deeper than 8 levels into /rr_moved (RRIP §4.1.5); isofs lists it, as we do.
  assert.equal(ours.get('/rr_moved')?.kind, 'directory');
  for (const p of [...ours.keys()]) if (p.startsWith('/rr_moved')) ours.delete(p);
  const expected = await directoryTree(src);
  // Directory sizes are the ISO's (whole sectors); directory link counts genisoimage computes itself.
  const dirsLess = (tree: Tree) => {
    const m = without(tree);
    for (const [p, e] of m) if (e.kind === 'directory') { delete e.size; delete e.nlink; }
    return m;
  };
  assert.deepEqual(sorted(dirsLess(ours)), sorted(dirsLess(expected)));
  // The relocated directory is where it was, with its attributes, and its RE copy is hidden.
  const root = await fs.root();
  let node = root;
  for (const part of 'deep/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10'.split('/')) node = (await fs.lookup(node, part))!;
  assert.equal(node.stat.kind, 'directory');
  const leaf = (await fs.lookup(node, 'leaf.txt'))!;
  assert.equal(new TextDecoder().decode(await readWhole(fs, leaf)), 'deep leaf\n');
  // isoinfo sees the relocation: the deep directory's contents under /rr_moved.
  const info = isoinfoTree(iso, ['-R']);
  assert.ok([...info.keys()].some((p) => p.startsWith('/rr_moved/') && p.endsWith('/leaf.txt')), [...info.keys()].filter((p) => p.startsWith('/rr_')).join(' '));
  assert.equal((await fs.lookup(root, 'no such name')), null);
});

test('iso9660 Joliet only (genisoimage -J): names and bytes as isoinfo -J shows them, isofs defaults for the rest', needs('genisoimage', 'isoinfo'), async (t) => {
  const { iso } = await isoFrom(t, ['-J', '-joliet-long']);
  const dev = await openRaw(iso);
  t.after(() => dev.close());
  const fs = await openIso9660(dev);
  const ours = await readerTree(fs);
  const info = isoinfoTree(iso, ['-J']);
  const shown = new Map([...info].map(([p, e]) => [p.replace(/;1$/, ''), e]));
  assert.deepEqual(sorted(new Map([...ours].map(([p, e]) => [p, { dir: e.kind === 'directory', size: e.size }]))), sorted(shown));
  assert.ok(ours.has('/Mixed Case Name.TXT'));
  for (const e of ours.values()) {
    // isofs without Rock Ridge: r-x for all, root's, one link; symlinks are not carried.
    assert.deepEqual([e.perm, e.uid, e.gid, e.nlink], [0o555, 0, 0, 1]);
    assert.notEqual(e.kind, 'symlink');
  }
  const hello = await fs.lookup(await fs.root(), 'hello.txt');
  assert.equal(new TextDecoder().decode(await readWhole(fs, hello!)), 'hello, world\n');
  const extracted = execFileSync('isoinfo', ['-J', '-x', '/big.bin', '-i', iso], { maxBuffer: 64 << 20 });
  assert.equal(ours.get('/big.bin')!.md5, createHash('md5').update(extracted).digest('hex'));
});

test('iso9660 plain (no -R, no -J, deep directories kept by -D): lower-case names without ;1, bytes equal isoinfo -x', needs('genisoimage', 'isoinfo'), async (t) => {
  const { iso } = await isoFrom(t, ['-D']);
  const dev = await openRaw(iso);
  t.after(() => dev.close());
  const fs = await openIso9660(dev);
  const ours = await readerTree(fs);
  const info = isoinfoTree(iso, []);
  const asShown = (p: string) => p.split('/').map((c) => isoName(new TextEncoder().encode(c))).join('/');
  assert.deepEqual(sorted(new Map([...ours].map(([p, e]) => [p, { dir: e.kind === 'directory', size: e.size }]))),
    sorted(new Map([...info].map(([p, e]) => [asShown(p), e]))));
  assert.ok(ours.has('/hello.txt') && ours.has('/many/file_299.dat') && ours.has('/deep/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/leaf.txt'), [...ours.keys()].slice(0, 8).join(' '));
  // Bytes of every file equal isoinfo's extraction of the ISO name.
  for (const [p, e] of info) {
    if (e.dir || e.size > 2 << 20) continue;
    const want = execFileSync('isoinfo', ['-x', p, '-i', iso], { maxBuffer: 64 << 20 });
    const node = await lookupPath(fs, asShown(p));
    assert.ok(Buffer.from(await readWhole(fs, node)).equals(want), p);
  }
  // isoName is isofs's map=normal.
  const n = (s: string) => isoName(new TextEncoder().encode(s));
  assert.deepEqual([n('README.TXT;1'), n('NOEXT.;1'), n('A;2'), n('DIR')], ['readme.txt', 'noext', 'a.2', 'dir']);
});

test('iso9660 multi-extent: consecutive records of one name read as one file (genisoimage image, records joined by hand)', needs('genisoimage'), async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'src'));
  // Two files whose ISO names differ in one letter and whose records follow each other in the root.
  await writeFile(join(dir, 'src', 'parta'), Buffer.alloc(3000, 0x41));
  await writeFile(join(dir, 'src', 'partb'), Buffer.alloc(5000, 0x42));
  const iso = join(dir, 'm.iso');
  execFileSync('genisoimage', ['-quiet', '-o', iso, join(dir, 'src')]);
  const b = new Uint8Array(await readFile(iso));
  const rootRec = DIRECTORY_RECORD.decode(PRIMARY_VOLUME_DESCRIPTOR.decode(b, 32768).rootDirectoryRecord);
  const at = (name: string) => Buffer.from(b).indexOf(name, rootRec.extent * 2048) - DIRECTORY_RECORD.size;
  const a = at('PARTA.;1');
  const bb = at('PARTB.;1');
  assert.equal(a + b[a]!, bb, 'the two records are neighbours');
  b[a + 25] |= 0x80; // §9.1.6 bit 7: the file continues in the next record
  b[bb + DIRECTORY_RECORD.size + 4] = 0x41; // the second record gets the same name
  await writeFile(iso, b);
  const dev = await openRaw(iso);
  t.after(() => dev.close());
  const fs = await openIso9660(dev);
  const names: string[] = [];
  for await (const e of fs.readdir(await fs.root())) names.push(e.name);
  assert.deepEqual(names, ['parta']);
  const f = (await fs.lookup(await fs.root(), 'parta'))!;
  assert.equal(f.stat.size, 8000);
  const bytes = await readWhole(fs, f, 777);
  assert.deepEqual([bytes[0], bytes[2999], bytes[3000], bytes[7999]], [0x41, 0x41, 0x42, 0x42]);
});

test('iso9660 hostile: a directory containing its ancestor, an extent past the end, a looping CE chain, not an ISO', needs('genisoimage'), async (t) => {
  const { iso, dir } = await isoFrom(t, ['-R']);
  const pristine = new Uint8Array(await readFile(iso));
  const rootRec = DIRECTORY_RECORD.decode(PRIMARY_VOLUME_DESCRIPTOR.decode(pristine, 32768).rootDirectoryRecord);
  const recordOf = (b: Uint8Array, isoId: string, from: number) => Buffer.from(b).indexOf(isoId, from) - DIRECTORY_RECORD.size;
  const variant = async (name: string, patch: (b: Uint8Array) => void) => {
    const b = pristine.slice();
    patch(b);
    const p = join(dir, `${name}.iso`);
    await writeFile(p, b);
    const dev = await openRaw(p);
    t.after(() => dev.close());
    return openIso9660(dev);
  };
  // /tools points back at the root: a walk would never end; the lookup is ELOOP.
  const loop = await variant('loop', (b) => u32both.write(b, recordOf(b, 'TOOLS', rootRec.extent * 2048) + 2, rootRec.extent));
  await expectDiskError(loop.lookup(await loop.root(), 'tools'), 'ELOOP');
  // big.bin's extent lies past the end of the image.
  const past = await variant('past', (b) => u32both.write(b, recordOf(b, 'BIG.BIN;1', rootRec.extent * 2048) + 2, 0x7fffff00));
  const big = (await past.lookup(await past.root(), 'big.bin'))!;
  await expectDiskError(past.read(big, new Uint8Array(10), 0), 'ECORRUPT');
  // The long symlink's continuation area (CE) continues in itself.
  const ce = await variant('ce', (b) => {
    const linksRec = DIRECTORY_RECORD.decode(b, recordOf(b, 'LINKS', rootRec.extent * 2048));
    const rec = recordOf(b, 'LONG.;1', linksRec.extent * 2048);
    const r = DIRECTORY_RECORD.decode(b, rec);
    const su = rec + systemUseOffset(r.identifierLength);
    const at = Buffer.from(b.subarray(su, rec + r.length)).indexOf('CE') + su;
    const c = SUSP_CE.decode(b, at);
    SUSP_CE.encode({ signature: 'CE', length: SUSP_CE.size, version: 1, block: c.block, offset: c.offset, continuationLength: SUSP_CE.size }, b, c.block * 2048 + c.offset);
  });
  const links = (await ce.lookup(await ce.root(), 'links'))!;
  await expectDiskError(ce.lookup(links, 'long'), 'ELOOP');
  // Not an ISO at all.
  await expectDiskError(variant('zero', (b) => b.fill(0, 32768, 32768 + 2048)), 'EFORMAT');
});
