#!/usr/bin/env node
// Files inside an image, diskhub against the kernel and libguestfs in the same run (issue 20's speed targets):
//  - `diskhub img ls -lR IMAGE /` of an ext4 filesystem in a qcow2 against `find MNT -ls` on the
//    same filesystem loop-mounted (raw copy, read-only), and against libguestfs's `virt-ls -lR`
//    (an appliance boot per call, as users wait for it today; LIBGUESTFS_BACKEND=direct with
//    TCG, the only way it runs on the machine this was written on; BENCH_GUESTFS_RUNS, default 3).
//    Two filesystems: a copy of /usr/share/doc (mkfs.ext4 -d), and the Debian bookworm root
//    filesystem of the tests (testkit's debianRootfs, cached under /var/tmp/diskhub-test-rootfs;
//    its rows are left out when the cache is not there).
//  - `diskhub img inspect IMAGE` of the Debian root against `virt-inspector`.
//  - `diskhub img cat IMAGE /big` of a 1 GiB file (qcow2 and raw), against `cat MNT/big`.
// Page cache: the image files are read once before the timed runs, so they sit in the host's
// page cache for every run of both sides; the mount is made afresh before each kernel run, so
// its dentries, inodes and the loop device's own cache start cold — the kernel reads the
// filesystem's blocks from the cached image file, as diskhub does. Nothing is dropped.
// Runs alternate (ours, peer; then peer, ours); each row prints the medians of BENCH_RUNS
// (default 5) of wall seconds and of user+sys CPU seconds (GNU time), and their ratios: on a
// shared machine CPU time is the steadier yardstick. BENCH_ONLY=text runs only the rows whose
// name contains it. Needs root (loop mounts), mkfs.ext4, qemu-img, virt-ls, virt-inspector, GNU
// time. `npm run build` first.
//   node bench/fs.mjs
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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
  // The Debian root of the tests, when its cache is there (a 2 GiB filesystem, as the debian-rootfs test makes it).
  const rootfs = join(process.env.DISKHUB_TEST_ROOTFS_CACHE ?? '/var/tmp/diskhub-test-rootfs', 'bookworm-amd64-v1');
  let debian;
  if (existsSync(join(rootfs, 'etc/os-release'))) {
    debian = join(work, 'debian.img');
    if (!existsSync(join(work, 'debian.qcow2'))) {
      sh('truncate', ['-s', '2G', debian]);
      sh('mkfs.ext4', ['-q', '-F', '-L', 'root', '-d', rootfs, debian]);
      sh('qemu-img', ['convert', '-O', 'qcow2', debian, join(work, 'debian.qcow2')]);
    }
  }
  return { docs, big, debian };
}

/** Wall and user+sys CPU seconds of a command with its output thrown away (GNU time). */
function timed(cmd, args, env = process.env) {
  const times = join(work, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S', '-o', times, cmd, ...args], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 1 << 30, env });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}`);
  const [wall, user, sys] = readFileSync(times, 'utf8').trim().split('\n').pop().split(' ').map(Number);
  rmSync(times);
  return { wall, cpu: user + sys };
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
  const [wa, wb, ca, cb] = [median(a.map((x) => x.wall)), median(b.map((x) => x.wall)), median(a.map((x) => x.cpu)), median(b.map((x) => x.cpu))];
  console.log(`| ${name} | ${wa.toFixed(3)} | ${wb.toFixed(3)} | ${(wa / wb).toFixed(3)} | ${ca.toFixed(3)} | ${cb.toFixed(3)} | ${(ca / cb).toFixed(3)} |`);
}

const { docs, big, debian } = prepare();
const mnt = join(work, 'mnt');
const files = Number(execFileSync('sh', ['-c', `${diskhub.join(' ')} img ls -R ${join(work, 'docs.qcow2')} / | wc -l`]).toString().trim());
console.log(`${files} paths in docs.qcow2; ${existsSync(join(work, 'big.qcow2')) ? `${(statSync(join(work, 'big.qcow2')).size / 2 ** 30).toFixed(2)} GiB big.qcow2; ` : ''}median of ${runs} (virt-ls: ${guestfsRuns}), interleaved`);
console.log(`load average at the start: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
console.log('| command | diskhub wall s | peer wall s | wall ratio | diskhub CPU s | peer CPU s | CPU ratio |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
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
if (debian) {
  const qcow2 = join(work, 'debian.qcow2');
  compare('ls -lR / Debian root (qcow2) vs find -ls (loop mount)',
    () => timed(diskhub[0], [diskhub[1], 'img', 'ls', '-lR', qcow2, '/']),
    () => withFreshMount(debian, mnt, () => timed('find', [mnt, '-ls'])));
  compare('ls -lR / Debian root (qcow2) vs virt-ls -lR (libguestfs appliance, TCG)',
    () => timed(diskhub[0], [diskhub[1], 'img', 'ls', '-lR', qcow2, '/']),
    () => timed('virt-ls', ['--format=qcow2', '-a', qcow2, '-lR', '/'], guestfsEnv), guestfsRuns);
  compare('inspect Debian root (qcow2) vs virt-inspector (libguestfs appliance, TCG)',
    () => timed(diskhub[0], [diskhub[1], 'img', 'inspect', '--output=json', qcow2]),
    () => timed('virt-inspector', ['--format=qcow2', '-a', qcow2], guestfsEnv), guestfsRuns);
}
