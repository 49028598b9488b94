/**
 * The real OpenStack clients (Debian's python3-openstackclient and python3-glanceclient)
 * against a running service, authenticating through the built-in identity, as a user would.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { needs, qemuImg, runOk, run, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService, toJson } from './helpers.js';

const os = (env: NodeJS.ProcessEnv, ...args: string[]) => runOk('openstack', args, { env });
const osJson = async (env: NodeJS.ProcessEnv, ...args: string[]) => JSON.parse(await os(env, ...args, '-f', 'json'));

test('openstack client: token, image create/list/show/set/unset/tag/save/delete', needs('openstack', 'qemu-img'), async (t) => {
  const svc = await startTestService(t);
  const dir = await tempDir(t);
  const env = osEnv(svc.url);

  const tok = await osJson(env, 'token', 'issue');
  assert.match(tok.id, /^dh1\./);
  assert.ok(tok.project_id);

  // A qcow2 made by qemu-img, with some data written into it.
  const qcow = join(dir, 'disk.qcow2');
  await qemuImg('create', '-f', 'qcow2', qcow, '64M');
  await runOk('qemu-io', ['-c', 'write -P 0xab 1M 2M', qcow]);
  const created = await osJson(env, 'image', 'create', '--file', qcow, '--disk-format', 'qcow2', '--container-format', 'bare', '--property', 'os_distro=debian', 'disk1');
  assert.equal(created.name, 'disk1');

  const shown = await osJson(env, 'image', 'show', 'disk1');
  assert.equal(shown.status, 'active');
  assert.equal(shown.virtual_size, 64 * 1024 * 1024, 'virtual size from the qcow2 header');
  const bytes = await readFile(qcow);
  assert.equal(shown.size, bytes.length);
  const { createHash } = await import('node:crypto');
  assert.equal(shown.checksum, createHash('md5').update(bytes).digest('hex'));
  assert.equal(shown.properties.os_hash_value, createHash('sha512').update(bytes).digest('hex'));
  assert.equal(shown.properties.os_distro, 'debian');

  const raw = join(dir, 'blob.raw');
  await writeFile(raw, randomBytes(300_000));
  await os(env, 'image', 'create', '--file', raw, '--disk-format', 'raw', '--container-format', 'bare', 'blob');

  const list = await osJson(env, 'image', 'list');
  assert.deepEqual(list.map((i: any) => i.Name).sort(), ['blob', 'disk1']);
  const filtered = await osJson(env, 'image', 'list', '--property', 'os_distro=debian');
  assert.deepEqual(filtered.map((i: any) => i.Name), ['disk1']);

  await os(env, 'image', 'set', '--property', 'hw_disk_bus=virtio', '--tag', 'golden', '--min-ram', '512', 'disk1');
  let after = await osJson(env, 'image', 'show', 'disk1');
  assert.equal(after.properties.hw_disk_bus, 'virtio');
  assert.deepEqual(after.tags, ['golden']);
  assert.equal(after.min_ram, 512);
  const tagged = await osJson(env, 'image', 'list', '--tag', 'golden');
  assert.deepEqual(tagged.map((i: any) => i.Name), ['disk1']);

  await os(env, 'image', 'unset', '--property', 'hw_disk_bus', '--tag', 'golden', 'disk1');
  after = await osJson(env, 'image', 'show', 'disk1');
  assert.equal(after.properties.hw_disk_bus, undefined);
  assert.deepEqual(after.tags, []);

  const saved = join(dir, 'saved.qcow2');
  await os(env, 'image', 'save', '--file', saved, 'disk1');
  assert.ok(Buffer.compare(await readFile(saved), bytes) === 0, 'download is byte-identical');
  await runOk('qemu-img', ['compare', qcow, saved]);

  await os(env, 'image', 'delete', 'disk1', 'blob');
  assert.deepEqual(await osJson(env, 'image', 'list'), []);
});

test('openstack client: projects, users, roles; sharing with another project (add project / --accept)', needs('openstack'), async (t) => {
  const svc = await startTestService(t);
  const dir = await tempDir(t);
  const admin = osEnv(svc.url);
  await os(admin, 'project', 'create', 'team');
  await os(admin, 'user', 'create', '--password', 'bob-pw', '--project', 'team', 'bob');
  await os(admin, 'role', 'add', '--project', 'team', '--user', 'bob', 'member');
  const assignments = await osJson(admin, 'role', 'assignment', 'list', '--project', 'team', '--names');
  assert.ok(assignments.some((a: any) => a.Role === 'member' && a.User.startsWith('bob')));
  const bob = osEnv(svc.url, 'bob', 'bob-pw', 'team');

  const file = join(dir, 'shared.raw');
  const data = randomBytes(123_457);
  await writeFile(file, data);
  const img = await osJson(admin, 'image', 'create', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', '--shared', 'shared-img');
  assert.deepEqual(await osJson(bob, 'image', 'list'), [], 'not listed before sharing');

  await os(admin, 'image', 'add', 'project', 'shared-img', 'team');
  assert.deepEqual(await osJson(bob, 'image', 'list'), [], 'pending members do not list the image');
  await os(bob, 'image', 'set', '--accept', img.id);
  const listed = await osJson(bob, 'image', 'list');
  assert.deepEqual(listed.map((i: any) => i.ID), [img.id]);
  const out = join(dir, 'bob.raw');
  await os(bob, 'image', 'save', '--file', out, img.id);
  assert.ok(Buffer.compare(await readFile(out), data) === 0);

  // A member cannot change or delete the owner's image.
  const denied = await run('openstack', ['image', 'set', '--name', 'mine-now', img.id], { env: bob });
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /403|Forbidden|not authorized/i);

  await os(admin, 'image', 'remove', 'project', 'shared-img', 'team');
  assert.deepEqual(await osJson(bob, 'image', 'list'), []);
});

test('glance client: image-create --file, image-download, member-create', needs('glance'), async (t) => {
  const svc = await startTestService(t);
  const dir = await tempDir(t);
  const env = osEnv(svc.url);
  const file = join(dir, 'g.raw');
  const data = randomBytes(1_000_001);
  await writeFile(file, data);
  const created = JSON.parse(await runOk('glance', ['--os-image-api-version', '2', 'image-create', '--name', 'g1', '--disk-format', 'raw', '--container-format', 'bare', '--file', file, '--visibility', 'shared'], { env }).then((s) => toJson(s)));
  assert.equal(created.status, 'active');
  assert.equal(Number(created.size), data.length);
  const out = join(dir, 'g.out');
  await runOk('glance', ['image-download', '--file', out, created.id], { env });
  assert.ok(Buffer.compare(await readFile(out), data) === 0);
  const member = await runOk('glance', ['member-create', created.id, 'some-project'], { env });
  assert.match(member, /some-project\s*\|\s*pending/);
  const members = await runOk('glance', ['member-list', '--image-id', created.id], { env });
  assert.match(members, /some-project/);
  // An error from the service reaches the user as a message, not a traceback.
  const bad = await run('glance', ['image-download', '--file', join(dir, 'x'), '00000000-0000-0000-0000-000000000000'], { env });
  assert.notEqual(bad.code, 0);
  assert.doesNotMatch(bad.stderr, /Traceback/);
});


test('glance client: metadata definitions (md-namespace-list/show, md-property-list/show)', needs('glance'), async (t) => {
  const svc = await startTestService(t);
  const env = osEnv(svc.url);
  const list = await runOk('glance', ['md-namespace-list'], { env });
  assert.match(list, /OS::Compute::LibvirtImage/);
  assert.match(list, /OS::OperatingSystem/);
  const show = await runOk('glance', ['md-namespace-show', 'OS::Compute::LibvirtImage'], { env });
  assert.match(show, /hw_disk_bus/);
  const props = await runOk('glance', ['md-property-list', 'OS::Compute::Watchdog'], { env });
  assert.match(props, /hw_watchdog_action\s*\|\s*Watchdog action\s*\|\s*string/);
  const prop = await runOk('glance', ['md-property-show', 'OS::Compute::LibvirtImage', 'hw_disk_bus'], { env });
  assert.match(prop, /virtio/);
  const missing = await run('glance', ['md-namespace-show', 'OS::Nope'], { env });
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /404|not found/i);
});

test('openstack client: protected images, deactivate/activate, sorted and limited listing, token revoke', needs('openstack'), async (t) => {
  const svc = await startTestService(t);
  const dir = await tempDir(t);
  const env = osEnv(svc.url);
  const file = join(dir, 'p.raw');
  await writeFile(file, randomBytes(4096));
  await os(env, 'image', 'create', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', '--protected', 'keep-me');
  // (Without --file the client reads image data from a non-terminal stdin.)
  await os(env, 'image', 'create', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', 'b-image');
  await os(env, 'image', 'create', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', 'a-image');
  const refused = await run('openstack', ['image', 'delete', 'keep-me'], { env });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /protected/i);

  const sorted = await osJson(env, 'image', 'list', '--sort', 'name:asc', '--limit', '2');
  assert.deepEqual(sorted.map((i: any) => i.Name), ['a-image', 'b-image']);
  const long = await osJson(env, 'image', 'list', '--long', '--name', 'keep-me');
  assert.equal(long[0].Protected, true);
  assert.equal(long[0]['Disk Format'], 'raw');

  await os(env, 'image', 'set', '--deactivate', 'keep-me');
  assert.equal((await osJson(env, 'image', 'show', 'keep-me')).status, 'deactivated');
  await os(env, 'image', 'set', '--activate', '--unprotected', 'keep-me');
  const shown = await osJson(env, 'image', 'show', 'keep-me');
  assert.equal(shown.status, 'active');
  assert.equal(shown.protected, false);
  await os(env, 'image', 'delete', 'keep-me');

  const tok = await osJson(env, 'token', 'issue');
  await os(env, 'token', 'revoke', tok.id);
  const r = await fetch(`${svc.url}/v2/images`, { headers: { 'X-Auth-Token': tok.id } });
  assert.equal(r.status, 401, 'a revoked token no longer works');
});
