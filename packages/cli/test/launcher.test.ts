/**
 * bin/diskhub.js runs the esbuild bundle (dist/bundle/main.cjs, built by build.mjs) when it is
 * newer than the compiled packages it inlines, from V8's code cache when that is there. The
 * bundle must behave exactly as the compiled modules.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { isAscii } from 'node:buffer';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { diskhub, tempDir } from '@diskhub/testkit';

const pkg = fileURLToPath(new URL('../../', import.meta.url)); // packages/cli/
const mtime = (p: string) => statSync(join(pkg, p)).mtimeMs;

test('the build leaves a bundle the launcher will run', () => {
  const bundle = mtime('dist/bundle/main.cjs');
  for (const input of ['dist/tsconfig.tsbuildinfo', '../disk/dist/tsconfig.tsbuildinfo', '../nbd/dist/tsconfig.tsbuildinfo', '../hostio/dist/tsconfig.tsbuildinfo']) {
    assert.ok(mtime(input) <= bundle, `${input} is newer than the bundle: run npm run build`);
  }
  assert.ok(mtime('dist/bundle/main.cjs.cache') >= bundle, 'the code cache was written after the bundle');
  // load-bundle.js copies an ASCII bundle into a one-byte string instead of decoding UTF-8.
  assert.ok(isAscii(readFileSync(join(pkg, 'dist/bundle/main.cjs'))), 'the bundle is pure ASCII');
});

test('a fresh node accepts the code cache (same V8, same flags as the warm-up)', () => {
  const { NODE_OPTIONS: _, ...env } = process.env;
  const r = spawnSync(process.execPath, ['-e', `const r = require(${JSON.stringify(join(pkg, 'bin', 'load-bundle.js'))}).loadBundle(); process.stdout.write(String(r.cacheRejected)); process.exit(typeof r.exports.main === 'function' ? 0 : 1)`], { env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'false');
});

test('bundled and unbundled CLI give the same output and exit codes', async (t) => {
  const dir = await tempDir(t);
  writeFileSync(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 1));
  const cases = [
    ['img', 'info', '--output=json', 'a.raw'],
    ['img', 'map', '--output=json', 'a.raw'],
    ['img', 'create', '-f', 'qcow2', 'b.qcow2', '64M'],
    ['img', 'check', 'b.qcow2'],
    ['img', 'info', '--bogus', 'a.raw'],
    ['img', 'convert', '-O', 'qcow2', 'nonexist', 'x'],
    // import() from code restored out of the cache: the zstd encoder and the service.
    ['img', 'convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'a.raw', 'z.qcow2'],
    ['img', 'compare', 'a.raw', 'z.qcow2'],
    ['serve', '--help'],
    ['nbd', '--help'],
    ['bogus'],
  ];
  for (const args of cases) {
    const bundled = await diskhub(args, { cwd: dir });
    const plain = await diskhub(args, { cwd: dir, env: { ...process.env, DISKHUB_NO_BUNDLE: '1' } });
    assert.deepEqual(bundled, plain, args.join(' '));
  }
  assert.equal((await diskhub(['img', 'check', 'b.qcow2'], { cwd: dir })).code, 0);
});
