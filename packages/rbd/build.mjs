#!/usr/bin/env node
// Compiles native/rbd.c into build/rbd.node with the system C compiler, against the N-API
// headers that ship with Node.js and Debian's librbd-dev/librados-dev (no node-gyp, no
// download). Skips work when the addon is newer than its source. Without librbd's headers the
// rest of diskhub still builds and the RBD store says why it cannot start; under CI=true a
// failed build fails, because the RBD store's tests must run there.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'native', 'rbd.c');
const out = join(here, 'build', 'rbd.node');
if (existsSync(out) && statSync(out).mtimeMs >= statSync(src).mtimeMs) process.exit(0);

const fail = (why) => {
  const msg = `rbd: ${why}; the RBD store is unavailable (install librbd-dev and librados-dev)`;
  if (process.env.CI === 'true') {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
};
const candidates = [
  join(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/include/nodejs/src',
];
const include = candidates.find((d) => existsSync(join(d, 'node_api.h')));
if (!include) fail(`node_api.h not found (looked in ${candidates.join(', ')})`);
if (!existsSync('/usr/include/rbd/librbd.h')) fail('librbd.h not found');
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC ?? 'cc';
const r = spawnSync(cc, ['-O2', '-Wall', '-Werror', '-shared', '-fPIC', '-fvisibility=hidden', `-I${include}`, '-o', out, src, '-lrbd', '-lrados', '-lpthread'], { stdio: 'inherit' });
if (r.error) fail(`${cc} could not be run (${r.error.message})`);
if (r.status !== 0) fail(`${cc} failed with status ${r.status}`);
