/**
 * `diskhub build` of an Ubuntu base (examples/ubuntu-24.04-minimal.yaml): debootstrap from
 * Ubuntu's archive with the archive keyring checked by fingerprint, the image's apt sources in
 * Ubuntu's pockets, the kernel links Ubuntu keeps in /boot, then the image checked by the peers
 * (qemu-img check, e2fsck through a loop device), linted without failure and boot-tested under
 * QEMU: cloud-init finished without errors from the config drive, SSH with the key, the root
 * filesystem grown.
 *
 * Needs root, the build tools and archive.ubuntu.com: skipped without them outside CI, a
 * failure in CI. Time: about 3 min to build cold (1.5 min warm) and 2-8 min for the TCG boot,
 * depending on the machine's load.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diskhub, hasTool, repoRoot, run, runOk } from '@diskhub/testkit';
import { checkKeyring, suiteDistribution, UBUNTU_ARCHIVE_KEYS, UBUNTU_MIRROR } from '../src/image-build/distribution.js';

const EXAMPLE = join(repoRoot, 'examples', 'ubuntu-24.04-minimal.yaml');
const TOOLS = ['debootstrap', 'sgdisk', 'mkfs.ext4', 'grub-mkimage', 'mcopy', 'qemu-img', 'qemu-system-x86_64', 'e2fsck', 'gpg', 'dpkg-deb'];
const missing = TOOLS.filter((x) => !hasTool(x));
const archiveUp = await fetch(`${UBUNTU_MIRROR}/dists/noble/Release`, { method: 'HEAD', signal: AbortSignal.timeout(10_000) }).then((r) => r.ok, () => false);
const why = missing.length > 0 ? `missing ${missing.join(', ')}` : process.getuid?.() !== 0 ? 'needs root' : !archiveUp ? `${UBUNTU_MIRROR} is not reachable` : null;
const skip = why && process.env.CI !== 'true' ? why : undefined;

test('ubuntu: a suite the machine\'s debootstrap knows is Ubuntu by its script; an unknown one needs the recipe to say', async () => {
  if (hasTool('debootstrap')) {
    assert.deepEqual(await suiteDistribution({ suite: 'jammy', components: ['main'] }), { distribution: 'ubuntu' });
    assert.deepEqual(await suiteDistribution({ suite: 'bookworm', components: ['main'] }), { distribution: 'debian' });
  }
  await assert.rejects(suiteDistribution({ suite: 'nosuchsuite', components: ['main'] }), /does not know nosuchsuite: set base\.debootstrap\.distribution/);
  const noble = await suiteDistribution({ suite: 'nosuchsuite', distribution: 'ubuntu', components: ['main'] });
  assert.equal(noble.distribution, 'ubuntu');
  assert.match(noble.script ?? '', /\/scripts\/gutsy$/);
});

test('ubuntu: a fetched keyring is used only when every key in it is one of Ubuntu\'s archive keys', { skip: hasTool('gpg') ? undefined : 'needs gpg' }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'diskhub-keyring-'));
  try {
    // A key that is not Ubuntu's, made here, in a keyring of its own.
    const home = join(dir, 'home');
    await runOk('mkdir', ['-m', '700', home]);
    await runOk('gpg', ['--homedir', home, '--batch', '--passphrase', '', '--quick-gen-key', 'Mallory <m@example.invalid>', 'ed25519', 'sign', '1d']);
    const keyring = join(dir, 'forged.gpg');
    await runOk('gpg', ['--homedir', home, '--batch', '--output', keyring, '--export']);
    await assert.rejects(checkKeyring(keyring, UBUNTU_ARCHIVE_KEYS, dir), /keys that are not Ubuntu's archive keys \([0-9A-F]{40}\): refused/);
    const fpr = /^fpr:(?::*)([0-9A-F]{40}):/m.exec(await runOk('gpg', ['--homedir', home, '--batch', '--with-colons', '--show-keys', keyring]))![1]!;
    await checkKeyring(keyring, [fpr], dir);
    await assert.rejects(checkKeyring(join(dir, 'nonexistent.gpg'), UBUNTU_ARCHIVE_KEYS, dir), /does not read as an OpenPGP keyring/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('ubuntu: the example recipe builds an Ubuntu 24.04 image that lints clean and passes the boot test', { skip, timeout: 25 * 60_000 }, async () => {
  assert.equal(why, null, why ?? '');
  const dir = await mkdtemp(join(tmpdir(), 'diskhub-build-ubuntu-'));
  try {
    const out = join(dir, 'ubuntu.qcow2');
    const b = await run(process.execPath, [join(repoRoot, 'packages/cli/bin/diskhub.js'), 'build', '--quiet', EXAMPLE, '-o', out], { timeoutMs: 15 * 60_000 });
    const log = await readFile(`${out}.log`, 'utf8').catch(() => '(no log)');
    assert.equal(b.code, 0, `${b.stderr}\n--- log tail ---\n${log.slice(-4000)}`);
    // debootstrap ran with the checked keyring and Ubuntu's script, or its cached result was used.
    assert.match(log, /debootstrap .*--keyring=\S+ubuntu-archive-keyring\.gpg .*noble \S+ http:\/\/archive\.ubuntu\.com\/ubuntu \/usr\/share\/debootstrap\/scripts\/gutsy|cached debootstrap of noble from http:\/\/archive\.ubuntu\.com\/ubuntu/);
    await runOk('qemu-img', ['check', out]);

    // What is inside, read by the engine (img ls/cat are tested against debugfs and virt-cat elsewhere).
    const inspect = JSON.parse((await diskhub(['img', 'inspect', '--output=json', out])).stdout).operatingsystems[0];
    assert.equal(inspect.distro, 'ubuntu');
    assert.equal(`${inspect.major_version}.${String(inspect.minor_version).padStart(2, '0')}`, '24.04');
    const cat = async (p: string) => { const r = await diskhub(['img', 'cat', out, p]); assert.equal(r.code, 0, r.stderr); return r.stdout; };
    assert.equal(await cat('/etc/apt/sources.list'), ['# written by diskhub build', ...['', '-updates', '-security'].map((p) => `deb http://archive.ubuntu.com/ubuntu noble${p} main`)].join('\n') + '\n');
    assert.match(await cat('/boot/grub/grub.cfg'), /^\tlinux \/boot\/vmlinuz root=UUID=\S+ ro console=tty0 console=ttyS0,115200n8$/m);
    assert.match(await cat('/boot/grub/grub.cfg'), /^\tinitrd \/boot\/initrd\.img$/m);
    // The recipe's datasources win over the package's 90_dpkg.cfg (cloud.cfg.d is read in name order).
    assert.match(inspect.cloud_init?.datasource_list?.join(',') ?? JSON.stringify(inspect), /^ConfigDrive,OpenStack,NoCloud,None$/);

    const lint = await diskhub(['img', 'lint', '--output=json', out]);
    assert.equal(lint.code, 0, lint.stdout + lint.stderr);

    const boot = await run(process.execPath, [join(repoRoot, 'packages/cli/bin/diskhub.js'), 'img', 'boot-test', '--json', out], { timeoutMs: 12 * 60_000 });
    const report = JSON.parse(boot.stdout) as { passed: boolean; checks: { name: string; passed: boolean; detail: string }[] };
    assert.equal(boot.code, 0, JSON.stringify(report.checks, null, 1));
    assert.deepEqual(report.checks.filter((c) => !c.passed), []);
    assert.ok(report.checks.some((c) => c.name === 'cloud-init' && /DataSourceConfigDrive/.test(c.detail)), JSON.stringify(report.checks));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
