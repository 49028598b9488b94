/**
 * Writes the bundle's code cache (see bin/load-bundle.js): runs typical commands on small
 * images in a scratch directory, so that the functions they use are compiled, then saves V8's
 * code for the bundle. build.mjs runs it in a child process under V8's default flags (a cache
 * made under other flags is refused when loaded). `img convert` raises V8's optimisation
 * threshold as it starts; here that call does nothing, or the flags, and with them the cache,
 * would no longer match a fresh process's.
 */
'use strict';
const { mkdtempSync, renameSync, rmSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { BUNDLE, CODE_CACHE, loadBundle } = require('./bin/load-bundle.js');

const bundleRequire = createRequire(BUNDLE);
const quietV8 = { ...require('node:v8'), setFlagsFromString() {} };
const bundle = loadBundle({ useCache: false, require: (id) => (id === 'node:v8' ? quietV8 : bundleRequire(id)) });

const FORMATS = ['qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx'];
const COMMANDS = [
  ['img', 'create', '-f', 'raw', 'a.raw', '8M'],
  ...FORMATS.map((f) => ['img', 'convert', '-O', f, 'a.raw', `a.${f}`]),
  ...['raw', ...FORMATS].flatMap((f) => [
    ['img', 'info', `a.${f}`],
    ['img', 'info', '--output=json', `a.${f}`],
    ['img', 'map', '--output=json', `a.${f}`],
    ['img', 'convert', '-O', 'raw', `a.${f}`, 'out.raw'],
  ]),
  ['img', 'check', 'a.qcow2'],
  ['img', 'compare', 'a.raw', 'a.qcow2'],
];

// The commands' reports go to stdout, which build.mjs discards.
async function warm() {
  const dir = mkdtempSync(join(tmpdir(), 'diskhub-warm-'));
  const cwd = process.cwd();
  try {
    process.chdir(dir);
    for (const argv of COMMANDS) {
      const code = await bundle.exports.main(argv);
      if (code !== 0) throw new Error(`warm-up: diskhub ${argv.join(' ')} exited with ${code}`);
    }
  } finally {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  }
  writeFileSync(`${CODE_CACHE}.tmp`, bundle.script.createCachedData());
  renameSync(`${CODE_CACHE}.tmp`, CODE_CACHE);
}

warm().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
