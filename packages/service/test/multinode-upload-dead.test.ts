/**
 * An upload and a staging cut off by their node's death (issue 19): two `diskhub serve`
 * processes on one PostgreSQL database and one file store both write to. Node a receives a
 * PUT /file and a PUT /stage whose bodies stall half-way, and is SIGKILLed. Glance leaves such
 * images `saving` / `uploading` for good (only the dead API process knew); here node b, once a's
 * heartbeat has run out, puts both back to queued and removes the partial upload from the
 * shared store, and the images are uploaded and staged again through b with the glance client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request, type ClientRequest } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, runOk, tempDir } from '@diskhub/testkit';
import { api, osEnv, token, until } from './helpers.js';
import { sharedFileStore, twoNodes } from './multinode.js';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** A PUT of `total` bytes whose body stops after `sent` bytes (the request stays open). */
function stalledPut(url: string, tok: string, total: number, sent: number): ClientRequest {
  const req = request(url, { method: 'PUT', headers: { 'X-Auth-Token': tok, 'Content-Type': 'application/octet-stream', 'Content-Length': String(total) } });
  req.on('error', () => {});
  req.write(randomBytes(sent));
  return req;
}

test('an upload and a staging whose node is SIGKILLed mid-body are put back to queued by the other node, the partial data removed', needs('glance'), async (t) => {
  const dir = await tempDir(t, 'diskhub-upload-dead-');
  const store = sharedFileStore(join(dir, 'shared-images'));
  const nodes = await twoNodes(t, store, { DISKHUB_WORKER_SELF_REFERENCE_URL: 'http://127.0.0.1:0', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_TASK_LEASE_SECONDS: '3' });
  if (!nodes) return;
  const { a, b } = nodes;
  const tokA = await token(a.url);
  const adminA = api(a.url, tokA);
  const adminB = api(b.url, await token(b.url));
  const saving = (await adminA('POST', '/v2/images', { body: { name: 'upload-cut-off', disk_format: 'raw', container_format: 'bare' } })).json;
  const staging = (await adminA('POST', '/v2/images', { body: { name: 'staging-cut-off', disk_format: 'raw', container_format: 'bare' } })).json;
  const requests = [
    stalledPut(`${a.url}/v2/images/${saving.id}/file`, tokA, 4 << 20, 1 << 20),
    stalledPut(`${a.url}/v2/images/${staging.id}/stage`, tokA, 4 << 20, 1 << 20),
  ];
  t.after(() => { for (const r of requests) r.destroy(); });
  await until('a to be writing both', async () => [(await adminB('GET', `/v2/images/${saving.id}`)).json.status, (await adminB('GET', `/v2/images/${staging.id}`)).json.status],
    ([u, s]) => u === 'saving' && s === 'uploading');
  await until('partial data in the store', () => store.contents(saving.id), (c) => c.partial.length === 1);

  a.child.kill('SIGKILL');
  await a.exited;
  for (const r of requests) r.destroy();

  for (const id of [saving.id, staging.id]) {
    await until(`b to put ${id} back`, async () => (await adminB('GET', `/v2/images/${id}`)).json.status, (s) => s === 'queued', 30_000);
  }
  const shown = JSON.parse(await runOk('openstack', ['image', 'show', saving.id, '-f', 'json'], { env: osEnv(b.url) }));
  assert.equal(shown.status, 'queued');
  assert.deepEqual(await until('the partial upload to go', () => store.contents(saving.id), (c) => c.partial.length === 0), { image: false, partial: [] });

  // Uploaded and staged again through b with the glance client.
  const data = randomBytes(3 << 20);
  const file = join(dir, 'disk.raw');
  await writeFile(file, data);
  await runOk('glance', ['image-upload', '--file', file, saving.id], { env: osEnv(b.url) });
  const done = (await adminB('GET', `/v2/images/${saving.id}`)).json;
  assert.equal(done.status, 'active');
  assert.equal(done.checksum, md5(data));
  await runOk('glance', ['image-stage', '--file', file, staging.id], { env: osEnv(b.url) });
  assert.equal((await adminB('GET', `/v2/images/${staging.id}`)).json.status, 'uploading');
});
