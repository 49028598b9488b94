#!/usr/bin/env node
// Launcher. Runs the bundled CLI (dist/bundle/main.cjs, made by build.mjs; starts several times
// faster, see load-bundle.js) when it is at least as new as every compiled package it inlines,
// otherwise the compiled modules (dist/src/), so a `tsc -b` without the bundling step never runs
// stale code. DISKHUB_NO_BUNDLE=1 forces the compiled modules. CommonJS (bin/package.json), like
// the bundle: an ES-module entry point costs every command the set-up of Node's ES module loader.
'use strict';
const { bundleFresh, codeCacheFor, loadBundle } = require('./load-bundle.js');

const argv = process.argv.slice(2);
const cli = !process.env.DISKHUB_NO_BUNDLE && bundleFresh() ? Promise.resolve(loadBundle({ cache: codeCacheFor(argv) }).exports) : import('../dist/src/main.js');
cli.then(({ main }) => main(argv)).then((code) => { process.exitCode = code; });
