#!/usr/bin/env node
// Long fuzz runs of every format parser (see README.md): FUZZ_SECONDS per seed (default 60),
// FUZZ_ONLY=regex to pick seeds, FUZZ_SEED=n to fix fast-check's seed. Needs `npm run build`,
// qemu-img, qemu-io and mkfs.ext4 (filesystem seeds). Prints, per seed, the mutants run and any failure with its replay.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { makeSeeds, makeFilesystemSeeds, fuzzSeed } = await import(join(root, 'packages/disk/dist/test/fuzz-harness.js'));
const seconds = Number(process.env.FUZZ_SECONDS ?? 60);
const only = process.env.FUZZ_ONLY ? new RegExp(process.env.FUZZ_ONLY) : undefined;
const dir = mkdtempSync(join(tmpdir(), 'diskhub-fuzz-'));
let failed = 0;
let total = 0;
try {
  for (const seed of [...makeSeeds(dir), ...makeFilesystemSeeds(dir)]) {
    if (only && !only.test(seed.name)) continue;
    const r = await fuzzSeed(seed, { seconds, ...(process.env.FUZZ_SEED ? { rngSeed: Number(process.env.FUZZ_SEED) } : {}) });
    total += r.runs;
    console.log(`${seed.name.padEnd(45)} ${String(r.runs).padStart(8)} mutants${r.failure ? `  FAILED\n${r.failure}` : ''}`);
    if (r.failure) failed++;
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${total} mutants, ${failed} seed(s) failed, peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`);
process.exitCode = failed ? 1 : 0;
