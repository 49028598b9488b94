/** The x-diskhub/download-url extension: signed, short-lived, one image, no token needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { tempDir } from '@diskhub/testkit';
import { DownloadUrls, MAX_TTL_SECONDS, EXPIRES_PARAM, SIGNATURE_PARAM } from '../src/download-urls.js';
import { openDatabase } from '../src/db/connect.js';
import { addProjectUser, api, startTestService, token } from './helpers.js';

test('signed download URLs: the data without a token, nothing else', async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  const data = randomBytes(70_000);
  const img = await a('POST', '/v2/images', { body: { name: 'Disk one/β', disk_format: 'raw', container_format: 'bare', visibility: 'private' } });
  const other = await a('POST', '/v2/images', { body: { name: 'other', disk_format: 'raw', container_format: 'bare' } });
  assert.equal((await a('POST', `/v2/images/${img.json.id}/x-diskhub/download-url`)).status, 409, 'no data yet');
  assert.equal((await a('PUT', `/v2/images/${img.json.id}/file`, { raw: data })).status, 204);

  const r = await a('POST', `/v2/images/${img.json.id}/x-diskhub/download-url`);
  assert.equal(r.status, 201, r.text);
  const left = Date.parse(r.json.expires_at) - Date.now();
  assert.ok(left > 0 && left <= MAX_TTL_SECONDS * 1000 + 1000, `expires within ${MAX_TTL_SECONDS} s`);
  const url = new URL(r.json.url);
  assert.equal(url.origin, svc.url);

  const dl = await fetch(url);
  assert.equal(dl.status, 200);
  assert.equal(dl.headers.get('content-disposition'), 'attachment; filename="Disk one_.raw"');
  assert.deepEqual(Buffer.from(await dl.arrayBuffer()), data);
  const ranged = await fetch(url, { headers: { Range: 'bytes=10-19' } });
  assert.equal(ranged.status, 206);
  assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), data.subarray(10, 20));

  // Tampered, moved to another image, or stripped: refused.
  const tampered = new URL(url);
  tampered.searchParams.set(EXPIRES_PARAM, String(Number(url.searchParams.get(EXPIRES_PARAM)) + 1));
  assert.equal((await fetch(tampered)).status, 401);
  const moved = new URL(url.toString().replace(img.json.id, other.json.id));
  assert.equal((await fetch(moved)).status, 401);
  const bad = new URL(url);
  bad.searchParams.set(SIGNATURE_PARAM, 'x');
  assert.equal((await fetch(bad)).status, 401);

  // Others who cannot see the image cannot get a URL for it.
  await addProjectUser(svc.url, tok, 'outsiders', 'mallory', 'm-pw');
  const m = api(svc.url, await token(svc.url, 'mallory', 'm-pw', 'outsiders'));
  assert.equal((await m('POST', `/v2/images/${img.json.id}/x-diskhub/download-url`)).status, 404);
  assert.equal((await api(svc.url, null)('POST', `/v2/images/${img.json.id}/x-diskhub/download-url`)).status, 401);

  // A deactivated image is not served through a URL signed before.
  assert.equal((await a('POST', `/v2/images/${img.json.id}/actions/deactivate`)).status, 204);
  assert.equal((await fetch(url)).status, 403);
  assert.equal((await a('POST', `/v2/images/${img.json.id}/actions/reactivate`)).status, 204);
  // Deleted: gone.
  assert.equal((await a('DELETE', `/v2/images/${img.json.id}`)).status, 204);
  assert.equal((await fetch(url)).status, 404);
});

test('signed download URLs expire, and the key is shared through the database', async (t) => {
  const dir = await tempDir(t);
  const db = await openDatabase(`sqlite:${dir}/k.sqlite`, dir);
  t.after(() => db.close());
  const one = await DownloadUrls.open(db);
  const two = await DownloadUrls.open(db);
  const now = Date.now();
  const { query } = one.sign('image-1', 60, now);
  const params = new URLSearchParams(query);
  assert.equal(two.verify('image-1', params, now), true, 'another node verifies it');
  assert.equal(two.verify('image-1', params, now + 59_000), true);
  assert.equal(two.verify('image-1', params, now + 61_000), false, 'expired');
  assert.equal(two.verify('image-2', params, now), false);
  // An expiry further ahead than allowed is refused even with a valid signature.
  const far = one.sign('image-1', 10 * MAX_TTL_SECONDS, now - 3600_000);
  assert.equal(one.verify('image-1', new URLSearchParams(far.query), now - 3600_000), true);
  assert.equal(one.verify('image-1', new URLSearchParams(far.query), now), false);
});
