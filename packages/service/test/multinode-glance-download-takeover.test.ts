/**
 * glance-download across API nodes whose node dies mid-task (issue 19). As in Glance, the
 * requester's token lives only in the memory of the node that took the request (Glance runs the
 * task in that API process and loses it with the process); it is never written to the
 * database. Two `diskhub serve` processes on one PostgreSQL database import from a remote
 * region (a third diskhub, validating tokens against node b's Keystone) through a loopback
 * proxy whose data answers trickle; the node running the import is SIGKILLed mid-download.
 * The other node takes the task over once the lease ran out and fails it, saying why; the image
 * is back as Glance's _ImportMetadata revert leaves it (queued, its own formats — the dead run
 * had set the remote ones — the lock dropped), the dead run's partial data is removed, and the
 * import sent again to the surviving node succeeds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { runOk, tempDir } from '@diskhub/testkit';
import { addProjectUser, api, osEnv, startTestService, token, until } from './helpers.js';
import { sharedFileStore, storedProperties, taskRow, twoNodes } from './multinode.js';
import { trickleProxy } from './web-source.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

test('glance-download whose node is SIGKILLed mid-download: the other node fails the task (no token), the image is queued with its own formats; imported again there', async (t) => {
  const dir = await tempDir(t, 'diskhub-glance-download-takeover-');
  const store = sharedFileStore(join(dir, 'shared-images'));
  let remoteUrl = '';
  const proxy = await trickleProxy(t, () => remoteUrl);
  const nodes = await twoNodes(t, store, {
    DISKHUB_ENABLED_IMPORT_METHODS: 'glance-direct,web-download,copy-image,glance-download', DISKHUB_CATALOG_IMAGE_ENDPOINTS: `RegionTwo=${proxy.url}`,
    DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(proxy.port),
    DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_TASK_LEASE_SECONDS: '3',
  });
  if (!nodes) return;
  const { a, b } = nodes;
  await addProjectUser(b.url, await token(b.url), 'service', 'glance', 'glance-pw', 'admin');
  // The remote region's image service validates tokens against b's Keystone (the database a and b share).
  const remote = await startTestService(t, {
    DISKHUB_REGION: 'RegionTwo', DISKHUB_KEYSTONE_URL: `${b.url}/identity/v3`,
    DISKHUB_KEYSTONE_USER: 'glance', DISKHUB_KEYSTONE_PASSWORD: 'glance-pw', DISKHUB_KEYSTONE_PROJECT: 'service',
  });
  remoteUrl = remote.url;
  const there = api(remote.url, await token(b.url));
  const data = randomBytes(2 << 20);
  const source = (await there('POST', '/v2/images', { body: { name: 'remote', disk_format: 'raw', container_format: 'bare', hw_disk_bus: 'scsi' } })).json;
  assert.equal((await there('PUT', `/v2/images/${source.id}/file`, { raw: data })).status, 204);

  const adminA = api(a.url, await token(a.url));
  const img = (await adminA('POST', '/v2/images', { body: { name: 'from-region-two', disk_format: 'vmdk', container_format: 'ova' } })).json;
  const method = { name: 'glance-download', glance_image_id: source.id, glance_region: 'RegionTwo' };
  assert.equal((await adminA('POST', `/v2/images/${img.id}/import`, { body: { method } })).status, 202);
  await until('the remote data to flow', async () => proxy.sent[0] ?? 0, (n) => n >= 256 << 10);
  // The node running it (a, which was told first, all but always) has set the remote formats.
  const owner = (await taskRow(nodes.databaseUrl, img.id)).node;
  assert.ok(owner === 'node-a' || owner === 'node-b', `the task is held by a node: ${owner}`);
  const [dead, survivor] = owner === 'node-a' ? [a, b] : [b, a];
  assert.equal((await adminA('GET', `/v2/images/${img.id}`)).json.disk_format, 'raw', 'the remote image\'s formats, mid-run');
  dead.child.kill('SIGKILL');
  await dead.exited;
  assert.ok(proxy.sent[0]! < data.length, `${dead.name} died mid-download`);

  const s = api(survivor.url, await token(survivor.url));
  const [task] = await until('the task to end on the other node', async () => (await s('GET', `/v2/images/${img.id}/tasks`)).json.tasks as any[],
    (ts) => ts.length === 1 && !['pending', 'processing'].includes(ts[0].status), 30_000);
  assert.equal(task.status, 'failure');
  assert.equal(task.message, `The glance-download of image ${img.id} lost the requester's token: it is kept only in the memory of the API node that took the request, which stopped before the import ended; import the image again.`);
  assert.equal(task.input.diskhub_image_formats, undefined, 'what the service keeps in the input is not shown');
  assert.equal(proxy.requests(), 1, `${survivor.name} never called the remote region`);
  const shown = JSON.parse(await runOk('openstack', ['image', 'show', img.id, '-f', 'json'], { env: osEnv(survivor.url) }));
  assert.equal(shown.status, 'queued');
  assert.equal(shown.disk_format, 'vmdk', 'the image\'s own formats are put back');
  assert.equal(shown.container_format, 'ova');
  const props = await storedProperties(nodes.databaseUrl, img.id);
  assert.equal(props.os_glance_import_task, undefined);
  assert.equal(props.os_glance_importing_to_stores, '');
  assert.equal(props.os_glance_failed_import, 'main');
  assert.equal(props.hw_disk_bus, undefined, 'no remote property was copied');
  assert.deepEqual(await until('the dead run\'s partial data to go', () => store.contents(img.id), (c) => c.partial.length === 0), { image: false, partial: [] });

  // Sent again, to the node that runs: imported, with the remote formats and data.
  assert.equal((await s('POST', `/v2/images/${img.id}/import`, { body: { method } })).status, 202);
  const done = await until('the second import', async () => (await s('GET', `/v2/images/${img.id}`)).json, (i) => i.status === 'active' || i.status === 'queued', 30_000);
  assert.equal(done.status, 'active');
  assert.equal(done.checksum, md5(data));
  assert.equal(done.disk_format, 'raw');
  assert.equal(done.hw_disk_bus, 'scsi');
  assert.deepEqual(await store.contents(img.id), { image: true, partial: [] });
});
