#!/usr/bin/env node
// `diskhub nbd` against qemu-nbd on the same image in the same run: nbdcopy reading the
// whole export to /dev/null (and to a sparse file), best of BENCH_RUNS, with the ratio and
// the server's peak RSS (VmHWM). Input: the mixed raw image bench/img.mjs makes (BENCH_SIZE_MB,
// default 2048; it is made here if missing), served as qcow2 (converted by qemu-img).
//   node bench/nbd.mjs        (after npm run build; needs qemu-nbd, nbdcopy)
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'img');
const SIZE_MB = Number(process.env.BENCH_SIZE_MB ?? 2048);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
mkdirSync(work, { recursive: true });
const raw = join(work, `mixed-${SIZE_MB}M.raw`);
if (!existsSync(raw)) execFileSync(process.execPath, [join(root, 'bench', 'img.mjs')], { env: { ...process.env, BENCH_CASES: '^$' }, stdio: 'inherit' });
const qcow = join(work, `mixed-${SIZE_MB}M.qcow2`);
if (!existsSync(qcow)) execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, qcow]);

const wait = (ms) => new Promise((r) => setTimeout(r, ms));
async function server(who, port) {
  const args = who === 'diskhub'
    ? [process.execPath, [join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'nbd', '-t', '-r', '-e', '8', '-f', 'qcow2', '-p', String(port), qcow]]
    : ['qemu-nbd', ['-t', '-r', '-e', '8', '-f', 'qcow2', '-b', '127.0.0.1', '-p', String(port), qcow]];
  const proc = spawn(args[0], args[1], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    await wait(50);
    try { execFileSync('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`], { stdio: 'ignore' }); return proc; } catch { /* not yet */ }
  }
  throw new Error(`${who} did not start`);
}
const hwm = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

console.log(`input: ${qcow} (${SIZE_MB} MiB virtual), best of ${RUNS}`);
console.log('| nbdcopy from the server | diskhub s | qemu-nbd s | ratio | diskhub peak RSS | qemu-nbd peak RSS |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
const cases = [['to /dev/null', 'null:'], ['to a sparse file', join(work, 'nbd-out.raw')]];
let port = 10950;
for (const [name, target] of cases) {
  const best = {}, rss = {};
  for (const who of ['diskhub', 'qemu-nbd']) {
    const proc = await server(who, port);
    best[who] = Infinity;
    for (let i = 0; i < RUNS; i++) {
      const t0 = process.hrtime.bigint();
      execFileSync('nbdcopy', [`nbd://127.0.0.1:${port}`, target]);
      best[who] = Math.min(best[who], Number(process.hrtime.bigint() - t0) / 1e9);
    }
    rss[who] = hwm(proc.pid);
    proc.kill('SIGTERM');
    await wait(200);
    port++;
  }
  const mib = (kb) => `${(kb / 1024).toFixed(0)} MiB`;
  console.log(`| ${name} | ${best.diskhub.toFixed(2)} | ${best['qemu-nbd'].toFixed(2)} | ${(best.diskhub / best['qemu-nbd']).toFixed(2)} | ${mib(rss.diskhub)} | ${mib(rss['qemu-nbd'])} |`);
}
