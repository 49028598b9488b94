/**
 * Delayed delete (Glance's delayed_delete, scrub_time, glance-scrubber and its --restore):
 * the real openstack client deletes, the `diskhub scrub` command scrubs and restores, the
 * store's files and the database say what happened.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { diskhub, diskhubBin, needs, runOk, run, tempDir } from '@diskhub/testkit';
import { api, osEnv, startTestService, token } from './helpers.js';
import { dataFile, exists, scrubEnv, statusOf, upload } from './scrub-helpers.js';

const os = (env: NodeJS.ProcessEnv, ...args: string[]) => runOk('openstack', args, { env });
const osJson = async (env: NodeJS.ProcessEnv, ...args: string[]) => JSON.parse(await os(env, ...args, '-f', 'json'));

test('delayed delete: pending_delete is gone for the API but keeps its data until scrub_time has passed, then diskhub scrub removes it', needs('openstack'), async (t) => {
  const svc = await startTestService(t, { DISKHUB_DELAYED_DELETE: 'true', DISKHUB_SCRUB_TIME: '10', DISKHUB_SCRUB_WAKEUP_TIME: '0', DISKHUB_PROJECT_IMAGE_QUOTA: '2' });
  const dir = await tempDir(t);
  const env = osEnv(svc.url);
  const file = join(dir, 'disk.raw');
  const bytes = randomBytes(3 << 20);
  await writeFile(file, bytes);
  const created = await osJson(env, 'image', 'create', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', 'doomed');
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  const emptyOne = (await a('POST', '/v2/images', { body: { name: 'no-data' } })).json;

  await os(env, 'image', 'delete', created.id);
  const deletedAt = Date.now();
  // scrub_time is the scrubber's setting (as glance-scrubber reads its own config).
  const early = await diskhub(['scrub'], { env: scrubEnv(svc, { DISKHUB_SCRUB_TIME: '10' }) });
  assert.equal(early.code, 0, early.stderr);
  assert.ok(Date.now() - deletedAt < 10_000);
  assert.ok(await exists(dataFile(svc, created.id)), 'not scrubbed before scrub_time');
  assert.equal((await statusOf(svc, created.id))!.status, 'pending_delete');

  const show = await run('openstack', ['image', 'show', created.id], { env });
  assert.notEqual(show.code, 0);
  assert.match(show.stderr, /No Image found|Could not find resource/i);
  assert.deepEqual((await osJson(env, 'image', 'list')).map((i: any) => i.ID), [emptyOne.id]);
  assert.deepEqual(await statusOf(svc, created.id), { status: 'pending_delete', deleted: 1 });
  assert.ok((await readFile(dataFile(svc, created.id))).equals(bytes), 'the data stays in the store');
  // Glance counts pending_delete images (and their data) in the project's usage.
  const quota = await a('POST', '/v2/images', { body: { name: 'third' } });
  assert.equal(quota.status, 413, 'the image quota still counts the pending_delete image');

  // An image without data has nothing to scrub: it is deleted at once, as in Glance.
  await os(env, 'image', 'delete', emptyOne.id);
  assert.deepEqual(await statusOf(svc, emptyOne.id), { status: 'deleted', deleted: 1 });

  await new Promise((r) => setTimeout(r, Math.max(0, deletedAt + 10_100 - Date.now())));
  const late = await diskhub(['scrub'], { env: scrubEnv(svc, { DISKHUB_SCRUB_TIME: '10' }) });
  assert.equal(late.code, 0, late.stderr);
  assert.equal(await exists(dataFile(svc, created.id)), false, 'the scrubber removed the data');
  assert.deepEqual(await statusOf(svc, created.id), { status: 'deleted', deleted: 1 });
  const props = await svc.db.kysely.selectFrom('image_properties').select('name').where('image_id', '=', created.id).execute();
  assert.deepEqual(props, [], 'properties go with the scrub');
  assert.equal((await a('POST', '/v2/images', { body: { name: 'third' } })).status, 201, 'a scrubbed image no longer counts');
});

test('delayed delete: an admin restores a pending_delete image (diskhub scrub --restore) and it downloads byte-identical, properties and tags kept', needs('openstack'), async (t) => {
  const svc = await startTestService(t, { DISKHUB_DELAYED_DELETE: 'true', DISKHUB_SCRUB_TIME: '3600', DISKHUB_SCRUB_WAKEUP_TIME: '0' });
  const dir = await tempDir(t);
  const env = osEnv(svc.url);
  const file = join(dir, 'disk.raw');
  const bytes = randomBytes(2 << 20);
  await writeFile(file, bytes);
  const created = await osJson(env, 'image', 'create', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', '--property', 'os_distro=debian', '--tag', 'golden', 'keep-me');
  await os(env, 'image', 'delete', created.id);
  assert.equal((await statusOf(svc, created.id))!.status, 'pending_delete');

  const restored = await diskhub(['scrub', '--restore', created.id], { env: scrubEnv(svc) });
  assert.equal(restored.code, 0, restored.stderr);
  const shown = await osJson(env, 'image', 'show', created.id);
  assert.equal(shown.status, 'active');
  assert.equal(shown.properties.os_distro, 'debian');
  assert.deepEqual(shown.tags, ['golden']);
  const saved = join(dir, 'saved.raw');
  await os(env, 'image', 'save', '--file', saved, created.id);
  assert.ok((await readFile(saved)).equals(bytes), 'byte-identical');

  // glance-scrubber's errors: a status other than pending_delete, an unknown image, --daemon with --restore.
  const again = await diskhub(['scrub', '--restore', created.id], { env: scrubEnv(svc) });
  assert.equal(again.code, 1);
  assert.equal(again.stderr, 'ERROR: cannot restore the image from active to active (wanted from_state=pending_delete)\n');
  const unknown = await diskhub(['scrub', '--restore', '00000000-0000-0000-0000-000000000000'], { env: scrubEnv(svc) });
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr, 'ERROR: No image found with ID 00000000-0000-0000-0000-000000000000\n');
  const both = await diskhub(['scrub', '--daemon', '--restore', created.id], { env: scrubEnv(svc) });
  assert.equal(both.code, 1);
  assert.match(both.stderr, /restore and daemon options should not be set together/);

  // A deactivated image cannot become pending_delete (Glance's status table): 400.
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  assert.equal((await a('POST', `/v2/images/${created.id}/actions/deactivate`)).status, 204);
  const refused = await a('DELETE', `/v2/images/${created.id}`);
  assert.equal(refused.status, 400);
  assert.match(refused.text, /Image status transition from deactivated to pending_delete is not allowed/);
});

test('delayed delete: each API node scrubs every wakeup_time', async (t) => {
  const svc = await startTestService(t, { DISKHUB_DELAYED_DELETE: 'true', DISKHUB_SCRUB_TIME: '0', DISKHUB_SCRUB_WAKEUP_TIME: '1' });
  const tok = await token(svc.url);
  const id = await upload(svc.url, tok, randomBytes(100_000));
  assert.equal((await api(svc.url, tok)('DELETE', `/v2/images/${id}`)).status, 204);
  for (let i = 0; i < 100 && (await exists(dataFile(svc, id))); i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await exists(dataFile(svc, id)), false);
  for (let i = 0; i < 50 && (await statusOf(svc, id))!.status !== 'deleted'; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal((await statusOf(svc, id))!.status, 'deleted');
});

test('delayed delete: the scrubber is crash-safe (killed mid-run, a rerun finishes; a live lease is respected and blocks restore)', async (t) => {
  const svc = await startTestService(t, { DISKHUB_DELAYED_DELETE: 'true', DISKHUB_SCRUB_TIME: '0', DISKHUB_SCRUB_WAKEUP_TIME: '0' });
  const tok = await token(svc.url);
  const ids: string[] = [];
  for (let i = 0; i < 120; i++) ids.push(await upload(svc.url, tok, randomBytes(4096)));
  const a = api(svc.url, tok);
  for (const id of ids) assert.equal((await a('DELETE', `/v2/images/${id}`)).status, 204);

  // Kill a scrub run once it has scrubbed some images and before it is done.
  const child = spawn(process.execPath, [diskhubBin, 'scrub'], { env: scrubEnv(svc), stdio: 'ignore' });
  const exited = new Promise((r) => child.on('exit', r));
  const deletedCount = async () => Number((await svc.db.kysely.selectFrom('images').select((eb) => eb.fn.countAll().as('n')).where('status', '=', 'deleted').executeTakeFirstOrThrow()).n);
  let seen = 0;
  for (let i = 0; i < 2000 && (seen = await deletedCount()) === 0; i++) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  await exited;
  seen = await deletedCount();
  assert.ok(seen > 0 && seen < ids.length, `killed mid-run (${seen} of ${ids.length} scrubbed)`);
  // What it did is consistent: an image is deleted only once its data is gone.
  for (const id of ids) {
    if ((await statusOf(svc, id))!.status === 'deleted') assert.equal(await exists(dataFile(svc, id)), false, id);
  }
  // The rerun (same command, same node name) takes over the killed run's lease and finishes.
  const rerun = await diskhub(['scrub'], { env: scrubEnv(svc) });
  assert.equal(rerun.code, 0, rerun.stderr);
  for (const id of ids) {
    assert.deepEqual(await statusOf(svc, id), { status: 'deleted', deleted: 1 }, id);
    assert.equal(await exists(dataFile(svc, id)), false, id);
  }
  const leases = await svc.db.kysely.selectFrom('image_scrubs').selectAll().execute();
  assert.deepEqual(leases, []);

  // Another node's scrubber holds a live lease on an image: nobody else scrubs it, and it
  // cannot be restored (its data may be half removed); once the lease runs out, a run finishes it.
  const held = await upload(svc.url, tok, randomBytes(4096));
  assert.equal((await a('DELETE', `/v2/images/${held}`)).status, 204);
  await svc.db.kysely.insertInto('image_scrubs').values({ image_id: held, node: 'other-node', lease_until: Date.now() + 3_600_000, started_at: new Date().toISOString() }).execute();
  assert.equal((await diskhub(['scrub'], { env: scrubEnv(svc) })).code, 0);
  assert.ok(await exists(dataFile(svc, held)), 'a live lease of another node is respected');
  const refused = await diskhub(['scrub', '--restore', held], { env: scrubEnv(svc) });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /a scrubber has begun removing its data/);
  await svc.db.kysely.updateTable('image_scrubs').set({ lease_until: Date.now() - 1 }).where('image_id', '=', held).execute();
  assert.equal((await diskhub(['scrub'], { env: scrubEnv(svc) })).code, 0);
  assert.equal(await exists(dataFile(svc, held)), false);
  assert.equal((await statusOf(svc, held))!.status, 'deleted');
});
