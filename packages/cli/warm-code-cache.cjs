/**
 * Writes the bundle's code caches (see bin/load-bundle.js): runs typical commands on small
 * images, so that the functions they use are compiled, then saves V8's code for the bundle.
 * Each cache comes from a process of its own, which has compiled only what its commands use:
 *   node warm-code-cache.cjs setup DIR   makes the images the warm-ups read, in DIR/images
 *   node warm-code-cache.cjs NAME DIR    runs NAME's commands on a copy of them, writes NAME's cache
 * NAME is `full` (the cache of every command without its own: converts, maps and compares of
 * each format) or one of load-bundle.js's COMMAND_CACHES: a short command deserialises less
 * from a cache of its own (`img info` 367 KiB instead of 714 KiB, 8 M instructions less).
 * build.mjs runs them under V8's default flags (a cache made under other flags is refused
 * when loaded). `img convert` raises V8's optimisation threshold as it starts; here that call
 * does nothing, or the flags, and with them the cache, would no longer match a fresh process's.
 * The commands' reports go to stdout, which build.mjs discards.
 */
'use strict';
const { cpSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { join } = require('node:path');
const { BUNDLE, COMMAND_CACHES, codeCacheFile, loadBundle } = require('./bin/load-bundle.js');

const FORMATS = ['qcow2', 'vmdk', 'vdi', 'vpc', 'vhdx'];
const ALL = ['raw', ...FORMATS];

const WARM_UPS = {
  setup: [['img', 'create', '-f', 'raw', 'a.raw', '8M'], ...FORMATS.map((f) => ['img', 'convert', '-O', f, 'a.raw', `a.${f}`])],
  full: [
    ...FORMATS.map((f) => ['img', 'convert', '-O', f, 'a.raw', `b.${f}`]),
    ...ALL.flatMap((f) => [
      ['img', 'info', `a.${f}`],
      ['img', 'info', '--output=json', `a.${f}`],
      ['img', 'map', '--output=json', `a.${f}`],
      ['img', 'convert', '-O', 'raw', `a.${f}`, 'out.raw'],
    ]),
    ['img', 'check', 'a.qcow2'],
    ['img', 'compare', 'a.raw', 'a.qcow2'],
  ],
  info: ALL.flatMap((f) => [['img', 'info', `a.${f}`], ['img', 'info', '--output=json', `a.${f}`]]),
  check: ['qcow2', 'vdi', 'vhdx', 'vmdk'].flatMap((f) => [['img', 'check', `a.${f}`], ['img', 'check', '--output=json', `a.${f}`]]),
  map: ALL.flatMap((f) => [['img', 'map', `a.${f}`], ['img', 'map', '--output=json', `a.${f}`]]),
  resize: [['img', 'resize', 'a.qcow2', '+1M'], ['img', 'resize', '--shrink', 'a.qcow2', '-1M'], ['img', 'resize', '-f', 'raw', 'a.raw', '+1M'], ['img', 'resize', '-f', 'raw', '--shrink', 'a.raw', '-1M']],
  snapshot: [['img', 'snapshot', '-c', 's1', 'a.qcow2'], ['img', 'snapshot', '-l', 'a.qcow2'], ['img', 'snapshot', '-a', 's1', 'a.qcow2'], ['img', 'snapshot', '-d', 's1', 'a.qcow2']],
};
for (const name of COMMAND_CACHES) if (!WARM_UPS[name]) throw new Error(`warm-code-cache.cjs has no commands for the ${name} cache`);

async function warm(name, root) {
  const commands = WARM_UPS[name];
  if (!commands) throw new Error(`unknown warm-up '${name}'`);
  const bundleRequire = createRequire(BUNDLE);
  const quietV8 = { ...require('node:v8'), setFlagsFromString() {} };
  const bundle = loadBundle({ useCache: false, require: (id) => (id === 'node:v8' ? quietV8 : bundleRequire(id)) });
  // The setup writes DIR/images; a warm-up works on a copy of its own (they run side by side).
  const images = join(root, 'images');
  const dir = name === 'setup' ? images : mkdtempSync(join(root, `${name}-`));
  if (name === 'setup') mkdirSync(images);
  else cpSync(images, dir, { recursive: true });
  const cwd = process.cwd();
  try {
    process.chdir(dir);
    for (const argv of commands) {
      const code = await bundle.exports.main(argv);
      if (code !== 0) throw new Error(`warm-up ${name}: diskhub ${argv.join(' ')} exited with ${code}`);
    }
  } finally {
    process.chdir(cwd);
    if (name !== 'setup') rmSync(dir, { recursive: true, force: true });
  }
  if (name === 'setup') return;
  const file = codeCacheFile(name);
  writeFileSync(`${file}.tmp`, bundle.script.createCachedData());
  renameSync(`${file}.tmp`, file);
}

warm(process.argv[2], process.argv[3]).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
