/**
 * The fuzz harness (fuzz-harness.ts) for a bounded number of mutants per seed, in CI:
 * FUZZ_RUNS per seed (default 150). Long runs: fuzz/run.mjs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempDir, needs } from '@diskhub/testkit';
import { DiskError, registerFormat } from '../src/index.js';
import { exercise, fuzzSeed, makeSeeds, makeFilesystemSeeds } from './fuzz-harness.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 150);

test('fuzz: every format parser, the inspector and the prober take mutated images with only DiskErrors, quickly', needs('qemu-img', 'qemu-io'), async (t) => {
  const seeds = makeSeeds(await tempDir(t));
  // Every driver qemu-img can make an image for has a seed (a new driver must get one).
  assert.ok(seeds.length >= 8, `only ${seeds.length} seeds`);
  const failures: string[] = [];
  for (const [i, seed] of seeds.entries()) {
    const r = await fuzzSeed(seed, { runs: RUNS, rngSeed: 1000 + i });
    if (r.failure) failures.push(r.failure);
  }
  assert.deepEqual(failures, []);
  const rss = process.memoryUsage().rss;
  assert.ok(rss < 768 << 20, `resident memory grew to ${Math.round(rss / 2 ** 20)} MiB`);
});

test('fuzz: the ext reader takes mutated filesystems (walked, read, symlinks followed) with only DiskErrors, quickly', needs('mkfs.ext4', 'truncate'), async (t) => {
  const seeds = makeFilesystemSeeds(await tempDir(t));
  const failures: string[] = [];
  for (const [i, seed] of seeds.entries()) {
    const r = await fuzzSeed(seed, { runs: RUNS * 2, rngSeed: 2000 + i });
    if (r.failure) failures.push(r.failure);
  }
  assert.deepEqual(failures, []);
});

test('fuzz: the harness catches a parser that throws a non-DiskError or hangs, and shrinks it', async () => {
  const seed = { name: 'self-test', format: 'fuzz-selftest', bytes: new Uint8Array(8192).fill(1) };
  // A parser with two planted bugs: a TypeError on a shortened file, 1.5 s of busy CPU on a zeroed first byte.
  registerFormat({
    name: 'fuzz-selftest',
    probe: () => 0,
    open: async (source) => {
      const size = await source.size();
      if (size < 8192) throw new TypeError(`planted: length ${size}`);
      const head = new Uint8Array(1);
      await source.read(head, 0);
      if (head[0] === 0) for (const from = process.cpuUsage(); process.cpuUsage(from).user < 1_500_000;) { /* spin */ }
      throw new DiskError('EFORMAT', 'not an image');
    },
  });
  const thrown = await fuzzSeed(seed, { runs: 200, rngSeed: 7 });
  assert.match(thrown.failure ?? '', /TypeError: planted/);
  // Shrunk to the one mutation that matters.
  assert.match(thrown.failure ?? '', /counterexample: \[\[\{"kind":"truncate"/);
  const stall = await exerciseFails({ ...seed, bytes: new Uint8Array(8192) });
  assert.match(stall, /took \d+ ms of CPU \(limit 1000 ms\)/);
});

async function exerciseFails(seed: { format: string; bytes: Uint8Array }): Promise<string> {
  try {
    await exercise(seed.format, seed.bytes);
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}
