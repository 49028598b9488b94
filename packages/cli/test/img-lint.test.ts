/**
 * `img lint` (the cloud-image checklist) on GPT qcow2 images whose root filesystem is made with
 * mkfs.ext4 -d from this machine's own Debian files (os-release, dpkg's status, /bin/sh's ELF)
 * plus the configuration each case needs. A "good" root passes every applicable item; a "bad"
 * one fails exactly the items it breaks, with the file and line that `grep -n` finds in the
 * tree the image was made from; fixing one failure in the tree and rebuilding makes it pass.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { needs, tempDir, runOk, diskhub, gptExt4Disk } from '@diskhub/testkit';
import { listInitramfs } from '@diskhub/disk';

const MiB = 1 << 20;
const KERNEL = '6.1.0-18-amd64';

/** `grep -n` in the source tree, as the image's absolute path: the oracle for the "file:line" evidence. */
async function grepLine(root: string, path: string, pattern: string): Promise<string> {
  const hit = (await runOk('grep', ['-n', '-E', pattern, join(root, path)])).split('\n')[0]!;
  const colon = hit.indexOf(':');
  return `/${path}:${hit.slice(0, colon)}: ${hit.slice(colon + 1).trim()}`;
}

async function goodRoot(dir: string): Promise<string> {
  const root = join(dir, 'root');
  for (const d of ['etc/default', 'etc/cloud/cloud.cfg.d', 'etc/network', 'etc/ssh', 'etc/ufw', 'etc/systemd/system/multi-user.target.wants', 'etc/systemd/system/cloud-init.target.wants',
    'bin', 'usr/bin', 'lib/systemd', `lib/modules/${KERNEL}`, 'var/lib/dpkg', 'var/log/apt', 'var/lib/dhcp', 'var/lib/cloud', 'root', 'boot/grub']) await mkdir(join(root, d), { recursive: true });
  for (const f of ['os-release', 'debian_version', 'passwd']) await copyFile(join('/etc', f), join(root, 'etc', f));
  await copyFile('/var/lib/dpkg/status', join(root, 'var/lib/dpkg/status'));
  await runOk('cp', ['-L', '/bin/sh', join(root, 'bin/sh')]);
  // systemd and logind (handles the power key), the real programs of this machine.
  await runOk('cp', ['-L', '/lib/systemd/systemd-logind', join(root, 'lib/systemd/systemd-logind')]);
  await writeFile(join(root, 'lib/systemd/systemd'), '');
  // Units enabled as `systemctl enable` links them (dangling here: the unit files are not copied).
  await symlink('/lib/systemd/system/ssh.service', join(root, 'etc/systemd/system/multi-user.target.wants/ssh.service'));
  await symlink('/lib/systemd/system/cloud-init.service', join(root, 'etc/systemd/system/cloud-init.target.wants/cloud-init.service'));
  await writeFile(join(root, 'etc/ssh/sshd_config'), 'PasswordAuthentication no\n');
  await writeFile(join(root, 'etc/ufw/ufw.conf'), '# /etc/ufw/ufw.conf\n#\n\n# Set to yes to start on boot.\nENABLED=no\nLOGLEVEL=low\n');
  await writeFile(join(root, 'etc/cloud/cloud.cfg'), 'users:\n  - default\ncloud_init_modules:\n  - seed_random\n  - growpart\n  - resizefs\n');
  await writeFile(join(root, 'etc/cloud/cloud.cfg.d/90_dpkg.cfg'), '# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list: [ ConfigDrive, OpenStack, None ]\n');
  await writeFile(join(root, 'usr/bin/growpart'), '#!/bin/sh\n');
  await writeFile(join(root, 'etc/default/grub'), 'GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"\n');
  await writeFile(join(root, 'boot/grub/grub.cfg'), `menuentry 'Debian GNU/Linux' {\n\tlinux\t/boot/vmlinuz-${KERNEL} root=LABEL=root ro console=tty0 console=ttyS0,115200n8\n\tinitrd\t/boot/initrd.img-${KERNEL}\n}\nmenuentry 'Memory test (memtest86+x64.bin)' {\n\tlinux16\t/boot/memtest86+x64.bin\n}\n`);
  await writeFile(join(root, `boot/vmlinuz-${KERNEL}`), 'not a kernel\n');
  await writeFile(join(root, 'etc/machine-id'), '');
  await writeFile(join(root, 'etc/network/interfaces'), 'source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n');
  // virtio_blk built in, virtio_net a module (Debian builds both as modules; both ways are read).
  await writeFile(join(root, `lib/modules/${KERNEL}/modules.builtin`), 'kernel/drivers/block/loop.ko\nkernel/drivers/block/virtio_blk.ko\n');
  await writeFile(join(root, `lib/modules/${KERNEL}/modules.dep`), 'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n');
  // Empty logs are what a sysprepped image keeps (the files exist, their contents do not).
  await writeFile(join(root, 'var/log/wtmp'), '');
  await writeFile(join(root, 'var/log/apt/history.log'), '');
  return root;
}

/** A GPT disk with the root on partition 1 (mkfs.ext4 -d at its offset), as a qcow2. */
const gptQcow2 = async (dir: string, root: string, name: string) => (await gptExt4Disk(dir, root, name)).qcow2;

interface Check { id: string; title: string; result: string; evidence: string[] }

async function lint(qcow2: string): Promise<{ code: number; checks: Map<string, Check>; stdout: string }> {
  const r = await diskhub(['img', 'lint', '--output=json', qcow2]);
  assert.equal(r.stderr, '');
  const j = JSON.parse(r.stdout);
  assert.equal(j.operatingsystems.length, 1);
  return { code: r.code, checks: new Map(j.operatingsystems[0].checks.map((c: Check) => [c.id, c])), stdout: r.stdout };
}

const ALL_IDS = ['ssh-server-enabled', 'firewall-disabled', 'cloud-init-enabled', 'cloud-init-datasource', 'growpart', 'no-hardcoded-mac', 'serial-console', 'acpi-power-key', 'no-zeroconf',
  'dhcp-first-nic', 'virtio-drivers', 'machine-id-empty', 'no-ssh-host-keys', 'no-shell-history', 'no-logs', 'no-dhcp-leases', 'no-cloud-init-state'];

test('img lint: a good Debian-like image passes every applicable item (exit 0); a bad one fails exactly what it breaks, with grep -n\'s file:line (exit 1); fixing one in the tree makes it pass', needs('mkfs.ext4', 'sgdisk', 'qemu-img', 'grep'), async (t) => {
  const dir = await tempDir(t);
  const root = await goodRoot(dir);
  const good = await lint(await gptQcow2(dir, root, 'good'));
  assert.equal(good.code, 0, good.stdout);
  assert.deepEqual([...good.checks.keys()], ALL_IDS);
  for (const c of good.checks.values()) assert.equal(c.result, c.id === 'no-zeroconf' ? 'n/a' : 'pass', JSON.stringify(c));
  assert.deepEqual(good.checks.get('ssh-server-enabled')!.evidence, ['/etc/systemd/system/multi-user.target.wants/ssh.service']);
  assert.deepEqual(good.checks.get('cloud-init-datasource')!.evidence, [`${await grepLine(root, 'etc/cloud/cloud.cfg.d/90_dpkg.cfg', '^datasource_list')} [ConfigDrive, OpenStack, None]`]);
  assert.deepEqual(good.checks.get('growpart')!.evidence, [`${await grepLine(root, 'etc/cloud/cloud.cfg', 'growpart')}`, '/usr/bin/growpart']);
  assert.deepEqual(good.checks.get('serial-console')!.evidence, [`${await grepLine(root, 'etc/default/grub', '^GRUB_CMDLINE_LINUX=')}`, `${await grepLine(root, 'boot/grub/grub.cfg', 'linux')}`]);
  assert.deepEqual(good.checks.get('dhcp-first-nic')!.evidence, [`${await grepLine(root, 'etc/network/interfaces', 'eth0 inet dhcp')}`]);
  assert.deepEqual(good.checks.get('virtio-drivers')!.evidence, [
    `/lib/modules/${KERNEL}/modules.builtin:2: virtio_blk built in`, `/lib/modules/${KERNEL}/modules.dep:2: virtio_net module`]);
  assert.deepEqual(good.checks.get('acpi-power-key')!.evidence, ['/lib/systemd/systemd-logind']);
  assert.deepEqual(good.checks.get('machine-id-empty')!.evidence, ['/etc/machine-id: empty']);

  // The human output: one line per item.
  const human = await diskhub(['img', 'lint', join(dir, 'good.qcow2')]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^PASS {2}ssh-server-enabled {4}\/etc\/systemd\/system\/multi-user\.target\.wants\/ssh\.service$/m);
  assert.match(human.stdout, /^N\/A {3}no-zeroconf {11}not a RHEL-family system \(debian\)$/m);
  assert.match(human.stdout, /^16 passed, 0 failed, 1 not applicable$/m);
  assert.equal(human.stdout.split('\n').filter((l) => /^(PASS|FAIL|N\/A) /.test(l)).length, ALL_IDS.length);

  // Break six items.
  await mkdir(join(root, 'etc/udev/rules.d'), { recursive: true });
  await writeFile(join(root, 'etc/udev/rules.d/70-persistent-net.rules'), '# This file was automatically generated by the /lib/udev/write_net_rules\n\n# PCI device 0x1af4:0x1000 (virtio-pci)\nSUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="fa:16:3e:12:34:56", ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"\n');
  await writeFile(join(root, 'etc/ufw/ufw.conf'), '# /etc/ufw/ufw.conf\n#\n\n# Set to yes to start on boot.\nENABLED=yes\nLOGLEVEL=low\n');
  await writeFile(join(root, 'etc/default/grub'), 'GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n');
  await writeFile(join(root, 'etc/machine-id'), '4c4c4544004d3510804bb4c04f4e3232\n');
  await writeFile(join(root, 'etc/ssh/ssh_host_ed25519_key'), '-----BEGIN OPENSSH PRIVATE KEY-----\n');
  await writeFile(join(root, 'root/.bash_history'), 'apt-get install cloud-init\n');
  const bad = await lint(await gptQcow2(dir, root, 'bad'));
  assert.equal(bad.code, 1);
  const failed = [...bad.checks.values()].filter((c) => c.result === 'fail').map((c) => c.id);
  assert.deepEqual(failed, ['firewall-disabled', 'no-hardcoded-mac', 'serial-console', 'machine-id-empty', 'no-ssh-host-keys', 'no-shell-history']);
  assert.deepEqual(bad.checks.get('firewall-disabled')!.evidence, [`${await grepLine(root, 'etc/ufw/ufw.conf', '^ENABLED')}`]);
  assert.deepEqual(bad.checks.get('no-hardcoded-mac')!.evidence, [`${await grepLine(root, 'etc/udev/rules.d/70-persistent-net.rules', 'ATTR\\{address\\}')}`]);
  assert.deepEqual(bad.checks.get('serial-console')!.evidence, [
    `${await grepLine(root, 'etc/default/grub', '^GRUB_CMDLINE_LINUX_DEFAULT=')}`, `${await grepLine(root, 'etc/default/grub', '^GRUB_CMDLINE_LINUX=')}`]);
  assert.deepEqual(bad.checks.get('machine-id-empty')!.evidence, ['/etc/machine-id:1: 4c4c4544004d3510804bb4c04f4e3232']);
  assert.deepEqual(bad.checks.get('no-ssh-host-keys')!.evidence, ['/etc/ssh/ssh_host_ed25519_key']);
  assert.deepEqual(bad.checks.get('no-shell-history')!.evidence, [`/root/.bash_history (${'apt-get install cloud-init\n'.length} bytes)`]);
  const badHuman = await diskhub(['img', 'lint', join(dir, 'bad.qcow2')]);
  assert.equal(badHuman.code, 1);
  assert.match(badHuman.stdout, /^FAIL {2}no-hardcoded-mac {6}\/etc\/udev\/rules\.d\/70-persistent-net\.rules:4: SUBSYSTEM==/m);
  assert.match(badHuman.stdout, /^10 passed, 6 failed, 1 not applicable$/m);

  // Fix one in the tree (the udev rules go), rebuild: that item passes, the other five still fail.
  await rm(join(root, 'etc/udev/rules.d/70-persistent-net.rules'));
  const fixed = await lint(await gptQcow2(dir, root, 'fixed'));
  assert.equal(fixed.code, 1);
  assert.equal(fixed.checks.get('no-hardcoded-mac')!.result, 'pass');
  assert.deepEqual([...fixed.checks.values()].filter((c) => c.result === 'fail').map((c) => c.id), ['firewall-disabled', 'serial-console', 'machine-id-empty', 'no-ssh-host-keys', 'no-shell-history']);
});

test('img lint: no Linux system, an unreadable image and bad arguments exit 2 and say why', needs('mkfs.ext4', 'mkfs.vfat', 'mmd', 'qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const data = join(dir, 'data');
  await mkdir(join(data, 'etc'), { recursive: true });
  await writeFile(join(data, 'etc/notes.txt'), 'no fstab\n');
  const img = join(dir, 'data.img');
  await runOk('mkfs.ext4', ['-q', '-F', '-d', data, img, '8M']);
  const none = await diskhub(['img', 'lint', img]);
  assert.deepEqual([none.code, none.stdout, none.stderr], [2, '', 'diskhub img lint: no Linux operating system was found on the disk\n']);

  const win = join(dir, 'win.img');
  await runOk('mkfs.vfat', ['-C', win, '32768']);
  await runOk('mmd', ['-i', win, '::/Windows', '::/Windows/System32']);
  const w = await diskhub(['img', 'lint', win]);
  assert.deepEqual([w.code, w.stderr], [2, 'diskhub img lint: no Linux operating system was found on the disk (found: windows on /dev/sda; only Linux is checked)\n']);

  const missing = await diskhub(['img', 'lint', join(dir, 'nope.qcow2')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^diskhub img lint: Could not open '.*nope\.qcow2': /);
  const noArg = await diskhub(['img', 'lint']);
  assert.deepEqual([noArg.code, noArg.stderr], [2, "diskhub img lint: Expecting one image file name\nTry 'diskhub img lint --help' for more information.\n"]);
  const badOut = await diskhub(['img', 'lint', '--output=xml', img]);
  assert.deepEqual([badOut.code, badOut.stderr], [2, 'diskhub img lint: --output must be used with human or json as argument.\n']);
  const badFmt = await diskhub(['img', 'lint', '-f', 'qcow2', img]);
  assert.equal(badFmt.code, 2);
  assert.match(badFmt.stderr, /^diskhub img lint: Could not open/);
});

/** An initramfs as dracut makes one: an uncompressed cpio (microcode) then a compressed cpio, both by cpio -o -H newc. */
async function initramfs(dir: string, out: string, files: string[], compress: 'gzip' | 'zstd'): Promise<void> {
  const early = join(dir, 'early');
  const main = join(dir, 'main');
  await rm(early, { recursive: true, force: true });
  await rm(main, { recursive: true, force: true });
  await mkdir(join(early, 'kernel/x86/microcode'), { recursive: true });
  await writeFile(join(early, 'kernel/x86/microcode/GenuineIntel.bin'), 'microcode');
  for (const f of files) { await mkdir(join(main, f, '..'), { recursive: true }); await writeFile(join(main, f), 'module'); }
  await mkdir(join(main, 'usr/bin'), { recursive: true });
  await runOk('cp', ['-L', '/bin/sh', join(main, 'usr/bin/sh')]);
  await runOk('sh', ['-c', `cd "${early}" && find . | cpio -o -H newc --quiet > "${out}.early" && cp "${out}.early" "${out}" && cd "${main}" && find . | cpio -o -H newc --quiet | ${compress === 'gzip' ? 'gzip -9' : 'zstd -q -c'} >> "${out}"`]);
}

test('img lint: a RHEL-family root (sshd and firewalld links, ifcfg HWADDR and BOOTPROTO, NOZEROCONF, BLS entries) and virtio_blk looked for in gzip initramfs made by cpio', needs('mkfs.ext4', 'sgdisk', 'qemu-img', 'grep', 'cpio', 'gzip', 'zstd'), async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  const [v1, v2] = ['5.14.0-362.el9.x86_64', '5.14.0-284.el9.x86_64'];
  for (const d of ['etc/sysconfig/network-scripts', 'etc/cloud', 'etc/systemd/system/multi-user.target.wants', 'usr/bin', 'usr/lib/systemd', 'boot/loader/entries', 'boot/grub2', `lib/modules/${v1}`, `lib/modules/${v2}`]) await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, 'etc/redhat-release'), 'Rocky Linux release 9.3 (Blue Onyx)\n');
  await writeFile(join(root, 'etc/fstab'), 'LABEL=root / ext4 defaults 0 1\n');
  await runOk('cp', ['-L', '/usr/bin/ls', join(root, 'usr/bin/ls')]);
  await runOk('cp', ['-L', '/lib/systemd/systemd-logind', join(root, 'usr/lib/systemd/systemd-logind')]);
  await writeFile(join(root, 'usr/lib/systemd/systemd'), '');
  await symlink('/usr/lib/systemd/system/sshd.service', join(root, 'etc/systemd/system/multi-user.target.wants/sshd.service'));
  await symlink('/usr/lib/systemd/system/firewalld.service', join(root, 'etc/systemd/system/multi-user.target.wants/firewalld.service'));
  await symlink('/usr/lib/systemd/system/cloud-init.service', join(root, 'etc/systemd/system/multi-user.target.wants/cloud-init.service'));
  await writeFile(join(root, 'etc/sysconfig/network'), '# Created by anaconda\nNETWORKING=yes\nNOZEROCONF=yes\n');
  await writeFile(join(root, 'etc/sysconfig/network-scripts/ifcfg-eth0'), 'DEVICE=eth0\nHWADDR=fa:16:3e:aa:bb:cc\nBOOTPROTO=dhcp\nONBOOT=yes\n');
  await writeFile(join(root, 'etc/cloud/cloud.cfg'), 'datasource_list: [ NoCloud, None ]\ncloud_init_modules:\n - bootcmd\n');
  await writeFile(join(root, 'boot/grub2/grub.cfg'), 'insmod blscfg\nblscfg\n');
  for (const v of [v1, v2]) {
    await writeFile(join(root, `boot/vmlinuz-${v}`), 'k');
    await writeFile(join(root, `boot/loader/entries/abc-${v}.conf`), `title Rocky Linux (${v})\nlinux /vmlinuz-${v}\ninitrd /initramfs-${v}.img\noptions root=LABEL=root ro console=tty0 console=ttyS0,115200n8\n`);
    await writeFile(join(root, `lib/modules/${v}/modules.builtin`), 'kernel/drivers/block/loop.ko\n');
    await writeFile(join(root, `lib/modules/${v}/modules.dep`), `kernel/drivers/block/virtio_blk.ko.xz:\nkernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz\n`);
  }
  // v1's initramfs is gzip (read), v2's zstd (not read: said so).
  await initramfs(dir, join(root, `boot/initramfs-${v1}.img`), [`usr/lib/modules/${v1}/kernel/drivers/block/virtio_blk.ko.xz`], 'gzip');
  await initramfs(dir, join(root, `boot/initramfs-${v2}.img`), [`usr/lib/modules/${v2}/kernel/drivers/block/virtio_blk.ko.xz`], 'zstd');

  const r = await lint(await gptQcow2(dir, root, 'rocky'));
  assert.equal(r.code, 1);
  assert.deepEqual([...r.checks.values()].filter((c) => c.result === 'fail').map((c) => c.id), ['firewall-disabled', 'cloud-init-datasource', 'growpart', 'no-hardcoded-mac']);
  assert.deepEqual(r.checks.get('ssh-server-enabled')!.evidence, ['/etc/systemd/system/multi-user.target.wants/sshd.service']);
  assert.deepEqual(r.checks.get('firewall-disabled')!.evidence, ['/etc/systemd/system/multi-user.target.wants/firewalld.service']);
  assert.deepEqual(r.checks.get('no-hardcoded-mac')!.evidence, [await grepLine(root, 'etc/sysconfig/network-scripts/ifcfg-eth0', '^HWADDR')]);
  assert.deepEqual(r.checks.get('dhcp-first-nic')!.evidence, [await grepLine(root, 'etc/sysconfig/network-scripts/ifcfg-eth0', '^BOOTPROTO')]);
  assert.deepEqual(r.checks.get('no-zeroconf')!.evidence, [await grepLine(root, 'etc/sysconfig/network', '^NOZEROCONF')]);
  assert.deepEqual(r.checks.get('cloud-init-datasource')!.evidence, [`${await grepLine(root, 'etc/cloud/cloud.cfg', '^datasource_list')} [NoCloud, None]`]);
  assert.equal(r.checks.get('serial-console')!.result, 'pass');
  assert.equal(r.checks.get('serial-console')!.evidence.length, 2);
  // Kernels sorted by name: 284 (zstd) then 362 (gzip).
  assert.equal(r.checks.get('virtio-drivers')!.result, 'pass');
  assert.deepEqual(r.checks.get('virtio-drivers')!.evidence, [
    `/lib/modules/${v2}/modules.dep:1: virtio_blk module`, `/boot/initramfs-${v2}.img: zstd-compressed part not read`, `/lib/modules/${v2}/modules.dep:2: virtio_net module`,
    `/lib/modules/${v1}/modules.dep:1: virtio_blk module`, `/boot/initramfs-${v1}.img: virtio_blk in the initramfs`, `/lib/modules/${v1}/modules.dep:2: virtio_net module`,
  ]);

  // v1's initramfs rebuilt without virtio_blk: the item fails, naming it.
  await initramfs(dir, join(root, `boot/initramfs-${v1}.img`), [`usr/lib/modules/${v1}/kernel/drivers/block/loop.ko.xz`], 'gzip');
  const without = await lint(await gptQcow2(dir, root, 'rocky2'));
  assert.equal(without.checks.get('virtio-drivers')!.result, 'fail');
  assert.deepEqual(without.checks.get('virtio-drivers')!.evidence, [`/boot/initramfs-${v1}.img: virtio_blk is a module and not in the initramfs`]);
});

test('img lint: the initramfs lister reads what cpio -t lists, and hostile archives (truncated, random, huge sizes, a gzip bomb) end without a throw', needs('cpio', 'gzip'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'initramfs.img');
  await initramfs(dir, img, ['usr/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko', 'etc/modprobe.d/a.conf'], 'gzip');
  const data = await readFile(img);
  const early = (await runOk('sh', ['-c', `cpio -t --quiet < "${img}"`])).split('\n').filter(Boolean);
  // The second archive starts where the early one (kept by the helper) ends.
  const main = (await runOk('sh', ['-c', `tail -c +$(( $(stat -c %s "${img}.early") + 1 )) "${img}" | gzip -dc | cpio -t --quiet`])).split('\n').filter(Boolean);
  const listed = listInitramfs(data);
  assert.deepEqual(listed.notRead, []);
  assert.deepEqual(listed.names, [...early, ...main].map((n) => n.replace(/^\.\//, '')));
  for (let cut = 0; cut < data.length; cut += Math.max(1, Math.floor(data.length / 97))) listInitramfs(data.subarray(0, cut));
  for (let i = 0; i < 50; i++) listInitramfs(Buffer.concat([Buffer.from('070701'), randomBytes(200 + i * 13)]));
  const huge = Buffer.from(`070701${'0'.repeat(48)}FFFFFFFF${'0'.repeat(32)}0000000A00000000file.name\0`, 'latin1');
  assert.deepEqual(listInitramfs(huge).names, ['file.name']);
  const bomb = listInitramfs(gzipSync(Buffer.alloc(300 << 20)));
  assert.equal(bomb.names.length, 0);
  assert.match(bomb.notRead[0]!, /^gzip \(/);
});
