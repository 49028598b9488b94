/**
 * A `diskhub serve` killed with SIGKILL mid-copy (copy-image between two file stores): the
 * temporary file it was writing is recorded with the task's claim, so the restarted node's
 * sweep removes it, the task runs again and the copy completes — no temporary data left.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, api, assertStored, freePort, serve, token } from './helpers.js';
import { ended } from './store-nodes.js';

const newImage = async (a: ReturnType<typeof api>) => (await a('POST', '/v2/images', { body: { name: 'copied', disk_format: 'raw', container_format: 'bare' } })).json.id as string;

test('a node killed (SIGKILL) mid-copy leaves no temporary data once restarted, and the copy completes', async (t) => {
  const dataDir = await tempDir(t);
  const [fast, cheap] = [join(dataDir, 'fast-store'), join(dataDir, 'cheap-store')];
  const env = {
    DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_STORES: `fast:file:${fast},cheap:file:${cheap}`, DISKHUB_NODE_ID: 'node-a',
    DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_SHUTDOWN_GRACE: '0', DISKHUB_IMAGE_CACHE: 'off',
  };
  const first = await serve(dataDir, await freePort(), env);
  t.after(() => { first.child.kill('SIGKILL'); });
  const a = api(first.url, await token(first.url));
  const data = randomBytes(32 << 20);
  const id = await newImage(a);
  assert.equal((await a('PUT', `/v2/images/${id}/file`, { raw: data })).status, 204);
  // Killed the moment its temporary file appears in the target store (inotify), long before 32 MiB are copied.
  const partial = new Promise<string>((resolve) => {
    const watcher = watch(cheap, (_event, name) => {
      if (name && name.startsWith('.partial-')) { first.child.kill('SIGKILL'); watcher.close(); resolve(name); }
    });
  });
  assert.equal((await a('POST', `/v2/images/${id}/import`, { body: { method: { name: 'copy-image' }, stores: ['cheap'] } })).status, 202);
  const name = await partial;
  await first.exited;
  assert.ok((await readdir(cheap)).includes(name), 'the killed copy left its temporary file');

  const second = await serve(dataDir, await freePort(), env);
  t.after(() => { second.child.kill('SIGKILL'); });
  const b = api(second.url, await token(second.url));
  const task = await ended(b, id);
  assert.equal(task.status, 'success', task.message);
  assert.deepEqual(await readdir(cheap), [id], 'only the copy, no temporary file');
  assert.ok((await readFile(join(cheap, id))).equals(data), 'the copy is whole');
  assert.equal((await assertStored(second.url, id, data)).stores, 'fast,cheap');
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 0);
});
