/**
 * `diskhub build`: recipes with mistakes are refused with the path of the bad key; the example
 * recipe (examples/debian-12-minimal.yaml) builds a real image, checked by the peers — sfdisk
 * reads its GPT, e2fsck finds its root filesystem clean, debugfs reads the recipe's files and
 * users back, `diskhub img lint` passes it and QEMU (TCG) boots it by UEFI until the kernel
 * mounts its root (the BIOS boot to cloud-init is boot-test.test.ts's and ci-chain.test.ts's);
 * a build stopped by SIGTERM leaves no mount and no loop device.
 *
 * The real build needs root, debootstrap, grub-pc-bin, grub-efi-amd64-bin, mtools, sgdisk and
 * qemu-system-x86 and Debian's mirror: it is skipped without them outside CI and fails in CI.
 * Time: about 3-5 min with a cold package cache (DISKHUB_BUILD_CACHE), 1-2 min warm, of which
 * the TCG boots are about a minute; the schema tests take a second.
 */
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { diskhub, hasTool, repoRoot, run, runOk, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService } from '@diskhub/service/test-helpers';
import { aptSources, machineMirror } from '../src/image-build/base.js';
import { inRoot, writeInRoot } from '../src/image-build/rootpath.js';

const EXAMPLE = join(repoRoot, 'examples', 'debian-12-minimal.yaml');

async function check(t: Parameters<typeof tempDir>[0], name: string, text: string): Promise<{ code: number; stderr: string }> {
  const dir = await tempDir(t);
  const file = join(dir, name);
  await writeFile(file, text);
  const r = await diskhub(['build', '--check', file]);
  return { code: r.code, stderr: r.stderr };
}

test('build --check: the example recipe is valid and read with its defaults', async () => {
  const r = await diskhub(['build', '--check', EXAMPLE]);
  assert.equal(r.code, 0, r.stderr);
  const recipe = JSON.parse(r.stdout);
  assert.equal(recipe.base.debootstrap.suite, 'bookworm');
  assert.equal(recipe.disk.size, 2 * 2 ** 30);
  assert.deepEqual(recipe.bootloader, { bios: true, uefi: true });
  assert.equal(recipe.kernelCmdline, 'console=tty0 console=ttyS0,115200n8');
  assert.equal(recipe.output.format, 'qcow2');
  assert.equal(recipe.files[0].mode, '0644');
  // Every example in examples/ is a valid recipe.
  for (const name of await readdir(join(repoRoot, 'examples'))) {
    const r2 = await diskhub(['build', '--check', join(repoRoot, 'examples', name)]);
    assert.equal(r2.code, 0, `${name}: ${r2.stderr}`);
  }
});

test('build --check: bad recipes are refused with the path of every bad key (exit 2)', async (t) => {
  const cases: [string, string, RegExp[]][] = [
    ['unknown keys', 'base:\n  debootstrap:\n    suite: bookworm\n    suit: x\npackage: [vim]\n', [
      /base\.debootstrap\.suit: unknown key \(expected one of: suite, distribution, mirror, variant, components\)/, /\n {2}package: unknown key/]],
    ['wrong types', 'base:\n  debootstrap: {suite: 12}\npackages: vim\ndisk:\n  size: huge\n  filesystem: btrfs\n', [
      /base\.debootstrap\.suite: expected a string, got a number/, /packages: expected a list, got a string/,
      /disk\.size: expected a size .*got "huge"/, /disk\.filesystem: "btrfs" is not one of ext4, xfs/]],
    ['bad list items', 'base: {tarball: root.tar}\nusers:\n  - name: Bad Name\n    ssh_authorized_keys: [not-a-key]\n  - {uid: 5}\nfiles:\n  - {path: ../etc/x, content: hi, mode: 644}\n', [
      /users\[0\]\.name: "Bad Name" is not a user name/, /users\[0\]\.ssh_authorized_keys\[0\]: "not-a-key" is not an OpenSSH public key line/,
      /users\[1\]\.name: missing \(required\)/, /files\[0\]\.path: "\.\.\/etc\/x" is not an absolute path/, /files\[0\]\.mode: expected an octal mode string/]],
    ['two bases and no base', 'base:\n  debootstrap: {suite: bookworm}\n  tarball: x.tar\n', [/base: exactly one of debootstrap, image, tarball is needed, got debootstrap, tarball/]],
    ['missing base', 'packages: []\n', [/\n {2}base: missing \(required\)/]],
    ['sizes and boot loader', 'base: {tarball: x.tar}\ndisk: {size: 100M, partitions: {esp: 0}}\nbootloader: {uefi: true}\n', [
      /disk\.size: 100M is out of range 256 MiB/, /bootloader\.uefi: needs an EFI system partition/]],
    ['cloud-init', 'base: {tarball: x.tar}\ncloud_init:\n  datasources: [ConfigDrive, Azure]\n  config: {datasource_list: [None]}\n', [
      /cloud_init\.datasources\[1\]: "Azure" is not one of/, /cloud_init\.config\.datasource_list: set it with cloud_init\.datasources/]],
    ['not YAML', 'base: [unclosed\n', [/not valid YAML/]],
    ['not JSON', '{"base": }', [/not valid JSON/]],
    ['JSON with an unknown key', '{"base": {"tarball": "x.tar"}, "output": {"format": "qcow2", "level": 9}}', [/output\.level: unknown key/]],
  ];
  for (const [what, text, expected] of cases) {
    const r = await check(t, what.includes('JSON') ? 'r.json' : 'r.yaml', text);
    assert.equal(r.code, 2, `${what}: ${r.stderr}`);
    assert.match(r.stderr, /invalid recipe|not valid/, what);
    for (const re of expected) assert.match(r.stderr, re, `${what}: ${r.stderr}`);
  }
  const missing = await diskhub(['build', '--check', '/nonexistent/recipe.yaml']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /\/nonexistent\/recipe\.yaml: ENOENT/);
  const noOutput = await diskhub(['build', EXAMPLE]);
  assert.equal(noOutput.code, 2);
  assert.match(noOutput.stderr, /-o OUTPUT is needed/);
});

test('build: the mirror comes from the machine\'s apt configuration (one-line and deb822 sources)', async (t) => {
  const etc = await tempDir(t);
  await mkdir(join(etc, 'sources.list.d'));
  // deb822 (Debian 12's default): security and updates first, disabled and deb-src stanzas skipped.
  await writeFile(join(etc, 'sources.list.d', 'debian.sources'), [
    'Types: deb', 'URIs: http://security.example/debian-security', 'Suites: bookworm-security', 'Components: main', '',
    'Types: deb-src', 'URIs: http://src.example/debian', 'Suites: bookworm', 'Components: main', '',
    'Types: deb', 'URIs: http://off.example/debian', 'Suites: bookworm', 'Components: main', 'Enabled: no', '',
    '# a comment', 'Types: deb', 'URIs: http://mirror.example/debian/', 'Suites: bookworm bookworm-updates', 'Components: main', ' contrib', '',
  ].join('\n'));
  assert.equal(await machineMirror(etc), 'http://mirror.example/debian');
  assert.deepEqual(await aptSources(etc), [
    { uri: 'http://security.example/debian-security', suites: ['bookworm-security'], components: ['main'] },
    { uri: 'http://mirror.example/debian/', suites: ['bookworm', 'bookworm-updates'], components: ['main', 'contrib'] },
  ]);
  // sources.list comes first; options in brackets and comments are skipped.
  await writeFile(join(etc, 'sources.list'), '# deb http://commented.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main non-free-firmware\ndeb-src http://one.example/debian bookworm main\n');
  assert.equal(await machineMirror(etc), 'http://one.example/debian');
  assert.deepEqual((await aptSources(etc))[0], { uri: 'http://one.example/debian', suites: ['bookworm'], components: ['main', 'non-free-firmware'] });
  assert.equal(await machineMirror(join(etc, 'missing')), null);
});

test('build: paths inside the image resolve as the chroot would, never to the build machine\'s files', async (t) => {
  const root = await tempDir(t);
  const outside = await tempDir(t);
  await mkdir(join(root, 'etc'));
  await mkdir(join(root, 'usr', 'lib'), { recursive: true });
  await symlink('usr/lib', join(root, 'lib'));            // merged /usr: relative
  await symlink('/', join(root, 'etc', 'up'));              // absolute: the root of the image
  await symlink('../../../../../..', join(root, 'etc', 'dots')); // .. stops at the root
  await symlink(outside, join(root, 'etc', 'away'));        // absolute: inside the image, not the host's
  await symlink(join(outside, 'victim'), join(root, 'etc', 'resolv.conf'));
  await writeFile(join(outside, 'victim'), 'host file\n');
  assert.equal(await inRoot(root, '/lib/systemd/x.service'), join(root, 'usr/lib/systemd/x.service'));
  assert.equal(await inRoot(root, '/etc/up/etc/hostname'), join(root, 'etc/hostname'));
  assert.equal(await inRoot(root, '/etc/dots/tmp/x'), join(root, 'tmp/x'));
  assert.equal(await inRoot(root, `/etc/away/victim`), join(root, outside, 'victim'));
  assert.equal(await inRoot(root, '/etc/resolv.conf'), join(root, 'etc/resolv.conf'));
  assert.equal(await inRoot(root, '/lib', { followLast: true }), join(root, 'usr/lib'));
  // A write replaces the link with a file; the file it pointed to is untouched.
  await writeInRoot(root, '/etc/resolv.conf', 'nameserver 10.0.0.1\n');
  assert.equal(await readFile(join(outside, 'victim'), 'utf8'), 'host file\n');
  assert.equal(await readFile(join(root, 'etc/resolv.conf'), 'utf8'), 'nameserver 10.0.0.1\n');
  await writeInRoot(root, '/etc/away/victim', 'x');
  assert.equal(await readFile(join(outside, 'victim'), 'utf8'), 'host file\n');
  await symlink('loop2', join(root, 'loop1'));
  await symlink('loop1', join(root, 'loop2'));
  await assert.rejects(inRoot(root, '/loop1/x'), /too many levels of symbolic links/);
});

// ---- the real build ----

const TOOLS = ['xfs_repair', 'openstack', 'debootstrap', 'sgdisk', 'sfdisk', 'grub-mkimage', 'mcopy', 'mkfs.fat', 'mkfs.ext4', 'e2fsck', 'debugfs', 'qemu-img', 'qemu-system-x86_64', 'losetup'];
const missingTools = TOOLS.filter((x) => !hasTool(x));
const notRoot = process.getuid?.() !== 0;
const skipBuild = missingTools.length > 0 || notRoot
  ? (process.env.CI === 'true' ? undefined : `needs root and ${missingTools.join(', ') || 'the tools'}`)
  : undefined;

/** Our loop devices: those whose backing file is under `dir`. */
async function loopsUnder(dir: string): Promise<string[]> {
  return (await runOk('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'])).split('\n').filter((l) => l.includes(dir));
}
async function mountsUnder(dir: string): Promise<string[]> {
  return (await readFile('/proc/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(dir));
}

/** A read-only loop device over one partition of a raw file, detached after fn. */
async function withPartition<T>(raw: string, p: { start: number; size: number }, fn: (dev: string) => Promise<T>): Promise<T> {
  const dev = (await runOk('losetup', ['--find', '--show', '--read-only', `--offset=${p.start}`, `--sizelimit=${p.size}`, raw])).trim();
  try { return await fn(dev); } finally { await runOk('losetup', ['--detach', dev]); }
}

/**
 * Boot the image through a qcow2 overlay (the image is never changed) with a NoCloud seed whose
 * user-data prints a marker on the console; resolves when `until` matches the console text
 * (finished: true), or on a kernel panic, QEMU's exit or the timeout (finished: false).
 */
async function boot(dir: string, image: string, format: string, options: { uefi?: boolean; until: (console: string) => boolean; timeoutMs: number }): Promise<{ console: string; finished: boolean }> {
  const tag = options.uefi ? 'uefi' : 'bios';
  const overlay = join(dir, `overlay-${tag}.qcow2`);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image, '-F', format, overlay]);
  await writeFile(join(dir, 'user-data'), '#cloud-config\nruncmd:\n  - [sh, -c, "echo diskhub-user-data-ran > /dev/ttyS0"]\n');
  const seed = join(dir, 'seed.iso');
  const r = await diskhub(['img', 'config-drive', '--nocloud', '-o', seed, '--hostname', 'buildtest', '--user-data', join(dir, 'user-data')]);
  assert.equal(r.code, 0, r.stderr);
  const firmware: string[] = [];
  if (options.uefi) {
    const vars = join(dir, 'OVMF_VARS.fd');
    await writeFile(vars, await readFile('/usr/share/OVMF/OVMF_VARS_4M.fd'));
    firmware.push('-machine', 'q35', '-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd', '-drive', `if=pflash,format=raw,file=${vars}`);
  }
  const qemu = spawn('qemu-system-x86_64', ['-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '1024', '-nographic', '-no-reboot', ...firmware,
    '-drive', `file=${overlay},if=virtio,format=qcow2`, '-drive', `file=${seed},if=virtio,format=raw,readonly=on`,
    '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  return await new Promise((resolve) => {
    const done = (finished: boolean) => { clearTimeout(timer); qemu.kill('SIGKILL'); resolve({ console: text, finished }); };
    const timer = setTimeout(() => done(false), options.timeoutMs);
    const onData = (b: Buffer) => {
      text += b.toString('latin1');
      if (options.until(text)) done(true);
      else if (/Kernel panic/.test(text)) done(false);
    };
    qemu.stdout.on('data', onData);
    qemu.stderr.on('data', onData);
    qemu.on('exit', () => done(false));
  });
}

/** The example's image, kept for the test that builds on it; its directory goes when the file's tests end. */
let exampleImage: string | null = null;
let exampleDir: string | null = null;
after(async () => { if (exampleDir) await rm(exampleDir, { recursive: true, force: true }); });

test('build: the example recipe builds an image that the peers read, lint passes and QEMU boots it by UEFI', { skip: skipBuild, timeout: 20 * 60_000 }, async (t) => {
  assert.deepEqual(missingTools, [], `missing tools: ${missingTools.join(', ')}`);
  assert.equal(notRoot, false, 'diskhub build needs root');
  const dir = exampleDir = await mkdtemp(join(tmpdir(), 'diskhub-build-test-'));
  const out = join(dir, 'debian.qcow2');
  const b = await run(process.execPath, [join(repoRoot, 'packages/cli/bin/diskhub.js'), 'build', '--quiet', EXAMPLE, '-o', out], { timeoutMs: 15 * 60_000 });
  const log = await readFile(`${out}.log`, 'utf8').catch(() => '(no log)');
  assert.equal(b.code, 0, `${b.stderr}\n--- log tail ---\n${log.slice(-4000)}`);
  assert.deepEqual(await readdir(dir).then((l) => l.filter((n) => n.startsWith('.diskhub-build-'))), [], 'the work directory is removed');

  // The image as qemu-img sees it: qcow2, compressed, 2 GiB.
  const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', out]));
  assert.equal(info.format, 'qcow2');
  assert.equal(info['virtual-size'], 2 * 2 ** 30);
  await runOk('qemu-img', ['check', out]);
  const raw = join(dir, 'debian.raw');
  await runOk('qemu-img', ['convert', '-O', 'raw', out, raw]);

  // The GPT, read by sfdisk: BIOS boot at 1 MiB, the ESP, root last up to the end of the disk.
  const pt = JSON.parse(await runOk('sfdisk', ['--json', raw])).partitiontable;
  assert.equal(pt.label, 'gpt');
  assert.deepEqual(pt.partitions.map((p: { type: string; name: string }) => [p.type, p.name]), [
    ['21686148-6449-6E6F-744E-656564454649', 'BIOS boot'], ['C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'EFI System'], ['0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'root']]);
  assert.equal(pt.partitions[0].start, 2048);
  const root = pt.partitions[2];
  assert.equal(root.start + root.size, pt.lastlba + 1, 'root is the last partition and reaches the end of the usable space');
  const rootPart = { start: root.start * 512, size: root.size * 512 };
  const espPart = { start: pt.partitions[1].start * 512, size: pt.partitions[1].size * 512 };
  // GRUB's boot.img is in the MBR (its "GRUB " string), the protective MBR entry kept.
  const mbr = Buffer.alloc(512);
  const fh = await open(raw, 'r');
  try { await fh.read(mbr, 0, 512, 0); } finally { await fh.close(); }
  assert.ok(mbr.includes(Buffer.from('GRUB ')), 'boot.img in the MBR');
  assert.equal(mbr[0x1c2], 0xee, 'protective MBR partition type');
  assert.equal(mbr.readUInt16LE(510), 0xaa55);

  // The ESP: mtools lists EFI/BOOT/BOOTX64.EFI.
  const efi = await runOk('mdir', ['-b', '-i', `${raw}@@${espPart.start}`, '::/EFI/BOOT']);
  assert.match(efi, /BOOTX64\.EFI/);

  await withPartition(raw, rootPart, async (dev) => {
    // e2fsck -fn exits 0 only for a clean filesystem.
    const fsck = await run('e2fsck', ['-fn', dev]);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    const cat = (p: string) => runOk('debugfs', ['-R', `cat ${p}`, dev]);
    assert.equal(await cat('/etc/motd'), 'Debian 12 cloud image built by diskhub build.\n');
    assert.match(await cat('/etc/passwd'), /^debian:x:\d+:\d+::\/home\/debian:\/bin\/bash$/m);
    assert.match(await cat('/etc/group'), /^sudo:x:27:debian$/m);
    assert.match(await cat('/home/debian/.ssh/authorized_keys'), /^ssh-ed25519 \S+ example@diskhub$/m);
    assert.match(await cat('/etc/sudoers.d/90-diskhub-debian'), /^debian ALL=\(ALL\) NOPASSWD:ALL$/m);
    assert.match(await cat('/etc/cloud/cloud.cfg.d/99-diskhub.cfg'), /datasource_list:\n {2}- ConfigDrive\n {2}- OpenStack\n {2}- NoCloud\n {2}- None\nlocale: C.UTF-8\nsystem_info:\n {2}default_user:\n {4}name: debian\n/);
    const fstab = await cat('/etc/fstab');
    const blkid = await runOk('blkid', ['-o', 'value', '-s', 'UUID', dev]);
    assert.match(fstab, new RegExp(`^UUID=${blkid.trim()} / ext4 `, 'm'));
    const grubCfg = await cat('/boot/grub/grub.cfg');
    assert.match(grubCfg, new RegExp(`linux /vmlinuz root=UUID=${blkid.trim()} ro console=tty0 console=ttyS0,115200n8`));
    assert.equal(await cat('/etc/machine-id'), '');
    assert.doesNotMatch(await runOk('debugfs', ['-R', 'ls -l /etc/ssh', dev]), /ssh_host_/);
    assert.doesNotMatch(await runOk('debugfs', ['-R', 'ls /var/cache/apt/archives', dev]), /\.deb/);
  });

  // The cloud-image checklist: no FAIL (exit 0).
  const lint = await diskhub(['img', 'lint', '--output=json', out]);
  assert.equal(lint.code, 0, lint.stdout + lint.stderr);
  const checks = JSON.parse(lint.stdout).operatingsystems[0].checks as { id: string; result: string }[];
  assert.deepEqual(checks.filter((c) => c.result === 'fail'), []);
  assert.equal(checks.find((c) => c.id === 'serial-console')?.result, 'pass');

  exampleImage = out;

  // The BIOS boot to cloud-init finished (GRUB from the BIOS boot partition, the config drive
  // read, SSH, the user-data run, no cloud-init error) is boot-test.test.ts's end-to-end test and
  // ci-chain.test.ts's, of this same recipe's image: booting it a third time here would add two
  // minutes of TCG to CI and prove nothing more. UEFI is booted only here.
  // UEFI (OVMF): the firmware loads EFI/BOOT/BOOTX64.EFI, GRUB finds the root filesystem by UUID,
  // the kernel mounts it — far enough to show that boot path works.
  const uefi = await boot(dir, out, 'qcow2', { uefi: true, until: (c) => /EXT4-fs \(vda3\): mounted filesystem/.test(c), timeoutMs: 5 * 60_000 });
  assert.ok(uefi.finished, `UEFI boot did not mount the root filesystem:\n${uefi.console.slice(-5000)}`);
  assert.match(uefi.console, /BdsDxe: starting Boot\d+ "UEFI Misc Device"/);
});

test('build: SIGTERM in the middle leaves no mount and no loop device behind', { skip: skipBuild, timeout: 10 * 60_000 }, async (t) => {
  const dir = await tempDir(t);
  const out = join(dir, 'stopped.qcow2');
  const child = spawn(process.execPath, [join(repoRoot, 'packages/cli/bin/diskhub.js'), 'build', '--quiet', EXAMPLE, '-o', out, '--work-dir', dir], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Wait until the chroot's filesystems are mounted (the package step), then stop the build.
  const deadline = Date.now() + 8 * 60_000;
  let mounted: string[] = [];
  while (Date.now() < deadline) {
    mounted = await mountsUnder(dir);
    if (mounted.some((m) => m.endsWith('/root/proc'))) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(mounted.some((m) => m.endsWith('/root/proc')), `the build never mounted its chroot: ${mounted.join(', ')}`);
  assert.ok((await loopsUnder(dir)).length > 0, 'a loop device is attached during the build');
  child.kill('SIGTERM');
  assert.equal(await exited, 128 + 15);
  assert.deepEqual(await mountsUnder(dir), []);
  assert.deepEqual(await loopsUnder(dir), []);
  assert.deepEqual((await readdir(dir)).filter((n) => n !== 'stopped.qcow2.log'), [], 'no work directory or output left');
  assert.match(await readFile(`${out}.log`, 'utf8'), /SIGTERM received/);
});

test('build: an existing image as the base, xfs, BIOS only, vmdk streamOptimized, uploaded to the image service', { skip: skipBuild, timeout: 10 * 60_000 }, async (t) => {
  assert.ok(exampleImage, 'needs the example build (the test before)');
  const dir = await tempDir(t);
  const svc = await startTestService(t);
  const env = osEnv(svc.url);
  const recipe = join(dir, 'derived.json');
  // JSON this time; the base already has the kernel and cloud-init, so apt only adds xfsprogs.
  await writeFile(recipe, JSON.stringify({
    name: 'derived',
    base: { image: { path: exampleImage, format: 'qcow2' } },
    packages: ['xfsprogs'],
    groups: [{ name: 'admins', gid: 2000 }],
    users: [{ name: 'ops', uid: 1500, groups: ['admins'], ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbcdefghijklmnopqrstuvwxyz0123456789ABCDEF ops@diskhub'] }],
    files: [{ path: '/etc/diskhub/secret', content: Buffer.from('s3cret\n').toString('base64'), encoding: 'base64', mode: '0600', owner: 'ops:admins' }],
    services: { disable: ['apt-daily-upgrade.timer'] },
    disk: { size: '1536M', filesystem: 'xfs', label: 'root', partitions: { esp: 0 } },
    bootloader: { bios: true },
    output: { format: 'vmdk', options: { subformat: 'streamOptimized' } },
    upload: { name: 'derived-xfs', visibility: 'private', properties: { hw_disk_bus: 'virtio', os_distro: 'debian', os_version: 12 } },
  }));
  const out = join(dir, 'derived.vmdk');
  const b = await run(process.execPath, [join(repoRoot, 'packages/cli/bin/diskhub.js'), 'build', recipe, '-o', out], { env, timeoutMs: 9 * 60_000 });
  const log = await readFile(`${out}.log`, 'utf8').catch(() => '(no log)');
  assert.equal(b.code, 0, `${b.stderr}\n--- log tail ---\n${log.slice(-4000)}`);
  assert.match(b.stderr, /\[\d+\/11 [\d:]+\] uploading to the image service as 'derived-xfs'/);
  const id = /uploaded: image ([0-9a-f-]{36})/.exec(b.stderr)?.[1];
  assert.ok(id, b.stderr);

  const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', out]));
  assert.equal(info.format, 'vmdk');
  assert.equal(info['format-specific'].data['create-type'], 'streamOptimized');
  assert.equal(info['virtual-size'], 1536 << 20);
  const raw = join(dir, 'derived.raw');
  await runOk('qemu-img', ['convert', '-O', 'raw', out, raw]);
  const pt = JSON.parse(await runOk('sfdisk', ['--json', raw])).partitiontable;
  assert.deepEqual(pt.partitions.map((p: { type: string }) => p.type), ['21686148-6449-6E6F-744E-656564454649', '0FC63DAF-8483-4772-8E79-3D69D8477DE4']);
  const root = pt.partitions[1];
  await withPartition(raw, { start: root.start * 512, size: root.size * 512 }, async (dev) => {
    assert.equal((await runOk('blkid', ['-o', 'value', '-s', 'TYPE', dev])).trim(), 'xfs');
    const repair = await run('xfs_repair', ['-n', dev]);
    assert.equal(repair.code, 0, repair.stdout + repair.stderr);
    const mnt = join(dir, 'mnt');
    await runOk('mkdir', ['-p', mnt]);
    await runOk('mount', ['-o', 'ro,norecovery', dev, mnt]);
    try {
      assert.equal(await readFile(join(mnt, 'etc/diskhub/secret'), 'utf8'), 's3cret\n');
      assert.equal((await runOk('stat', ['-c', '%a %u %g', join(mnt, 'etc/diskhub/secret')])).trim(), '600 1500 2000');
      assert.match(await readFile(join(mnt, 'etc/passwd'), 'utf8'), /^ops:x:1500:1500::\/home\/ops:\/bin\/bash$/m);
      assert.match(await readFile(join(mnt, 'etc/group'), 'utf8'), /^admins:x:2000:ops$/m);
      // The base image's user and files came along.
      assert.match(await readFile(join(mnt, 'etc/passwd'), 'utf8'), /^debian:/m);
      assert.equal(await readFile(join(mnt, 'etc/motd'), 'utf8'), 'Debian 12 cloud image built by diskhub build.\n');
      assert.match(await readFile(join(mnt, 'etc/fstab'), 'utf8'), /^UUID=\S+ \/ xfs defaults 0 0$/m);
      const timers = await readdir(join(mnt, 'etc/systemd/system/timers.target.wants'));
      assert.ok(timers.includes('apt-daily.timer') && !timers.includes('apt-daily-upgrade.timer'), timers.join(' '));
    } finally {
      await runOk('umount', [mnt]);
    }
  });

  // The image service has it, as the openstack client shows it.
  const shown = JSON.parse(await runOk('openstack', ['image', 'show', '-f', 'json', id], { env }));
  assert.equal(shown.name, 'derived-xfs');
  assert.equal(shown.disk_format, 'vmdk');
  assert.equal(shown.container_format, 'bare');
  assert.equal(shown.status, 'active');
  assert.equal(shown.visibility, 'private');
  assert.equal(shown.checksum, createHash('md5').update(await readFile(out)).digest('hex'));
  assert.equal(shown.properties.hw_disk_bus, 'virtio');
  assert.equal(shown.properties.os_version, '12');

  // GRUB (BIOS) reads xfs and the kernel mounts the root filesystem.
  const bios = await boot(dir, out, 'vmdk', { until: (c) => /XFS \(vda2\): Ending clean mount/.test(c), timeoutMs: 5 * 60_000 });
  assert.ok(bios.finished, `the xfs image did not mount its root:\n${bios.console.slice(-5000)}`);
});
