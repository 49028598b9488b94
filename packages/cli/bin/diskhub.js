#!/usr/bin/env node
// Launcher. Runs the bundled CLI (dist/bundle/, made by build.mjs: starts several times faster)
// when it is at least as new as every compiled package it inlines, otherwise the compiled
// modules (dist/src/), so a `tsc -b` without the bundling step never runs stale code.
// DISKHUB_NO_BUNDLE=1 forces the compiled modules.
import { statSync } from 'node:fs';

function mtime(url) {
  try {
    return statSync(new URL(url, import.meta.url)).mtimeMs;
  } catch {
    return NaN;
  }
}

const bundle = mtime('../dist/bundle/main.js');
const inputs = ['../dist/tsconfig.tsbuildinfo', '../../disk/dist/tsconfig.tsbuildinfo', '../../nbd/dist/tsconfig.tsbuildinfo'];
const fresh = !process.env.DISKHUB_NO_BUNDLE && Number.isFinite(bundle) && inputs.every((f) => !(mtime(f) > bundle));
const { main } = await import(fresh ? '../dist/bundle/main.js' : '../dist/src/main.js');
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
