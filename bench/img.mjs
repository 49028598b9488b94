#!/usr/bin/env node
// `diskhub img` against qemu-img on the same inputs in the same run: wall time (best of
// BENCH_RUNS, alternating the two tools) and peak RSS (GNU time's %M), with the ratio.
// Inputs (made once under bench/work/img): a raw image of BENCH_SIZE_MB virtual size (default
// 2048) holding a mix of random data (each random MiB its own), compressible text and zero runs
// in 1 MiB pieces (about half the image), the rest holes; qcow2 images made from it by qemu-img. BENCH_CASES=regex
// runs only the matching rows.
//   node bench/img.mjs        (after npm run build; needs qemu-img and /usr/bin/time)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeSync, closeSync, rmSync, ftruncateSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'img');
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 2048) * 2 ** 20;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const diskhub = [process.execPath, join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'img'];
mkdirSync(work, { recursive: true });

// Inputs made before every random MiB was its own (one random MiB repeated all through the image,
// which real data never is) are made again.
const INPUTS_VERSION = '2';
const stamp = join(work, 'inputs-version');
if (!existsSync(stamp) || readFileSync(stamp, 'utf8').trim() !== INPUTS_VERSION) {
  for (const f of readdirSync(work)) if (f.startsWith('mixed-') || f === 'copy.raw') rmSync(join(work, f));
}
const src = join(work, `mixed-${SIZE / 2 ** 20}M.raw`);
if (!existsSync(src)) {
  const fd = openSync(src, 'w');
  ftruncateSync(fd, SIZE);
  const text = Buffer.from('The quick brown fox jumps over the lazy dog. '.repeat(23302).slice(0, 1 << 20));
  const zero = Buffer.alloc(1 << 20);
  // Per 4 MiB: random, text, zeros (written, so allocated), hole.
  for (let off = 0; off < SIZE; off += 4 << 20) {
    const random = randomBytes(1 << 20);
    writeSync(fd, random, 0, random.length, off);
    writeSync(fd, text, 0, text.length, off + (1 << 20));
    writeSync(fd, zero, 0, zero.length, off + (2 << 20));
  }
  closeSync(fd);
  writeFileSync(stamp, INPUTS_VERSION);
}
const copy = join(work, 'copy.raw');
if (!existsSync(copy)) execFileSync('cp', ['--sparse=always', src, copy]);

// NODE_EXTRA_CA_CERTS (set on these machines to the system CA bundle, for the package proxy)
// makes every Node.js 20 process parse 220 KB of PEM before it runs any code: 45-55 ms per start
// here, more than `img info` takes. A user's shell does not have it and `diskhub img` makes no
// TLS connection, so both tools run without it; BENCH_KEEP_ENV=1 keeps it.
const env = { ...process.env };
if (!process.env.BENCH_KEEP_ENV) delete env.NODE_EXTRA_CA_CERTS;

/** Run under GNU time; returns [seconds, peak RSS KiB]. */
function timed(cmd, args) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 30, env });
  if (r.status !== 0 && r.status !== 1) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  const [s, kb] = r.stderr.trim().split('\n').pop().split(' ').map(Number);
  return [s, kb];
}

// qcow2 inputs made by qemu-img from the same data: plain, compressed, 1 KiB clusters (over a
// million allocated clusters for `check`), and a 1 TiB sparse image with scattered data for `map`.
const q = (name, args) => {
  const path = join(work, name);
  if (!existsSync(path)) execFileSync('qemu-img', args(path));
  return path;
};
const qcow = q(`mixed-${SIZE / 2 ** 20}M.qcow2`, (p) => ['convert', '-O', 'qcow2', src, p]);
const qcowZ = q(`mixed-${SIZE / 2 ** 20}M-c.qcow2`, (p) => ['convert', '-c', '-O', 'qcow2', src, p]);
const qcow1k = q(`mixed-${SIZE / 2 ** 20}M-1k.qcow2`, (p) => ['convert', '-O', 'qcow2', '-o', 'cluster_size=1k', src, p]);
const vdi = q(`mixed-${SIZE / 2 ** 20}M.vdi`, (p) => ['convert', '-O', 'vdi', src, p]);
const vhd = q(`mixed-${SIZE / 2 ** 20}M.vhd`, (p) => ['convert', '-O', 'vpc', src, p]);
const vmdkStream = q(`mixed-${SIZE / 2 ** 20}M-stream.vmdk`, (p) => ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, p]);
const vmdkSparse = q(`mixed-${SIZE / 2 ** 20}M.vmdk`, (p) => ['convert', '-O', 'vmdk', src, p]);
const vhdx = q(`mixed-${SIZE / 2 ** 20}M.vhdx`, (p) => ['convert', '-O', 'vhdx', src, p]);
// Encrypted (LUKS, aes-256-xts-plain64); iter-time is tiny so PBKDF2 does not dominate.
const SECRET = ['--object', 'secret,id=sec0,data=bench'];
const LUKS_OPTS = 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10';
const qcowLuks = q(`mixed-${SIZE / 2 ** 20}M-luks.qcow2`, (p) => ['convert', ...SECRET, '-O', 'qcow2', '-o', LUKS_OPTS, src, p]);
const sparse = join(work, 'sparse-1T.qcow2');
if (!existsSync(sparse)) {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', sparse, '1T']);
  const io = [];
  for (let i = 0; i < 2000; i++) io.push('-c', `write -P ${i % 250} ${(i * 524287 * 1024) % (2 ** 40 - 2 ** 20)} 64k`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...io, sparse]);
}

const cases = [
  ['convert raw→qcow2', (out) => ['convert', '-O', 'qcow2', src, out]],
  ['convert qcow2→raw', (out) => ['convert', '-O', 'raw', qcow, out]],
  ['convert raw→qcow2 -c', (out) => ['convert', '-c', '-O', 'qcow2', src, out]],
  ['convert compressed qcow2→raw', (out) => ['convert', '-O', 'raw', qcowZ, out]],
  ['convert raw→qcow2 encrypt.format=luks', (out) => ['convert', ...SECRET, '-O', 'qcow2', '-o', LUKS_OPTS, src, out]],
  ['convert LUKS qcow2→raw', (out) => ['convert', ...SECRET, '--image-opts', `driver=qcow2,file.filename=${qcowLuks},encrypt.key-secret=sec0`, '-O', 'raw', out]],
  ['check qcow2 (1 KiB clusters, >1M allocated)', () => ['check', qcow1k]],
  ['info qcow2', () => ['info', '--output=json', qcow]],
  ['map 1 TiB sparse qcow2', () => ['map', '--output=json', sparse]],
  ['convert raw→vdi', (out) => ['convert', '-O', 'vdi', src, out]],
  ['convert vdi→qcow2', (out) => ['convert', '-O', 'qcow2', vdi, out]],
  ['convert vdi→raw', (out) => ['convert', '-O', 'raw', vdi, out]],
  ['convert raw→vpc', (out) => ['convert', '-O', 'vpc', src, out]],
  ['convert vpc→raw', (out) => ['convert', '-O', 'raw', vhd, out]],
  ['convert vmdk streamOptimized→qcow2', (out) => ['convert', '-O', 'qcow2', vmdkStream, out]],
  ['convert qcow2→vmdk streamOptimized', (out) => ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', qcow, out]],
  ['convert raw→vmdk', (out) => ['convert', '-O', 'vmdk', src, out]],
  ['convert vmdk→raw', (out) => ['convert', '-O', 'raw', vmdkSparse, out]],
  ['convert raw→vhdx', (out) => ['convert', '-O', 'vhdx', src, out]],
  ['convert vhdx→raw', (out) => ['convert', '-O', 'raw', vhdx, out]],
  ['convert raw→raw', (out) => ['convert', '-O', 'raw', src, out]],
  ['convert raw→raw -W -m 16', (out) => ['convert', '-W', '-m', '16', '-O', 'raw', src, out]],
  ['compare (identical)', () => ['compare', src, copy]],
  ['map --output=json', () => ['map', '--output=json', src]],
  ['info --output=json', () => ['info', '--output=json', src]],
];

console.log(`input: ${src} (${SIZE / 2 ** 20} MiB virtual), best of ${RUNS}${process.env.NODE_EXTRA_CA_CERTS && !process.env.BENCH_KEEP_ENV ? ', NODE_EXTRA_CA_CERTS unset' : ''}`);
console.log('| command | diskhub s | qemu-img s | ratio | diskhub peak RSS | qemu-img peak RSS |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
const only = process.env.BENCH_CASES ? new RegExp(process.env.BENCH_CASES) : null;
for (const [name, args] of cases) {
  if (only && !only.test(name)) continue;
  const best = { ours: [Infinity, 0], peer: [Infinity, 0] };
  for (let i = 0; i < RUNS; i++) {
    for (const who of ['ours', 'peer']) {
      const out = join(work, `out-${who}.raw`);
      rmSync(out, { force: true });
      const [s, kb] = who === 'ours' ? timed(diskhub[0], [...diskhub.slice(1), ...args(out)]) : timed('qemu-img', args(out));
      if (s < best[who][0]) best[who][0] = s;
      best[who][1] = Math.max(best[who][1], kb);
      rmSync(out, { force: true });
    }
  }
  const mib = (kb) => `${(kb / 1024).toFixed(0)} MiB`;
  // GNU time reports 10 ms steps; a zero is "under 10 ms".
  const ratio = best.peer[0] > 0 ? (best.ours[0] / best.peer[0]).toFixed(2) : `> ${(best.ours[0] / 0.01).toFixed(0)}`;
  console.log(`| ${name} | ${best.ours[0].toFixed(2)} | ${best.peer[0].toFixed(2)} | ${ratio} | ${mib(best.ours[1])} | ${mib(best.peer[1])} |`);
}
