#!/usr/bin/env node
// How fast can Node.js copy the data of a sparse raw image at all? A bare loop with everything
// diskhub's convert does for raw→raw and nothing else (SEEK_DATA/SEEK_HOLE, 2 MiB page-aligned
// reads, eight in flight, a 4 KiB zero scan, writes of the non-zero runs with their blocks
// reserved first), against `diskhub img convert -O raw` and `qemu-img convert -O raw` on the
// same input in the same run, best of BENCH_RUNS, alternating. The floor's time is what
// start-up, the libuv thread pool and the page-cache copies cost in Node; the rest of
// diskhub's time is the engine's (block status, planning, drivers).
//   node bench/img.mjs first (it makes bench/work/img/mixed-2048M.raw), then node bench/node-floor.mjs
//   node bench/node-floor.mjs --copy SRC DST    (the floor loop alone)
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CHUNK = 2 << 20;
const IN_FLIGHT = 8;

async function copy(srcPath, dstPath) {
  const { hostio, pageAlignedBytes } = await import('@diskhub/hostio');
  const src = await open(srcPath, 'r');
  const dst = await open(dstPath, 'w');
  const size = (await src.stat()).size;
  await dst.truncate(size);
  const zero = Buffer.alloc(4096);
  const isZero = (buf, at) => buf[at] === 0 && zero.compare(buf, at, at + 4096) === 0;
  const jobs = [];
  for (let pos = 0; pos < size;) {
    const data = hostio.seek(src.fd, pos, 0);
    if (data < 0) break;
    const hole = hostio.seek(src.fd, data, 1);
    for (let at = data; at < hole; at += CHUNK) jobs.push([at, Math.min(CHUNK, hole - at)]);
    pos = hole;
  }
  const free = Array.from({ length: IN_FLIGHT }, () => pageAlignedBytes(CHUNK));
  const running = new Set();
  for (const [at, length] of jobs) {
    if (running.size >= IN_FLIGHT) await Promise.race(running);
    const buf = free.pop();
    const job = (async () => {
      await src.read(buf, 0, length, at);
      for (let p = 0; p < length;) {
        let end = p;
        const z = isZero(buf, p);
        while (end < length && isZero(buf, end) === z) end += 4096;
        if (!z) {
          await hostio.reserve(dst.fd, at + p, end - p);
          await dst.write(buf, p, end - p, at + p);
        }
        p = end;
      }
      free.push(buf);
    })();
    running.add(job);
    job.finally(() => running.delete(job));
  }
  await Promise.all(running);
  await src.close();
  await dst.close();
}

if (process.argv[2] === '--copy') {
  await copy(process.argv[3], process.argv[4]);
} else {
  const src = join(root, 'bench', 'work', 'img', `mixed-${Number(process.env.BENCH_SIZE_MB ?? 2048)}M.raw`);
  if (!existsSync(src)) throw new Error(`${src} is missing: run node bench/img.mjs first`);
  const RUNS = Number(process.env.BENCH_RUNS ?? 5);
  const out = join(root, 'bench', 'work', 'img', 'floor-out.raw');
  const env = { ...process.env };
  if (!process.env.BENCH_KEEP_ENV) delete env.NODE_EXTRA_CA_CERTS; // as bench/img.mjs
  const tools = {
    'qemu-img convert -O raw': ['qemu-img', ['convert', '-O', 'raw', src, out]],
    'diskhub img convert -O raw': [process.execPath, [join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'img', 'convert', '-O', 'raw', src, out]],
    'bare Node.js copy loop': [process.execPath, [fileURLToPath(import.meta.url), '--copy', src, out]],
  };
  const best = {};
  for (let i = 0; i < RUNS; i++) {
    for (const [name, [cmd, args]] of Object.entries(tools)) {
      rmSync(out, { force: true });
      const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', cmd, ...args], { encoding: 'utf8', env });
      if (r.status !== 0) throw new Error(`${name}: ${r.stderr}`);
      const [wall, user, sys] = r.stderr.trim().split('\n').pop().split(' ').map(Number);
      if (!best[name] || wall < best[name][0]) best[name] = [wall, user, sys];
    }
  }
  // The floor must do the whole job: its output equals the input.
  rmSync(out, { force: true });
  await copy(src, out);
  const same = spawnSync('cmp', [src, out]);
  rmSync(out, { force: true });
  if (same.status !== 0) throw new Error('the bare copy loop made a different image');
  const peer = best['qemu-img convert -O raw'][0];
  console.log(`input: ${src}, best of ${RUNS}`);
  console.log('| tool | wall s | user s | sys s | ÷ qemu-img |');
  console.log('| --- | ---: | ---: | ---: | ---: |');
  for (const [name, [wall, user, sys]] of Object.entries(best)) {
    console.log(`| ${name} | ${wall.toFixed(2)} | ${user.toFixed(2)} | ${sys.toFixed(2)} | ${(wall / peer).toFixed(2)} |`);
  }
}
