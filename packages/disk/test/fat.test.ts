/**
 * The FAT reader against mkfs.vfat and mtools: FAT12, FAT16 and FAT32 volumes filled by
 * `mcopy -s -m` from a source tree (long, mixed-case, Unicode and 8.3 names, a directory of
 * hundreds of entries, nested directories, a fragmented file, a read-only file) read back with
 * the source's names, bytes and mtimes, the modes and link counts of Linux's default vfat
 * mount, mdir's listing and the label mkfs.vfat wrote. Hostile images end in typed errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir } from '@diskhub/testkit';
import { DIR_ENTRY, LFN_ENTRY, openFat, shortNameOf, type Fat, type FatNode } from '../src/fat/index.js';
import { parseBpb } from '../src/fsid/fat.js';
import { directoryTree, openRaw, readerTree, readWhole, sorted, without, expectDiskError } from './fs-tree.js';

// FAT keeps mtimes in 2-second units: an even second survives.
const T0 = new Date('2021-03-04T05:06:08Z');
const env = { ...process.env, TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' };

async function makeSource(dir: string, files: number): Promise<void> {
  const w = async (p: string, data: string | Uint8Array) => {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), data);
  };
  await w('README.TXT', 'upper 8.3\n');
  await w('lower.txt', 'lower 8.3 (NT case bits)\n');
  await w('MiXeD.TxT', 'mixed case needs a long name\n');
  await w('Mixed Case Long Name.txt', 'long\n');
  await w(`${'A very long name, '.repeat(12)}end.data`, 'two hundred characters\n');
  await w('Sub Dir/inner/Ünïcödé ñame.txt', 'unicode\n');
  await w('Sub Dir/inner/deeper/x', 'x\n');
  await w('empty', '');
  const big = new Uint8Array(300_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
  await w('EFI/BOOT/BOOTX64.EFI', big);
  for (let i = 0; i < files; i++) await w(`many/entry number ${i}.cfg`, `value=${i}\n`);
  for (const p of (await directoryTree(dir)).keys()) await utimes(join(dir, p), T0, T0);
}

/** A FAT volume made by mkfs.vfat and filled by mcopy, with a fragmented file and a read-only one. */
async function makeVolume(t: Parameters<typeof tempDir>[0], bits: 12 | 16 | 32, kib: number, files: number, extra: string[] = []) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await makeSource(src, files);
  const img = join(dir, `fat${bits}.img`);
  execFileSync('mkfs.vfat', ['-F', String(bits), '-n', `VOL${bits}`, ...extra, '-C', img, String(kib)], { stdio: 'ignore' });
  const m = (cmd: string, ...args: string[]) => execFileSync(cmd, ['-i', img, ...args], { env });
  m('mcopy', '-s', '-m', ...(await import('node:fs')).readdirSync(src).map((n) => join(src, n)), '::');
  // Holes in the allocation, then a file that has to fill them: its chain jumps.
  for (let i = 0; i < 6; i++) await writeFile(join(dir, `gap${i}`), Buffer.alloc(3000, i));
  m('mcopy', '-m', ...[0, 1, 2, 3, 4, 5].map((i) => join(dir, `gap${i}`)), '::');
  m('mdel', '::/gap1', '::/gap3');
  if (bits === 32) {
    // mtools allocates FAT32 clusters from FSInfo's next-free hint (§5: FSI_Nxt_Free); "unknown" makes it search from the start.
    const b = new Uint8Array(await readFile(img));
    new DataView(b.buffer).setUint32(512 * new DataView(b.buffer).getUint16(48, true) + 492, 0xffffffff, true);
    await writeFile(img, b);
  }
  const frag = new Uint8Array(9000).map((_, i) => i & 0xff);
  await writeFile(join(src, 'fragmented.bin'), frag);
  await utimes(join(src, 'fragmented.bin'), T0, T0);
  m('mcopy', '-m', join(src, 'fragmented.bin'), '::');
  for (const i of [0, 2, 4, 5]) {
    await rm(join(dir, `gap${i}`));
    m('mdel', `::/gap${i}`);
  }
  m('mattrib', '+r', '::/README.TXT');
  return { img, src };
}

function mdirPaths(img: string): string[] {
  return execFileSync('mdir', ['-/', '-b', '-i', img, '::'], { env }).toString('utf8').split('\n').filter(Boolean)
    .map((l) => l.replace(/^::/, '').replace(/\/$/, '')).sort();
}

for (const [bits, kib, extra] of [[12, 2048, []], [16, 20480, []], [32, 40960, ['-s', '1']]] as const) {
  test(`vfat FAT${bits} (mkfs.vfat + mcopy): names, bytes, mtimes as the source, modes and links of a default vfat mount, mdir's listing, the label`, needs('mkfs.vfat', 'mcopy'), async (t) => {
    const { img, src } = await makeVolume(t, bits, kib, bits === 12 ? 120 : 300, [...extra]);
    const dev = await openRaw(img);
    t.after(() => dev.close());
    const fs = await openFat(dev);
    assert.equal(fs.type, 'vfat');
    assert.equal(fs.bits, bits);
    assert.equal(await fs.label(), `VOL${bits}`);
    const ours = await readerTree(fs, { chunk: 4093 });
    assert.deepEqual([...ours.keys()].sort(), mdirPaths(img));
    // Linux's default vfat mount: root's, 0755 (0555 read-only), directories 2 + subdirectories links (as the source has on Linux).
    const expected = await directoryTree(src);
    for (const [p, e] of expected) {
      Object.assign(e, { uid: 0, gid: 0, perm: p === '/README.TXT' ? 0o555 : 0o755 });
      if (e.kind === 'directory') delete (e as Partial<typeof e>).size;
    }
    const dirless = without(ours);
    for (const e of dirless.values()) if (e.kind === 'directory') { delete e.size; delete e.mtime; }
    const expDirless = without(expected);
    for (const e of expDirless.values()) if (e.kind === 'directory') delete e.mtime;
    assert.deepEqual(sorted(dirless), sorted(expDirless));
    // Directory sizes are their clusters' bytes.
    const many = (await fs.lookup(await fs.root(), 'many'))!;
    assert.equal(many.stat.size % fs.clusterSize, 0);
    assert.ok(many.stat.size >= ((bits === 12 ? 120 : 300) * 3 + 2) * 32);
    // Lookups ignore ASCII case and find short aliases, as vfat's.
    const root = await fs.root();
    assert.equal((await fs.lookup(root, 'readme.txt'))?.stat.size, 10);
    assert.equal((await fs.lookup(root, 'MIXEDC~1.TXT'))?.stat.size, 5);
    const efi = (await fs.lookup((await fs.lookup(root, 'efi'))!, 'boot'))!;
    const boot = (await fs.lookup(efi, 'bootx64.efi'))!;
    assert.deepEqual(Buffer.from(await readWhole(fs, boot)), execFileSync('mtype', ['-i', img, '::/EFI/BOOT/BOOTX64.EFI'], { env, maxBuffer: 16 << 20 }));
    assert.equal(await fs.lookup(root, 'no such file'), null);
    // mcopy put fragmented.bin in the holes the deleted files left: its chain has jumps.
    const fragmented = (await fs.lookup(root, 'fragmented.bin')) as FatNode;
    await readWhole(fs, fragmented);
    assert.ok(fragmented.runs!.length > 1, JSON.stringify(fragmented.runs));
  });
}

test('vfat short names: NT case bits, code page 437, the 0x05 escape', () => {
  const n = (s: string) => Uint8Array.from(Buffer.from(s, 'latin1'));
  assert.equal(shortNameOf(n('README  TXT'), 0), 'README.TXT');
  assert.equal(shortNameOf(n('README  TXT'), 0x08), 'readme.TXT');
  assert.equal(shortNameOf(n('README  TXT'), 0x18), 'readme.txt');
  assert.equal(shortNameOf(n('NOEXT      '), 0), 'NOEXT');
  assert.equal(shortNameOf(n('\x05BC     TXT'), 0), 'σBC.TXT');
  assert.equal(shortNameOf(n('\x9aBER    TXT'), 0), 'ÜBER.TXT');
});

test('vfat hostile: a chain that loops, a cluster outside the FAT, a chain shorter than the file, a directory containing its ancestor; orphan long names ignored', needs('mkfs.vfat', 'mcopy'), async (t) => {
  const { img } = await makeVolume(t, 32, 40960, 40, ['-s', '1']);
  const pristine = new Uint8Array(await readFile(img));
  const b = parseBpb(pristine)!;
  const dataStart = (b.reserved + b.fats * b.fatSectors) * b.sectorSize;
  const clusterPos = (c: number) => dataStart + (c - 2) * b.sectorSize * b.sectorsPerCluster;
  const fatEntry = (c: number) => b.reserved * b.sectorSize + c * 4;
  const view = (x: Uint8Array) => new DataView(x.buffer, x.byteOffset, x.byteLength);
  /** The short entry whose 11-byte name is `name` in the root directory's first cluster. */
  const entryAt = (x: Uint8Array, name: string) => {
    const at = Buffer.from(x).indexOf(Buffer.from(name, 'latin1'), clusterPos(b.rootCluster));
    assert.ok(at > 0 && (at - clusterPos(b.rootCluster)) % 32 === 0, name);
    return at;
  };
  const firstCluster = (x: Uint8Array, at: number) => { const e = DIR_ENTRY.decode(x, at); return (e.firstClusterHigh << 16) | e.firstClusterLow; };
  const variant = async (name: string, patch: (x: Uint8Array) => void): Promise<Fat> => {
    const x = pristine.slice();
    patch(x);
    const p = join(img, '..', `${name}.img`);
    await writeFile(p, x);
    const dev = await openRaw(p);
    t.after(() => dev.close());
    return openFat(dev);
  };
  const big = 'BOOTX64 EFI';
  // The directory EFI's first cluster chains to itself.
  const loop = await variant('loop', (x) => {
    const c = firstCluster(x, entryAt(x, 'EFI        '));
    view(x).setUint32(fatEntry(c), c, true);
  });
  await expectDiskError(loop.lookup(await loop.root(), 'efi'), 'ELOOP');
  // fragmented.bin's chain loops back to its start after a few clusters (the file needs 18).
  const fileLoop = await variant('file-loop', (x) => {
    const c = firstCluster(x, entryAt(x, 'FRAGME~1BIN'));
    const second = view(x).getUint32(fatEntry(c), true);
    view(x).setUint32(fatEntry(second), c, true);
  });
  const fragmented = (await fileLoop.lookup(await fileLoop.root(), 'fragmented.bin'))!;
  await expectDiskError(fileLoop.read(fragmented, new Uint8Array(9000), 0), 'ELOOP');
  // README.TXT starts at a cluster past the FAT.
  const outside = await variant('outside', (x) => {
    const at = entryAt(x, 'README  TXT');
    DIR_ENTRY.encode({ firstClusterHigh: 0x0fff, firstClusterLow: 0xff00 }, x, at);
  });
  await expectDiskError(outside.read((await outside.lookup(await outside.root(), 'README.TXT'))!, new Uint8Array(4), 0), 'ECORRUPT');
  // lower.txt claims 1 MiB, its chain is one cluster.
  const short = await variant('short', (x) => DIR_ENTRY.encode({ fileSize: 1 << 20 }, x, entryAt(x, 'LOWER   TXT')));
  await expectDiskError(short.read((await short.lookup(await short.root(), 'lower.txt'))!, new Uint8Array(4), 0), 'ECORRUPT');
  // "Sub Dir" points at the root's cluster: a walk would never end.
  const ancestor = await variant('ancestor', (x) => {
    const at = Buffer.from(x).indexOf(Buffer.from('SUBDIR~1   ', 'latin1'), clusterPos(b.rootCluster));
    DIR_ENTRY.encode({ firstClusterHigh: b.rootCluster >> 16, firstClusterLow: b.rootCluster & 0xffff }, x, at);
  });
  await expectDiskError(ancestor.lookup(await ancestor.root(), 'Sub Dir'), 'ELOOP');
  // A long-name entry whose checksum no longer matches its short entry is an orphan: the short name shows, as in Linux.
  const orphan = await variant('orphan', (x) => {
    const at = entryAt(x, 'MIXEDC~1TXT') - 32;
    assert.equal(LFN_ENTRY.get(x, 'attr', at), 0x0f);
    x[at + 13] ^= 0xff;
  });
  const names: string[] = [];
  for await (const e of orphan.readdir(await orphan.root())) names.push(e.name);
  assert.ok(names.includes('MIXEDC~1.TXT') && !names.includes('Mixed Case Long Name.txt'), names.join(', '));
  assert.ok(names.includes('MiXeD.TxT'));
  // Not FAT.
  await expectDiskError(variant('zero', (x) => x.fill(0, 0, 512)), 'EFORMAT');
});
