/**
 * A task whose node dies is taken over: two `diskhub serve` processes (nodes a and b) share
 * one data directory and one SQLite database. Node a claims a web-download import from a slow
 * local server and is SIGKILLed halfway; node b, once a's lease has run out, claims the task
 * again (second attempt), downloads from the start and the image ends active with the right
 * checksum — never left importing — and removes node a's partial data from the store. The
 * same with a node stopped in an orderly way (SIGTERM, shortest grace): it gives the task
 * back at once. And a task failed after too many attempts puts back the formats its import
 * started with, also those a dead run had changed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir } from '@diskhub/testkit';
import { openDatabase } from '../src/index.js';
import { randomQcow2 } from './multinode.js';
import { ADMIN_PASSWORD, api, freePort, serve, token, type Api } from './helpers.js';
import { assertStored, until } from './helpers.js';
import { slowServer } from './web-source.js';

const tasksOf = async (a: Api, id: string) => (await a('GET', `/v2/images/${id}/tasks`)).json.tasks as any[];

for (const how of ['SIGKILL', 'SIGTERM'] as const) {
  test(`a task whose node stops (${how}) mid-download is finished by another node; the image ends active with the right checksum`, async (t) => {
    const dir = await tempDir(t);
    const data = randomBytes(3 << 20);
    const web = await slowServer(t, data, 1);
    const env = {
      DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port),
      DISKHUB_TASK_LEASE_SECONDS: '2', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_SHUTDOWN_GRACE: '0',
    };
    const nodeA = await serve(dir, await freePort(), { ...env, DISKHUB_NODE_ID: 'node-a' });
    t.after(() => { nodeA.child.kill('SIGKILL'); });
    const a = api(nodeA.url, await token(nodeA.url));
    const img = (await a('POST', '/v2/images', { body: { name: 'slow', disk_format: 'raw', container_format: 'bare' } })).json;
    assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download', uri: web.url } } })).status, 202);
    // Node a holds the task and has moved some of the data, not all of it.
    await until('node a downloading', async () => web.sent[0] ?? 0, (n) => n >= 512 << 10);
    const mid = (await tasksOf(a, img.id))[0];
    assert.equal(mid.status, 'processing');
    assert.equal((await a('GET', `/v2/images/${img.id}`)).json.status, 'importing');
    nodeA.child.kill(how);
    await nodeA.exited;
    assert.ok(web.sent[0]! < data.length, 'node a stopped before the download ended');

    const nodeB = await serve(dir, await freePort(), { ...env, DISKHUB_NODE_ID: 'node-b' });
    t.after(() => { nodeB.child.kill('SIGKILL'); });
    const b = api(nodeB.url, await token(nodeB.url));
    const [task] = await until('the task to end on node b', () => tasksOf(b, img.id), (ts) => ts.length === 1 && ts[0].status !== 'processing' && ts[0].status !== 'pending');
    assert.equal(task.status, 'success', task.message);
    assert.equal(web.requests(), 2, 'node b downloaded again from the start');
    const done = await assertStored(nodeB.url, img.id, data);
    assert.equal(done.os_glance_import_task, undefined);
    // Node a's partial file is gone: removed by node b when it took the task over (not left
    // until node a starts again), or by node a itself when it stopped in an orderly way.
    assert.deepEqual((await readdir(join(dir, 'images'))).filter((n) => n.startsWith('.partial-')), [], 'no partial data left in the store');
    nodeB.child.kill('SIGTERM');
    assert.equal(await nodeB.exited, 0);
  });
}

test('a task failed after too many attempts puts back the formats the import started with, also those a dead run had changed (image_conversion)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const qcow = await randomQcow2(dir, 2);
  const web = await slowServer(t, qcow.bytes, 1, 'disk.qcow2');
  const env = {
    DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port),
    DISKHUB_TASK_LEASE_SECONDS: '2', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_TASK_MAX_ATTEMPTS: '1',
    DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_conversion', DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: 'raw',
  };
  const nodeA = await serve(dir, await freePort(), { ...env, DISKHUB_NODE_ID: 'node-a' });
  t.after(() => { nodeA.child.kill('SIGKILL'); });
  const a = api(nodeA.url, await token(nodeA.url));
  const img = (await a('POST', '/v2/images', { body: { name: 'converted', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download', uri: web.url } } })).status, 202);
  await until('node a downloading', async () => web.sent[0] ?? 0, (n) => n >= 256 << 10);
  // Where a's run would be had it converted before it died: the image raw, as image_conversion sets it.
  const db = await openDatabase(`sqlite:${join(dir, 'diskhub.sqlite')}`, dir);
  await db.kysely.updateTable('images').set({ disk_format: 'raw' }).where('id', '=', img.id).execute();
  await db.close();
  nodeA.child.kill('SIGKILL');
  await nodeA.exited;

  const nodeB = await serve(dir, await freePort(), { ...env, DISKHUB_NODE_ID: 'node-b' });
  t.after(() => { nodeB.child.kill('SIGKILL'); });
  const b = api(nodeB.url, await token(nodeB.url));
  const [task] = await until('the task to end on node b', () => tasksOf(b, img.id), (ts) => ts.length === 1 && ts[0].status !== 'processing' && ts[0].status !== 'pending');
  assert.equal(task.status, 'failure');
  assert.equal(task.message, `Task ${task.id} was started 1 times and its node stopped each time; it is not tried again.`);
  const back = (await b('GET', `/v2/images/${img.id}`)).json;
  assert.equal(back.status, 'queued');
  assert.equal(back.disk_format, 'qcow2', 'the format the import started with');
  assert.equal(web.requests(), 1, 'not downloaded again');
});
