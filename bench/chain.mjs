#!/usr/bin/env node
// `diskhub img` rebase, commit and convert onto an existing destination against qemu-img, in
// the same run, with the ratio. Inputs (made once under bench/work/chain): base.qcow2, 2 GiB
// virtual with 1 GiB of random data (the first MiB of every 2 MiB, each MiB its own random
// bytes); top.qcow2 over it with 256 MiB of other random data (the second MiB of every 8 MiB);
// data.raw, the base's content as raw. Every timed command gets fresh copies of the images it
// changes, made before the clock starts; the tools alternate, the order rotating each round.
// Prints best and median wall time of BENCH_RUNS (default 5) per tool, median user and system
// time, and the median ratio. BENCH_BASELINE=<other tree>/packages/cli/bin/diskhub.js adds that
// build (say, the tree before a change) as a third tool in the same rounds.
//   node bench/chain.mjs        (after npm run build; needs qemu-img, qemu-io, /usr/bin/time)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeSync, closeSync, ftruncateSync, rmSync, copyFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'chain');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const MiB = 2 ** 20, GiB = 2 ** 30;
const diskhub = [process.execPath, join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'img'];
const baseline = process.env.BENCH_BASELINE ? [process.execPath, resolve(process.env.BENCH_BASELINE), 'img'] : undefined;
const tools = { q: ['qemu-img'], d: diskhub, ...(baseline ? { b: baseline } : {}) };
const labels = { q: 'qemu-img', d: 'diskhub', b: 'baseline' };
mkdirSync(work, { recursive: true });
const at = (f) => join(work, f);
const env = { ...process.env };
// See bench/img.mjs: the CA bundle variable costs every Node.js start 45-55 ms here.
if (!process.env.BENCH_KEEP_ENV) delete env.NODE_EXTRA_CA_CERTS;

if (!existsSync(at('base.qcow2'))) {
  const fd = openSync(at('data.raw'), 'w');
  ftruncateSync(fd, 2 * GiB);
  for (let off = 0; off < 2 * GiB; off += 2 * MiB) writeSync(fd, randomBytes(MiB), 0, MiB, off);
  closeSync(fd);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', at('data.raw'), at('base.qcow2')]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('top.qcow2')]);
  const piece = at('piece.bin');
  const io = [];
  for (let off = MiB, i = 0; off < 2 * GiB; off += 8 * MiB, i++) {
    if (i % 32 === 0 && io.length) { execFileSync('qemu-io', ['-f', 'qcow2', ...io.splice(0), at('top.qcow2')]); }
    execFileSync('sh', ['-c', `head -c ${MiB} /dev/urandom > ${piece}.${i % 32}`]);
    io.push('-c', `write -s ${piece}.${i % 32} ${off} ${MiB}`);
  }
  execFileSync('qemu-io', ['-f', 'qcow2', ...io, at('top.qcow2')]);
  for (let i = 0; i < 32; i++) rmSync(`${piece}.${i}`, { force: true });
}

/** Wall, user and system seconds of one run. */
function timed(cmd, args) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', cmd, ...args], { encoding: 'utf8', env, cwd: work });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stderr.trim().split('\n').pop().split(' ').map(Number);
}

/** Fresh copies of the files a case changes, named per tool (q-*, d-*), chain links intact. */
function fresh(prefix, files) {
  for (const f of files) {
    rmSync(at(`${prefix}-${f}`), { force: true });
    execFileSync('cp', ['--sparse=always', at(f), at(`${prefix}-${f}`)]);
  }
  if (files.includes('base.qcow2') && files.includes('top.qcow2')) {
    execFileSync('qemu-img', ['rebase', '-u', '-b', `${prefix}-base.qcow2`, '-F', 'qcow2', at(`${prefix}-top.qcow2`)]);
  }
}

const cases = [
  { name: 'rebase -b "" (flatten 1 GiB into the overlay)', files: ['top.qcow2'], args: (p) => ['rebase', '-b', '', `${p}-top.qcow2`] },
  { name: 'rebase onto an identical raw base (compare 2 GiB, write nothing)', files: ['top.qcow2'], args: (p) => ['rebase', '-b', 'data.raw', '-F', 'raw', `${p}-top.qcow2`] },
  { name: 'commit (256 MiB into the base, overlay emptied)', files: ['base.qcow2', 'top.qcow2'], args: (p) => ['commit', `${p}-top.qcow2`] },
  {
    name: 'convert raw→qcow2 onto an existing destination', files: [],
    prepare: (p, run) => run(['convert', '-O', 'qcow2', 'data.raw', `${p}-out.qcow2`]),
    args: (p) => ['convert', '-O', 'qcow2', 'data.raw', `${p}-out.qcow2`],
  },
];

const filter = process.env.BENCH_CASES ? new RegExp(process.env.BENCH_CASES) : undefined;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const order = Object.keys(tools);
for (const c of cases) {
  if (filter && !filter.test(c.name)) continue;
  const times = Object.fromEntries(order.map((p) => [p, []]));
  for (let round = 0; round < RUNS; round++) {
    // The order rotates every round, so that no tool always runs right after another's.
    for (const p of order.map((_, i) => order[(i + round) % order.length])) {
      const tool = tools[p];
      const run = (args) => execFileSync(tool[0], [...tool.slice(1), ...args], { cwd: work, env, stdio: 'ignore' });
      fresh(p, c.files);
      c.prepare?.(p, run);
      execFileSync('sync');
      times[p].push(timed(tool[0], [...tool.slice(1), ...c.args(p)]));
    }
  }
  const wall = (p) => median(times[p].map((t) => t[0]));
  const parts = order.map((p) => `${labels[p]} best ${Math.min(...times[p].map((t) => t[0])).toFixed(2)} s median ${wall(p).toFixed(2)} s (user ${median(times[p].map((t) => t[1])).toFixed(2)}, sys ${median(times[p].map((t) => t[2])).toFixed(2)})`);
  console.log(`${c.name}: ${parts.join('; ')}; ratio ${(wall('d') / wall('q')).toFixed(2)}${baseline ? `, baseline's ${(wall('b') / wall('q')).toFixed(2)}` : ''}`);
}
for (const p of order) for (const f of ['top.qcow2', 'base.qcow2', 'out.qcow2']) rmSync(at(`${p}-${f}`), { force: true });
