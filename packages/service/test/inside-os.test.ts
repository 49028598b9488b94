/**
 * x-diskhub/inside's operating system part: the inspection summary and the cloud-image lint
 * of a stored image, computed through the store from a GPT qcow2 whose root is made with
 * mkfs.ext4 -d from a small tree (this machine's os-release, dpkg status and /bin/sh, an ssh
 * unit link, a persistent-net rule). Oracles: dpkg-query on the tree, grep -n for the
 * evidence lines, and `diskhub img lint` on the same file. Then the budget: a read budget too
 * small gives a reason, not an answer; a store that is slow or never answers is cut off by the
 * time budget instead of holding the request.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, open, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { FileSource, type ByteSource } from '@diskhub/disk';
import { diskhub, gptExt4Disk, makeSmallOsTree, needs, runOk, tempDir } from '@diskhub/testkit';
import { api, startTestService, token } from './helpers.js';
import { operatingSystemsOf } from '../src/inside.js';

const MiB = 1 << 20;

async function upload(a: ReturnType<typeof api>, file: string, disk_format: string): Promise<string> {
  const r = await a('POST', '/v2/images', { body: { name: 'os', disk_format, container_format: 'bare' } });
  assert.equal(r.status, 201, r.text);
  const put = await a('PUT', `/v2/images/${r.json.id}/file`, { raw: await readFile(file) });
  assert.equal(put.status, 204, put.text);
  return r.json.id;
}

test('x-diskhub/inside: the operating system and its lint, read through the store; cached; bounded by a read budget', needs('qemu-img', 'sgdisk', 'mkfs.ext4', 'dpkg-query', 'grep'), async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await makeSmallOsTree(root);
  const { qcow2 } = await gptExt4Disk(dir, root, 'disk');
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const id = await upload(a, qcow2, 'qcow2');

  const r = await a('GET', `/v2/images/${id}/x-diskhub/inside`);
  assert.equal(r.status, 200, r.text);
  const inside = r.json;
  assert.equal(inside.operating_systems_unavailable, undefined);
  assert.equal(inside.operating_systems.length, 1);
  const os = inside.operating_systems[0];
  const release = Object.fromEntries((await readFile('/etc/os-release', 'utf8')).split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^"|"$/g, '')]));
  assert.equal(os.root, '/dev/sda1');
  assert.equal(os.name, 'linux');
  assert.equal(os.distro, release.ID);
  // libguestfs's rule: Debian's os-release has no point release, so the product name is debian_version's line.
  const debianVersion = release.ID === 'debian' && !String(release.VERSION_ID).includes('.') ? (await readFile('/etc/debian_version', 'utf8')).split('\n')[0] : undefined;
  assert.equal(os.product_name, debianVersion ?? release.PRETTY_NAME);
  assert.equal(os.major_version, Number(release.VERSION_ID));
  assert.equal(os.hostname, 'inside-lint-host');
  assert.equal(os.arch, 'x86_64');
  assert.equal(os.package_format, 'deb');
  assert.equal(os.applications, undefined, 'the package list is summed up, not listed');
  // dpkg-query on the tree the image was made from: its installed packages.
  const states = (await runOk('dpkg-query', [`--admindir=${join(root, 'var/lib/dpkg')}`, '-W', '-f', '${db:Status-Status}\\n'])).split('\n').filter((l) => l !== '');
  assert.equal(os.application_count, states.filter((s) => s === 'installed').length);
  assert.ok(os.application_count > 50);

  // The lint: what `diskhub img lint` says of the same file, with grep -n's evidence.
  const cli = await diskhub(['img', 'lint', '--output=json', qcow2]);
  assert.equal(cli.code, 1, cli.stderr);
  const cliOs = JSON.parse(cli.stdout).operatingsystems[0];
  assert.deepEqual(os.lint, { checks: cliOs.checks, summary: cliOs.summary });
  const check = (cid: string) => os.lint.checks.find((c: { id: string }) => c.id === cid);
  assert.equal(check('ssh-server-enabled').result, 'pass');
  assert.deepEqual(check('ssh-server-enabled').evidence, ['/etc/systemd/system/multi-user.target.wants/ssh.service']);
  assert.equal(check('no-hardcoded-mac').result, 'fail');
  const hit = (await runOk('grep', ['-n', 'ATTR{address}', join(root, 'etc/udev/rules.d/70-persistent-net.rules')])).trim();
  assert.deepEqual(check('no-hardcoded-mac').evidence, [`/etc/udev/rules.d/70-persistent-net.rules:${hit.slice(0, hit.indexOf(':'))}: ${hit.slice(hit.indexOf(':') + 1)}`]);
  assert.equal(check('cloud-init-enabled').result, 'fail');
  assert.equal(check('no-zeroconf').result, 'n/a');
  const n = (res: string) => os.lint.checks.filter((c: { result: string }) => c.result === res).length;
  assert.deepEqual(os.lint.summary, { pass: n('pass'), fail: n('fail'), na: n('n/a') });

  // Cached: the same answer (computed at the same time) without looking again.
  const again = await a('GET', `/v2/images/${id}/x-diskhub/inside`);
  assert.equal(again.status, 200);
  assert.deepEqual(again.json, inside);
  // Another bucket count is another picture, computed anew.
  const other = (await a('GET', `/v2/images/${id}/x-diskhub/inside?buckets=16`)).json;
  assert.equal(other.allocation.buckets.length, 16);
  assert.notEqual(other.computed_at, inside.computed_at);
  assert.deepEqual(other.operating_systems, inside.operating_systems);

  // A hostile filesystem (its inode tables overwritten with random bytes): an answer, never a 500.
  const broken = join(dir, 'broken.img');
  await copyFile(join(dir, 'disk.img'), broken);
  const fh = await open(broken, 'r+');
  await fh.write(randomBytes(8 * MiB), 0, 8 * MiB, 2048 * 512 + 64 * 1024);
  await fh.close();
  const bid = await upload(a, broken, 'raw');
  const b = await a('GET', `/v2/images/${bid}/x-diskhub/inside`);
  assert.equal(b.status, 200, b.text);
  assert.ok(b.json.operating_systems !== null || typeof b.json.operating_systems_unavailable === 'string');

  // A read budget too small for the filesystem: no systems, the reason, the rest still there.
  const small = await startTestService(t, { DISKHUB_INSIDE_READ_BUDGET: String(64 * 1024) });
  const sa = api(small.url, await token(small.url));
  const sid = await upload(sa, qcow2, 'qcow2');
  const s = await sa('GET', `/v2/images/${sid}/x-diskhub/inside`);
  assert.equal(s.status, 200, s.text);
  assert.equal(s.json.operating_systems, null);
  assert.equal(s.json.operating_systems_unavailable, `looking for operating systems needs more than ${64 * 1024} bytes of the image (the read budget)`);
  assert.ok(s.json.allocation.totals.data > 0);
  assert.equal(s.json.partitions.entries[0].filesystem.type, 'ext4');
});

/** A source whose reads take `delayMs` each, or (delayMs < 0) never answer. */
function slow(base: ByteSource, delayMs: number): ByteSource {
  return Object.assign(Object.create(base) as ByteSource, {
    read: (buf: Uint8Array, offset: number) => delayMs < 0 ? new Promise<number>(() => {}) : new Promise<number>((res, rej) => setTimeout(() => { base.read(buf, offset).then(res, rej); }, delayMs)),
  });
}

test('x-diskhub/inside: a slow or stalled store is cut off by the time budget', needs('qemu-img', 'sgdisk', 'mkfs.ext4'), async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await makeSmallOsTree(root);
  const { qcow2 } = await gptExt4Disk(dir, root, 'disk');
  const file = await FileSource.open(qcow2, { readOnly: true });
  t.after(() => file.close());
  const limits = { timeMs: 300, maxBytes: 1 << 30 };
  // Each read 50 ms: the whole inspection needs far more than 300 ms of them.
  const slowed = await operatingSystemsOf(slow(file, 50), 'qcow2', limits);
  assert.deepEqual(slowed, { unavailable: 'looking for operating systems took longer than 0.3 s (the time budget)', code: 'EABORTED' });
  // Reads that never answer: the budget still ends it (without it this test would hang).
  const stalled = await operatingSystemsOf(slow(file, -1), 'qcow2', limits);
  assert.deepEqual(stalled, { unavailable: 'looking for operating systems took longer than 0.3 s (the time budget)', code: 'EABORTED' });
  // With time enough, the same source gives the system.
  const ok = await operatingSystemsOf(file, 'qcow2', { timeMs: 60_000, maxBytes: 1 << 30 });
  assert.ok('systems' in ok && ok.systems.length === 1 && ok.systems[0]!.distro !== null);
});
