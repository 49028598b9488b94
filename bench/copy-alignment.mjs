#!/usr/bin/env node
// How much the kernel's page-cache copy costs depending on where the user buffer starts within
// a memory page: 2 MiB preads of a whole file into Node's default buffer (which starts 16 bytes
// into a page) and into a page-aligned one (hostio's pageAlignedBytes), system time of each.
// On this project's AMD EPYC VM the default buffer costs several times more (see BENCHMARKS.md).
//   node bench/copy-alignment.mjs [FILE]   (default: bench/work/img/mixed-2048M.raw, run bench/img.mjs first)
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hostio, pageAlignedBytes } from '../packages/hostio/dist/src/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const file = process.argv[2] ?? join(root, 'bench', 'work', 'img', 'mixed-2048M.raw');
if (!hostio) throw new Error('the hostio addon is not built: run npm run build');
const fd = openSync(file, 'r');
const size = fstatSync(fd).size;
const CHUNK = 2 << 20;
console.log(`${file}: ${(size / 2 ** 20).toFixed(0)} MiB in 2 MiB preads (page cache warmed by the first pass)`);
for (const kind of ['default', 'aligned', 'default', 'aligned']) {
  const buf = kind === 'aligned' ? pageAlignedBytes(CHUNK) : new Uint8Array(CHUNK);
  const cpu = process.cpuUsage();
  for (let off = 0; off < size; off += CHUNK) readSync(fd, buf, 0, CHUNK, off);
  const used = process.cpuUsage(cpu);
  console.log(`${kind.padEnd(8)} buffer at page offset ${String(hostio.pageOffset(buf)).padStart(4)}: system ${(used.system / 1e6).toFixed(2)} s, user ${(used.user / 1e6).toFixed(2)} s`);
}
closeSync(fd);
