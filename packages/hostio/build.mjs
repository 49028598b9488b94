#!/usr/bin/env node
// Compiles native/hostio.c into build/hostio.node with the system C compiler against the
// N-API headers that ship with Node.js (no node-gyp, no download). N-API is ABI-stable, so
// the result works with any Node >= 20. Skips work when the addon is newer than its source.
// Without a compiler the engine still works (holes are then read as data); under CI=true a
// failed build fails, because the sparse-file tests must run there.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'native', 'hostio.c');
const out = join(here, 'build', 'hostio.node');
if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);

const candidates = [
  join(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/include/nodejs/src',
];
const include = candidates.find((d) => existsSync(join(d, 'node_api.h')));
const fail = (why) => {
  const msg = `hostio: ${why}; sparse-file support (SEEK_DATA/SEEK_HOLE, hole punching) is disabled`;
  if (process.env.CI === 'true') {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
};
if (!include) fail(`node_api.h not found (looked in ${candidates.join(', ')})`);
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC ?? 'cc';
const r = spawnSync(cc, ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-fvisibility=hidden', `-I${include}`, '-o', out, src], { stdio: 'inherit' });
if (r.error) fail(`${cc} could not be run (${r.error.message})`);
if (r.status !== 0) fail(`${cc} failed with status ${r.status}`);
