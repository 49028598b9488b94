/**
 * Loading the bundled CLI (dist/bundle/main.cjs, made by build.mjs) as fast as Node allows.
 * Start-up is all of a short command such as `img info` and a real part of a convert, and
 * compiling the 0.7 MB bundle was the largest piece of it (about 30 of 60 ms). So the bundle runs
 * through `vm.Script` with V8's code cache (dist/bundle/main.cjs.cache, written by build.mjs
 * after running typical commands, see warm-code-cache.cjs): V8 then deserialises the compiled
 * functions instead of parsing. V8 refuses a cache made by another V8 or under other flags (the
 * bundle then compiles as usual), and the cache is used only when it was written after the
 * bundle, so a rebuilt bundle never runs with stale code.
 */
'use strict';
const { isAscii } = require('node:buffer');
const { readFileSync, statSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const vm = require('node:vm');

const BUNDLE = join(__dirname, '..', 'dist', 'bundle', 'main.cjs');
const CODE_CACHE = `${BUNDLE}.cache`;

/**
 * `img` commands with a code cache of their own (main.cjs.NAME.cache), written after running
 * only that command: V8 deserialises the whole cache at every start, and the one made after
 * every command (converts of each format included) is twice what `img info` needs (8 M
 * instructions of its start-up). Other commands use main.cjs.cache.
 */
const COMMAND_CACHES = ['info', 'check', 'map', 'resize', 'snapshot'];

const codeCacheFile = (name) => (name === 'full' ? CODE_CACHE : `${BUNDLE}.${name}.cache`);

/** The code cache for a command line (`img info ...`: main.cjs.info.cache). */
function codeCacheFor(argv) {
  return argv[0] === 'img' && COMMAND_CACHES.includes(argv[1]) ? codeCacheFile(argv[1]) : CODE_CACHE;
}

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return NaN;
  }
}

/** The compiled packages the bundle inlines: a bundle older than any of them is stale. */
const INPUTS = ['cli', 'disk', 'nbd', 'hostio'].map((p) => join(__dirname, '..', '..', p, 'dist', 'tsconfig.tsbuildinfo'));

/** The bundle exists and is at least as new as every compiled package it inlines. */
function bundleFresh() {
  const built = mtime(BUNDLE);
  return Number.isFinite(built) && INPUTS.every((input) => !(mtime(input) > built));
}

/**
 * Runs the bundle and returns its exports and the vm.Script it ran as (for createCachedData).
 * `useCache`: start from the code cache `cache` (the full one when that one is missing or
 * older than the bundle). `require`: the bundle's require (the warm-up wraps it).
 */
function loadBundle({ useCache = true, cache = CODE_CACHE, require: bundleRequire = createRequire(BUNDLE) } = {}) {
  const built = mtime(BUNDLE);
  const file = mtime(cache) >= built ? cache : CODE_CACHE;
  const cachedData = useCache && mtime(file) >= built ? readFileSync(file) : undefined;
  // A module wrapper as Node's, plus __import: the bundle's import() of external packages (the
  // service, the zstd encoder) comes here, because functions restored from a code cache lose the
  // script's own import() callback (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING in Node 20).
  // build.mjs makes the bundle pure ASCII, read then as latin1 (a copy) rather than as UTF-8 (a
  // decoding pass over every byte, and a two-byte string if one character is not ASCII).
  const bytes = readFileSync(BUNDLE);
  const text = isAscii(bytes) ? bytes.latin1Slice() : bytes.utf8Slice();
  const source = `(function (exports, require, module, __filename, __dirname, __import) {${text}\n})`;
  const script = new vm.Script(source, { filename: BUNDLE, cachedData });
  const module = { exports: {} };
  const load = (specifier) => import(specifier);
  script.runInThisContext().call(module.exports, module.exports, bundleRequire, module, BUNDLE, dirname(BUNDLE), load);
  return { exports: module.exports, script, cacheRejected: cachedData ? script.cachedDataRejected : undefined };
}

module.exports = { BUNDLE, CODE_CACHE, COMMAND_CACHES, bundleFresh, codeCacheFile, codeCacheFor, loadBundle };
