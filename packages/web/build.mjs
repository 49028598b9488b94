#!/usr/bin/env node
// Builds the dashboard: type-checks app/ with tsc, bundles it with esbuild (minified, content-
// hashed file names) into dist/app/, and writes index.html pointing at the bundles. The service
// serves dist/app/ (config webDir). `--watch` rebuilds on change while developing.
import { build, context } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist', 'app');
const watch = process.argv.includes('--watch');

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const check = spawnSync(process.execPath, [tsc, '-p', join(here, 'app', 'tsconfig.json')], { stdio: 'inherit' });
if (check.status !== 0) process.exit(check.status ?? 1);

const options = {
  entryPoints: [join(here, 'app', 'main.tsx')],
  bundle: true,
  minify: !watch,
  sourcemap: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  platform: 'browser',
  outdir: out,
  entryNames: watch ? '[name]' : '[name]-[hash]',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  metafile: true,
  logLevel: 'warning',
  legalComments: 'none',
};

function writeIndex(metafile) {
  const outputs = Object.keys(metafile.outputs).map((p) => basename(p));
  const js = outputs.find((p) => p.endsWith('.js'));
  const css = outputs.find((p) => p.endsWith('.css'));
  const html = readFileSync(join(here, 'app', 'index.html'), 'utf8')
    .replace('%CSS%', css ?? '')
    .replace('%JS%', js ?? '');
  writeFileSync(join(out, 'index.html'), html);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
if (watch) {
  const ctx = await context({ ...options, plugins: [{ name: 'index', setup(b) { b.onEnd((r) => r.metafile && writeIndex(r.metafile)); } }] });
  await ctx.watch();
  console.log(`watching app/ → ${out}`);
} else {
  const r = await build(options);
  writeIndex(r.metafile);
  const sizes = Object.entries(r.metafile.outputs).filter(([p]) => !p.endsWith('.map')).map(([p, o]) => `${basename(p)} ${(o.bytes / 1024).toFixed(1)} KiB`);
  console.log(`dashboard built: ${sizes.join(', ')}`);
}
