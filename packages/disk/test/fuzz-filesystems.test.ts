/**
 * The filesystem readers under the fuzz property (fuzz-filesystems.ts), bounded for CI:
 * FUZZ_RUNS mutants per seed (default 100). Long runs: fuzz/run.mjs. btrfs: fuzz-btrfs.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir, needs } from '@diskhub/testkit';
import { fuzzFilesystemSeeds, makeFilesystemSeeds } from './fuzz-filesystems.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

test('fuzz: the ext, iso9660, vfat and xfs readers take mutated filesystems with only DiskErrors, quickly', needs('mkfs.ext4', 'genisoimage', 'mkfs.vfat', 'mcopy', 'mkfs.xfs', 'debugfs'), async (t) => {
  const seeds = makeFilesystemSeeds(await tempDir(t), { btrfs: false });
  assert.deepEqual([...new Set(seeds.map((s) => s.filesystem))].sort(), ['ext2', 'ext4', 'iso9660', 'vfat', 'xfs']);
  assert.deepEqual(await fuzzFilesystemSeeds(seeds, RUNS, 2000), []);
  const rss = process.memoryUsage().rss;
  assert.ok(rss < 768 << 20, `resident memory grew to ${Math.round(rss / 2 ** 20)} MiB`);
});
