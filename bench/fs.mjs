#!/usr/bin/env node
// Files inside an image, diskhub against the kernel in the same run (issue 20's speed targets):
//  - `diskhub img ls -lR IMAGE /` of an ext4 filesystem in a qcow2 holding a copy of
//    /usr/share/doc (mkfs.ext4 -d), against `find MNT -ls` on the same filesystem loop-mounted;
//  - `diskhub img cat IMAGE /big` of a 1 GiB file (qcow2 and raw), against `cat MNT/big`.
// The mount is remounted before each kernel run, so its dentry, inode and page caches start
// cold while the image file itself stays in the host's page cache — as it does for diskhub.
//  - `diskhub img ls -lR` of the same qcow2 against libguestfs's `virt-ls -lR` (an appliance
//    boot per call, as users wait for it today; LIBGUESTFS_BACKEND=direct with TCG, the only
//    way it runs on the machine this was written on; BENCH_GUESTFS_RUNS, default 3).
// Runs are interleaved; the median of BENCH_RUNS (default 5) is printed with the ratio.
// BENCH_ONLY=text runs only the rows whose name contains it.
// Needs root (loop mounts), mkfs.ext4, qemu-img, virt-ls. `npm run build` first.
//   node bench/fs.mjs
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'fs');
const runs = Number(process.env.BENCH_RUNS ?? 5);
const guestfsRuns = Number(process.env.BENCH_GUESTFS_RUNS ?? 3);
const only = process.env.BENCH_ONLY;
const guestfsEnv = { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };
const diskhub = [process.execPath, join(root, 'packages', 'cli', 'bin', 'diskhub.js')];
mkdirSync(work, { recursive: true });

const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], ...opts });

function prepare() {
  const docs = join(work, 'docs.img');
  if (!existsSync(join(work, 'docs.qcow2'))) {
    sh('mkfs.ext4', ['-q', '-F', '-d', '/usr/share/doc', docs, '400M']);
    sh('qemu-img', ['convert', '-O', 'qcow2', docs, join(work, 'docs.qcow2')]);
  }
  const big = join(work, 'big.img');
  // (the 1 GiB file is made only for the cat rows)
  if (!existsSync(join(work, 'big.qcow2')) && (!only || only.startsWith('cat'))) {
    const src = join(work, 'big-src');
    mkdirSync(src, { recursive: true });
    sh('sh', ['-c', `head -c 1G /dev/urandom > ${src}/big`]);
    sh('mkfs.ext4', ['-q', '-F', '-d', src, big, '1100M']);
    sh('rm', ['-rf', src]);
    sh('qemu-img', ['convert', '-O', 'qcow2', big, join(work, 'big.qcow2')]);
  }
  return { docs, big };
}

/** Wall seconds of a command with its output thrown away. */
function timed(cmd, args, env = process.env) {
  const t = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 30, env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/** A fresh read-only mount of `image` at `mnt` for each kernel run (cold dentries and pages of the filesystem). */
function withFreshMount(image, mnt, fn) {
  mkdirSync(mnt, { recursive: true });
  sh('mount', ['-o', 'loop,ro', image, mnt]);
  try { return fn(); } finally { sh('umount', [mnt]); }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function compare(name, ours, peer, n = runs) {
  if (only && !name.includes(only)) return;
  const a = [], b = [];
  ours(); peer(); // warm the image files into the host page cache
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) { a.push(ours()); b.push(peer()); } else { b.push(peer()); a.push(ours()); }
  }
  const [ma, mb] = [median(a), median(b)];
  console.log(`| ${name} | ${ma.toFixed(3)} | ${mb.toFixed(3)} | ${(ma / mb).toFixed(2)} |`);
}

const { docs, big } = prepare();
const mnt = join(work, 'mnt');
const files = Number(execFileSync('sh', ['-c', `${diskhub.join(' ')} img ls -R ${join(work, 'docs.qcow2')} / | wc -l`]).toString().trim());
console.log(`${files} paths in docs.qcow2; ${existsSync(join(work, 'big.qcow2')) ? `${(statSync(join(work, 'big.qcow2')).size / 2 ** 30).toFixed(2)} GiB big.qcow2; ` : ''}median of ${runs} (virt-ls: ${guestfsRuns}), interleaved`);
console.log('| command | diskhub s | peer s | ratio |\n| --- | ---: | ---: | ---: |');
compare('ls -lR / (qcow2) vs find -ls (loop mount)',
  () => timed(diskhub[0], [diskhub[1], 'img', 'ls', '-lR', join(work, 'docs.qcow2'), '/']),
  () => withFreshMount(docs, mnt, () => timed('find', [mnt, '-ls'])));
compare('cat 1 GiB (qcow2) vs cat (loop mount)',
  () => timed(diskhub[0], [diskhub[1], 'img', 'cat', join(work, 'big.qcow2'), '/big']),
  () => withFreshMount(big, mnt, () => timed('cat', [join(mnt, 'big')])));
compare('cat 1 GiB (raw) vs cat (loop mount)',
  () => timed(diskhub[0], [diskhub[1], 'img', 'cat', big, '/big']),
  () => withFreshMount(big, mnt, () => timed('cat', [join(mnt, 'big')])));
compare('ls -lR / (qcow2) vs virt-ls -lR (libguestfs appliance, TCG)',
  () => timed(diskhub[0], [diskhub[1], 'img', 'ls', '-lR', join(work, 'docs.qcow2'), '/']),
  () => timed('virt-ls', ['--format=qcow2', '-a', join(work, 'docs.qcow2'), '-m', '/dev/sda', '-lR', '/'], guestfsEnv), guestfsRuns);
