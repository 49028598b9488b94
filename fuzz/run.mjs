#!/usr/bin/env node
// Long fuzz runs of every format parser and filesystem reader (see README.md): FUZZ_SECONDS per seed (default 60),
// FUZZ_ONLY=regex to pick seeds, FUZZ_SEED=n to fix fast-check's seed. Needs `npm run build`,
// qemu-img and qemu-io (and mkfs.ext4, genisoimage, mkfs.vfat, mcopy, mkfs.xfs). Prints, per seed, the mutants run and any failure with its replay.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { makeSeeds, fuzzSeed } = await import(join(root, 'packages/disk/dist/test/fuzz-harness.js'));
const { makeFilesystemSeeds, exerciseFilesystem } = await import(join(root, 'packages/disk/dist/test/fuzz-filesystems.js'));
const seconds = Number(process.env.FUZZ_SECONDS ?? 60);
const only = process.env.FUZZ_ONLY ? new RegExp(process.env.FUZZ_ONLY) : undefined;
const dir = mkdtempSync(join(tmpdir(), 'diskhub-fuzz-'));
let failed = 0;
let total = 0;
try {
  // Format seeds, then filesystem seeds (mkfs.ext4, genisoimage, mkfs.vfat + mcopy, mkfs.xfs), which go through the readers.
  for (const seed of [...makeSeeds(dir), ...makeFilesystemSeeds(dir)]) {
    if (only && !only.test(seed.name)) continue;
    const reader = seed.filesystem ? { hot: seed.hot, exercise: (b) => exerciseFilesystem(seed.filesystem, b, seed.refresh) } : {};
    const r = await fuzzSeed(seed, { seconds, ...reader, ...(process.env.FUZZ_SEED ? { rngSeed: Number(process.env.FUZZ_SEED) } : {}) });
    total += r.runs;
    console.log(`${seed.name.padEnd(45)} ${String(r.runs).padStart(8)} mutants${r.failure ? `  FAILED\n${r.failure}` : ''}`);
    if (r.failure) failed++;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${total} mutants, ${failed} seed(s) failed, peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`);
process.exitCode = failed ? 1 : 0;
