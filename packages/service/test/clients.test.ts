/**
 * The real OpenStack clients (Debian's python3-openstackclient and python3-glanceclient)
 * against a running service, authenticating through the built-in identity, as a user would.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { needs, qemuImg, runOk, run, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService, token } from './helpers.js';

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

/** glanceclient prints a table of Property | Value; turn it into JSON. */
function toJson(table: string): string {
  const out: Record<string, string> = {};
  for (const line of table.split('\n')) {
    const m = /^\|\s*(\S+)\s*\|\s*(.*?)\s*\|$/.exec(line);
    if (m && m[1] !== 'Property') out[m[1]!] = m[2]!;
  }
  return JSON.stringify(out);
}

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

test('glance client: image-create-via-import (web-download, glance-direct), image-tasks, task-list/show, import-info, usage', needs('glance'), async (t) => {
  const data = randomBytes(1_500_000);
  const web = createServer((req, res) => {
    if (req.url === '/disk.raw') { res.writeHead(200, { 'Content-Length': String(data.length) }); res.end(data); } else { res.writeHead(404); res.end(); }
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => web.close(() => r())));
  const port = (web.address() as AddressInfo).port;
  const svc = await startTestService(t, { DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(port), DISKHUB_TASK_POLL_SECONDS: '1' });
  const env = osEnv(svc.url);
  // (stdin closed: glanceclient takes an open non-tty stdin for image data, which web-download refuses)
  const glance = (...args: string[]) => runOk('sh', ['-c', 'exec glance --os-image-api-version 2 "$@" <&-', 'glance', ...args], { env });
  const md5 = createHash('md5').update(data).digest('hex');

  // (glanceclient wraps a long value over several rows of the table: join its Value cells)
  const info = (await glance('import-info')).split('\n').filter((l) => l.startsWith('| ')).slice(1).map((l) => l.split('|')[2]!.slice(1).trimEnd()).join('');
  assert.deepEqual(JSON.parse(info).value, ['glance-direct', 'web-download']);
  const viaWeb = JSON.parse(toJson(await glance('image-create-via-import', '--name', 'from-web', '--disk-format', 'raw', '--container-format', 'bare',
    '--import-method', 'web-download', '--uri', `http://127.0.0.1:${port}/disk.raw`)));
  assert.ok(viaWeb.id);
  const dir = await tempDir(t);
  const file = join(dir, 'up.raw');
  await writeFile(file, data);
  const viaStage = JSON.parse(toJson(await glance('image-create-via-import', '--name', 'staged', '--disk-format', 'raw', '--container-format', 'bare',
    '--import-method', 'glance-direct', '--file', file)));
  for (const id of [viaWeb.id, viaStage.id]) {
    let shown: Record<string, string> = {};
    for (let i = 0; i < 200 && shown.status !== 'active'; i++) {
      shown = JSON.parse(toJson(await glance('image-show', id)));
      if (shown.status !== 'active') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(shown.status, 'active');
    assert.equal(shown.checksum, md5);
  }

  // The image's tasks: glanceclient asks only a server that lists API 2.12, which Glance lists
  // with several stores (enabled_backends) only; with one store it refuses, as against Glance.
  const versions = ((await (await fetch(`${svc.url}/versions`)).json()) as any).versions.map((v: { id: string }) => v.id);
  const imageTasks = await run('sh', ['-c', 'exec glance --os-image-api-version 2 "$@" <&-', 'glance', 'image-tasks', viaWeb.id], { env });
  if (versions.includes('v2.12')) assert.match(imageTasks.stdout, /success/);
  else assert.match(imageTasks.stderr, /Server does not support image tasks API \(v2\.12\)/);
  const byImage = ((await (await fetch(`${svc.url}/v2/images/${viaWeb.id}/tasks`, { headers: { 'X-Auth-Token': await token(svc.url) } })).json()) as any).tasks;
  const taskId: string = byImage[0].id;
  const list = await glance('task-list', '--sort-dir', 'asc');
  assert.match(list, new RegExp(`${taskId}\\s*\\|\\s*api_image_import\\s*\\|\\s*success`));
  const show = JSON.parse(toJson(await glance('task-show', taskId)));
  assert.equal(show.status, 'success');
  assert.equal(show.type, 'api_image_import');
  assert.equal(show.image_id, viaWeb.id);
  assert.ok(show.input.startsWith(`{"image_id": "${viaWeb.id}"`), show.input);
  const failed = await glance('task-list', '--status', 'failure');
  assert.match(failed, /\|\s*ID\s*\|/);
  assert.doesNotMatch(failed, new RegExp(taskId));
  // Paging: one task per request, both imports listed, sorted by id.
  const paged = await glance('task-list', '--page-size', '1', '--sort-key', 'id');
  assert.equal((paged.match(/api_image_import/g) ?? []).length, 2);

  // Quota usage as glance usage prints it.
  const usage = await glance('usage');
  assert.match(usage, /image_count_total\s*\|\s*-1\s*\|\s*2\s*\|/);
  assert.match(usage, /image_size_total\s*\|\s*-1\s*\|\s*2\s*\|/);
});
