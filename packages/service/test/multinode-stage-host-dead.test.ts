/**
 * A glance-direct stage host that dies before it claimed its import task (Glance 25's
 * os_glance_stage_host, worker_self_reference_url; issue 19): two `diskhub serve` processes on
 * one PostgreSQL database, separate staging areas, one file store. Node a runs one task at a
 * time and is kept busy (an import blocked reading a FIFO), so the import of an image staged on
 * a — accepted through b with the glance client, proxied to a — stays pending; a is SIGKILLed.
 * Once a's heartbeat has run out, b fails both tasks tied to a, saying where the data was, and
 * puts the images back as Glance's revert does (queued, the import lock dropped, nothing
 * importing, the store in os_glance_failed_import); the image is staged and imported again
 * through b; a, restarted, drops the staged data no import will read. On SQLite, one node
 * restarted under the same worker_self_reference_url takes its own staged import back and
 * finishes it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, run, runOk, tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, api, freePort, osEnv, serve, token, until, type Api } from './helpers.js';
import { randomQcow2, sharedFileStore, staged, storedProperties, taskRow, twoNodes } from './multinode.js';
import { slowServer } from './web-source.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const tasksOf = async (as: Api, id: string) => (await as('GET', `/v2/images/${id}/tasks`)).json.tasks as any[];

test('a stage host SIGKILLed before it claimed its glance-direct import: the other node fails the task cleanly, the image is queued again', needs('glance', 'qemu-img', 'mkfifo'), async (t) => {
  const dir = await tempDir(t, 'diskhub-stage-host-dead-');
  const store = sharedFileStore(join(dir, 'shared-images'));
  const nodes = await twoNodes(t, store, {
    DISKHUB_WORKER_SELF_REFERENCE_URL: 'http://127.0.0.1:0', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_TASK_LEASE_SECONDS: '3', DISKHUB_TASK_CONCURRENCY: '1',
  });
  if (!nodes) return;
  const { a, b } = nodes;
  const adminA = api(a.url, await token(a.url));
  const adminB = api(b.url, await token(b.url));
  const qcow = await randomQcow2(dir, 2);

  // a's one task slot taken: an import of data staged on a that blocks reading a FIFO nobody writes.
  const busy = (await adminA('POST', '/v2/images', { body: { name: 'keeps-a-busy', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await adminA('PUT', `/v2/images/${busy.id}/stage`, { raw: qcow.bytes })).status, 204);
  await rm(join(a.dataDir, 'staging', busy.id));
  await runOk('mkfifo', [join(a.dataDir, 'staging', busy.id)]);
  assert.equal((await adminA('POST', `/v2/images/${busy.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 202);
  await until('a to run the blocked import', () => taskRow(nodes.databaseUrl, busy.id), (r) => r?.status === 'processing' && r.node === 'node-a');

  // Staged on a, imported through b with the glance client: proxied to a, accepted, pending (a is busy).
  const img = (await adminA('POST', '/v2/images', { body: { name: 'staged-on-a', disk_format: 'qcow2', container_format: 'bare' } })).json;
  await runOk('glance', ['image-stage', '--file', qcow.path, img.id], { env: osEnv(a.url) });
  await runOk('glance', ['image-import', '--import-method', 'glance-direct', img.id], { env: osEnv(b.url) });
  const pending = await taskRow(nodes.databaseUrl, img.id);
  assert.deepEqual([pending.status, pending.node, pending.stage_host], ['pending', null, a.url]);
  // Neither node takes it while a beats (b polls every second; a's heartbeat is renewed every second).
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal((await taskRow(nodes.databaseUrl, img.id)).status, 'pending', 'a live stage host\'s task waits for it');
  assert.equal((await adminB('GET', `/v2/images/${img.id}`)).json.status, 'importing');

  a.child.kill('SIGKILL');
  await a.exited;

  // b fails both of a's tasks once a's heartbeat has run out (3 s).
  const message = (id: string) => `The staged data of image ${id} is on its stage host ${a.url}, which is not running (its heartbeat ran out before it finished this import); stage the data again and import it.`;
  for (const id of [img.id, busy.id]) {
    const [task] = await until(`b to end the task of ${id}`, () => tasksOf(adminB, id), (ts) => ts.length === 1 && !['pending', 'processing'].includes(ts[0].status), 30_000);
    assert.equal(task.status, 'failure');
    assert.equal(task.message, message(id));
    assert.equal((await taskRow(nodes.databaseUrl, id)).node, null, 'the task is nobody\'s once ended');
  }
  // The image as Glance's revert leaves it: queued, the lock gone, nothing importing, the store failed.
  const shown = JSON.parse(await runOk('openstack', ['image', 'show', img.id, '-f', 'json'], { env: osEnv(b.url) }));
  assert.equal(shown.status, 'queued');
  const props = await storedProperties(nodes.databaseUrl, img.id);
  assert.equal(props.os_glance_import_task, undefined, 'the import lock is dropped');
  assert.equal(props.os_glance_importing_to_stores, '');
  assert.equal(props.os_glance_failed_import, 'main');
  assert.equal(props.os_glance_stage_host, undefined);
  assert.deepEqual(await store.contents(img.id), { image: false, partial: [] }, 'nothing was written to the store');

  // Importing it again unstaged: the glance client refuses from the status b shows, b itself with Glance's 409.
  const again = await run('glance', ['image-import', '--import-method', 'glance-direct', img.id], { env: osEnv(b.url) });
  assert.notEqual(again.code, 0);
  assert.equal(again.stderr.trim(), "The 'glance-direct' import method can only be applied to an image in status 'uploading'");
  const refused = await adminB('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'glance-direct' } } });
  assert.equal(refused.status, 409);
  assert.equal(refused.json.message, "Image needs to be staged before 'glance-direct' method can be used");
  // Staged again on b and imported there: active with the staged data.
  await runOk('glance', ['image-stage', '--file', qcow.path, img.id], { env: osEnv(b.url) });
  await runOk('glance', ['image-import', '--import-method', 'glance-direct', img.id], { env: osEnv(b.url) });
  const done = await until('the second import', async () => (await adminB('GET', `/v2/images/${img.id}`)).json, (i) => i.status === 'active' || i.status === 'queued');
  assert.equal(done.status, 'active');
  assert.equal(done.checksum, md5(qcow.bytes));
  assert.equal(done.os_glance_failed_import, '', 'the store is taken out of the failed list by the new import');
  assert.deepEqual(await store.contents(img.id), { image: true, partial: [] });

  // a comes back (a new port, so a new URL): the staged data of the failed imports is removed, nothing else runs.
  assert.deepEqual((await staged(a.dataDir)).sort(), [busy.id, img.id].sort(), 'a\'s staged data outlived it');
  const back = await nodes.start('a');
  assert.deepEqual(await staged(back.dataDir), [], 'the restarted stage host dropped the staged data no import will read');
  const adminBack = api(back.url, await token(back.url));
  assert.equal((await adminBack('GET', `/v2/images/${busy.id}`)).json.status, 'queued');
  assert.equal((await tasksOf(adminBack, busy.id))[0].status, 'failure');
  assert.equal(b.child.exitCode, null, 'b still runs');
});

test('one node on SQLite, killed with a staged import pending: restarted under the same worker_self_reference_url it takes the task back and imports the staged data', async (t) => {
  const dir = await tempDir(t, 'diskhub-stage-host-restart-');
  const data = randomBytes(3 << 20);
  const web = await slowServer(t, data, 1);
  const port = await freePort();
  const env = {
    DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_WORKER_SELF_REFERENCE_URL: `http://127.0.0.1:${port}`, DISKHUB_NODE_ID: 'node-a',
    DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_TASK_LEASE_SECONDS: '2', DISKHUB_TASK_CONCURRENCY: '1',
    DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port),
  };
  let node = await serve(dir, port, env);
  t.after(() => { node.child.kill('SIGKILL'); });
  let admin = api(node.url, await token(node.url));
  // The one task slot: a web-download trickling in.
  const slow = (await admin('POST', '/v2/images', { body: { name: 'slow', disk_format: 'raw', container_format: 'bare' } })).json;
  assert.equal((await admin('POST', `/v2/images/${slow.id}/import`, { body: { method: { name: 'web-download', uri: web.url } } })).status, 202);
  await until('the download to run', async () => web.sent[0] ?? 0, (n) => n > 0);
  // Staged here, its import pending behind it.
  const stagedData = randomBytes(1 << 20);
  const img = (await admin('POST', '/v2/images', { body: { name: 'staged', disk_format: 'raw', container_format: 'bare' } })).json;
  assert.equal((await admin('PUT', `/v2/images/${img.id}/stage`, { raw: stagedData })).status, 204);
  assert.equal((await admin('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 202);
  assert.equal((await tasksOf(admin, img.id))[0].status, 'pending');
  node.child.kill('SIGKILL');
  await node.exited;
  // Down for longer than its heartbeat lasts: nothing else could have run its task anyway.
  await new Promise((r) => setTimeout(r, 2500));

  node = await serve(dir, port, env);
  admin = api(node.url, await token(node.url));
  for (const [id, bytes] of [[slow.id, data], [img.id, stagedData]] as const) {
    const [task] = await until(`the task of ${id} to end`, () => tasksOf(admin, id), (ts) => ts.length === 1 && !['pending', 'processing'].includes(ts[0].status), 30_000);
    assert.equal(task.status, 'success', task.message);
    const shown = (await admin('GET', `/v2/images/${id}`)).json;
    assert.equal(shown.status, 'active');
    assert.equal(shown.checksum, md5(bytes));
  }
  assert.deepEqual(await staged(dir), [], 'the staged data is gone once imported');
});
