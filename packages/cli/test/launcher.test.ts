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
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { diskhub, tempDir } from '@diskhub/testkit';

const pkg = fileURLToPath(new URL('../../', import.meta.url)); // packages/cli/
const { COMMAND_CACHES, codeCacheFor } = createRequire(import.meta.url)(join(pkg, 'bin', 'load-bundle.js')) as { COMMAND_CACHES: string[]; codeCacheFor: (argv: string[]) => string };
const mtime = (p: string) => statSync(join(pkg, p)).mtimeMs;

test('the build leaves a bundle the launcher will run', () => {
  const bundle = mtime('dist/bundle/main.cjs');
  for (const input of ['dist/tsconfig.tsbuildinfo', '../disk/dist/tsconfig.tsbuildinfo', '../nbd/dist/tsconfig.tsbuildinfo', '../hostio/dist/tsconfig.tsbuildinfo']) {
    assert.ok(mtime(input) <= bundle, `${input} is newer than the bundle: run npm run build`);
  }
  for (const cache of ['main.cjs.cache', ...COMMAND_CACHES.map((name) => `main.cjs.${name}.cache`)]) {
    assert.ok(mtime(`dist/bundle/${cache}`) >= bundle, `${cache} was written after the bundle`);
  }
  // load-bundle.js copies an ASCII bundle into a one-byte string instead of decoding UTF-8.
  assert.ok(isAscii(readFileSync(join(pkg, 'dist/bundle/main.cjs'))), 'the bundle is pure ASCII');
});

test('a fresh node accepts every code cache (same V8, same flags as the warm-up)', () => {
  const { NODE_OPTIONS: _, ...env } = process.env;
  for (const argv of [['img', 'convert'], ...COMMAND_CACHES.map((name) => ['img', name])]) {
    const cache = `require(${JSON.stringify(join(pkg, 'bin', 'load-bundle.js'))}).codeCacheFor(${JSON.stringify(argv)})`;
    const r = spawnSync(process.execPath, ['-e', `const r = require(${JSON.stringify(join(pkg, 'bin', 'load-bundle.js'))}).loadBundle({ cache: ${cache} }); process.stdout.write(String(r.cacheRejected)); process.exit(typeof r.exports.main === 'function' ? 0 : 1)`], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'false', argv.join(' '));
  }
});

test('img info, check, map, resize and snapshot start from a code cache of their own', () => {
  for (const name of COMMAND_CACHES) assert.equal(codeCacheFor(['img', name, 'x']), join(pkg, 'dist', 'bundle', `main.cjs.${name}.cache`));
  for (const argv of [['img', 'convert', 'a', 'b'], ['img', '-T', 'x', 'info'], ['serve'], []]) assert.equal(codeCacheFor(argv), join(pkg, 'dist', 'bundle', 'main.cjs.cache'));
});

test('bundled and unbundled CLI give the same output and exit codes', async (t) => {
  const dir = await tempDir(t);
  writeFileSync(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 1));
  const cases = [
    ['img', 'info', '--output=json', 'a.raw'],
    ['img', 'map', '--output=json', 'a.raw'],
    ['img', 'create', '-f', 'qcow2', 'b.qcow2', '64M'],
    ['img', 'check', 'b.qcow2'],
    // Commands with a code cache of their own.
    ['img', 'info', 'b.qcow2'],
    ['img', 'map', 'b.qcow2'],
    ['img', 'resize', 'b.qcow2', '+1M'],
    ['img', 'snapshot', '-l', 'b.qcow2'],
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
