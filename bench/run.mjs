#!/usr/bin/env node
// `npm run bench`: the disk engine benchmark (bench/img.mjs: diskhub img against qemu-img on
// the same inputs in the same run). The image-service benchmark needs the Glance peer and is
// run on its own: `node bench/service.mjs`. Environment knobs (BENCH_SIZE_MB, BENCH_RUNS)
// pass through. A benchmark, not a test: it never runs under `npm test`.
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const result = spawnSync(process.execPath, [join(here, 'img.mjs'), ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(result.status ?? 1);
