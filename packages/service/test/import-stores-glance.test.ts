/**
 * The real glance client drives imports into chosen stores: image-import with --stores,
 * --all-stores, --allow-failure (glanceclient's default: all_stores_must_succeed=false) and
 * --store (the X-Image-Meta-Store header), copy-image, and a refused store as the client shows it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, run, runOk, tempDir } from '@diskhub/testkit';
import { assertStored, osEnv, toJson } from './helpers.js';
import { ended, startNode, webServer } from './store-nodes.js';

test('glance client: image-import --stores / --all-stores / --allow-failure / --store, copy-image, and a store Glance does not have', needs('glance'), async (t) => {
  const data = randomBytes(700_000);
  const web = await webServer(t, data);
  const dir = await tempDir(t);
  const n = await startNode(t, await tempDir(t), 'node-a', { importAllowedNetworks: '127.0.0.1/32', importAllowedPorts: String(web.port) });
  const env = osEnv(n.url);
  // (stdin closed: glanceclient takes an open non-tty stdin for image data)
  const args = (a: string[]) => ['-c', 'exec glance --os-image-api-version 2 "$@" <&-', 'glance', ...a];
  const glance = async (...a: string[]) => JSON.parse(toJson(await runOk('sh', args(a), { env })));
  const file = join(dir, 'disk.raw');
  await writeFile(file, data);
  // (images made and read over HTTP: the client's time goes to the import commands)
  const create = async (name: string) => (await n.admin('POST', '/v2/images', { body: { name, disk_format: 'raw', container_format: 'bare' } })).json.id as string;
  const show = async (id: string) => (await n.admin('GET', `/v2/images/${id}`)).json;

  // Staged, then imported into two stores; --allow-failure False: every store must succeed.
  const direct = await create('direct');
  await runOk('sh', args(['image-stage', '--file', file, direct]), { env });
  await glance('image-import', '--import-method', 'glance-direct', '--stores', 'cheap,mem', '--allow-failure', 'False', direct);
  let task = await ended(n.admin, direct);
  assert.equal(task.status, 'success', task.message);
  assert.deepEqual(task.input.import_req, { method: { name: 'glance-direct' }, stores: ['cheap', 'mem'] });
  assert.equal((await assertStored(n.url, direct, data)).stores, 'cheap,mem');

  // Every store, the memory store failing: glanceclient allows failures by default, so the image goes active without it.
  n.mem.faults = { failAfterBytes: 100_000, failKind: 'unavailable' };
  t.after(() => { n.mem.faults = {}; });
  const all = (await glance('image-create-via-import', '--name', 'all', '--disk-format', 'raw', '--container-format', 'bare',
    '--import-method', 'web-download', '--uri', web.url, '--all-stores', 'True')).id as string;
  task = await ended(n.admin, all);
  assert.equal(task.status, 'success', task.message);
  assert.equal(task.input.import_req.all_stores_must_succeed, false);
  await assertStored(n.url, all, data);
  const shown = await glance('image-show', all);
  assert.equal(shown.stores, 'fast,cheap');
  assert.equal(shown.os_glance_failed_import, 'mem');
  assert.equal(shown.os_glance_importing_to_stores, '');

  // The store back, copy-image puts the image there too, and takes it out of the failed list.
  n.mem.faults = {};
  await glance('image-import', '--import-method', 'copy-image', '--stores', 'mem', all);
  assert.equal((await ended(n.admin, all)).status, 'success');
  const copied = await show(all);
  assert.equal(copied.stores, 'fast,cheap,mem');
  assert.equal(copied.os_glance_failed_import, '');
  assert.ok(n.mem.objects.get(all)?.equals(data));

  // --store: the X-Image-Meta-Store header chooses the one store.
  const header = await create('header');
  await glance('image-import', '--import-method', 'web-download', '--uri', web.url, '--store', 'cheap', header);
  assert.equal((await ended(n.admin, header)).status, 'success');
  assert.equal((await show(header)).stores, 'cheap');

  // A store the service does not have: the client checks --stores against /v2/info/stores first; the image is untouched.
  const refused = await create('refused');
  const r = await run('sh', args(['image-import', '--import-method', 'web-download', '--uri', web.url, '--stores', 'fast,nowhere', refused]), { env });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Store 'nowhere' is not valid for this cloud/);
  assert.equal((await show(refused)).status, 'queued');
});
