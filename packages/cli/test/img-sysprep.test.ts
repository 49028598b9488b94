/**
 * `diskhub img sysprep` on a real Debian bookworm root (testkit's debianRootfs, without its kernel
 * modules, /boot and documentation, which no operation touches: a quicker image) dirtied with
 * what a used machine keeps — machine-id, SSH host keys, shell history, logs, DHCP leases, a
 * udev persistent-net rule, an ifcfg HWADDR line, cloud-init instance state, a random seed,
 * package and temporary files — made into ext4 (mkfs.ext4 -d) and xfs (mkfs.xfs, loop mount, cp)
 * GPT disks, raw and qcow2 (qemu-img convert). Oracles: e2fsck -fn and xfs_repair -n on a
 * read-only loop device, qemu-img check, debugfs and a loop mount for the files, our own img ls
 * and img cat, our img lint, and virt-sysprep itself (libguestfs, direct backend with TCG: about
 * a minute) on a copy of the same image. Needs root (loop devices and mount).
 *
 * Time: 7 min on a machine with a load average of 20 (2 cores), of which the virt-sysprep
 * appliance boot under TCG is 3 min and the fixture (mkfs.ext4 -d of 300 MB, qemu-img convert,
 * img ls --checksum) about 1; each test but that one 5-65 s. Longer than the usual minute
 * because the fixture is a real system and the peer boots a VM.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { debianRootfs, diskhub, diskhubBin, hasTool, inactiveLogicalVolumes, qemuImg, run, runOk, tempDir, treeCopy } from '@diskhub/testkit';

const TOOLS = ['lvm', 'debootstrap', 'mkfs.ext4', 'mkfs.xfs', 'e2fsck', 'xfs_repair', 'debugfs', 'sgdisk', 'losetup', 'qemu-img', 'qemu-system-x86_64', 'virt-sysprep'];
const missing = TOOLS.filter((t) => !hasTool(t));
const notRoot = process.getuid?.() !== 0;
const skip = (missing.length > 0 || notRoot) && process.env.CI !== 'true' ? { skip: `needs root and ${missing.join(', ') || 'the tools'}` } : {};

/** The operations virt-sysprep has too (ours: cloud-init-state and random-seed). */
const SHARED = ['bash-history', 'dhcp-client-state', 'logfiles', 'machine-id', 'net-hwaddr', 'package-manager-cache', 'passwd-backups', 'ssh-hostkeys', 'tmp-files', 'udev-persistent-net', 'utmp'];
const MAC = '52:54:00:12:34:56';
const MiB = 1 << 20;
const PART_START = 1 * MiB;

const sha256 = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');
const img = (...args: string[]) => diskhub(['img', ...args], { timeoutMs: 10 * 60_000 });

/** Replace a file in the hard-linked tree (never write through a link into the cached rootfs). */
async function put(tree: string, path: string, data: string | Buffer): Promise<void> {
  const p = join(tree, path);
  await mkdir(dirname(p), { recursive: true });
  await rm(p, { force: true });
  await writeFile(p, data);
}

/** The cached Debian root, trimmed, with a used machine's leftovers. */
async function dirtyTree(dir: string): Promise<string> {
  const tree = join(dir, 'tree');
  await treeCopy(await debianRootfs(), tree);
  for (const d of ['usr/lib/modules', 'boot', 'usr/share/doc', 'usr/share/locale', 'usr/share/man']) await rm(join(tree, d), { recursive: true, force: true });
  await put(tree, 'root/.bash_history', 'ls\nsudo reboot\n');
  await put(tree, 'home/alice/.bash_history', 'cat secrets\n');
  await put(tree, 'home/alice/notes.txt', 'keep me\n');
  await put(tree, 'var/log/syslog', 'Dec  7 kernel: booted\n');
  await put(tree, 'var/log/journal/0123abcd/system.journal', randomBytes(8192));
  await put(tree, 'var/lib/dhcp/dhclient.eth0.leases', 'lease {\n  interface "eth0";\n  fixed-address 10.0.0.5;\n}\n');
  await put(tree, 'etc/udev/rules.d/70-persistent-net.rules', `SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="${MAC}", NAME="eth0"\n`);
  await put(tree, 'etc/sysconfig/network-scripts/ifcfg-eth0', `DEVICE=eth0\nHWADDR=${MAC}\nBOOTPROTO=dhcp\nONBOOT=yes\n`);
  await put(tree, 'var/lib/cloud/instances/iid-0123/obj.pkl', randomBytes(2048));
  await put(tree, 'var/lib/cloud/instances/iid-0123/sem/config_ssh', '');
  await put(tree, 'var/lib/cloud/data/instance-id', 'iid-0123\n');
  await put(tree, 'var/lib/cloud/seed/nocloud/meta-data', 'instance-id: seed\n');
  await symlink('/var/lib/cloud/instances/iid-0123', join(tree, 'var/lib/cloud/instance'));
  await put(tree, 'var/lib/systemd/random-seed', randomBytes(512));
  await put(tree, 'tmp/.X0-lock', '1234\n');
  await put(tree, 'var/tmp/build/output.o', randomBytes(4096));
  await put(tree, 'var/cache/apt/archives/vim_9.0_amd64.deb', randomBytes(4096));
  await put(tree, 'etc/passwd-', await readFile(join(tree, 'etc/passwd')));
  await put(tree, 'etc/diskhub-keep', randomBytes(100_000));
  return tree;
}

/** A GPT disk whose partition 1 (from 1 MiB) is `mkfs.ext4 -d` of the tree. */
async function ext4Disk(dir: string, tree: string, name: string, sizeMiB = 1024): Promise<string> {
  const raw = join(dir, `${name}.img`);
  await writeFile(raw, '');
  await truncate(raw, sizeMiB * MiB);
  await runOk('sgdisk', ['-n1:2048:0', raw]);
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'root', '-E', `offset=${PART_START}`, '-d', tree, raw, `${sizeMiB - 2}M`], { timeoutMs: 10 * 60_000 });
  return raw;
}

/** A read-only loop device over partition 1 of a raw file, detached after fn. */
async function withPartition<T>(raw: string, fn: (dev: string) => Promise<T>): Promise<T> {
  const sectors = JSON.parse(await runOk('sfdisk', ['--json', raw])).partitiontable.partitions[0];
  const dev = (await runOk('losetup', ['--find', '--show', '--read-only', `--offset=${sectors.start * 512}`, `--sizelimit=${sectors.size * 512}`, raw])).trim();
  try { return await fn(dev); } finally { await runOk('losetup', ['--detach', dev]); }
}

/** Partition 1 of an image in any format, as a raw file (for the filesystem checkers). */
async function asRaw(image: string): Promise<string> {
  const raw = `${image}.check.raw`;
  await rm(raw, { force: true });
  await qemuImg('convert', '-O', 'raw', image, raw);
  return raw;
}

/** `img ls -lR --checksum IMAGE /`: path -> line (type, mode, size, MD5 of regular files). */
async function listing(image: string, least = 1000): Promise<Map<string, string>> {
  const r = await img('ls', '-lR', '--checksum', image, '/');
  assert.equal(r.code, 0, r.stderr);
  const map = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S) (\d{4})\s+(\d+) (?:([0-9a-f]{32}) )?(\/.*?)(?: -> (.*))?$/.exec(line);
    if (m) map.set(m[5]!, line);
  }
  assert.ok(map.size > least, `img ls listed ${map.size} paths`);
  return map;
}

interface Check { id: string; result: string; evidence: string[] }
const SYSPREP_CHECKS = ['machine-id-empty', 'no-ssh-host-keys', 'no-shell-history', 'no-logs', 'no-dhcp-leases', 'no-cloud-init-state', 'no-hardcoded-mac'];
async function lintChecks(image: string): Promise<Map<string, Check>> {
  const r = await img('lint', '--output=json', image);
  assert.ok(r.code === 0 || r.code === 1, r.stderr);
  return new Map(JSON.parse(r.stdout).operatingsystems[0].checks.map((c: Check) => [c.id, c]));
}

/** Paths a default sysprep removes from the dirty tree (the tree's own host keys, logs and backups included). */
function expectedRemoved(before: Map<string, string>): string[] {
  const removed = [
    '/root/.bash_history', '/home/alice/.bash_history', '/var/lib/dhcp/dhclient.eth0.leases', '/etc/udev/rules.d/70-persistent-net.rules',
    '/var/lib/cloud/instances', '/var/lib/cloud/instance', '/var/lib/cloud/data', '/var/lib/systemd/random-seed', '/tmp/.X0-lock', '/var/tmp/build',
  ];
  for (const [p, line] of before) {
    if (/^\/etc\/ssh\/[^/]*_host_[^/]*$/.test(p)) removed.push(p);
    else if (/^\/var\/log\/([^/]*\.log[^/]*|(btmp|wtmp|lastlog|faillog|syslog)[^/]*|apt\/[^/]+|journal\/[^/]+)$/.test(p)) removed.push(p);
    else if (/^\/etc\/(group|gshadow|passwd|shadow|subgid|subuid)-$/.test(p)) removed.push(p);
    else if (p.startsWith('/var/cache/apt/archives/') && line.startsWith('- ')) removed.push(p);
  }
  return removed;
}

/** The paths gone from `after` (with everything below them). */
const gone = (before: Map<string, string>, afterList: Map<string, string>) => [...before.keys()].filter((p) => !afterList.has(p)).sort();
const withChildren = (before: Map<string, string>, roots: string[]) => [...before.keys()].filter((p) => roots.some((r) => p === r || p.startsWith(`${r}/`))).sort();

/** A tiny root (os-release, fstab) with a host key, a history, a lease and a machine-id to remove, and a file to keep. */
async function smallTree(work: string): Promise<string> {
  const small = join(work, 'small');
  for (const d of ['etc/ssh', 'usr/lib', 'root', 'var/lib/dhcp']) await mkdir(join(small, d), { recursive: true });
  await copyFile(join(tree, 'usr/lib/os-release'), join(small, 'usr/lib/os-release'));
  await symlink('../usr/lib/os-release', join(small, 'etc/os-release'));
  await writeFile(join(small, 'etc/fstab'), '');
  await writeFile(join(small, 'etc/machine-id'), 'a6943c54bd4f422e86fa1784a6d6188e\n');
  await writeFile(join(small, 'etc/ssh/ssh_host_ed25519_key'), randomBytes(400));
  await writeFile(join(small, 'root/.bash_history'), 'history\n');
  await writeFile(join(small, 'var/lib/dhcp/dhclient.leases'), 'lease {}\n');
  await writeFile(join(small, 'etc/keep'), randomBytes(300_000));
  return small;
}

let dir = '';
let tree = '';
let dirtyRaw = '';
let dirtyQcow2 = '';
let dirtyListing = new Map<string, string>();

before(async () => {
  if ('skip' in skip) return;
  dir = await mkdtemp(join(tmpdir(), 'diskhub-sysprep-t-'));
  tree = await dirtyTree(dir);
  dirtyRaw = await ext4Disk(dir, tree, 'dirty');
  dirtyQcow2 = join(dir, 'dirty.qcow2');
  await qemuImg('convert', '-O', 'qcow2', dirtyRaw, dirtyQcow2);
  dirtyListing = await listing(dirtyQcow2);
}, { timeout: 30 * 60_000 });
after(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

test('sysprep --list-operations prints virt-sysprep\'s line for every operation both have; argument errors as virt-sysprep words them (exit 1)', skip, async () => {
  const ours = await img('sysprep', '--list-operations');
  assert.equal(ours.code, 0);
  const theirs = await runOk('virt-sysprep', ['--list-operations']);
  const lines = ours.stdout.split('\n').filter(Boolean);
  assert.deepEqual(lines.map((l) => l.split(' ')[0]), [...SHARED, 'cloud-init-state', 'random-seed'].sort());
  for (const name of SHARED) assert.ok(theirs.split('\n').includes(lines.find((l) => l.startsWith(`${name} `))!), `${name}: ${theirs}`);
  assert.match(ours.stdout, /^cloud-init-state \* Remove cloud-init instance state \(as cloud-init clean\)$/m);
  assert.match(ours.stdout, /^random-seed \* Remove the saved random seed$/m);

  const cases: string[][] = [
    ['--enable', 'machine-id', '--enable', 'logfiles', '-a', 'x.img'],
    ['--enable', 'machine-id,nosuch', '-a', 'x.img'],
    ['--operations', 'defaults,-nosuch', '-a', 'x.img'],
    ['--operations', 'machine-id,', '-a', 'x.img'],
    ['-a', 'x.img', '--format', 'raw'],
  ];
  for (const args of cases) {
    const o = await img('sysprep', ...args);
    const v = await run('virt-sysprep', args);
    assert.equal(o.code, 1, o.stderr);
    assert.equal(v.code, 1, v.stderr);
    const message = (s: string) => s.split('\n').find((l) => l.includes(' error: '))!.replace(/^.* error: /, '');
    assert.equal(message(o.stderr), message(v.stderr), args.join(' '));
  }
});

test('sysprep of a dirtied Debian ext4 qcow2: --dry-run changes nothing; --operations limits it; the default run leaves qemu-img check, e2fsck and img lint clean and every other file byte-identical', skip, async (t) => {
  const work = await tempDir(t);
  // Before: img lint finds what a sysprep removes.
  const lintBefore = await lintChecks(dirtyQcow2);
  for (const id of SYSPREP_CHECKS) assert.equal(lintBefore.get(id)!.result, 'fail', id);
  assert.deepEqual(lintBefore.get('no-hardcoded-mac')!.evidence, [
    `/etc/udev/rules.d/70-persistent-net.rules:1: SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="${MAC}", NAME="eth0"`,
    `/etc/sysconfig/network-scripts/ifcfg-eth0:2: HWADDR=${MAC}`]);

  // --dry-run: the same work on a scratch copy, reported, and the image's bytes unchanged.
  const image = join(work, 'sysprep.qcow2');
  await copyFile(dirtyQcow2, image);
  const hash = await sha256(image);
  const dry = await img('sysprep', '--dry-run', image);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /^\[ +[\d.]+\] Performing "ssh-hostkeys" \.\.\.$/m);
  assert.match(dry.stdout, /^ {2}would have removed \/etc\/ssh\/ssh_host_ed25519_key$/m);
  assert.match(dry.stdout, /^ {2}would have emptied \/etc\/machine-id$/m);
  assert.equal(await sha256(image), hash, 'a dry run leaves the image as it was');

  // --operations machine-id: that operation only.
  const limited = join(work, 'limited.qcow2');
  await copyFile(dirtyQcow2, limited);
  const lim = await img('sysprep', '-q', '--operations', 'machine-id', limited);
  assert.equal(lim.code, 0, lim.stderr);
  assert.equal(lim.stdout, '', '-q prints nothing');
  const limitedListing = await listing(limited);
  const changed = [...dirtyListing.keys()].filter((p) => dirtyListing.get(p) !== limitedListing.get(p));
  assert.deepEqual(changed, ['/etc/machine-id']);
  assert.match(limitedListing.get('/etc/machine-id')!, /^- 0444 +0 d41d8cd98f00b204e9800998ecf8427e \/etc\/machine-id$/);

  // The default operations.
  const r = await img('sysprep', image);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Writing the changed blocks back to the image/);
  await qemuImg('check', image);
  assert.equal(JSON.parse(await qemuImg('info', '--output=json', image)).format, 'qcow2');
  const raw = await asRaw(image);
  await withPartition(raw, async (dev) => {
    const fsck = await run('e2fsck', ['-fn', dev]);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    const debugfs = async (cmd: string) => (await run('debugfs', ['-R', cmd, dev])).stdout;
    assert.equal(await debugfs('cat /etc/machine-id'), '');
    assert.doesNotMatch(await debugfs('ls /etc/ssh'), /ssh_host_/);
    assert.doesNotMatch(await debugfs('ls /var/lib/cloud'), /instances|instance\b|data/);
    assert.match(await debugfs('ls /var/lib/cloud'), /seed/);
    assert.equal(await debugfs('cat /etc/sysconfig/network-scripts/ifcfg-eth0'), 'DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n');
    assert.equal(await debugfs('cat /home/alice/notes.txt'), 'keep me\n');
  });
  await rm(raw);

  // Our own readers agree: img ls shows the removals, img cat the emptied file.
  const afterListing = await listing(image);
  const removed = gone(dirtyListing, afterListing);
  assert.deepEqual(removed, withChildren(dirtyListing, expectedRemoved(dirtyListing)));
  assert.equal((await img('cat', image, '/etc/machine-id')).stdout, '');
  const cat = await img('cat', image, '/etc/ssh/ssh_host_rsa_key');
  assert.equal(cat.code, 1);
  assert.match(cat.stderr, /No such file or directory/);
  // Every regular file not removed or changed by an operation: same mode, size and MD5.
  const touched = new Set(['/etc/machine-id', '/etc/sysconfig/network-scripts/ifcfg-eth0']);
  for (const [p, line] of dirtyListing) {
    if (!line.startsWith('- ') || removed.includes(p) || touched.has(p)) continue;
    assert.equal(afterListing.get(p), line, p);
  }
  // img lint: nothing for a sysprep to do any more.
  const lintAfter = await lintChecks(image);
  for (const id of SYSPREP_CHECKS) assert.equal(lintAfter.get(id)!.result, 'pass', `${id}: ${lintAfter.get(id)!.evidence.join('; ')}`);
});

test('sysprep of the raw image changes it in place: e2fsck clean, the same files removed as in the qcow2; SIGTERM in the middle leaves no mount, no loop device, and a qcow2 unchanged', skip, async (t) => {
  const work = await tempDir(t);
  const image = join(work, 'in-place.img');
  await copyFile(dirtyRaw, image);
  const r = await img('sysprep', '-v', image);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /Writing the changed blocks back/, 'a raw image is written by the kernel, in place');
  assert.match(r.stderr, /\$ losetup --find --show --offset=1048576 --sizelimit=\d+ .*in-place\.img/);
  await withPartition(image, async (dev) => {
    const fsck = await run('e2fsck', ['-fn', dev]);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
  });
  const afterListing = await listing(image);
  assert.deepEqual(gone(dirtyListing, afterListing), withChildren(dirtyListing, expectedRemoved(dirtyListing)));

  // SIGTERM once the filesystem is mounted: the tear-down unmounts and detaches, and the qcow2
  // (changed only by the final write-back) is as it was. Thousands of files in /var/tmp give the
  // tmp-files operation time to be interrupted.
  const slowTree = join(work, 'slow-tree');
  await mkdir(slowTree);
  for (const d of ['etc', 'usr/lib']) await mkdir(join(slowTree, d), { recursive: true });
  await copyFile(join(tree, 'usr/lib/os-release'), join(slowTree, 'usr/lib/os-release'));
  await symlink('../usr/lib/os-release', join(slowTree, 'etc/os-release'));
  await writeFile(join(slowTree, 'etc/fstab'), '');
  // 100 directories of 300 (mkfs.ext4 -d takes quadratic time over one large directory).
  for (let d = 0; d < 100; d++) {
    await mkdir(join(slowTree, 'var/tmp', `d${d}`), { recursive: true });
    await Promise.all(Array.from({ length: 300 }, (_, i) => writeFile(join(slowTree, 'var/tmp', `d${d}`, `f${i}`), 'x')));
  }
  const slowRaw = await ext4Disk(work, slowTree, 'slow', 256);
  const slow = join(work, 'slow.qcow2');
  await qemuImg('convert', '-O', 'qcow2', slowRaw, slow);
  const hash = await sha256(slow);
  const tmp = join(work, 'tmp');
  await mkdir(tmp);
  const child = spawn(process.execPath, [diskhubBin, 'img', 'sysprep', slow], { env: { ...process.env, TMPDIR: tmp }, stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const mountsUnder = async () => (await readFile('/proc/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(tmp));
  const loopsUnder = async () => (await runOk('losetup', ['--list', '--noheadings', '--output', 'BACK-FILE'])).split('\n').filter((l) => l.includes(tmp));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline && (await mountsUnder()).length === 0) await new Promise((res) => setTimeout(res, 20));
  assert.ok((await mountsUnder()).length > 0, 'sysprep mounted the filesystem');
  child.kill('SIGTERM');
  assert.equal(await exited, 128 + 15);
  assert.deepEqual(await mountsUnder(), []);
  assert.deepEqual(await loopsUnder(), []);
  assert.deepEqual(await readdir(tmp), [], 'the work directory is removed');
  assert.equal(await sha256(slow), hash, 'interrupted before the write-back: the image is unchanged');
});

test('sysprep of an xfs root (qcow2): xfs_repair -n clean, qemu-img check passes, img lint has nothing left to report', skip, async (t) => {
  const work = await tempDir(t);
  const raw = join(work, 'xfs.img');
  await writeFile(raw, '');
  await truncate(raw, 1024 * MiB);
  await runOk('sgdisk', ['-n1:2048:0', raw]);
  const mnt = join(work, 'mnt');
  await mkdir(mnt);
  const dev = (await runOk('losetup', ['--find', '--show', `--offset=${PART_START}`, `--sizelimit=${1022 * MiB}`, raw])).trim();
  try {
    await runOk('mkfs.xfs', ['-q', '-f', '-L', 'root', dev]);
    await runOk('mount', [dev, mnt]);
    try { await runOk('cp', ['-a', `${tree}/.`, mnt], { timeoutMs: 10 * 60_000 }); } finally { await runOk('umount', [mnt]); }
  } finally { await runOk('losetup', ['--detach', dev]); }
  const image = join(work, 'xfs.qcow2');
  await qemuImg('convert', '-O', 'qcow2', raw, image);
  await rm(raw);
  const beforeListing = await listing(image);
  const r = await img('sysprep', image);
  assert.equal(r.code, 0, r.stderr);
  await qemuImg('check', image);
  const checked = await asRaw(image);
  await withPartition(checked, async (d) => {
    const repair = await run('xfs_repair', ['-n', d]);
    assert.equal(repair.code, 0, repair.stdout + repair.stderr);
  });
  const afterListing = await listing(image);
  assert.deepEqual(gone(beforeListing, afterListing), withChildren(beforeListing, expectedRemoved(beforeListing)));
  const lint = await lintChecks(image);
  for (const id of SYSPREP_CHECKS) assert.equal(lint.get(id)!.result, 'pass', `${id}: ${lint.get(id)!.evidence.join('; ')}`);
});

test('sysprep refuses a read-only format, an image a running VM holds, and a disk with no operating system (exit 1)', skip, async (t) => {
  const work = await tempDir(t);
  const qcow1 = join(work, 'v1.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', qcow1, '64M');
  const ro = await img('sysprep', qcow1);
  assert.equal(ro.code, 1);
  assert.match(ro.stderr, /^diskhub img sysprep: error: Could not open '.*v1\.qcow': .*writing qcow \(version 1\) images is not supported$/m);

  const inUse = join(work, 'in-use.qcow2');
  await copyFile(dirtyQcow2, inUse);
  const hash = await sha256(inUse);
  // A paused VM with the disk attached: QEMU holds its image locks.
  const qemu = spawn('qemu-system-x86_64', ['-S', '-display', 'none', '-nodefaults', '-drive', `file=${inUse},if=virtio,format=qcow2`], { stdio: 'ignore' });
  t.after(() => { qemu.kill('SIGKILL'); });
  // Wait for QEMU's locks (its OFD locks name the file by inode in /proc/locks) before asking.
  const { ino } = await stat(inUse);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !(await readFile('/proc/locks', 'utf8')).split('\n').some((l) => l.includes(`:${ino} `))) await new Promise((res) => setTimeout(res, 100));
  const r = await img('sysprep', inUse);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /in-use\.qcow2 is in use \(.*lock on it.*\): changing the disk of a running guest would corrupt it/);
  qemu.kill('SIGKILL');
  assert.equal(await sha256(inUse), hash);

  // A streamOptimized vmdk cannot rewrite a grain: refused before anything is written.
  const stream = join(work, 'stream.vmdk');
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', stream, '64M');
  const so = await img('sysprep', stream);
  assert.equal(so.code, 1);
  assert.match(so.stderr, /stream\.vmdk: a streamOptimized vmdk cannot be changed in place: convert it/);

  const blank = join(work, 'blank.img');
  await writeFile(blank, '');
  await truncate(blank, 16 * MiB);
  const none = await img('sysprep', blank);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /error: no operating systems were found in the guest image/);
});

test('sysprep side by side with virt-sysprep on copies of the same image: the same files removed by the operations both have', skip, async (t) => {
  const work = await tempDir(t);
  const ours = join(work, 'ours.img');
  const theirs = join(work, 'theirs.img');
  await copyFile(dirtyRaw, ours);
  await copyFile(dirtyRaw, theirs);
  // Without virt-sysprep's customize operation, which would refill the emptied machine-id and seed.
  const v = await run('virt-sysprep', ['-q', '--format', 'raw', '-a', theirs, '--enable', SHARED.join(',')], {
    env: { ...process.env, LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' }, timeoutMs: 15 * 60_000 });
  assert.equal(v.code, 0, v.stderr);
  const o = await img('sysprep', '-q', '--format', 'raw', '-a', ours, '--enable', SHARED.join(','));
  assert.equal(o.code, 0, o.stderr);
  const ourList = await listing(ours);
  const theirList = await listing(theirs);
  assert.deepEqual([...ourList.keys()].sort(), [...theirList.keys()].sort(), 'the same paths remain');
  assert.deepEqual(gone(dirtyListing, ourList), gone(dirtyListing, theirList));
  // The same content too, but for net-hwaddr, which virt-sysprep applies to RHEL-family guests only.
  for (const [p, line] of ourList) {
    if (!line.startsWith('- ')) continue;
    if (p === '/etc/sysconfig/network-scripts/ifcfg-eth0') continue;
    assert.equal(theirList.get(p), line, p);
  }
  assert.equal((await img('cat', theirs, '/etc/sysconfig/network-scripts/ifcfg-eth0')).stdout, `DEVICE=eth0\nHWADDR=${MAC}\nBOOTPROTO=dhcp\nONBOOT=yes\n`);
  assert.equal((await img('cat', ours, '/etc/sysconfig/network-scripts/ifcfg-eth0')).stdout, 'DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\n');
  assert.equal((await img('cat', theirs, '/etc/machine-id')).stdout, '');
  for (const image of [ours, theirs]) {
    await withPartition(image, async (dev) => {
      const fsck = await run('e2fsck', ['-fn', dev]);
      assert.equal(fsck.code, 0, `${image}: ${fsck.stdout}${fsck.stderr}`);
    });
  }
});

test('sysprep through the engine in vmdk, vdi, vhdx and qed images: qemu-img check and e2fsck clean, the files gone, the rest identical', skip, async (t) => {
  const work = await tempDir(t);
  const small = await smallTree(work);
  const raw = await ext4Disk(work, small, 'small', 64);
  for (const format of ['vmdk', 'vdi', 'vhdx', 'qed']) {
    const image = join(work, `small.${format}`);
    await qemuImg('convert', '-O', format, raw, image);
    const before = await listing(image, 5);
    const r = await img('sysprep', '-q', image);
    assert.equal(r.code, 0, `${format}: ${r.stderr}`);
    await qemuImg('check', image);
    const checked = await asRaw(image);
    await withPartition(checked, async (dev) => {
      const fsck = await run('e2fsck', ['-fn', dev]);
      assert.equal(fsck.code, 0, `${format}: ${fsck.stdout}${fsck.stderr}`);
    });
    const afterList = await listing(image, 5);
    assert.deepEqual(gone(before, afterList), ['/etc/ssh/ssh_host_ed25519_key', '/root/.bash_history', '/var/lib/dhcp/dhclient.leases'], format);
    assert.equal(afterList.get('/etc/keep'), before.get('/etc/keep'), format);
    assert.match(afterList.get('/etc/machine-id')!, /^- \d{4} +0 d41d8cd98f00b204e9800998ecf8427e /, format);
  }
});

test('sysprep of a root on an LVM logical volume (no device-mapper: through the engine\'s LVM layer), raw and qcow2: e2fsck clean, the files gone', skip, async (t) => {
  const work = await tempDir(t);
  const small = await smallTree(work);
  const pv = join(work, 'pv.img');
  await writeFile(pv, '');
  await truncate(pv, 128 * MiB);
  const offset = (await inactiveLogicalVolumes(pv, 'vgsysprep', [{ name: 'root', size: '100M' }])).get('root')!;
  await runOk('mkfs.ext4', ['-q', '-F', '-E', `offset=${offset}`, '-d', small, pv, '100M']);
  const qcow2 = join(work, 'pv.qcow2');
  await qemuImg('convert', '-O', 'qcow2', pv, qcow2);
  for (const image of [pv, qcow2]) {
    const before = await listing(image, 5);
    const r = await img('sysprep', '-v', image);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Writing the changed blocks back/, 'a logical volume goes through the copy, raw or not');
    if (image === qcow2) await qemuImg('check', image);
    const raw = image === pv ? pv : await asRaw(image);
    const dev = (await runOk('losetup', ['--find', '--show', '--read-only', `--offset=${offset}`, `--sizelimit=${100 * MiB}`, raw])).trim();
    try {
      const fsck = await run('e2fsck', ['-fn', dev]);
      assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    } finally { await runOk('losetup', ['--detach', dev]); }
    const afterList = await listing(image, 5);
    assert.deepEqual(gone(before, afterList), ['/etc/ssh/ssh_host_ed25519_key', '/root/.bash_history', '/var/lib/dhcp/dhclient.leases'], image);
    assert.equal(afterList.get('/etc/keep'), before.get('/etc/keep'));
  }
});
