#!/usr/bin/env node
// `diskhub img sysprep` against libguestfs's `virt-sysprep` in the same run, on fresh copies of
// the same image, with the operations both have (--enable, the same list for both; virt-sysprep
// with LIBGUESTFS_BACKEND=direct and TCG, the only way it runs on the machine this was written
// on). The image: BENCH_IMAGE, default the example recipe's image the tests build
// (/var/tmp/diskhub-test-images/debian-12-minimal-*.qcow2, the newest). Runs alternate, ours
// first; the medians of BENCH_RUNS (default 3) wall-clock seconds are printed with the ratio.
// Needs root (loop devices, mount), qemu-img and virt-sysprep. `npm run build` first.
//   sudo node bench/sysprep.mjs
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'sysprep');
const runs = Number(process.env.BENCH_RUNS ?? 3);
const OPS = 'bash-history,dhcp-client-state,logfiles,machine-id,net-hwaddr,package-manager-cache,passwd-backups,ssh-hostkeys,tmp-files,udev-persistent-net,utmp';
mkdirSync(work, { recursive: true });

function defaultImage() {
  const dir = '/var/tmp/diskhub-test-images';
  const found = readdirSync(dir).filter((n) => /^debian-12-minimal-[0-9a-f]+\.qcow2$/.test(n)).map((n) => join(dir, n));
  if (found.length === 0) throw new Error(`no example image in ${dir}: run packages/cli/dist/test/boot-test.test.js first, or set BENCH_IMAGE`);
  return found.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}
const image = process.env.BENCH_IMAGE ?? defaultImage();
const format = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', image], { encoding: 'utf8' })).format;

function timed(cmd, args, env = process.env) {
  const copy = join(work, `copy.${format}`);
  rmSync(copy, { force: true });
  copyFileSync(image, copy);
  const start = process.hrtime.bigint();
  execFileSync(cmd, [...args, copy], { stdio: ['ignore', 'ignore', 'inherit'], env });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rmSync(copy, { force: true });
  return seconds;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ours = [];
const theirs = [];
for (let i = 0; i < runs; i++) {
  ours.push(timed(process.execPath, [join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'img', 'sysprep', '-q', '--format', format, '--enable', OPS, '-a']));
  theirs.push(timed('virt-sysprep', ['-q', '--format', format, '--enable', OPS, '-a'], { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' }));
  process.stderr.write(`run ${i + 1}: diskhub ${ours[i].toFixed(1)} s, virt-sysprep ${theirs[i].toFixed(1)} s\n`);
}
console.log(`image: ${image} (${format}, ${statSync(image).size} bytes)`);
console.log(`img sysprep ${median(ours).toFixed(1)} s   virt-sysprep ${median(theirs).toFixed(1)} s   ratio ${(median(theirs) / median(ours)).toFixed(1)}x faster (medians of ${runs})`);
