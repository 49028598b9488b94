/**
 * `img ls`, `img cat`, `img copy-out` and `img inspect` see the filesystems the root's
 * /etc/fstab mounts (/boot, /boot/efi, /var on partitions of their own, named by UUID=,
 * LABEL=, PARTUUID= and /dev/sda4) under the root, as libguestfs's inspection mounts them.
 * The disk is made by sfdisk, mkfs.vfat + mcopy and mkfs.ext4 -d (testkit's
 * multiPartitionDisk); the oracle is the same raw disk loop-mounted read-only by the kernel,
 * each ext4 partition at its mount point, walked with lstat and read with readFile. The EFI
 * system partition's oracle is mtools (mdir, mtype) and the partition read alone: kernels in
 * containers often lack vfat, so it is not loop-mounted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhub, multiPartitionLayout, makeSmallOsTree, multiPartitionDisk, needs, needsLoopDevices, run, runOk, tempDir } from '@diskhub/testkit';

const MiB = 1 << 20;
const ESP = '/boot/efi';
const rootOnly = process.getuid?.() === 0 || process.env.CI === 'true' ? {} : { skip: 'loop mounts need root' };

/** Mount the disk's ext4 partitions read-only as its fstab says (shortest mount point first), run `fn`, unmount all. */
async function withMountedDisk<T>(raw: string, mnt: string, fn: () => Promise<T>): Promise<T> {
  const layout = multiPartitionLayout();
  const mounted: string[] = [];
  try {
    for (const p of [...layout].sort((a, b) => a.mountpoint.length - b.mountpoint.length)) {
      if (p.mountpoint === ESP) continue;
      const at = join(mnt, p.mountpoint);
      await mkdir(at, { recursive: true }).catch(() => undefined);
      await runOk('mount', ['-o', `ro,loop,offset=${p.startMiB * MiB},sizelimit=${p.sizeMiB * MiB}`, raw, at]);
      mounted.unshift(at);
    }
    return await fn();
  } finally {
    for (const at of mounted) await run('umount', [at]);
  }
}

/** virt-ls -lR --uids --checksum's lines for the tree at `top` (depth first, names in byte order). */
async function listLikeVirtLs(top: string): Promise<string> {
  const lines: string[] = [];
  const visit = async (path: string, shown: string): Promise<void> => {
    const st = await lstat(path);
    const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? '-' : '?';
    const fields = [type, (st.mode & 0o7777).toString(8).padStart(4, '0'), String(st.size).padStart(10), String(st.uid).padStart(4), String(st.gid).padStart(4)];
    if (st.isFile()) fields.push(createHash('md5').update(await readFile(path)).digest('hex'));
    fields.push(shown);
    if (st.isSymbolicLink()) fields.push(`-> ${await readlink(path)}`);
    lines.push(fields.join(' '));
    if (!st.isDirectory()) return;
    const names = (await readdir(path)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const n of names) await visit(join(path, n), shown === '/' ? `/${n}` : `${shown}/${n}`);
  };
  await visit(top, '/');
  return lines.join('\n') + '\n';
}

test('img ls -lR, cat, copy-out and inspect see /boot, /boot/efi and /var mounted from their partitions by the root\'s fstab, as the kernel shows them',
  { ...needs('sfdisk', 'mkfs.vfat', 'mmd', 'mcopy', 'mtype', 'diff', 'mkfs.ext4', 'qemu-img', 'mount', 'umount'), ...needsLoopDevices(), ...rootOnly, timeout: 5 * 60_000 }, async (t) => {
    const dir = await tempDir(t);
    const root = join(dir, 'root');
    await makeSmallOsTree(root, 'multi-part-host');
    const { raw, qcow2 } = await multiPartitionDisk(dir, root, 'multi');
    const mnt = join(dir, 'mnt');
    await mkdir(mnt);

    const ours = await diskhub(['img', 'ls', '-lR', '--uids', '--checksum', qcow2, '/']);
    assert.equal(ours.code, 0, ours.stderr);
    assert.equal(ours.stderr, '');
    // Everything but the ESP against the kernel's mounts; the ESP's lines are those of partition 1 read alone.
    const lines = ours.stdout.split('\n');
    const inEsp = (l: string) => / \/boot\/efi(\/|$)/.test(l);
    const kernel = await withMountedDisk(raw, mnt, () => listLikeVirtLs(mnt));
    assert.equal(lines.filter((l) => !inEsp(l)).join('\n'), kernel.split('\n').filter((l) => !inEsp(l)).join('\n'));
    const esp = await diskhub(['img', 'ls', '-lR', '--uids', '--checksum', '--partition', '1', qcow2, '/']);
    assert.deepEqual(lines.filter(inEsp), esp.stdout.trim().split('\n').map((l) => l.replace(/ \/(\S*)$/, (_, p: string) => ` ${ESP}${p ? `/${p}` : ''}`)));
    // What is on the other partitions is there, not the empty directories of the root.
    for (const path of ['/boot/grub/grub.cfg', '/boot/efi/EFI/debian/grub.cfg', '/var/lib/dpkg/status', '/var/log/installer.log']) {
      assert.ok(lines.some((l) => l.endsWith(` ${path}`)), path);
    }

    // cat through each mount, byte for byte (the ESP's file against mtools' mtype).
    const espFile = await runOk('mtype', ['-i', `${raw}@@${MiB}`, '::EFI/debian/grub.cfg']);
    assert.equal((await diskhub(['img', 'cat', qcow2, '/boot/efi/EFI/debian/grub.cfg'])).stdout, espFile);
    await withMountedDisk(raw, mnt, async () => {
      for (const path of ['/boot/grub/grub.cfg', '/var/lib/dpkg/status', '/etc/fstab']) {
        const cat = await diskhub(['img', 'cat', qcow2, path]);
        assert.equal(cat.code, 0, cat.stderr);
        assert.equal(cat.stdout, await readFile(join(mnt, path), 'utf8'), path);
      }
      // ls of a mount point lists the mounted filesystem.
      const ls = await diskhub(['img', 'ls', qcow2, '/boot']);
      assert.deepEqual(ls.stdout.trim().split('\n'), (await readdir(join(mnt, 'boot'))).sort());
    });

    // copy-out of /boot takes the ESP mounted inside it along.
    const out = join(dir, 'out');
    await mkdir(out);
    const copy = await diskhub(['img', 'copy-out', qcow2, '/boot', out]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(await readFile(join(out, 'boot/efi/EFI/debian/grub.cfg'), 'utf8'), espFile);
    await withMountedDisk(raw, mnt, async () => {
      const diff = await run('diff', ['-r', '-x', 'efi', join(mnt, 'boot'), join(out, 'boot')]);
      assert.equal(diff.code, 0, diff.stdout + diff.stderr);
    });

    // --partition still reads one filesystem alone.
    const alone = await diskhub(['img', 'ls', '--partition', '3', qcow2, '/boot']);
    assert.equal(alone.code, 0, alone.stderr);
    assert.equal(alone.stdout, '');

    // inspect: the mount points with the devices their specs name; the packages come from /var's partition.
    const inspect = await diskhub(['img', 'inspect', '--output=json', qcow2]);
    assert.equal(inspect.code, 0, inspect.stderr);
    const os = JSON.parse(inspect.stdout).operatingsystems[0];
    assert.equal(os.root, '/dev/sda3');
    assert.deepEqual(os.mountpoints.map((m: { mountpoint: string; device: string }) => [m.mountpoint, m.device]),
      [['/', '/dev/sda3'], ['/var', '/dev/sda4'], ['/boot', '/dev/sda2'], ['/boot/efi', '/dev/sda1']]);
    assert.ok(os.applications.length > 10);
    assert.deepEqual(os.kernels.map((k: { version: string }) => k.version), ['6.1.0-13-amd64']);
    assert.deepEqual(os.notes, []);
  });
