/**
 * Everything done inside the image's root: packages (apt-get in a chroot with /dev, /proc and
 * /sys bound in), users, groups and SSH keys, files, services, cloud-init's configuration,
 * fstab — and the clean-up a cloud image needs before it is shipped (what `diskhub img lint`
 * checks: no SSH host keys, an empty machine-id, empty logs, no shell history or instance state).
 */
import { chmod, lstat, mkdir, readdir, readFile, rm, stat, truncate, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import type { Recipe } from './recipe.js';
import { mountAt } from './disk.js';
import { inRoot, writeInRoot } from './rootpath.js';
import { cacheDir } from './base.js';
import { GuestFiles } from '../sysprep/guest-files.js';
import { OPERATIONS } from '../sysprep/operations.js';
import { BuildError, type BuildSession } from './session.js';


/** /dev, /dev/pts, /proc and /sys for the chroot, unmounted at tear-down (or by unwindTo). */
export async function mountChrootFilesystems(session: BuildSession, root: string): Promise<void> {
  const dir = (p: string) => inRoot(root, p, { followLast: true });
  await mountAt(session, '/dev', await dir('/dev'), ['--bind']);
  await mountAt(session, 'devpts', await dir('/dev/pts'), ['-t', 'devpts', '-o', 'newinstance,ptmxmode=0666']);
  await mountAt(session, 'proc', await dir('/proc'), ['-t', 'proc']);
  await mountAt(session, 'sysfs', await dir('/sys'), ['-t', 'sysfs']);
}

/**
 * Keep package scripts from starting daemons in the chroot (policy-rc.d, invoke-rc.d(8)) and
 * give apt the machine's resolver; both undone by `finishChroot`.
 */
export async function prepareChroot(root: string): Promise<void> {
  await writeInRoot(root, '/usr/sbin/policy-rc.d', '#!/bin/sh\n# diskhub build: no service starts in the chroot\nexit 101\n', 0o755);
  const resolv = await readFile('/etc/resolv.conf').catch(() => null);
  if (resolv) await writeInRoot(root, '/etc/resolv.conf', resolv);
}

export async function finishChroot(root: string): Promise<void> {
  await rm(await inRoot(root, '/usr/sbin/policy-rc.d'), { force: true });
  // dhclient (or systemd-resolved) writes it in the instance; the build machine's has no place there.
  await rm(await inRoot(root, '/etc/resolv.conf'), { force: true });
}

/** The kernel, cloud-init and the recipe's packages, from a package cache shared between builds. */
export async function installPackages(session: BuildSession, root: string, recipe: Recipe, suite: string): Promise<KernelLinks> {
  const wanted = [recipe.kernel, ...(recipe.cloudInit.enabled ? ['cloud-init'] : []), ...recipe.packages];
  const archives = join(cacheDir(), 'apt', suite);
  await mkdir(join(archives, 'partial'), { recursive: true });
  const mark = session.teardownMark;
  await mountAt(session, archives, await inRoot(root, '/var/cache/apt/archives', { followLast: true }), ['--bind']);
  try {
    await session.run('apt-get', ['update'], { chroot: root });
    await session.run('apt-get', ['install', '--yes', '--no-install-recommends', '-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold', ...wanted], { chroot: root });
  } finally {
    await session.unwindTo(mark);
  }
  return await kernelLinks(root, recipe.kernel);
}

/** The kernel and initramfs links grub.cfg boots (see `kernelLinks`). */
export interface KernelLinks { linux: string; initrd: string }

/**
 * The kernel's postinst keeps /vmlinuz and /initrd.img pointing at the newest kernel
 * (linux-update-symlinks; in /boot instead when /etc/kernel-img.conf says `link_in_boot`, as
 * Ubuntu's images do): grub.cfg boots those, so it survives kernel updates.
 */
async function kernelLinks(root: string, kernel: string): Promise<KernelLinks> {
  for (const dir of ['/', '/boot/']) {
    const links = { linux: `${dir}vmlinuz`, initrd: `${dir}initrd.img` };
    if (!(await lstat(await inRoot(root, links.linux)).catch(() => null))) continue;
    // The links are there before their targets: an initramfs generator that is not installed
    // (Ubuntu's kernel only recommends initramfs-tools) leaves initrd.img dangling.
    if (!(await stat(await inRoot(root, links.initrd, { followLast: true })).catch(() => null))) {
      throw new BuildError(`${links.initrd} is missing or dangling after installing ${kernel}: add initramfs-tools (or another initramfs generator) to the packages`);
    }
    return links;
  }
  throw new BuildError(`/vmlinuz (or /boot/vmlinuz) is missing after installing ${kernel}: is it a kernel package?`);
}

export interface RootIds { rootUuid: string; espUuid?: string }

export async function writeFstab(root: string, recipe: Recipe, ids: RootIds): Promise<void> {
  const lines = ['# <file system> <mount point> <type> <options> <dump> <pass> (written by diskhub build)'];
  // fsck.xfs does nothing (xfs checks itself at mount): pass 0 for xfs, as Debian's installer writes it.
  lines.push(`UUID=${ids.rootUuid} / ${recipe.disk.filesystem} ${recipe.disk.filesystem === 'ext4' ? 'errors=remount-ro 0 1' : 'defaults 0 0'}`);
  if (ids.espUuid) lines.push(`UUID=${ids.espUuid} /boot/efi vfat umask=0077,nofail 0 2`);
  await writeInRoot(root, '/etc/fstab', `${lines.join('\n')}\n`);
  if (ids.espUuid) await mkdir(await inRoot(root, '/boot/efi'), { recursive: true });
}

/** Groups, users (with their keys and sudo rights), files, services, host name, cloud-init. */
export async function configureSystem(session: BuildSession, root: string, recipe: Recipe): Promise<void> {
  await writeInRoot(root, '/etc/hostname', `${recipe.hostname}\n`);
  for (const g of recipe.groups) {
    await session.run('groupadd', [...(g.system ? ['--system'] : []), ...(g.gid !== undefined ? ['--gid', String(g.gid)] : []), g.name], { chroot: root });
  }
  for (const u of recipe.users) {
    const home = u.home ?? `/home/${u.name}`;
    await session.run('useradd', ['--create-home', '--home-dir', home, '--shell', u.shell, '--user-group',
      ...(u.uid !== undefined ? ['--uid', String(u.uid)] : []), ...(u.groups.length > 0 ? ['--groups', u.groups.join(',')] : []), u.name], { chroot: root });
    // useradd leaves the password locked ("!"); a hash from the recipe replaces it.
    if (u.password_hash) await session.run('usermod', ['--password', u.password_hash, u.name], { chroot: root });
    if (u.ssh_authorized_keys.length > 0) {
      const keys = await writeInRoot(root, `${home}/.ssh/authorized_keys`, `${u.ssh_authorized_keys.join('\n')}\n`, 0o600);
      await chmod(dirname(keys), 0o700);
      await session.run('chown', ['--recursive', `${u.name}:`, `${home}/.ssh`], { chroot: root });
    }
    if (u.sudo) {
      await writeInRoot(root, `/etc/sudoers.d/90-diskhub-${u.name}`, `# written by diskhub build\n${u.name} ALL=(ALL) NOPASSWD:ALL\n`, 0o440);
    }
  }
  for (const f of recipe.files) {
    // writeFile's mode is filtered by the umask: chmod sets the recipe's exactly.
    await chmod(await writeInRoot(root, f.path, f.content, f.mode), f.mode);
    if (f.owner !== 'root:root' && f.owner !== 'root') await session.run('chown', [f.owner, f.path], { chroot: root });
  }
  if (recipe.cloudInit.enabled) {
    // cloud-init's locale module otherwise sets en_US.UTF-8, which Debian's locale-gen does
    // not make unless /etc/locale.gen lists it: the module fails and cloud-init reports an error.
    const cfg = { datasource_list: recipe.cloudInit.datasources, locale: 'C.UTF-8', ...recipe.cloudInit.config };
    // cloud-init reads cloud.cfg.d in name order, a later file's keys winning: after the
    // distribution's own 90_dpkg.cfg (its datasource_list would otherwise replace the recipe's).
    await writeInRoot(root, '/etc/cloud/cloud.cfg.d/99-diskhub.cfg', `# written by diskhub build (the recipe's cloud_init section)\n${toYaml(cfg)}`);
  }
  if (recipe.services.enable.length > 0) await session.run('systemctl', ['enable', ...recipe.services.enable], { chroot: root });
  if (recipe.services.disable.length > 0) await session.run('systemctl', ['disable', ...recipe.services.disable], { chroot: root });
}

/**
 * What must not ship in a cloud image (each instance makes its own): SSH host keys (cloud-init's
 * ssh module generates them at first boot), the machine-id (systemd makes one when it is empty),
 * logs, shell history, DHCP leases, cloud-init's instance state, apt's lists and caches.
 */
export async function cleanImage(root: string): Promise<void> {
  // `diskhub img sysprep`'s default operations (host keys, machine-id, histories, leases,
  // cloud-init state, package files, backups, random seed, ...), then what only a fresh build leaves.
  const files = new GuestFiles(root);
  for (const op of OPERATIONS.filter((o) => o.enabledByDefault)) await op.perform(files, { packageManagement: 'apt' });
  // An empty machine-id, not a missing one: systemd then treats the next boot as the first.
  if (!(await files.lstat('/etc/machine-id'))) await writeInRoot(root, '/etc/machine-id', '', 0o444);
  // Logs that logfiles' list does not name (debootstrap's, the runit and private directories) are emptied.
  await truncateTree(await inRoot(root, '/var/log', { followLast: true }));
  const lists = await inRoot(root, '/var/lib/apt/lists', { followLast: true });
  for (const n of await readdir(lists).catch(() => [] as string[])) if (n !== 'partial') await rm(join(lists, n), { recursive: true, force: true });
  for (const f of ['/var/cache/apt/pkgcache.bin', '/var/cache/apt/srcpkgcache.bin', '/var/cache/debconf/config.dat-old', '/var/cache/debconf/templates.dat-old']) {
    await rm(await inRoot(root, f), { force: true });
  }
}

/**
 * Empty every regular file under a directory, keeping the files (their owners and modes matter
 * to the daemons); symbolic links go (systemd's /var/log/README points at its documentation,
 * which readers of the image would take for a log).
 */
async function truncateTree(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await truncateTree(p);
    else if (e.isFile()) await truncate(p, 0);
    else if (e.isSymbolicLink()) await unlink(p);
  }
}

export async function readOsRelease(root: string): Promise<string> {
  const text = await readFile(await inRoot(root, '/etc/os-release', { followLast: true }), 'utf8').catch(() => '');
  return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(text)?.[1] ?? 'Linux';
}
