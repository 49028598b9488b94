#!/usr/bin/env node
// Runs every compiled test file (packages/*/dist/test/**/*.test.js) with node's test runner.
// Arguments narrow the run to packages: `npm test -- disk nbd`.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const wanted = process.argv.slice(2);
const dirs = readdirSync('packages')
  .filter((p) => wanted.length === 0 || wanted.includes(p))
  .map((p) => join('packages', p, 'dist', 'test'))
  .filter((d) => existsSync(d));
if (dirs.length === 0) {
  console.error('no compiled tests found; run `npm run build` first');
  process.exit(1);
}
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...dirs], { stdio: 'inherit' });
process.exit(r.status ?? 1);
