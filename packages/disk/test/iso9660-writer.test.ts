/** The ISO 9660 writer, read back by isoinfo (genisoimage) through Rock Ridge, Joliet and the plain primary volume, and by a read-only mount (the kernel's isofs, or fuseiso where the kernel has none). */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, runOk } from '@diskhub/testkit';
import { openIso9660, writeIso9660, type IsoFile } from '../src/iso9660/index.js';
import { RawImage } from '../src/raw/index.js';
import { MemorySource } from '../src/source.js';
import type { FsNode } from '../src/filesystem.js';
import { isDiskError } from '../src/errors.js';

const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** Files exercising directories over several sectors, names that collide in 8.3, empty and multi-sector files. */
function sampleTree(): IsoFile[] {
  const files: IsoFile[] = [];
  for (let i = 0; i < 150; i++) files.push({ path: `many/file-with-a-long-name-${String(i).padStart(3, '0')}.json`, data: new TextEncoder().encode(`{"n": ${i}}`) });
  files.push({ path: 'a/b/c/d/e/f/deep.txt', data: new TextEncoder().encode('deep\n') });
  files.push({ path: 'empty', data: new Uint8Array(0) });
  const big = new Uint8Array(3 * 2048 + 77);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  files.push({ path: 'big.bin', data: big });
  files.push({ path: 'Mixed Case.Name.tar.gz', data: new TextEncoder().encode('x') });
  files.push({ path: 'odd;name?.txt', data: new TextEncoder().encode('odd') });
  return files;
}

test('iso9660 writer: isoinfo reads every path, size and content through Rock Ridge and Joliet', needs('isoinfo'), async (t) => {
  const dir = await tempDir(t);
  const files = sampleTree();
  const iso = join(dir, 't.iso');
  await writeFile(iso, writeIso9660(files, { volumeId: 'config-2', publisherId: 'DISKHUB', time: Date.UTC(2024, 0, 2, 3, 4, 5) / 1000 }));
  const d = await runOk('isoinfo', ['-d', '-i', iso]);
  assert.match(d, /^Volume id: config-2$/m);
  assert.match(d, /^Joliet with UCS level 3 found$/m);
  assert.match(d, /^Rock Ridge signatures version 1 found$/m);
  const expectedPaths = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 1; i <= parts.length; i++) expectedPaths.add(`/${parts.slice(0, i).join('/')}`);
  }
  for (const mode of ['-R', '-J']) {
    const listed = (await runOk('isoinfo', [mode, '-f', '-i', iso])).split('\n').filter(Boolean).map((p) => (mode === '-J' ? p.replace(/;1$/, '') : p));
    // Joliet cannot record ; and ? in names: "_" stands in.
    const expected = [...expectedPaths].map((p) => (mode === '-J' ? p.replace(/[;?]/g, '_') : p));
    assert.deepEqual(new Set(listed), new Set(expected), `isoinfo ${mode} -f`);
  }
  // Sizes and modes from the long listing (Rock Ridge: r--r--r-- files owned by root).
  const long = await runOk('isoinfo', ['-R', '-l', '-i', iso]);
  assert.match(long, /^-r--r--r-- +1 +0 +0 +6221 Jan +2 2024 \[ *\d+ 00\] +big\.bin $/m);
  assert.match(long, /^dr-xr-xr-x +\d+ +0 +0 +\d+ .*many $/m);
  // Byte-exact extraction (isoinfo writes the file to stdout, taken as bytes through a file).
  const extract = async (mode: string, path: string) => {
    const out = join(dir, 'extracted');
    await runOk('sh', ['-c', 'isoinfo "$1" -x "$2" -i "$3" > "$4"', 'sh', mode, path, iso, out]);
    return readFile(out);
  };
  for (const f of [files[0]!, files[149]!, ...files.slice(150)]) {
    assert.equal(md5(await extract('-R', `/${f.path}`)), md5(f.data), `-R -x /${f.path}`);
    assert.equal(md5(await extract('-J', `/${f.path.replace(/[;?]/g, '_')};1`)), md5(f.data), `-J -x /${f.path}`);
  }
  // The plain primary volume: unique 8.3 names.
  const plain = (await runOk('isoinfo', ['-f', '-i', iso])).split('\n').filter((p) => p.startsWith('/MANY/'));
  assert.equal(new Set(plain).size, 150);
});

test('iso9660 writer: a read-only mount shows identical files (the kernel\'s isofs, else fuseiso)', async (t) => {
  // This machine's kernel has no isofs (/proc/filesystems), so a loop mount cannot read ISO 9660
  // here; fuseiso is another, independent ISO 9660 reader that mounts through FUSE.
  const kernelHasIsofs = (await readFile('/proc/filesystems', 'utf8')).includes('iso9660');
  const dir = await tempDir(t);
  const files = sampleTree();
  const iso = join(dir, 't.iso');
  await writeFile(iso, writeIso9660(files, { volumeId: 'cidata' }));
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  if (kernelHasIsofs) await runOk('mount', ['-o', 'loop,ro', iso, mnt]);
  else await runOk('fuseiso', [iso, mnt]);
  try {
    for (const f of files) assert.equal(md5(await readFile(join(mnt, f.path))), md5(f.data), f.path);
    assert.equal((await readdir(join(mnt, 'many'))).length, 150);
  } finally {
    await runOk(kernelHasIsofs ? 'umount' : 'fusermount3', kernelHasIsofs ? [mnt] : ['-u', mnt]);
  }
});

test('iso9660 writer: what it cannot record is a typed error', () => {
  const data = new Uint8Array(1);
  const bad: [IsoFile[], RegExp][] = [
    [[{ path: 'a', data }, { path: 'a', data }], /given twice/],
    [[{ path: 'a', data }, { path: 'a/b', data }], /a file and a directory/],
    [[{ path: '../x', data }], /not a file path/],
    [[{ path: `${'n'.repeat(65)}`, data }], /longer than the 64 characters/],
  ];
  for (const [files, message] of bad) {
    assert.throws(() => writeIso9660(files, { volumeId: 'x' }), (e: unknown) => isDiskError(e, 'EINVAL') && message.test((e as Error).message));
  }
});

test('iso9660 writer: the engine\'s own reader sees the same tree, modes, owners and times', async () => {
  const files = sampleTree();
  const time = Date.UTC(2024, 5, 6, 7, 8, 9) / 1000;
  const bytes = writeIso9660(files, { volumeId: 'config-2', time });
  const fs = await openIso9660(new RawImage(new MemorySource(bytes, 't.iso', true), bytes.length, false));
  const seen = new Map<string, Uint8Array>();
  const walk = async (dir: FsNode, prefix: string): Promise<void> => {
    for await (const e of fs.readdir(dir)) {
      const node = (await fs.lookup(dir, e.name))!;
      assert.equal(node.stat.uid, 0);
      assert.equal(node.stat.mtime, time);
      if (node.stat.kind === 'directory') { assert.equal(node.stat.perm, 0o555); await walk(node, `${prefix}${e.name}/`); continue; }
      assert.equal(node.stat.perm, 0o444);
      const buf = new Uint8Array(node.stat.size);
      assert.equal(await fs.read(node, buf, 0), buf.length);
      seen.set(`${prefix}${e.name}`, buf);
    }
  };
  await walk(await fs.root(), '');
  assert.deepEqual([...seen.keys()].sort(), files.map((f) => f.path).sort());
  for (const f of files) assert.equal(md5(seen.get(f.path)!), md5(f.data), f.path);
});

test('iso9660 writer: names Joliet cannot hold stay distinct there', needs('isoinfo'), async (t) => {
  const dir = await tempDir(t);
  const iso = join(dir, 'j.iso');
  const enc = (s: string) => new TextEncoder().encode(s);
  await writeFile(iso, writeIso9660([{ path: 'a;b', data: enc('1') }, { path: 'a_b', data: enc('2') }, { path: 'a?b', data: enc('3') }], { volumeId: 'x' }));
  const joliet = (await runOk('isoinfo', ['-J', '-f', '-i', iso])).split('\n').filter(Boolean).map((p) => p.replace(/;1$/, '')).sort();
  assert.deepEqual(joliet, ['/a_b', '/a_b_1', '/a_b_2']);
  assert.deepEqual((await runOk('isoinfo', ['-R', '-f', '-i', iso])).split('\n').filter(Boolean).sort(), ['/a;b', '/a?b', '/a_b']);
});
