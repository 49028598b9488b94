#!/usr/bin/env node
// Bundles the compiled CLI (dist/src/main.js) with the disk engine and the NBD server into
// dist/bundle/: a few large files load several times faster than the ~100 small modules they
// come from, and start-up is all of `diskhub img info` (see BENCHMARKS.md). The service and
// every npm dependency stay external (native addons, wasm files and their own paths).
// bin/diskhub.js runs the bundle only when it is newer than the compiled packages.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist', 'bundle');
const inlined = new Set(['@diskhub/disk', '@diskhub/nbd']);

rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: [join(here, 'dist', 'src', 'main.js')],
  bundle: true,
  splitting: true, // `img` and `nbd` stay separate chunks, loaded on demand as before
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir: out,
  logLevel: 'warning',
  legalComments: 'none',
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
