/**
 * `img inspect` (virt-inspector without an appliance) on a GPT qcow2 whose root filesystem is
 * made with mkfs.ext4 -d from this machine's own Debian files (os-release, debian_version,
 * dpkg's status, /bin/sh's ELF) plus files the test writes (fstab naming the filesystems by
 * UUID and LABEL, grub, cloud-init, a synthetic shadow), with /boot on its own partition.
 * Oracles: dpkg-query on the same status file, `uname -m`, the shell sourcing os-release and
 * /etc/default/grub, and PyYAML loading the cloud-init files.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, copyFile, mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, runOk, diskhub, qemuImg, inactiveLogicalVolumes, needsLoopDevices, rpmDatabase, packageVersionOf } from '@diskhub/testkit';

const MiB = 1 << 20;
const ROOT_UUID = '6f1c2a3e-1b7d-4c55-9a0e-5d2f8c7b9e01';

const shell = (script: string, cwd?: string) => runOk('sh', ['-c', script], cwd !== undefined ? { cwd } : {});

/** Users the test adds to passwd and shadow, with what inspect must say of their password. */
const TEST_USERS = [
  { name: 'alice', shell: '/bin/bash', shadow: '$6$salt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', password: 'set' },
  { name: 'bob', shell: '/bin/sh', shadow: '!$6$salt$lockedhash', password: 'locked' },
  { name: 'carol', shell: '/bin/bash', shadow: '', password: 'empty' },
  { name: 'dave', shell: '/bin/bash', shadow: '*', password: 'locked' },
  { name: 'svc', shell: '/usr/sbin/nologin', shadow: '$6$x$y', password: null },
];

async function debianRoot(dir: string): Promise<{ root: string; boot: string }> {
  const root = join(dir, 'root');
  const boot = join(dir, 'boot');
  for (const d of ['etc/default', 'etc/cloud/cloud.cfg.d', 'bin', 'var/lib/dpkg', 'boot']) await mkdir(join(root, d), { recursive: true });
  await mkdir(join(boot, 'grub'), { recursive: true });
  for (const f of ['os-release', 'debian_version', 'passwd']) await copyFile(join('/etc', f), join(root, 'etc', f));
  await copyFile('/var/lib/dpkg/status', join(root, 'var/lib/dpkg/status'));
  // States this machine may not have: removed with its configuration kept (not installed), held (installed), half-installed.
  await appendFile(join(root, 'var/lib/dpkg/status'), [
    '', 'Package: removed-keeps-conffiles', 'Status: deinstall ok config-files', 'Priority: optional', 'Architecture: amd64', 'Version: 1:2.0-1', 'Description: test',
    '', 'Package: held-package', 'Status: hold ok installed', 'Priority: optional', 'Architecture: all', 'Version: 3.1-4+deb12u1', 'Description: test',
    '', 'Package: half-done', 'Status: install reinstreq half-installed', 'Priority: optional', 'Architecture: amd64', 'Version: 0.1', 'Description: test', '',
  ].join('\n'));
  // /bin/sh is a symlink to dash on Debian: the ELF itself goes in.
  await runOk('cp', ['-L', '/bin/sh', join(root, 'bin/sh')]);
  await appendFile(join(root, 'etc/passwd'), TEST_USERS.map((u, i) => `${u.name}:x:${2000 + i}:${2000 + i}::/home/${u.name}:${u.shell}\n`).join(''));
  // A synthetic shadow: every passwd user locked with "*", then the test users' known entries.
  const passwdNames = (await readFile('/etc/passwd', 'utf8')).split('\n').filter(Boolean).map((l) => l.split(':')[0]!);
  await writeFile(join(root, 'etc/shadow'), [...passwdNames.map((n) => `${n}:*:19000:0:99999:7:::`), ...TEST_USERS.map((u) => `${u.name}:${u.shadow}:19000:0:99999:7:::`)].join('\n') + '\n');
  await writeFile(join(root, 'etc/hostname'), 'inspected-vm\n');
  await writeFile(join(root, 'etc/fstab'), [
    '# /etc/fstab: static file system information.',
    `UUID=${ROOT_UUID} / ext4 errors=remount-ro 0 1`,
    'LABEL=boot /boot ext4 defaults 0 2',
    'UUID=00000000-0000-0000-0000-000000000000 /srv ext4 nofail 0 2',
    '/dev/sda3 none swap sw 0 0',
    'proc /proc proc defaults 0 0',
    '',
  ].join('\n'));
  await writeFile(join(root, 'etc/default/grub'), [
    'GRUB_DEFAULT=0',
    'GRUB_TIMEOUT=5',
    'GRUB_CMDLINE_LINUX_DEFAULT="quiet"',
    'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 net.ifnames=0"',
    '',
  ].join('\n'));
  await writeFile(join(root, 'etc/cloud/cloud.cfg'), 'users:\n  - default\ndatasource_list: [ NoCloud, ConfigDrive, OpenStack, None ]\ncloud_init_modules:\n  - growpart\n');
  await writeFile(join(root, 'etc/cloud/cloud.cfg.d/90_dpkg.cfg'), '# to update this file, run dpkg-reconfigure cloud-init\ndatasource_list:\n  - ConfigDrive\n  - OpenStack   # the metadata service\n  - None\n');
  // /boot's own filesystem (partition 1): kernel, initramfs, grub.cfg.
  await writeFile(join(boot, 'vmlinuz-6.1.0-18-amd64'), 'not really a kernel\n');
  await writeFile(join(boot, 'initrd.img-6.1.0-18-amd64'), 'not really an initramfs\n');
  await writeFile(join(boot, 'vmlinuz-6.1.0-17-amd64'), 'older\n');
  await writeFile(join(boot, 'grub/grub.cfg'), [
    "menuentry 'Debian GNU/Linux' --class debian {",
    '\tlinux\t/vmlinuz-6.1.0-18-amd64 root=UUID=' + ROOT_UUID + ' ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet',
    '\tinitrd\t/initrd.img-6.1.0-18-amd64',
    '}',
    '',
  ].join('\n'));
  return { root, boot };
}

/** A GPT disk: partition 1 /boot (label "boot"), partition 2 the root (UUID ROOT_UUID), made in place; as a qcow2. */
async function gptDisk(dir: string, root: string, boot: string): Promise<string> {
  const disk = join(dir, 'disk.img');
  await writeFile(disk, '');
  await truncate(disk, 120 * MiB);
  await runOk('sgdisk', ['-n1:2048:+16M', '-c1:boot', '-n2:0:+96M', disk]);
  const starts = (await runOk('sgdisk', ['-p', disk])).split('\n').filter((l) => /^\s+\d+\s/.test(l)).map((l) => Number(l.trim().split(/\s+/)[1]) * 512);
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'boot', '-E', `offset=${starts[0]}`, '-d', boot, disk, '16M']);
  await runOk('mkfs.ext4', ['-q', '-F', '-U', ROOT_UUID, '-E', `offset=${starts[1]}`, '-d', root, disk, '96M']);
  const qcow2 = join(dir, 'disk.qcow2');
  await qemuImg('convert', '-O', 'qcow2', disk, qcow2);
  return qcow2;
}

test('img inspect: a Debian root in a GPT qcow2 with /boot on its own partition, against dpkg-query, uname, sh and PyYAML', needs('mkfs.ext4', 'sgdisk', 'qemu-img', 'dpkg-query', 'python3'), async (t) => {
  const dir = await tempDir(t);
  const { root, boot } = await debianRoot(dir);
  const qcow2 = await gptDisk(dir, root, boot);

  const r = await diskhub(['img', 'inspect', '--output=json', qcow2]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const j = JSON.parse(r.stdout);
  assert.equal(j.operatingsystems.length, 1);
  const os = j.operatingsystems[0];

  // Release: the shell sourcing os-release, and debian_version for the point release.
  const rel = (await shell('. ./etc/os-release && printf "%s\\n%s\\n%s" "$ID" "$VERSION_ID" "$PRETTY_NAME"', root)).split('\n');
  assert.equal(os.name, 'linux');
  assert.equal(os.distro, rel[0]);
  const point = (await readFile('/etc/debian_version', 'utf8')).trim();
  // libguestfs takes Debian's product name from debian_version when os-release has no point release.
  assert.equal(os.product_name, rel[0] === 'debian' && !rel[1]!.includes('.') ? point.split('\n')[0] : rel[2]);
  assert.equal(os.major_version, Number(rel[1]));
  assert.equal(os.minor_version, /^\d+\.(\d+)/.test(point) ? Number(/^\d+\.(\d+)/.exec(point)![1]) : 0);
  assert.equal(os.hostname, 'inspected-vm');
  assert.equal(os.arch, (await runOk('uname', ['-m'])).trim());
  assert.equal(os.root, '/dev/sda2');

  // fstab: root by UUID, /boot by LABEL, an unmatched UUID reported as such; swap and /proc left out.
  assert.deepEqual(os.mountpoints, [
    { mountpoint: '/', device: '/dev/sda2', spec: `UUID=${ROOT_UUID}`, fstype: 'ext4' },
    { mountpoint: '/srv', device: null, spec: 'UUID=00000000-0000-0000-0000-000000000000', fstype: 'ext4' },
    { mountpoint: '/boot', device: '/dev/sda1', spec: 'LABEL=boot', fstype: 'ext4' },
  ]);
  assert.ok(os.notes.some((n: string) => n.includes('00000000-0000-0000-0000-000000000000')), os.notes.join('\n'));

  // Kernels are read from partition 1 through the /boot mount.
  assert.deepEqual(os.kernels, [
    { version: '6.1.0-17-amd64', path: '/boot/vmlinuz-6.1.0-17-amd64', initramfs: null },
    { version: '6.1.0-18-amd64', path: '/boot/vmlinuz-6.1.0-18-amd64', initramfs: '/boot/initrd.img-6.1.0-18-amd64' },
  ]);
  assert.equal(os.bootloader.type, 'grub2');
  assert.equal(os.bootloader.config, '/boot/grub/grub.cfg');
  const grubSh = (await shell('. ./etc/default/grub && printf "%s\\n%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT"', root)).split('\n');
  assert.deepEqual(os.bootloader.grub_defaults, { GRUB_CMDLINE_LINUX_DEFAULT: grubSh[1], GRUB_CMDLINE_LINUX: grubSh[0] });
  assert.deepEqual(os.bootloader.entries, [{ title: 'Debian GNU/Linux', kernel: '/vmlinuz-6.1.0-18-amd64', cmdline: `root=UUID=${ROOT_UUID} ro ${grubSh[0]} ${grubSh[1]}` }]);

  // cloud-init: the last file setting datasource_list wins, each file as PyYAML loads it.
  const yaml = async (f: string) => JSON.parse(await runOk('python3', ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["datasource_list"]))', join(root, f)]));
  assert.deepEqual(await yaml('etc/cloud/cloud.cfg'), ['NoCloud', 'ConfigDrive', 'OpenStack', 'None']);
  assert.deepEqual(os.cloud_init, {
    config_files: ['/etc/cloud/cloud.cfg', '/etc/cloud/cloud.cfg.d/90_dpkg.cfg'],
    datasource_list: await yaml('etc/cloud/cloud.cfg.d/90_dpkg.cfg'),
    datasource_list_from: '/etc/cloud/cloud.cfg.d/90_dpkg.cfg',
  });

  // Users: the test's users with a login shell, their password state from the shadow written; nologin users left out.
  const users = new Map<string, { shell: string; password: string; uid: number }>(os.users.map((u: { name: string }) => [u.name, u]));
  for (const [i, u] of TEST_USERS.entries()) {
    if (u.password === null) { assert.ok(!users.has(u.name), `${u.name} has no login shell`); continue; }
    assert.deepEqual({ ...users.get(u.name) }, { name: u.name, uid: 2000 + i, gid: 2000 + i, home: `/home/${u.name}`, shell: u.shell, password: u.password });
  }
  const loginShells = (await readFile('/etc/passwd', 'utf8')).split('\n').filter(Boolean).map((l) => l.split(':')).filter((f) => !/\/(nologin|false|sync|shutdown|halt)$/.test(f[6]!)).map((f) => f[0]!);
  assert.deepEqual(os.users.map((u: { name: string }) => u.name), [...loginShells, ...TEST_USERS.filter((u) => u.password !== null).map((u) => u.name)]);
  assert.ok(users.get('root') === undefined || users.get('root')!.password === 'locked');

  // Packages: what dpkg-query reports installed from the same status file.
  assert.equal(os.package_format, 'deb');
  assert.equal(os.package_management, 'apt');
  const oracle = (await runOk('dpkg-query', ['--admindir', join(root, 'var/lib/dpkg'), '-W', '-f', '${db:Status-Status} ${Package} ${Version} ${Architecture}\n']))
    .split('\n').filter((l) => l.startsWith('installed ')).map((l) => l.slice('installed '.length)).sort();
  assert.ok(oracle.length > 50, `${oracle.length} packages installed here`);
  assert.ok(oracle.includes('held-package 3.1-4+deb12u1 all') && !oracle.some((l) => l.startsWith('removed-keeps-conffiles ') || l.startsWith('half-done ')));
  assert.deepEqual(os.applications.map((p: { name: string; epoch: number; version: string; release: string; arch: string }) => `${p.name} ${packageVersionOf(p)} ${p.arch}`).sort(), oracle);

  assert.deepEqual(j.filesystems.map((f: { device: string; type: string; uuid: string; label: string | null; readable: boolean }) => [f.device, f.type, f.label, f.readable]), [
    ['/dev/sda1', 'ext4', 'boot', true],
    ['/dev/sda2', 'ext4', null, true],
  ]);
  assert.equal(j.filesystems[1].uuid, ROOT_UUID);

  // The human summary says the same.
  const human = await diskhub(['img', 'inspect', qcow2]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, new RegExp(`^distro: +${rel[0]}$`, 'm'));
  assert.match(human.stdout, /^hostname: +inspected-vm$/m);
  assert.match(human.stdout, /^ {2}\/boot +\/dev\/sda1 {2}LABEL=boot ext4$/m);
  assert.match(human.stdout, /^cloud-init: +installed, datasource_list: \[ConfigDrive, OpenStack, None\]/m);
  assert.match(human.stdout, new RegExp(`^applications \\(${oracle.length}\\):$`, 'm'));
  assert.match(human.stdout, /^ {2}carol +uid 2002 +\/bin\/bash +password empty$/m);
});

test('img inspect: a disk without an operating system exits 1 with a message; bad arguments exit 2', needs('mkfs.ext4', 'qemu-img', 'mkntfs'), async (t) => {
  const dir = await tempDir(t);
  const data = join(dir, 'data');
  await mkdir(join(data, 'etc'), { recursive: true });
  await writeFile(join(data, 'etc', 'notes.txt'), 'no fstab, no os-release\n');
  const img = join(dir, 'data.img');
  await runOk('mkfs.ext4', ['-q', '-F', '-d', data, img, '8M']);
  const none = await diskhub(['img', 'inspect', img]);
  assert.equal(none.code, 1);
  assert.equal(none.stdout, '');
  assert.equal(none.stderr, 'diskhub img inspect: no operating system was found on the disk\n');
  const json = await diskhub(['img', 'inspect', '--output=json', img]);
  assert.equal(json.code, 1);
  assert.deepEqual(JSON.parse(json.stdout).operatingsystems, []);

  // An empty qcow2 (no filesystem at all) is also "no operating system".
  const empty = join(dir, 'empty.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', empty, '16M');
  assert.equal((await diskhub(['img', 'inspect', empty])).code, 1);

  // NTFS is identified but not read: said in the message.
  const ntfs = join(dir, 'ntfs.img');
  await writeFile(ntfs, '');
  await truncate(ntfs, 16 * MiB);
  await runOk('mkntfs', ['-q', '-F', '-f', ntfs]);
  const win = await diskhub(['img', 'inspect', ntfs]);
  assert.equal(win.code, 1);
  assert.equal(win.stderr, 'diskhub img inspect: no operating system was found on the disk (not read: ntfs on /dev/sda)\n');

  const missing = await diskhub(['img', 'inspect', join(dir, 'nope.qcow2')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^diskhub img inspect: Could not open '.*nope\.qcow2': /);
  const noArg = await diskhub(['img', 'inspect']);
  assert.equal(noArg.code, 2);
  assert.equal(noArg.stderr, "diskhub img inspect: Expecting one image file name\nTry 'diskhub img inspect --help' for more information.\n");
  const badOut = await diskhub(['img', 'inspect', '--output=xml', img]);
  assert.equal(badOut.code, 2);
  assert.equal(badOut.stderr, 'diskhub img inspect: --output must be used with human or json as argument.\n');
  const badFmt = await diskhub(['img', 'inspect', '-f', 'qcow2', img]);
  assert.equal(badFmt.code, 2);
  assert.match(badFmt.stderr, /^diskhub img inspect: Could not open/);
});

test('img inspect: a RHEL-family root on LVM (release file fallback, /var on its own LV by /dev/mapper name, BLS entries, the rpm sqlite database against rpm -qa)', { ...needs('mkfs.ext4', 'qemu-img', 'lvm', 'losetup', 'python3', 'rpm', 'rpmbuild'), ...needsLoopDevices() }, async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  const varTree = join(dir, 'var');
  // var: the directory /var is mounted on (as in any root; libguestfs cannot mount where there is none, neither do we).
  for (const d of ['etc/sysconfig', 'etc/cloud', 'usr/bin', 'boot/loader/entries', 'boot/grub2', 'var']) await mkdir(join(root, d), { recursive: true });
  await mkdir(join(varTree, 'lib/rpm'), { recursive: true });
  const rpmQa = await rpmDatabase(dir, join(varTree, 'lib/rpm'), 300);
  assert.equal(rpmQa.length, 301);
  await writeFile(join(root, 'etc/redhat-release'), 'Rocky Linux release 9.3 (Blue Onyx)\n');
  await writeFile(join(root, 'etc/sysconfig/network'), '# Created by anaconda\nNETWORKING=yes\nHOSTNAME="rocky9.example.com"\n');
  await writeFile(join(root, 'etc/fstab'), '/dev/mapper/vg0-root / ext4 defaults 0 1\n/dev/vg0/var /var ext4 defaults 0 2\n');
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\nrocky:x:1000:1000::/home/rocky:/bin/bash\n');
  await writeFile(join(root, 'etc/shadow'), 'root:!!::0:99999:7:::\nrocky:$6$abc$def:19000:0:99999:7:::\n');
  await writeFile(join(root, 'etc/cloud/cloud.cfg'), "datasource_list: ['OpenStack', 'ConfigDrive']\n");
  await runOk('cp', ['-L', '/usr/bin/ls', join(root, 'usr/bin/ls')]);
  await writeFile(join(root, 'boot/vmlinuz-5.14.0-362.el9.x86_64'), 'k\n');
  await writeFile(join(root, 'boot/initramfs-5.14.0-362.el9.x86_64.img'), 'i\n');
  await writeFile(join(root, 'boot/grub2/grub.cfg'), '### BEGIN /etc/grub.d/10_linux ###\ninsmod blscfg\nblscfg\n');
  await writeFile(join(root, 'boot/loader/entries/abc-5.14.0-362.el9.x86_64.conf'), 'title Rocky Linux (5.14.0-362.el9.x86_64) 9.3 (Blue Onyx)\nversion 5.14.0-362.el9.x86_64\nlinux /vmlinuz-5.14.0-362.el9.x86_64\ninitrd /initramfs-5.14.0-362.el9.x86_64.img\noptions root=/dev/mapper/vg0-root ro console=ttyS0,115200n8\n');

  // LVM: a PV on the whole disk image, LVs "root" and "var" (inactive: their contents written at their offsets).
  const pv = join(dir, 'pv.img');
  await writeFile(pv, '');
  await truncate(pv, 128 * MiB);
  const offsets = await inactiveLogicalVolumes(pv, 'vg0', [{ name: 'root', size: '40M' }, { name: 'var', size: '48M' }]);
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${offsets.get('root')}`, '-d', root, pv, '40M']);
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${offsets.get('var')}`, '-d', varTree, pv, '48M']);
  const qcow2 = join(dir, 'lvm.qcow2');
  await qemuImg('convert', '-O', 'qcow2', pv, qcow2);

  const r = await diskhub(['img', 'inspect', '--output=json', qcow2]);
  assert.equal(r.code, 0, r.stderr);
  const os = JSON.parse(r.stdout).operatingsystems[0];
  assert.deepEqual([os.root, os.name, os.distro, os.major_version, os.minor_version, os.product_name, os.hostname, os.arch],
    ['/dev/vg0/root', 'linux', 'rocky', 9, 3, 'Rocky Linux release 9.3 (Blue Onyx)', 'rocky9.example.com', (await runOk('uname', ['-m'])).trim()]);
  assert.deepEqual(os.mountpoints, [
    { mountpoint: '/', device: '/dev/vg0/root', spec: '/dev/mapper/vg0-root', fstype: 'ext4' },
    { mountpoint: '/var', device: '/dev/vg0/var', spec: '/dev/vg0/var', fstype: 'ext4' },
  ]);
  // The rpm database is on the /var LV, found through the fstab mount: the packages rpm -qa lists.
  assert.deepEqual([os.package_format, os.package_management], ['rpm', 'dnf']);
  assert.deepEqual(os.applications.map((p: { name: string; epoch: number; version: string; release: string; arch: string }) => `${p.name} ${packageVersionOf(p)} ${p.arch}`).sort(),
    // An explicit epoch 0 is no epoch (rpmvercmp; virt-inspector's epoch is a number, 0 for both).
    rpmQa.map((l) => l.replace(/ 0:/, ' ')));
  assert.deepEqual(os.notes, []);
  assert.deepEqual(os.kernels, [{ version: '5.14.0-362.el9.x86_64', path: '/boot/vmlinuz-5.14.0-362.el9.x86_64', initramfs: '/boot/initramfs-5.14.0-362.el9.x86_64.img' }]);
  assert.deepEqual(os.bootloader, {
    type: 'grub2', config: '/boot/grub2/grub.cfg', grub_defaults: {},
    entries: [{ title: 'Rocky Linux (5.14.0-362.el9.x86_64) 9.3 (Blue Onyx)', kernel: '/vmlinuz-5.14.0-362.el9.x86_64', cmdline: 'root=/dev/mapper/vg0-root ro console=ttyS0,115200n8' }],
  });
  const yaml = JSON.parse(await runOk('python3', ['-c', 'import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["datasource_list"]))', join(root, 'etc/cloud/cloud.cfg')]));
  assert.deepEqual(os.cloud_init.datasource_list, yaml);
  assert.deepEqual(os.users.map((u: { name: string; password: string }) => [u.name, u.password]), [['root', 'locked'], ['rocky', 'set']]);
});

test('img inspect: Windows is detected by its system directory on a FAT filesystem made by mkfs.vfat and mmd (the registry is not read)', needs('mkfs.vfat', 'mmd', 'mcopy'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'win.img');
  await runOk('mkfs.vfat', ['-C', '-n', 'WINSYS', img, '32768']);
  await runOk('mmd', ['-i', img, '::/Windows', '::/Windows/System32']);
  const r = await diskhub(['img', 'inspect', '--output=json', img]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.operatingsystems.length, 1);
  assert.deepEqual([j.operatingsystems[0].root, j.operatingsystems[0].name, j.operatingsystems[0].distro, j.operatingsystems[0].applications], ['/dev/sda', 'windows', null, null]);
  assert.ok(j.operatingsystems[0].notes.some((n: string) => n.includes('registry is not read')));
  assert.deepEqual(j.filesystems.map((f: { type: string; label: string }) => [f.type, f.label]), [['vfat', 'WINSYS']]);
});
