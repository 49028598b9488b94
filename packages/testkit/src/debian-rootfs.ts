/**
 * A real Debian root filesystem for the inspection and lint tests: debootstrap of bookworm
 * from Debian's archive (minbase plus systemd, a kernel, openssh-server, ifupdown and a DHCP
 * client), then cloud-init and cloud-guest-utils installed with apt in the chroot (debootstrap's
 * --include does not resolve cloud-init's virtual dependencies). Made once and cached as a
 * tarball (numeric owners) under /var/tmp/diskhub-test-rootfs/ (DISKHUB_TEST_ROOTFS_CACHE),
 * with an extracted copy beside it that tests read (mkfs.ext4 -d) and never write: a test
 * that changes files works on a hard-linked copy (`treeCopy`) and replaces, never edits, them.
 * Needs root (debootstrap, chroot) and the network to Debian's mirror the first time only.
 */
import { mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from './run.js';

export const ROOTFS_CACHE = process.env.DISKHUB_TEST_ROOTFS_CACHE ?? '/var/tmp/diskhub-test-rootfs';
/** Change RECIPE when the build steps change: the name of the cache follows it. */
const RECIPE = 'bookworm-amd64-v1';
const MIRROR = process.env.DISKHUB_TEST_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
const INCLUDE = ['systemd-sysv', 'linux-image-amd64', 'openssh-server', 'ifupdown', 'isc-dhcp-client'];
const IN_CHROOT = ['cloud-init', 'cloud-guest-utils'];

/** debootstrap and apt fetch and unpack hundreds of packages: minutes on a busy machine. */
const LONG = { timeoutMs: 60 * 60_000 };

const exists = (p: string) => stat(p).then(() => true, () => false);

/** Hold a lock file while `fn` runs, so test files started at once build the cache once (a lock whose process is gone is taken over). */
async function withLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      const fh = await open(lock, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(await readFile(lock, 'utf8').catch(() => ''));
      let alive = false;
      try { if (pid > 0) { process.kill(pid, 0); alive = true; } } catch { alive = false; }
      if (!alive) { await unlink(lock).catch(() => {}); continue; }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try { return await fn(); } finally { await unlink(lock).catch(() => {}); }
}

async function build(tarball: string): Promise<void> {
  const dir = join(ROOTFS_CACHE, `${RECIPE}.build`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await runOk('debootstrap', ['--variant=minbase', `--include=${INCLUDE.join(',')}`, 'bookworm', dir, MIRROR], LONG);
  // No service starts in the chroot (invoke-rc.d asks policy-rc.d).
  const policy = join(dir, 'usr/sbin/policy-rc.d');
  await writeFile(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  await runOk('chroot', [dir, 'apt-get', 'install', '-y', '--no-install-recommends', ...IN_CHROOT], { ...LONG, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  await rm(policy);
  await runOk('chroot', [dir, 'apt-get', 'clean']);
  await runOk('tar', ['-C', dir, '--numeric-owner', '-cf', `${tarball}.partial`, '.'], LONG);
  await rename(`${tarball}.partial`, tarball);
  await rm(dir, { recursive: true, force: true });
}

/**
 * The cached tree (built or extracted first when missing): a directory the caller must not
 * change. Returns its path.
 */
export async function debianRootfs(): Promise<string> {
  const tarball = join(ROOTFS_CACHE, `${RECIPE}.tar`);
  const tree = join(ROOTFS_CACHE, RECIPE);
  if (await exists(join(tree, 'etc/os-release'))) return tree;
  await mkdir(ROOTFS_CACHE, { recursive: true });
  return withLock(join(ROOTFS_CACHE, `${RECIPE}.lock`), async () => {
    if (await exists(join(tree, 'etc/os-release'))) return tree;
    if (!(await exists(tarball))) await build(tarball);
    const partial = `${tree}.partial`;
    await rm(partial, { recursive: true, force: true });
    await mkdir(partial);
    await runOk('tar', ['-C', partial, '--numeric-owner', '-xf', tarball], LONG);
    await rename(partial, tree);
    return tree;
  });
}

/** A copy of `tree` at `dest` made of hard links (instant): replace files in it, never write into them. */
export async function treeCopy(tree: string, dest: string): Promise<void> {
  await runOk('cp', ['-a', '--link', tree, dest], LONG);
}
