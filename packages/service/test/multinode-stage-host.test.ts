/**
 * glance-direct on two API nodes that do not share a staging directory (Glance 25's
 * os_glance_stage_host, worker_self_reference_url): two `diskhub serve` processes on one
 * PostgreSQL database, each with its own data directory (so its own staging area), one file
 * store both write to. Data staged on a and imported through b is proxied to a and imported
 * there (the real glance client stages and imports, pointed at different nodes); the stage host
 * is never shown nor settable; a delete through the other node is done by the stage host; an
 * import whose stage host is down is Glance's 504; a stage host that dies mid-import has its
 * task failed by the other node once the lease ran out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, runOk, tempDir } from '@diskhub/testkit';
import { loadConfig } from '../src/index.js';
import { selfReference } from '../src/domain/import/stage-host.js';
import { api, osEnv, token, until, type Api } from './helpers.js';
import { randomQcow2, sharedFileStore, staged, storedProperties, taskRow, twoNodes } from './multinode.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');


test('two API nodes, separate staging: glance image-stage on a, glance image-import on b is proxied to a and imported there', needs('glance', 'qemu-img'), async (t) => {
  const dir = await tempDir(t, 'diskhub-stage-host-');
  const store = sharedFileStore(join(dir, 'shared-images'));
  // Every node's own URL (port 0: the port it listens on), a short lease for the dead-host case.
  const nodes = await twoNodes(t, store, { DISKHUB_WORKER_SELF_REFERENCE_URL: 'http://127.0.0.1:0', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_TASK_LEASE_SECONDS: '3' });
  if (!nodes) return;
  const { a, b } = nodes;
  const adminA = api(a.url, await token(a.url));
  const adminB = api(b.url, await token(b.url));
  const qcow = await randomQcow2(dir, 3);

  // Staged on a with the glance client: the data is in a's staging area, a's URL is recorded, not shown.
  const img = (await adminA('POST', '/v2/images', { body: { name: 'staged-on-a', disk_format: 'qcow2', container_format: 'bare' } })).json;
  await runOk('glance', ['image-stage', '--file', qcow.path, img.id], { env: osEnv(a.url) });
  assert.deepEqual(await staged(a.dataDir), [img.id]);
  assert.deepEqual(await staged(b.dataDir), []);
  assert.equal((await storedProperties(nodes.databaseUrl, img.id)).os_glance_stage_host, a.url);
  for (const node of [adminA, adminB]) {
    const shown = (await node('GET', `/v2/images/${img.id}`)).json;
    assert.equal(shown.status, 'uploading');
    assert.equal('os_glance_stage_host' in shown, false, 'the stage host is never shown');
  }
  // Reserved: a client can neither set nor replace it.
  const patched = await adminB('PATCH', `/v2/images/${img.id}`, {
    raw: JSON.stringify([{ op: 'add', path: '/os_glance_stage_host', value: b.url }]), type: 'application/openstack-images-v2.1-json-patch',
  });
  assert.equal(patched.status, 403, patched.text);
  assert.equal((await storedProperties(nodes.databaseUrl, img.id)).os_glance_stage_host, a.url);

  // Imported through b with the glance client: b proxies the request to a, whose task it is.
  await runOk('glance', ['image-import', '--import-method', 'glance-direct', img.id], { env: osEnv(b.url) });
  const done = await importEnded(adminB, img.id);
  assert.equal(done.status, 'active');
  assert.equal(done.size, qcow.bytes.length);
  assert.equal(done.checksum, md5(qcow.bytes));
  assert.equal(done.os_hash_value, sha512(qcow.bytes));
  const task = await taskRow(nodes.databaseUrl, img.id);
  assert.equal(task.status, 'success', task.message);
  assert.equal(task.stage_host, a.url, 'the task was tied to the stage host');
  assert.equal((await storedProperties(nodes.databaseUrl, img.id)).os_glance_stage_host, undefined, 'taken off the image when the import starts, as Glance does');
  assert.deepEqual(await staged(a.dataDir), [], 'the staged data is gone once imported');
  assert.deepEqual(await store.contents(img.id), { image: true, partial: [] });
  // Served by both nodes, byte-identical (glance image-download from b, the API from a).
  const saved = join(dir, 'saved-from-b.qcow2');
  await runOk('glance', ['image-download', '--file', saved, img.id], { env: osEnv(b.url) });
  assert.ok((await readFile(saved)).equals(qcow.bytes), 'download from b');
  await qemuImg('compare', qcow.path, saved);
  const fromA = await fetch(`${a.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': await token(a.url) } });
  assert.ok(Buffer.from(await fromA.arrayBuffer()).equals(qcow.bytes), 'download from a');

  // The same through the API, staged on b and imported on a (the other direction).
  const back = (await adminB('POST', '/v2/images', { body: { name: 'staged-on-b', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await adminB('PUT', `/v2/images/${back.id}/stage`, { raw: qcow.bytes })).status, 204);
  // A request another node replayed is never replayed again (a URL reaching the wrong node would loop).
  const looped = await adminA('POST', `/v2/images/${back.id}/import`, { body: { method: { name: 'glance-direct' } }, headers: { 'X-Diskhub-Proxied-By': b.url } });
  assert.equal(looped.status, 502, looped.text);
  assert.equal(looped.json.message, `Stage host is unavailable: ${b.url} is answered by a node whose worker_self_reference_url is ${a.url}`);
  const imported = await adminA('POST', `/v2/images/${back.id}/import`, { body: { method: { name: 'glance-direct' } } });
  assert.equal(imported.status, 202, imported.text);
  assert.equal((await importEnded(adminA, back.id)).checksum, md5(qcow.bytes));
  assert.equal((await taskRow(nodes.databaseUrl, back.id)).stage_host, b.url);

  // A staged image deleted through b is deleted on a, its staged data with it (Glance's _delete_image_on_remote).
  const dropped = (await adminA('POST', '/v2/images', { body: { name: 'deleted-via-b', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await adminA('PUT', `/v2/images/${dropped.id}/stage`, { raw: qcow.bytes })).status, 204);
  assert.ok((await staged(a.dataDir)).includes(dropped.id));
  assert.equal((await adminB('DELETE', `/v2/images/${dropped.id}`)).status, 204);
  assert.equal((await adminA('GET', `/v2/images/${dropped.id}`)).status, 404);
  assert.ok(!(await staged(a.dataDir)).includes(dropped.id), 'the staged data went with the image');

  // Stage host down: staged on a, a killed, the import through b is Glance's 504; the image stays staged.
  const orphan = (await adminA('POST', '/v2/images', { body: { name: 'host-down', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await adminA('PUT', `/v2/images/${orphan.id}/stage`, { raw: qcow.bytes })).status, 204);
  // The stage host dies mid-import: its staged file swapped for a FIFO nobody writes, a's run
  // blocks reading it (the task processing, a's), then a is killed. Once a's lease ran out b
  // claims the task, only to fail it saying where the data was.
  const stuck = (await adminA('POST', '/v2/images', { body: { name: 'host-died', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await adminA('PUT', `/v2/images/${stuck.id}/stage`, { raw: qcow.bytes })).status, 204);
  await rm(join(a.dataDir, 'staging', stuck.id));
  await runOk('mkfifo', [join(a.dataDir, 'staging', stuck.id)]);
  assert.equal((await adminA('POST', `/v2/images/${stuck.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 202);
  await until('a to run the import', () => taskRow(nodes.databaseUrl, stuck.id), (r) => r?.status === 'processing' && r.node === 'node-a');
  a.child.kill('SIGKILL');
  await a.exited;
  const failed = await until('the task to end', () => taskRow(nodes.databaseUrl, stuck.id), (r) => r.status !== 'processing', 30_000);
  assert.equal(failed.status, 'failure');
  assert.equal(failed.message, `The staged data of image ${stuck.id} is on its stage host ${a.url}, which is not running (its heartbeat ran out before it finished this import); stage the data again and import it.`);
  assert.equal((await adminB('GET', `/v2/images/${stuck.id}`)).json.status, 'queued', 'the image can be staged again');
  const down = await adminB('POST', `/v2/images/${orphan.id}/import`, { body: { method: { name: 'glance-direct' } } });
  assert.equal(down.status, 504, down.text);
  assert.equal(down.json.message, 'Stage host is unavailable');
  assert.equal((await adminB('GET', `/v2/images/${orphan.id}`)).json.status, 'uploading', 'the image is still staged, for when its node is back');
  assert.equal(await taskRow(nodes.databaseUrl, orphan.id), undefined, 'no task was made');
  // Its delete through b cannot reach a either: the image is deleted on b (a's staged file stays, as in Glance).
  assert.equal((await adminB('DELETE', `/v2/images/${orphan.id}`)).status, 204);
  assert.equal((await adminB('GET', `/v2/images/${orphan.id}`)).status, 404);
});

/** The image once its import ended (not importing). */
function importEnded(as: Api, id: string): Promise<any> {
  return until(`image ${id}'s import to end`, async () => (await as('GET', `/v2/images/${id}`)).json, (img) => img.status !== 'importing' && img.status !== 'uploading');
}

test('worker_self_reference_url: DISKHUB_WORKER_SELF_REFERENCE_URL or the config file, an http(s) URL; its port 0 is the port listened on', async (t) => {
  const dir = await tempDir(t);
  const base = { DISKHUB_DATA_DIR: dir };
  assert.equal(loadConfig(base).workerSelfReferenceUrl, undefined, 'unset by default: staged data tied to no node');
  assert.equal(loadConfig({ ...base, DISKHUB_WORKER_SELF_REFERENCE_URL: 'http://node-a.internal:9292/' }).workerSelfReferenceUrl, 'http://node-a.internal:9292');
  const file = join(dir, 'diskhub.json');
  await writeFile(file, JSON.stringify({ workerSelfReferenceUrl: 'https://node-b.internal:9292' }));
  assert.equal(loadConfig({ ...base, DISKHUB_CONFIG: file }).workerSelfReferenceUrl, 'https://node-b.internal:9292');
  assert.throws(() => loadConfig({ ...base, DISKHUB_WORKER_SELF_REFERENCE_URL: 'node-a:9292' }), /workerSelfReferenceUrl must be an http:\/\/ or https:\/\/ URL, got 'node-a:9292'/);
  assert.equal(selfReference('http://127.0.0.1:0', 40123), 'http://127.0.0.1:40123');
  assert.equal(selfReference('http://node-a.internal:9292', 40123), 'http://node-a.internal:9292');
  assert.equal(selfReference(undefined, 40123), undefined);
});
