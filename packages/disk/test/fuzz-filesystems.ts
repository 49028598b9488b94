/**
 * The fuzz property for the filesystem readers (the format parsers' harness, fuzz-harness.ts,
 * with another exercise): small filesystems made by the real tools are mutated, and each
 * mutant is identified (fsid) and opened, walked (readdir, lookup, every file read in part,
 * every symlink read) up to a bounded number of nodes. Only DiskErrors may escape, within the
 * harness's CPU limit. Mutations go half the time into the seed's metadata ("hot" ranges: the
 * ext superblock, group descriptors and inode tables of a 1 KiB-block filesystem, the ISO
 * directories, the FAT and its directories, the XFS inode chunk and directory blocks, the btrfs tree blocks).
 *
 * Used by test/fuzz-filesystems.test.ts (bounded, in CI) and fuzz/run.mjs (long runs).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MemorySource, identifyFilesystem, isDiskError, openFilesystem, openSource, resolvePath } from '../src/index.js';
import type { FsNode } from '../src/filesystem.js';
import { SUPERBLOCK } from '../src/xfs/index.js';
import { BTRFS_SUPER_INFO_OFFSET } from '../src/btrfs/index.js';
import { crc32c } from '../src/crc32c.js';
import { FuzzFailure, MAX_MS, fuzzSeed, guarded, type Seed } from './fuzz-harness.js';

export interface FilesystemSeed extends Seed {
  filesystem: string;
  hot: [number, number][];
  /** Applied to each mutant first: checksums made right again, so that mutations reach the parsers behind them. */
  refresh?: (bytes: Uint8Array) => void;
}

/** Nodes a walk visits and bytes it reads from each file. */
const MAX_NODES = 3000;
const READ_BYTES = 64 << 10;

/** The tree every seed holds: long names, nesting, a few hundred entries, a file over several blocks, symlinks where there are any. */
function makeTree(root: string): void {
  const w = (p: string, data: string | Uint8Array) => {
    mkdirSync(join(root, p, '..'), { recursive: true });
    writeFileSync(join(root, p), data);
  };
  w('hello.txt', 'hello\n');
  w('A Long Mixed Case Name.txt', 'long\n');
  w('sub/dir/deeper/leaf', 'leaf\n');
  w('data.bin', new Uint8Array(70_000).map((_, i) => i & 0xff));
  for (let i = 0; i < 150; i++) w(`many/entry-${i}-with-a-long-name`, `${i}\n`);
}

/** Small seeds made by mkfs.ext4 -d, genisoimage, mkfs.vfat + mcopy and mkfs.xfs (v4 and v5, 1 KiB blocks). */
export function makeFilesystemSeeds(dir: string, which: { btrfs?: boolean; others?: boolean } = {}): FilesystemSeed[] {
  const src = join(dir, 'fs-src');
  makeTree(src);
  // btrfs's seeds are fuzzed by a test file of their own (each file's run stays short).
  if (which.others === false) return which.btrfs === false ? [] : btrfsSeeds(dir, src);
  const seeds: FilesystemSeed[] = [...extSeeds(dir, src)];
  const iso = join(dir, 'seed.iso');
  execFileSync('ln', ['-s', '../hello.txt', join(src, 'sub', 'link')]);
  execFileSync('genisoimage', ['-quiet', '-R', '-J', '-o', iso, src]);
  // Descriptors and the directories after them.
  seeds.push({ name: 'iso9660 Rock Ridge + Joliet', format: 'raw', filesystem: 'iso9660', bytes: new Uint8Array(readFileSync(iso)), hot: [[32768, 32768 + 64 * 2048]] });
  for (const bits of [12, 16] as const) {
    const img = join(dir, `seed-fat${bits}.img`);
    // FAT16 needs 4085 clusters: one sector each.
    execFileSync('mkfs.vfat', ['-F', String(bits), ...(bits === 16 ? ['-s', '1'] : []), '-C', img, bits === 12 ? '1024' : '4200'], { stdio: 'ignore' });
    execFileSync('mcopy', ['-s', '-i', img, join(src, 'hello.txt'), join(src, 'A Long Mixed Case Name.txt'), join(src, 'sub'), join(src, 'data.bin'), join(src, 'many'), '::'],
      { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' }, stdio: 'ignore' });
    // The FATs, the root directory and the first data clusters (the directories mcopy wrote first).
    seeds.push({ name: `vfat FAT${bits}`, format: 'raw', filesystem: 'vfat', bytes: new Uint8Array(readFileSync(img)), hot: [[0, 256 << 10]] });
  }
  const proto = join(dir, 'proto');
  const lines = ['x', '0 0', 'd--755 0 0', `hello ---644 0 0 ${join(src, 'hello.txt')}`, `data ---600 1 2 ${join(src, 'data.bin')}`,
    'link l--777 0 0 hello', `long l--777 0 0 ${'x/'.repeat(200)}y`, 'null c--666 0 0 1 3', 'sub d--755 0 0', ' inner d--700 0 0', '  $'];
  for (let i = 0; i < 150; i++) lines.push(` entry-${i}-with-a-long-name ---644 0 0 ${join(src, 'hello.txt')}`);
  lines.push(' $', '$', '');
  writeFileSync(proto, lines.join('\n'));
  for (const crc of [1, 0]) {
    const img = join(dir, `seed-xfs-crc${crc}.img`);
    execFileSync('truncate', ['-s', '16M', img]);
    execFileSync('mkfs.xfs', ['-q', '-b', 'size=1024', '-m', `crc=${crc}`, '-p', proto, img],
      { env: { ...process.env, TEST_DIR: dir, TEST_DEV: img, QA_CHECK_FS: 'xfs' }, stdio: 'ignore' });
    const bytes = new Uint8Array(readFileSync(img));
    const sb = SUPERBLOCK.decode(bytes);
    // The root's inode chunk and the blocks after it, where mkfs put the directories and symlinks.
    const rootAt = Number(sb.rootIno >> BigInt(sb.inopbLog)) * sb.blockSize;
    seeds.push({ name: `xfs v${crc ? 5 : 4}`, format: 'raw', filesystem: 'xfs', bytes, hot: [[0, 4 * sb.sectSize], [rootAt, rootAt + (64 << 10)]] });
  }
  if (which.btrfs !== false) seeds.push(...btrfsSeeds(dir, src));
  return seeds;
}

/**
 * A btrfs seed, 16 MiB in mixed block groups with 4 KiB nodes; the superblock and its tree blocks (found
 * by the filesystem's UUID in their headers) are the hot ranges. Twice: mutants as they are (the
 * checksums catch most), and with every tree block's CRC-32C recomputed (the tree parser meets the mutation).
 */
function btrfsSeeds(dir: string, src: string): FilesystemSeed[] {
  const img = join(dir, 'seed-btrfs.img');
  execFileSync('truncate', ['-s', '16M', img]);
  execFileSync('mkfs.btrfs', ['-q', '-f', '-M', '--rootdir', src, img], { stdio: 'ignore' });
  const bytes = new Uint8Array(readFileSync(img));
  const fsid = bytes.slice(BTRFS_SUPER_INFO_OFFSET + 0x20, BTRFS_SUPER_INFO_OFFSET + 0x30);
  const blocks = treeBlocks(bytes, fsid);
  // The superblock, and the span of the tree blocks (the harness weighs 1, 2 or 4 hot ranges evenly).
  const hot: [number, number][] = [[BTRFS_SUPER_INFO_OFFSET, BTRFS_SUPER_INFO_OFFSET + 4096], [blocks[0]!, blocks[blocks.length - 1]! + 4096]];
  const refresh = (b: Uint8Array) => {
    for (const at of blocks) if (at + 4096 <= b.length) new DataView(b.buffer, b.byteOffset).setUint32(at, crc32c(b.subarray(at + 32, at + 4096)), true);
  };
  return [
    { name: 'btrfs mixed block groups', format: 'raw', filesystem: 'btrfs', bytes, hot },
    { name: 'btrfs, tree block checksums recomputed', format: 'raw', filesystem: 'btrfs', bytes, hot, refresh },
  ];
}

/** The 4 KiB blocks of a btrfs image whose header carries the filesystem's UUID. */
function treeBlocks(bytes: Uint8Array, fsid: Uint8Array): number[] {
  const out: number[] = [];
  for (let at = 0; at + 4096 <= bytes.length; at += 4096) {
    if (at === BTRFS_SUPER_INFO_OFFSET) continue;
    if (fsid.every((x, i) => bytes[at + 0x20 + i] === x)) out.push(at);
  }
  return out;
}

/**
 * ext seeds, 4 MiB with 1 KiB blocks so that the metadata lies in the first 64 KiB, in three
 * layouts: extents with metadata_csum, ext2's indirect blocks, inline data without checksums.
 */
function extSeeds(dir: string, tree: string): FilesystemSeed[] {
  const src = join(dir, 'ext-src');
  execFileSync('cp', ['-a', tree, src]);
  execFileSync('truncate', ['-s', '1M', join(src, 'sparse')]);
  symlinkSync('hello.txt', join(src, 'fast'));
  symlinkSync('x/'.repeat(40) + 'y', join(src, 'slow'));
  const layouts = [
    { name: 'ext4 metadata_csum', type: 'ext4', args: ['-t', 'ext4'] },
    { name: 'ext2 indirect blocks', type: 'ext2', args: ['-t', 'ext2'] },
    { name: 'ext4 inline_data without checksums', type: 'ext4', args: ['-t', 'ext4', '-O', 'inline_data,^metadata_csum,^has_journal'] },
  ];
  const seeds: FilesystemSeed[] = layouts.map((l, i) => {
    const path = join(dir, `ext-seed-${i}.img`);
    execFileSync('mkfs.ext4', ['-q', '-F', ...l.args, '-b', '1024', '-N', '256', '-d', src, path, '4M']);
    return { name: `filesystem ${l.name}`, format: 'raw', filesystem: l.type, bytes: new Uint8Array(readFileSync(path)), hot: [[0, 64 << 10]] };
  });
  // A journal that needs recovery (debugfs's journal writer, csum v3): transactions logging the
  // root directory's and hello.txt's blocks, one revoked; the journal's first blocks are hot too.
  const path = join(dir, 'ext-seed-journal.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-t', 'ext4', '-b', '1024', '-N', '256', '-d', src, path, '4M']);
  const bmap = (p: string) => execFileSync('debugfs', ['-R', `bmap ${p} 0`, path], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  const data = join(dir, 'journal-block');
  writeFileSync(data, new Uint8Array(2048).map((_, i) => (i === 0 ? 0xc0 : i & 0xff)));
  const [root, hello] = [bmap('/'), bmap('/hello.txt')];
  execFileSync('debugfs', ['-w', '-f', '-', path], { input: `jo -c\njw -b ${hello} ${data}\njw -r ${hello} ${data}\njw -b ${root},${hello} ${data}\njc\n`, stdio: ['pipe', 'ignore', 'ignore'] });
  const journal = Number(execFileSync('debugfs', ['-R', 'bmap <8> 0', path], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim()) * 1024;
  seeds.push({ name: 'filesystem ext4 with a journal to replay', format: 'raw', filesystem: 'ext4', bytes: new Uint8Array(readFileSync(path)), hot: [[0, 64 << 10], [journal, journal + (16 << 10)]] });
  return seeds;
}

/** Each seed's mutants through exerciseFilesystem (`runs` per seed); the failures, reported as fuzz-harness reports them. */
export async function fuzzFilesystemSeeds(seeds: FilesystemSeed[], runs: number, rngBase: number): Promise<string[]> {
  // Every seed is a valid filesystem the walk gets through without error.
  for (const seed of seeds) await exerciseFilesystem(seed.filesystem, seed.bytes.slice(), seed.refresh);
  const failures: string[] = [];
  for (const [i, seed] of seeds.entries()) {
    const r = await fuzzSeed(seed, { runs, rngSeed: rngBase + i, hot: seed.hot, exercise: (b) => exerciseFilesystem(seed.filesystem, b, seed.refresh) });
    if (r.failure) failures.push(r.failure);
  }
  return failures;
}

/** Everything a mutant filesystem meets: identification, opening, a bounded walk reading every file and link. */
export async function exerciseFilesystem(filesystem: string, bytes: Uint8Array, refresh?: (bytes: Uint8Array) => void): Promise<void> {
  const started = process.cpuUsage();
  refresh?.(bytes);
  const device = await openSource(new MemorySource(bytes, 'mutant', true), { format: 'raw' });
  await guarded('identifyFilesystem', () => identifyFilesystem(device));
  await guarded(`${filesystem} walk`, async () => {
    const fs = await openFilesystem(device, filesystem);
    let nodes = 0;
    const walk = async (dir: FsNode, depth: number): Promise<void> => {
      for await (const e of fs.readdir(dir)) {
        if (++nodes > MAX_NODES) return;
        const node = await fs.lookup(dir, e.name);
        if (!node) continue;
        const s = node.stat;
        if (s.kind === 'file') {
          await fs.read(node, new Uint8Array(Math.min(READ_BYTES, Math.max(0, s.size))), 0);
          if (s.size > READ_BYTES) await fs.read(node, new Uint8Array(4096), Math.floor(s.size / 2));
        } else if (s.kind === 'symlink') await fs.readlink(node);
        else if (s.kind === 'directory' && depth < 64) await walk(node, depth + 1);
      }
    };
    await walk(await fs.root(), 0);
    // Path resolution: symlinks followed, '..' taken, through whatever the mutation left.
    for (const path of ['/fast', '/sub/dir/../dir/deeper/leaf', '/slow/..', '/sub/link']) {
      await resolvePath(fs, path, { follow: true }).catch((e: unknown) => { if (!isDiskError(e)) throw e; });
    }
  });
  const used = process.cpuUsage(started);
  const ms = (used.user + used.system) / 1000;
  if (ms > MAX_MS) throw new FuzzFailure(`took ${ms.toFixed(0)} ms of CPU (limit ${MAX_MS} ms)`);
}
