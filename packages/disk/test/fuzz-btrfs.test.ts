/**
 * The btrfs reader under the filesystem fuzz property (fuzz-filesystems.ts), bounded for CI:
 * FUZZ_RUNS mutants per seed (default 100), the tree blocks' checksums left as mutated and
 * made right again. Long runs: fuzz/run.mjs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir, needs } from '@diskhub/testkit';
import { fuzzFilesystemSeeds, makeFilesystemSeeds } from './fuzz-filesystems.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 100);

test('fuzz: the btrfs reader takes mutated filesystems with only DiskErrors, quickly', needs('mkfs.btrfs'), async (t) => {
  const seeds = makeFilesystemSeeds(await tempDir(t), { others: false });
  assert.deepEqual(seeds.map((s) => s.filesystem), ['btrfs', 'btrfs']);
  assert.deepEqual(await fuzzFilesystemSeeds(seeds, RUNS, 3000), []);
  const rss = process.memoryUsage().rss;
  assert.ok(rss < 768 << 20, `resident memory grew to ${Math.round(rss / 2 ** 20)} MiB`);
});
