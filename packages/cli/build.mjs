#!/usr/bin/env node
// Bundles the compiled CLI (dist/src/main.js) with the disk engine, the NBD server and hostio
// into one CommonJS file, dist/bundle/main.cjs, and writes V8's code cache for it
// (warm-code-cache.cjs): one file loads several times faster than the ~100 small modules it
// comes from, and from the cache faster again; start-up is all of `diskhub img info` (see
// bin/load-bundle.js and BENCHMARKS.md). The service and the zstd encoder stay external.
// bin/diskhub.js runs the bundle only when it is newer than the compiled packages.
import { build } from 'esbuild';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist', 'bundle');
// Our packages and the small pure-JavaScript zstd decoder are inlined; the service (loaded on
// demand, with its database drivers) and the zstd encoder (a wasm file it finds by path) are not.
const inlined = new Set(['@diskhub/disk', '@diskhub/nbd', '@diskhub/hostio', 'fzstd']);
const hostioEntry = join(here, '..', 'hostio', 'dist', 'src', 'index.js');

rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: [join(here, 'dist', 'src', 'main.js')],
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  outfile: join(out, 'main.cjs'),
  // hostio finds its addon relative to import.meta.url, the only use of it in what is inlined.
  define: { 'import.meta.url': '__hostioUrl' },
  banner: {
    js: [
      `const __hostioUrl = require('node:url').pathToFileURL(require('node:path').join(__dirname, ${JSON.stringify(relative(out, hostioEntry))})).href;`,
      // import() of the external packages goes through the launcher's __import when it passes
      // one: functions V8 restores from a code cache lose the script's import() callback.
      `const __dynamicImport = typeof __import === 'function' ? __import : (specifier) => import(specifier);`,
    ].join('\n'),
  },
  logLevel: 'warning',
  legalComments: 'none',
  // No comments or indentation, shorter equivalent syntax: 0.36 MB less to read, hash and scan
  // at every start, and (with ASCII escapes in strings) a pure-ASCII file, which load-bundle.js
  // turns into a V8 string by copying instead of UTF-8 decoding (23 M instructions of
  // `img info`'s 178 M). Identifiers keep their names, so stack traces still name functions.
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
  plugins: [
    {
      name: 'external-but-engine',
      setup(b) {
        // Bare specifiers outside the engine resolve at run time from node_modules.
        b.onResolve({ filter: /^[^./]/ }, (args) => {
          const pkg = args.path.startsWith('@') ? args.path.split('/').slice(0, 2).join('/') : args.path.split('/')[0];
          return inlined.has(pkg) ? undefined : { path: args.path, external: true };
        });
      },
    },
  ],
});

// Every import() left in the bundle loads an external package (esbuild turns the inlined ones
// into require calls): route them through __dynamicImport (see the banner).
const bundle = join(out, 'main.cjs');
writeFileSync(bundle, readFileSync(bundle, 'utf8').replace(/\bimport\((?=["'])/g, '__dynamicImport('));

// V8's code caches for the bundle (bin/load-bundle.js), made under V8's default flags
// (NODE_OPTIONS could change them): the images first, then every cache in a process of its own,
// side by side. Without them the bundle still runs, compiling as it loads. The commands print
// their reports (with write(2), past process.stdout): stdout is dropped, stderr shown only
// when a warm-up fails.
const { NODE_OPTIONS, ...env } = process.env;
const require = createRequire(import.meta.url);
const { COMMAND_CACHES } = require('./bin/load-bundle.js');
const scratch = mkdtempSync(join(tmpdir(), 'diskhub-warm-'));
const warmUp = (name) => new Promise((resolve) => {
  const child = spawn(process.execPath, [join(here, 'warm-code-cache.cjs'), name, scratch], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  child.on('error', (e) => resolve({ name, failure: e.message, stderr }));
  child.on('close', (status) => resolve({ name, failure: status === 0 ? undefined : `status ${status}`, stderr }));
});
try {
  const results = [];
  const setup = await warmUp('setup');
  if (setup.failure) results.push(setup);
  else results.push(...(await Promise.all(['full', ...COMMAND_CACHES].map(warmUp))));
  const failed = results.filter((r) => r.failure);
  for (const r of failed) {
    process.stderr.write(r.stderr);
    console.error(`warm-code-cache.cjs ${r.name} failed (${r.failure}); the bundle runs without that code cache`);
  }
  if (failed.length && process.env.CI === 'true') process.exitCode = 1;
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
