/**
 * `img inspect` and `img lint` on a real Debian bookworm root filesystem: debootstrap from
 * Debian's archive with a kernel, openssh-server and cloud-init (testkit's debianRootfs, built
 * once and cached across runs under /var/tmp/diskhub-test-rootfs), put in a raw ext4 image by
 * mkfs.ext4 -d and converted to qcow2 by qemu-img. Oracles: dpkg-query --admindir on the
 * tree for the packages and versions, the tree's own files (ls, find, grep -n) for the lint's
 * evidence. Then the failures are fixed in a (hard-linked) copy of the tree and pass.
 *
 * The first run builds the cache (debootstrap: about 15 minutes on a busy machine); later ones
 * take about a minute (two mkfs.ext4 -d of 780 MB).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { debianRootfs, diskhub, needs, qemuImg, runOk, tempDir, treeCopy, packageVersionOf } from '@diskhub/testkit';

/** A raw ext4 image of the tree (mkfs.ext4 -d), converted to qcow2; the raw file is removed. */
async function ext4Qcow2(dir: string, tree: string, name: string): Promise<string> {
  const raw = join(dir, `${name}.img`);
  await writeFile(raw, '');
  await truncate(raw, 2 * 1024 ** 3);
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'root', '-d', tree, raw], { timeoutMs: 10 * 60_000 });
  const qcow2 = join(dir, `${name}.qcow2`);
  await qemuImg('convert', '-O', 'qcow2', raw, qcow2);
  await rm(raw);
  return qcow2;
}

interface Check { id: string; result: string; evidence: string[] }

async function lint(qcow2: string): Promise<{ code: number; checks: Map<string, Check> }> {
  const r = await diskhub(['img', 'lint', '--output=json', qcow2]);
  assert.equal(r.stderr, '');
  const j = JSON.parse(r.stdout);
  assert.equal(j.operatingsystems.length, 1);
  return { code: r.code, checks: new Map(j.operatingsystems[0].checks.map((c: Check) => [c.id, c])) };
}

/** `grep -n` in the tree, as the image's absolute path. */
async function grepLine(tree: string, path: string, pattern: string): Promise<string> {
  const hit = (await runOk('grep', ['-n', '-E', pattern, join(tree, path)])).split('\n')[0]!;
  const colon = hit.indexOf(':');
  return `/${path}:${hit.slice(0, colon)}: ${hit.slice(colon + 1).trim()}`;
}

const rootOnly = process.getuid?.() === 0 || process.env.CI === 'true' ? {} : { skip: 'debootstrap and chroot need root' };

test('a debootstrapped Debian bookworm: img inspect lists dpkg-query\'s packages and versions; img lint finds its failures, which pass once fixed in the tree',
  { ...needs('debootstrap', 'chroot', 'mkfs.ext4', 'qemu-img', 'dpkg-query', 'grep', 'find'), ...rootOnly, timeout: 60 * 60_000 }, async (t) => {
    const tree = await debianRootfs();
    const dir = await tempDir(t);
    const qcow2 = await ext4Qcow2(dir, tree, 'bookworm');

    // inspect: the installed packages with their versions, as dpkg-query reads the tree's database.
    const inspect = await diskhub(['img', 'inspect', '--output=json', qcow2]);
    assert.equal(inspect.code, 0, inspect.stderr);
    const os = JSON.parse(inspect.stdout).operatingsystems[0];
    const dpkg = (await runOk('dpkg-query', [`--admindir=${join(tree, 'var/lib/dpkg')}`, '-W', '-f', '${db:Status-Status}\\t${Package}\\t${Version}\\t${Architecture}\\n']))
      .split('\n').filter((l) => l.startsWith('installed\t')).map((l) => l.split('\t').slice(1).join(' ')).sort();
    const listed = os.applications.map((p: { name: string; epoch: number; version: string; release: string; arch: string }) => `${p.name} ${packageVersionOf(p)} ${p.arch}`).sort();
    assert.deepEqual(listed, dpkg);
    for (const p of ['openssh-server', 'cloud-init', 'linux-image-amd64', 'systemd']) assert.ok(listed.some((l: string) => l.startsWith(`${p} `)), p);
    assert.equal(os.distro, 'debian');
    assert.equal(os.major_version, 12);
    // As virt-inspector: Debian's os-release has no point release, so the product name is debian_version's line.
    assert.equal(os.product_name, (await readFile(join(tree, 'etc/debian_version'), 'utf8')).split('\n')[0]);
    assert.equal(os.hostname, (await readFile(join(tree, 'etc/hostname'), 'utf8')).trim());
    assert.deepEqual(os.kernels.map((k: { version: string }) => k.version), await readdir(join(tree, 'lib/modules')));

    // lint: what a fresh debootstrap keeps (a machine-id, SSH host keys, install logs) fails; the rest passes or does not apply.
    const before = await lint(qcow2);
    assert.equal(before.code, 1);
    const results = Object.fromEntries([...before.checks.values()].map((c) => [c.id, c.result]));
    assert.deepEqual(results, {
      'ssh-server-enabled': 'pass', 'firewall-disabled': 'pass', 'cloud-init-enabled': 'pass', 'cloud-init-datasource': 'pass', growpart: 'pass',
      'no-hardcoded-mac': 'pass', 'serial-console': 'n/a', 'acpi-power-key': 'pass', 'no-zeroconf': 'n/a', 'dhcp-first-nic': 'pass', 'virtio-drivers': 'pass',
      'machine-id-empty': 'fail', 'no-ssh-host-keys': 'fail', 'no-shell-history': 'pass', 'no-logs': 'fail', 'no-dhcp-leases': 'pass', 'no-cloud-init-state': 'pass',
    });
    assert.ok(before.checks.get('ssh-server-enabled')!.evidence.includes('/etc/systemd/system/multi-user.target.wants/ssh.service'));
    assert.ok(before.checks.get('cloud-init-enabled')!.evidence.includes('/etc/systemd/system/cloud-init.target.wants/cloud-init.service'));
    assert.ok(before.checks.get('growpart')!.evidence.includes(await grepLine(tree, 'etc/cloud/cloud.cfg', '^ *- growpart')));
    const kernel = os.kernels[0].version as string;
    assert.ok(before.checks.get('virtio-drivers')!.evidence.includes(`${(await grepLine(tree, `lib/modules/${kernel}/modules.dep`, '/virtio_blk\\.ko')).split(': ')[0]}: virtio_blk module`));
    assert.deepEqual(before.checks.get('machine-id-empty')!.evidence, [`/etc/machine-id:1: ${(await readFile(join(tree, 'etc/machine-id'), 'utf8')).trim()}`]);
    const hostKeys = (await readdir(join(tree, 'etc/ssh'))).filter((n) => n.startsWith('ssh_host_')).sort().map((n) => `/etc/ssh/${n}`);
    assert.ok(hostKeys.length >= 4);
    assert.deepEqual(before.checks.get('no-ssh-host-keys')!.evidence, hostKeys);
    const logs = (await runOk('find', [join(tree, 'var/log'), '-type', 'f', '-size', '+0', '-printf', '/var/log/%P (%s bytes)\\n'])).split('\n').filter((l) => l !== '').sort();
    assert.deepEqual(before.checks.get('no-logs')!.evidence, logs.length <= 20 ? logs : [...logs.slice(0, 20), `... and ${logs.length - 20} more`]);

    // Fix them in a copy of the tree (files replaced, never written through the hard links), and a
    // grub defaults file with a serial console: everything passes but zeroconf (RHEL only).
    const fixedTree = join(dir, 'fixed');
    await treeCopy(tree, fixedTree);
    for (const k of hostKeys) await rm(join(fixedTree, k));
    await rm(join(fixedTree, 'etc/machine-id'));
    await writeFile(join(fixedTree, 'etc/machine-id'), '');
    for (const l of logs) {
      const p = join(fixedTree, l.replace(/ \(\d+ bytes\)$/, ''));
      await rm(p);
      await writeFile(p, '');
    }
    await writeFile(join(fixedTree, 'etc/default/grub'), 'GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"\n');
    const after = await lint(await ext4Qcow2(dir, fixedTree, 'fixed'));
    assert.equal(after.code, 0);
    for (const c of after.checks.values()) assert.equal(c.result, c.id === 'no-zeroconf' ? 'n/a' : 'pass', JSON.stringify(c));
    assert.deepEqual(after.checks.get('serial-console')!.evidence, [await grepLine(fixedTree, 'etc/default/grub', '^GRUB_CMDLINE_LINUX=')]);
    // The cached tree is as it was.
    assert.equal((await readdir(join(tree, 'etc/ssh'))).filter((n) => n.startsWith('ssh_host_')).length, hostKeys.length);
  });
