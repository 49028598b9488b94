/**
 * Imports into chosen stores (Glance 25's multi-store import): `stores`, `all_stores`,
 * `all_stores_must_succeed` and the X-Image-Meta-Store header for glance-direct and
 * web-download, with Glance's 400/409 checks and its reporting properties
 * (os_glance_importing_to_stores shrinking as each store is done, failed stores in
 * os_glance_failed_import); copy-image's temporary data recorded so that no sweep takes it
 * while it is written (import-stores-crash.test.ts: a node killed mid-copy). The stores are two
 * file stores and the in-memory test store (faults on demand).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '@diskhub/testkit';
import { assertStored, until, type Api } from './helpers.js';
import { ended, startNode as start, webServer, type StoreNode as Node } from './store-nodes.js';

const newImage = async (a: Api) => (await a('POST', '/v2/images', { body: { name: 'multi', disk_format: 'raw', container_format: 'bare' } })).json.id as string;
const show = async (a: Api, id: string) => (await a('GET', `/v2/images/${id}`)).json;

/** Files of a file store's directory holding `id` (the image's file, and any temporary data named after it). */
const filesOf = async (n: Node, store: string, id: string) => (await readdir(join(n.dataDir, store)).catch(() => [] as string[])).filter((f) => f.includes(id));

test('glance-direct and web-download into chosen stores, all stores, or the X-Image-Meta-Store one; Glance\'s checks', async (t) => {
  const data = randomBytes(900_000);
  const web = await webServer(t, data);
  const n = await start(t, await tempDir(t), 'node-a', { importAllowedNetworks: '127.0.0.1/32', importAllowedPorts: String(web.port) });
  const a = n.admin;

  // glance-direct into two stores, named in the body.
  const direct = await newImage(a);
  assert.equal((await a('PUT', `/v2/images/${direct}/stage`, { raw: data })).status, 204);
  assert.equal((await a('POST', `/v2/images/${direct}/import`, { body: { method: { name: 'glance-direct' }, stores: ['cheap', 'mem'] } })).status, 202);
  const task = await ended(a, direct);
  assert.equal(task.status, 'success', task.message);
  assert.deepEqual(task.input.backend, ['cheap', 'mem']);
  let img = await assertStored(n.url, direct, data);
  assert.equal(img.stores, 'cheap,mem');
  assert.equal(img.os_glance_importing_to_stores, '');
  assert.equal(img.os_glance_failed_import, '');
  assert.ok((await readFile(join(n.dataDir, 'cheap', direct))).equals(data), 'the data is whole in the cheap store');
  assert.ok(n.mem.objects.get(direct)?.equals(data), 'and in the memory store');
  assert.deepEqual(await filesOf(n, 'fast', direct), [], 'and not in the default store');

  // web-download into every store.
  const all = await newImage(a);
  assert.equal((await a('POST', `/v2/images/${all}/import`, { body: { method: { name: 'web-download', uri: web.url }, all_stores: true } })).status, 202);
  assert.equal((await ended(a, all)).status, 'success');
  img = await assertStored(n.url, all, data);
  assert.equal(img.stores, 'fast,cheap,mem');

  // No stores in the body: the X-Image-Meta-Store header's store (Glance's get_stores_from_request).
  const header = await newImage(a);
  assert.equal((await a('POST', `/v2/images/${header}/import`, { body: { method: { name: 'web-download', uri: web.url } }, headers: { 'X-Image-Meta-Store': 'cheap' } })).status, 202);
  assert.equal((await ended(a, header)).status, 'success');
  assert.equal((await show(a, header)).stores, 'cheap');

  // Glance's checks, in its words; nothing is started.
  const q = await newImage(a);
  const refused = async (body: Record<string, unknown>, headers: Record<string, string> = {}) => {
    const r = await a('POST', `/v2/images/${q}/import`, { body: { method: { name: 'web-download', uri: web.url }, ...body }, headers });
    return { status: r.status, message: r.json?.message };
  };
  assert.deepEqual(await refused({ all_stores: true, stores: ['fast'] }), { status: 400, message: "All_stores parameter can't be used with x-image-meta-store header or stores parameter" });
  assert.deepEqual(await refused({ all_stores: true }, { 'X-Image-Meta-Store': 'fast' }), { status: 400, message: "All_stores parameter can't be used with x-image-meta-store header or stores parameter" });
  assert.deepEqual(await refused({ stores: ['fast'] }, { 'X-Image-Meta-Store': 'cheap' }), { status: 400, message: "Stores parameter and x-image-meta-store header can't be both specified" });
  assert.deepEqual(await refused({ stores: ['fast', 'nowhere'] }), { status: 409, message: 'Store for identifier nowhere not found' });
  assert.deepEqual(await refused({}, { 'X-Image-Meta-Store': 'nowhere' }), { status: 409, message: 'Store for identifier nowhere not found' });
  assert.equal((await refused({ stores: 'fast' })).status, 400);
  assert.equal((await refused({ all_stores_must_succeed: 'no' })).message, "'all_stores_must_succeed' must be boolean value only");
  assert.equal((await show(a, q)).status, 'queued');
  assert.equal((await a('GET', `/v2/images/${q}/tasks`)).json.tasks.length, 0);
});

test('a store failing mid-import: with all_stores_must_succeed the import fails and nothing is kept; without, the others go on', async (t) => {
  const n = await start(t, await tempDir(t));
  const a = n.admin;
  const data = randomBytes(3 << 20);
  const staged = async () => {
    const id = await newImage(a);
    assert.equal((await a('PUT', `/v2/images/${id}/stage`, { raw: data })).status, 204);
    return id;
  };
  n.mem.faults = { failAfterBytes: 1 << 20, failKind: 'unavailable' };
  t.after(() => { n.mem.faults = {}; });

  // all_stores_must_succeed (Glance's default): the memory store fails, the import fails, no store keeps the data.
  const strict = await staged();
  assert.equal((await a('POST', `/v2/images/${strict}/import`, { body: { method: { name: 'glance-direct' }, stores: ['fast', 'mem'] } })).status, 202);
  const failedTask = await ended(a, strict);
  assert.equal(failedTask.status, 'failure');
  assert.match(failedTask.message, /The image store 'mem' is unavailable \(writing the data\)/);
  let img = await show(a, strict);
  assert.equal(img.status, 'queued');
  assert.equal(img.stores, undefined);
  assert.equal(img.os_glance_failed_import, 'mem');
  assert.equal(img.os_glance_importing_to_stores, '');
  assert.equal(img.os_glance_import_task, undefined);
  assert.deepEqual(await filesOf(n, 'fast', strict), [], 'the default store kept nothing, not even temporary data');
  assert.equal(n.mem.temp.size, 0);
  assert.equal(n.mem.objects.has(strict), false);

  // all_stores_must_succeed=false: the image is active in the stores that succeeded; the failed one is reported.
  const lenient = await staged();
  assert.equal((await a('POST', `/v2/images/${lenient}/import`, { body: { method: { name: 'glance-direct' }, stores: ['fast', 'mem', 'cheap'], all_stores_must_succeed: false } })).status, 202);
  const task = await ended(a, lenient);
  assert.equal(task.status, 'success', task.message);
  assert.equal(task.message, 'Copied 3 MiB', 'Glance\'s progress message, left on the finished task');
  img = await assertStored(n.url, lenient, data);
  assert.equal(img.stores, 'fast,cheap');
  assert.equal(img.os_glance_failed_import, 'mem');
  assert.equal(img.os_glance_importing_to_stores, '');

  // Every store failing fails the import even so.
  const none = await staged();
  assert.equal((await a('POST', `/v2/images/${none}/import`, { body: { method: { name: 'glance-direct' }, stores: ['mem'], all_stores_must_succeed: false } })).status, 202);
  assert.equal((await ended(a, none)).status, 'failure');
  img = await show(a, none);
  assert.equal(img.status, 'queued');
  assert.equal(img.os_glance_failed_import, 'mem');
});

test('os_glance_importing_to_stores shrinks as each store is done', async (t) => {
  const n = await start(t, await tempDir(t));
  const a = n.admin;
  const data = randomBytes(2 << 20);
  const id = await newImage(a);
  assert.equal((await a('PUT', `/v2/images/${id}/stage`, { raw: data })).status, 204);
  // Every call to the memory store waits: its commit comes well after the file store's.
  n.mem.faults = { delayMs: 400 };
  t.after(() => { n.mem.faults = {}; });
  assert.equal((await a('POST', `/v2/images/${id}/import`, { body: { method: { name: 'glance-direct' }, stores: ['fast', 'mem'] } })).status, 202);
  const seen: string[] = [];
  await until('the import to end', async () => {
    const img = await show(a, id);
    if (seen[seen.length - 1] !== img.os_glance_importing_to_stores) seen.push(img.os_glance_importing_to_stores);
    return img.status;
  }, (s) => s === 'active');
  assert.deepEqual(seen.filter((v) => v !== undefined), ['fast,mem', 'mem', ''], 'sorted as Glance writes it, then without the file store, then empty');
  assert.equal((await show(a, id)).stores, 'fast,mem');
});

test('copy-image writes under keys the database records: another node starting meanwhile sweeps nothing of it', async (t) => {
  const dataDir = await tempDir(t);
  // (a short lease: renewed every second, each renewal writing the task's progress message)
  const nodeA = await start(t, dataDir, 'node-a', { taskLeaseSeconds: 3 });
  const data = randomBytes(4 << 20);
  const id = await newImage(nodeA.admin);
  assert.equal((await nodeA.admin('PUT', `/v2/images/${id}/file`, { raw: data })).status, 204);
  // Every call to the memory store waits a second: the copy takes some 6 s.
  nodeA.mem.faults = { delayMs: 1000 };
  t.after(() => { nodeA.mem.faults = {}; });
  assert.equal((await nodeA.admin('POST', `/v2/images/${id}/import`, { body: { method: { name: 'copy-image' }, stores: ['mem'] } })).status, 202);
  await until('node a copying', async () => nodeA.mem.temp.size, (size) => size === 1);
  // Progress the Glance way (the tasks API has no progress field): the running task's message.
  const taskId = (await show(nodeA.admin, id)).os_glance_import_task as string;
  const running = await until('a progress message', async () => (await nodeA.admin('GET', `/v2/tasks/${taskId}`)).json, (tk) => /^Copied \d+ MiB$/.test(tk.message));
  assert.equal(running.status, 'processing');
  // Node b starts on the same database and stores: its recovery sweeps every store.
  await start(t, dataDir, 'node-b');
  assert.equal(nodeA.mem.objects.has(id), false, 'node b started while the copy was still being written');
  assert.equal(nodeA.mem.temp.size, 1, 'the copy in progress is live: the sweep left it');
  const task = await ended(nodeA.admin, id);
  assert.equal(task.status, 'success', task.message);
  const img = await assertStored(nodeA.url, id, data);
  assert.equal(img.stores, 'fast,mem');
  assert.ok(nodeA.mem.objects.get(id)?.equals(data));
});

test('copy-image with all_stores_must_succeed: a failing store fails the copy and the copies made are removed again (Glance\'s revert)', async (t) => {
  const n = await start(t, await tempDir(t));
  const a = n.admin;
  const data = randomBytes(1 << 20);
  const id = await newImage(a);
  assert.equal((await a('PUT', `/v2/images/${id}/file`, { raw: data })).status, 204);
  n.mem.faults = { failCommit: true, failKind: 'failed' };
  t.after(() => { n.mem.faults = {}; });
  assert.equal((await a('POST', `/v2/images/${id}/import`, { body: { method: { name: 'copy-image' }, stores: ['cheap', 'mem'] } })).status, 202);
  const task = await ended(a, id);
  assert.equal(task.status, 'failure');
  let img = await show(a, id);
  assert.equal(img.status, 'active');
  assert.equal(img.stores, 'fast', 'the copy to cheap is reverted');
  assert.equal(img.os_glance_failed_import, 'mem');
  assert.equal(img.os_glance_importing_to_stores, '');
  assert.deepEqual(await filesOf(n, 'cheap', id), [], 'and its data removed');
  // all_stores_must_succeed=false: cheap is kept; a new copy takes mem out of the failed list first.
  assert.equal((await a('POST', `/v2/images/${id}/import`, { body: { method: { name: 'copy-image' }, stores: ['cheap', 'mem'], all_stores_must_succeed: false } })).status, 202);
  assert.equal((await ended(a, id)).status, 'success');
  img = await show(a, id);
  assert.equal(img.stores, 'fast,cheap');
  assert.equal(img.os_glance_failed_import, 'mem');
  assert.ok((await readFile(join(n.dataDir, 'cheap', id))).equals(data));
});
