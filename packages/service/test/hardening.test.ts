/**
 * What a hostile or careless client meets (issue 18's reproducers): the marker oracle, the
 * Host header, response headers, a full disk, and the smaller defects — each tried against
 * a real service as the client would.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, readdir, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk } from '@diskhub/testkit';
import { addProjectUser, api, startTestService, token } from './helpers.js';

/** A raw HTTP request with headers fetch() would not send as given (Host). */
function raw(url: string, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => { text += c; }).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('a private image of another project is no list marker (Glance: 400)', async (t) => {
  const svc = await startTestService(t);
  const adminTok = await token(svc.url);
  await addProjectUser(svc.url, adminTok, 'p1', 'u1', 'pw');
  await addProjectUser(svc.url, adminTok, 'p2', 'u2', 'pw');
  const a1 = api(svc.url, await token(svc.url, 'u1', 'pw', 'p1'));
  const a2 = api(svc.url, await token(svc.url, 'u2', 'pw', 'p2'));
  const secret = (await a2('POST', '/v2/images', { body: { name: 'secret', visibility: 'private' } })).json.id;
  const mine = (await a1('POST', '/v2/images', { body: { name: 'mine' } })).json.id;
  const probe = await a1('GET', `/v2/images?marker=${secret}`);
  assert.equal(probe.status, 400);
  assert.equal(probe.json.message, `No image found with ID ${secret}`, 'the same answer as for an id that does not exist');
  assert.equal((await a1('GET', '/v2/images?marker=00000000-0000-0000-0000-000000000000')).status, 400);
  assert.equal((await a1('GET', `/v2/images?marker=${mine}`)).status, 200);
  // The owner and an admin may page from it.
  assert.equal((await a2('GET', `/v2/images?marker=${secret}`)).status, 200);
  assert.equal((await api(svc.url, adminTok)('GET', `/v2/images?marker=${secret}`)).status, 200);
});

test("the client's Host header reaches no catalog, link or signed URL; nosniff, CSP, no source maps", async (t) => {
  const svc = await startTestService(t);
  const evil = { Host: 'evil.example:666', 'Content-Type': 'application/json', Accept: 'application/json' };
  const auth = JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { name: 'Default' }, password: 'admin-secret' } } }, scope: { project: { name: 'admin', domain: { name: 'Default' } } } } });
  const issued = await raw(svc.url, 'POST', '/identity/v3/auth/tokens', evil, auth);
  assert.equal(issued.status, 201);
  assert.doesNotMatch(issued.text, /evil\.example/);
  assert.match(issued.text, new RegExp(svc.url.replace(/[.:/]/g, '\\$&')), 'the catalog names the bound address');
  const tok = issued.headers['x-subject-token'] as string;
  const created = await raw(svc.url, 'POST', '/v2/images', { ...evil, 'X-Auth-Token': tok }, JSON.stringify({ name: 'h', disk_format: 'raw', container_format: 'bare' }));
  assert.equal(created.status, 201);
  assert.doesNotMatch(String(created.headers.location), /evil\.example/);
  const id = JSON.parse(created.text).id;
  const a = api(svc.url, tok);
  assert.equal((await a('PUT', `/v2/images/${id}/file`, { raw: Buffer.alloc(1024, 1) })).status, 204);
  const signed = await raw(svc.url, 'POST', `/v2/images/${id}/x-diskhub/download-url`, { ...evil, 'X-Auth-Token': tok });
  assert.equal(signed.status, 201);
  assert.ok(JSON.parse(signed.text).url.startsWith(`${svc.url}/v2/images/${id}/file?`), signed.text);
  const unauth = await raw(svc.url, 'GET', '/v2/images', evil);
  assert.doesNotMatch(String(unauth.headers['www-authenticate']), /evil\.example/);

  // API answers, errors included, are never sniffed.
  for (const r of [await a('GET', '/v2/images'), await a('GET', `/v2/images/${id}/file`), await a('GET', '/v2/images/nope')]) {
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  }
  // The dashboard may not be framed, loads only its own files, and keeps its source maps.
  const page = await fetch(`${svc.url}/`, { headers: { Accept: 'text/html' } });
  assert.equal(page.status, 200);
  const csp = page.headers.get('content-security-policy') ?? '';
  assert.match(csp, /frame-ancestors 'none'/);
  assert.match(csp, /script-src 'self'/);
  const html = await page.text();
  const js = /src="\/([^"]+\.js)"/.exec(html)![1]!;
  assert.equal((await fetch(`${svc.url}/${js}`)).status, 200);
  assert.equal((await fetch(`${svc.url}/${js}.map`)).status, 404);
});

test('Glance 25 details: empty image id, reserved properties, __proto__, name length in characters, multi-range, virtual_size filter, versions', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  assert.equal((await a('GET', '/v2/images/')).status, 404);
  assert.equal((await a('DELETE', '/v2/images/')).status, 404);
  assert.equal((await a('GET', '/v2/images')).status, 200);

  // A property named __proto__ is a property like any other.
  const p = await a('POST', '/v2/images', { raw: '{"name":"proto","__proto__":"x","polluted":"no"}', type: 'application/json' });
  assert.equal(p.status, 201);
  assert.equal(Object.getOwnPropertyDescriptor(p.json, '__proto__')?.value, 'x');
  const patched = await a('PATCH', `/v2/images/${p.json.id}`, { raw: '[{"op":"replace","path":"/__proto__","value":"y"}]', type: 'application/openstack-images-v2.1-json-patch' });
  assert.equal(patched.status, 200);
  assert.equal(Object.getOwnPropertyDescriptor(patched.json, '__proto__')?.value, 'y');

  // Reserved are location, deleted and deleted_at (Glance 25); owner_id is what Nova's snapshots carry.
  const nova = await a('POST', '/v2/images', { body: { name: 'snap', owner_id: 'p1', is_public: 'False', image_type: 'snapshot' } });
  assert.equal(nova.status, 201);
  assert.equal(nova.json.owner_id, 'p1');
  assert.equal(nova.json.is_public, 'False');
  for (const key of ['location', 'deleted', 'deleted_at']) assert.equal((await a('POST', '/v2/images', { body: { [key]: 'x' } })).status, 403, key);

  // 255 characters, whatever their UTF-16 length (each of these is two units).
  const emoji = '\u{1F600}';
  assert.equal((await a('POST', '/v2/images', { body: { name: emoji.repeat(255) } })).status, 201);
  assert.equal((await a('POST', '/v2/images', { body: { name: emoji.repeat(256) } })).status, 400);

  // Data for the range and filter checks.
  const img = (await a('POST', '/v2/images', { body: { name: 'r', disk_format: 'raw', container_format: 'bare' } })).json;
  const data = Buffer.from(Array.from({ length: 4096 }, (_, i) => i & 0xff));
  assert.equal((await a('PUT', `/v2/images/${img.id}/file`, { raw: data })).status, 204);
  const multi = await fetch(`${svc.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': (await token(svc.url)), Range: 'bytes=0-9,20-29' } });
  assert.equal(multi.status, 200, 'several ranges: the whole body (RFC 9110 lets a server ignore Range)');
  assert.deepEqual(Buffer.from(await multi.arrayBuffer()), data);
  const one = await a('GET', `/v2/images/${img.id}/file`, { headers: { Range: 'bytes=10-19' } });
  assert.equal(one.status, 206);
  assert.equal((await a('GET', `/v2/images/${img.id}/file`, { headers: { Range: 'bytes=9000-' } })).status, 416);

  const byVirtual = await a('GET', '/v2/images?virtual_size=4096');
  assert.deepEqual(byVirtual.json.images.map((i: any) => i.id), [img.id]);
  assert.deepEqual((await a('GET', '/v2/images?virtual_size=4097')).json.images, []);
  assert.equal((await a('GET', '/v2/images?virtual_size=big')).status, 400);

  // The versions Glance 25 lists with enabled_backends (multi-store) and no image cache.
  const versions = (await a('GET', '/versions')).json.versions.map((v: any) => v.id);
  assert.deepEqual(versions, ['v2.15', 'v2.13', 'v2.12', 'v2.11', 'v2.10', 'v2.9', 'v2.8', 'v2.7', 'v2.6', 'v2.5', 'v2.4', 'v2.3', 'v2.2', 'v2.1', 'v2.0']);
});

test('a failed import leaves os_glance_failed_import on the image', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const img = (await a('POST', '/v2/images', { body: { name: 'imp', disk_format: 'qcow2', container_format: 'bare' } })).json;
  // Staged data that is not the declared qcow2: the import's inspection refuses it.
  assert.equal((await a('PUT', `/v2/images/${img.id}/stage`, { raw: Buffer.alloc(65536, 7) })).status, 204);
  assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 202);
  let after: any;
  for (let i = 0; i < 100; i++) {
    after = (await a('GET', `/v2/images/${img.id}`)).json;
    if (after.status === 'queued') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(after.status, 'queued');
  assert.equal(after.os_glance_failed_import, 'file');
});

test('a full disk: an upload answers 413 and keeps nothing; a create answers a clear error, not 500', { skip: process.getuid?.() !== 0 && process.env.CI !== 'true' ? 'mounting a small tmpfs needs root' : undefined }, async (t) => {
  const mnt = await mkdtemp(join(tmpdir(), 'diskhub-full-disk-'));
  await runOk('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mnt]);
  const svc = await startTestService(t, { DISKHUB_DATA_DIR: join(mnt, 'data') });
  // (after hooks run in order: this one closes the service itself before unmounting)
  t.after(async () => { await svc.close(); await runOk('umount', ['-l', mnt]); await rm(mnt, { recursive: true, force: true }); });
  const a = api(svc.url, await token(svc.url));
  const img = (await a('POST', '/v2/images', { body: { name: 'big', disk_format: 'raw', container_format: 'bare' } })).json;
  const put = await a('PUT', `/v2/images/${img.id}/file`, { raw: Buffer.alloc(12 << 20, 1) });
  assert.equal(put.status, 413);
  assert.match(put.json.message, /Image storage media is full/);
  assert.equal((await a('GET', `/v2/images/${img.id}`)).json.status, 'queued');
  assert.deepEqual((await readdir(join(mnt, 'data', 'images'))).filter((f) => !f.startsWith('.')), []);
  // The upload's partial data is gone: the same image fits once it is small enough.
  assert.equal((await a('PUT', `/v2/images/${img.id}/file`, { raw: Buffer.alloc(1 << 20, 1) })).status, 204);

  // Now the database's disk: fill what is left, then create.
  const filler = join(mnt, 'filler');
  await writeFile(filler, Buffer.alloc(8 << 20)).catch(() => {});
  const before = (await a('GET', '/v2/images')).json.images.length;
  const created = await a('POST', '/v2/images', { body: { name: 'x'.repeat(200), description: 'y'.repeat(60000), disk_format: 'raw', container_format: 'bare' } });
  // SQLite aborts the transaction itself when the disk is full (503); a database that reports
  // it as such answers 507. Never a 500, never a half-written image.
  assert.ok(created.status === 507 || created.status === 503, `${created.status} ${created.text}`);
  assert.match(created.json.message, /out of disk space.*nothing was changed/);
  await rm(filler);
  assert.equal((await a('GET', '/v2/images')).json.images.length, before, 'nothing half-written');
  assert.equal((await a('POST', '/v2/images', { body: { name: 'after' } })).status, 201);
});
