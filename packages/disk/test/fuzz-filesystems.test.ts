/**
 * The filesystem readers under the fuzz property (fuzz-filesystems.ts), bounded for CI:
 * FUZZ_RUNS mutants per seed (default 100). Long runs: fuzz/run.mjs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir, needs } from '@diskhub/testkit';
import { fuzzSeed } from './fuzz-harness.js';
import { exerciseFilesystem, makeFilesystemSeeds } from './fuzz-filesystems.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

test('fuzz: the ext, iso9660, vfat, xfs and btrfs readers take mutated filesystems with only DiskErrors, quickly', needs('mkfs.ext4', 'genisoimage', 'mkfs.vfat', 'mcopy', 'mkfs.xfs', 'mkfs.btrfs'), async (t) => {
  const seeds = makeFilesystemSeeds(await tempDir(t));
  assert.deepEqual([...new Set(seeds.map((s) => s.filesystem))].sort(), ['btrfs', 'ext2', 'ext4', 'iso9660', 'vfat', 'xfs']);
  // Every seed is a valid filesystem the walk gets through without error.
  for (const seed of seeds) await exerciseFilesystem(seed.filesystem, seed.bytes);
  const failures: string[] = [];
  for (const [i, seed] of seeds.entries()) {
    const r = await fuzzSeed(seed, { runs: RUNS, rngSeed: 2000 + i, hot: seed.hot, exercise: (b) => exerciseFilesystem(seed.filesystem, b, seed.refresh) });
    if (r.failure) failures.push(r.failure);
  }
  assert.deepEqual(failures, []);
  const rss = process.memoryUsage().rss;
  assert.ok(rss < 768 << 20, `resident memory grew to ${Math.round(rss / 2 ** 20)} MiB`);
});
