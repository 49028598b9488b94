#!/usr/bin/env node
// `diskhub build` of a recipe (BENCH_RECIPE, default examples/debian-12-minimal.yaml): a cold build (an empty DISKHUB_BUILD_CACHE:
// debootstrap downloads and installs the base, apt downloads the packages) and then a warm one
// (the same cache: the debootstrap tarball is unpacked, the packages come from the cache), with
// the time of each step from the build's progress lines and the size of the output.
//
// No peer runs in the same run: diskimage-builder (python3-diskimage-builder) needs kpartx and
// device-mapper for a partitioned image, which this machine does not have — that is why the
// build puts each filesystem on its own loop device. The numbers are absolute, not a ratio.
//   sudo node bench/build.mjs    (after npm run build; root, debootstrap, grub-*-bin, mtools...)
//   sudo BENCH_RECIPE=examples/ubuntu-24.04-minimal.yaml node bench/build.mjs
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'build');
const cache = join(work, 'cache');
const recipe = resolve(root, process.env.BENCH_RECIPE ?? 'examples/debian-12-minimal.yaml');
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

function build(name) {
  const out = join(work, `${name}.qcow2`);
  const started = Date.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(root, 'packages/cli/bin/diskhub.js'), 'build', recipe, '-o', out],
      { env: { ...process.env, DISKHUB_BUILD_CACHE: cache }, stdio: ['ignore', 'inherit', 'pipe'] });
    const steps = [];
    let text = '';
    child.stderr.on('data', (b) => {
      text += b.toString();
      process.stderr.write(b);
      for (const m of b.toString().matchAll(/^\[(\d+)\/\d+ (\d+):(\d\d)\] (.*)$/gm)) steps.push({ at: Number(m[2]) * 60 + Number(m[3]), what: m[4].slice(0, 40) });
    });
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${name} build exited ${code}:\n${text.slice(-2000)}`));
      resolvePromise({ name, seconds: (Date.now() - started) / 1000, bytes: statSync(out).size, steps });
    });
  });
}

const load = () => loadavg().map((x) => x.toFixed(1)).join(' ');
console.log(`load average before: ${load()}`);
const cold = await build('cold');
console.log(`load average after the cold build: ${load()}`);
const warm = await build('warm');
console.log(`load average after the warm build: ${load()}`);
for (const r of [cold, warm]) {
  console.log(`\n${r.name}: ${r.seconds.toFixed(0)} s, output ${(r.bytes / 2 ** 20).toFixed(1)} MiB (qcow2, compressed)`);
  r.steps.forEach((s, i) => {
    const next = r.steps[i + 1]?.at ?? Math.round(r.seconds);
    console.log(`  ${String(next - s.at).padStart(4)} s  ${s.what}`);
  });
}
rmSync(work, { recursive: true, force: true });
