#!/usr/bin/env node
// `diskhub img resize` and `snapshot -c/-a/-d` against qemu-img on the same qcow2 images in the
// same run: each timed command gets a fresh copy of its input (the copy is not timed); wall
// time is the best of BENCH_RUNS runs, alternating the two tools, with the ratio.
// Input (made once under bench/work/mutate): a qcow2 of BENCH_SIZE_MB virtual size (default
// 2048) with half of it random data (1 MiB pieces, every other MiB), made by qemu-img; and a
// copy with an internal snapshot and 64 MiB rewritten after it.
//   node bench/img-mutate.mjs        (after npm run build; needs qemu-img and qemu-io)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeSync, closeSync, ftruncateSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'mutate');
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 2048) * 2 ** 20;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const diskhub = [process.execPath, join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'img'];
mkdirSync(work, { recursive: true });
// As bench/img.mjs: Node without NODE_EXTRA_CA_CERTS (a user's shell does not set it).
const env = { ...process.env };
if (!process.env.BENCH_KEEP_ENV) delete env.NODE_EXTRA_CA_CERTS;

const base = join(work, `half-random-${SIZE / 2 ** 20}M.qcow2`);
if (!existsSync(base)) {
  // The raw image is only the qcow2's source: removed once converted (the disk is shared).
  const raw = join(work, `half-random-${SIZE / 2 ** 20}M.raw`);
  const fd = openSync(raw, 'w');
  ftruncateSync(fd, SIZE);
  // Really random data, a fresh MiB each time (not one block repeated).
  for (let off = 0; off < SIZE; off += 2 << 20) writeSync(fd, randomBytes(1 << 20), 0, 1 << 20, off);
  closeSync(fd);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, base]);
  rmSync(raw);
}
const snapped = join(work, `half-random-${SIZE / 2 ** 20}M-snap.qcow2`);
if (!existsSync(snapped)) {
  execFileSync('cp', ['--sparse=always', base, snapped]);
  execFileSync('qemu-img', ['snapshot', '-c', 's1', snapped]);
  execFileSync('qemu-io', ['-c', 'write -P 5 0 64M', snapped]);
}

const cases = [
  ['resize +1G', base, ['resize', 'IMG', '+1G']],
  ['resize --shrink to 3/4', base, ['resize', '--shrink', 'IMG', String((SIZE / 4) * 3)]],
  ['snapshot -c', snapped, ['snapshot', '-c', 's2', 'IMG']],
  ['snapshot -a', snapped, ['snapshot', '-a', 's1', 'IMG']],
  ['snapshot -d', snapped, ['snapshot', '-d', 's1', 'IMG']],
];

// Wall time, and CPU time (user + system, GNU time's 10 ms resolution): on a shared machine the
// wall time of these commands is mostly the first fdatasync, which flushes the fresh copy and
// waits on whatever else the disk is doing; the CPU time is what the tool itself costs.
const times = join(work, 'time.txt');
function timeOne(cmd, args, input) {
  const img = join(work, 'target.qcow2');
  rmSync(img, { force: true });
  execFileSync('cp', ['--sparse=always', input, img]);
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', '-o', times, cmd, ...args.map((a) => (a === 'IMG' ? img : a))], { encoding: 'utf8', env });
  const s = Number(process.hrtime.bigint() - start) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  const [user, sys] = readFileSync(times, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  const check = spawnSync('qemu-img', ['check', img], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`check after ${cmd} ${args.join(' ')}: ${check.stdout}`);
  rmSync(img, { force: true });
  return { wall: s, cpu: user + sys };
}

console.log(`| command (${SIZE / 2 ** 30} GiB virtual, ${SIZE / 2 ** 31} GiB data) | diskhub s | qemu-img s | ratio | diskhub CPU s | qemu-img CPU s |`);
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const [name, input, args] of cases) {
  const ours = { wall: Infinity, cpu: Infinity }, peer = { wall: Infinity, cpu: Infinity };
  const keep = (best, t) => { best.wall = Math.min(best.wall, t.wall); best.cpu = Math.min(best.cpu, t.cpu); };
  for (let i = 0; i < RUNS; i++) {
    keep(ours, timeOne(diskhub[0], [...diskhub.slice(1), ...args], input));
    keep(peer, timeOne('qemu-img', args, input));
  }
  console.log(`| ${name} | ${ours.wall.toFixed(3)} | ${peer.wall.toFixed(3)} | ${(ours.wall / peer.wall).toFixed(2)} | ${ours.cpu.toFixed(2)} | ${peer.cpu.toFixed(2)} |`);
}
rmSync(times, { force: true });
