/**
 * The Images v2 and Identity v3 HTTP APIs at the protocol level: status codes, error body
 * shapes and headers as Glance and Keystone answer them, and hostile requests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { api, addProjectUser, startTestService, token } from './helpers.js';

test('versions, healthcheck, metrics, request ids', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, null);
  const root = await a('GET', '/');
  assert.equal(root.status, 300);
  assert.equal(root.json.versions[0].status, 'CURRENT');
  assert.equal(root.json.versions[0].links[0].href, `${svc.url}/v2/`);
  assert.match(root.headers.get('x-openstack-request-id')!, /^req-[0-9a-f-]{36}$/);
  assert.equal((await a('GET', '/versions')).status, 200);
  const health = await a('GET', '/healthcheck');
  assert.equal(health.status, 200);
  assert.equal(health.text, 'OK');
  const metrics = await a('GET', '/metrics');
  assert.match(metrics.text, /diskhub_http_requests_total\{method="GET",route="\/healthcheck",status="200"\} 1/);
  const ident = await a('GET', '/identity/v3');
  assert.equal(ident.json.version.id, 'v3.14');
});

test('identity: the curl flow (token, then list images), validation, revocation, bad credentials', async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  const list = await a('GET', '/v2/images');
  assert.equal(list.status, 200);
  assert.deepEqual(list.json.images, []);
  assert.equal(list.json.schema, '/v2/schemas/images');

  const check = await a('GET', '/identity/v3/auth/tokens', { headers: { 'X-Subject-Token': tok } });
  assert.equal(check.status, 200);
  assert.equal(check.json.token.project.name, 'admin');
  assert.deepEqual(check.json.token.roles.map((r: any) => r.name).sort(), ['admin', 'member', 'reader']);
  const image = check.json.token.catalog.find((c: any) => c.type === 'image');
  assert.equal(image.endpoints.find((e: any) => e.interface === 'public').url, svc.url);

  const wrong = await api(svc.url, null)('POST', '/identity/v3/auth/tokens', { body: { auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { id: 'default' }, password: 'nope' } } } } } });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.json.error.code, 401);
  const garbage = await api(svc.url, null)('POST', '/identity/v3/auth/tokens', { raw: '{"auth":', type: 'application/json' });
  assert.equal(garbage.status, 400);
  assert.equal(garbage.json.error.code, 400);

  assert.equal((await api(svc.url, null)('GET', '/v2/images')).status, 401);
  assert.equal((await api(svc.url, 'dh1.forged.token')('GET', '/v2/images')).status, 401);
  const tampered = tok.slice(0, -3) + (tok.endsWith('AAA') ? 'BBB' : 'AAA');
  assert.equal((await api(svc.url, tampered)('GET', '/v2/images')).status, 401);

  const other = await token(svc.url);
  assert.equal((await a('DELETE', '/identity/v3/auth/tokens', { headers: { 'X-Subject-Token': other } })).status, 204);
  assert.equal((await api(svc.url, other)('GET', '/v2/images')).status, 401, 'a revoked token is refused');
  assert.equal((await a('GET', '/v2/images')).status, 200, 'the caller token still works');
});

test('images: create, errors in Glance shapes, JSON patch rules', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const created = await a('POST', '/v2/images', { body: { name: 'n', disk_format: 'raw', container_format: 'bare', foo: 'bar', tags: ['x', 'x', 'y'] } });
  assert.equal(created.status, 201);
  assert.equal(created.headers.get('location'), `${svc.url}/v2/images/${created.json.id}`);
  assert.equal(created.headers.get('openstack-image-import-methods'), 'glance-direct,web-download,copy-image');
  const img = created.json;
  assert.equal(img.status, 'queued');
  assert.equal(img.visibility, 'shared');
  assert.equal(img.foo, 'bar');
  assert.deepEqual(img.tags, ['x', 'y']);
  assert.equal(img.size, null);
  assert.equal(img.self, `/v2/images/${img.id}`);

  // Malformed JSON: 400 in webob's JSON shape when JSON is asked for, HTML otherwise; never a 500.
  const bad = await a('POST', '/v2/images', { raw: '{bad', type: 'application/json' });
  assert.equal(bad.status, 400);
  assert.deepEqual(Object.keys(bad.json).sort(), ['code', 'message', 'title']);
  assert.equal(bad.json.code, '400 Bad Request');
  assert.match(bad.json.message, /Malformed JSON/);
  const html = await a('POST', '/v2/images', { raw: '{bad', type: 'application/json', headers: { Accept: '*/*' } });
  assert.equal(html.status, 400);
  assert.match(html.headers.get('content-type')!, /text\/html/);
  assert.match(html.text, /<h1>400 Bad Request<\/h1>/);
  for (const body of ['[1]', '"x"', 'null', '123']) {
    assert.equal((await a('POST', '/v2/images', { raw: body, type: 'application/json' })).status, 400, body);
  }
  assert.equal((await a('POST', '/v2/images', { raw: '{}', type: 'text/plain' })).status, 415);
  assert.equal((await a('POST', '/v2/images', { body: { status: 'active' } })).status, 403);
  assert.equal((await a('POST', '/v2/images', { body: { deleted: 'x' } })).status, 403);
  assert.equal((await a('POST', '/v2/images', { body: { os_glance_x: 'x' } })).status, 403);
  assert.equal((await a('POST', '/v2/images', { body: { disk_format: 'floppy' } })).status, 400);
  assert.equal((await a('POST', '/v2/images', { body: { min_ram: 'lots' } })).status, 400);
  assert.equal((await a('POST', '/v2/images', { body: { foo: 5 } })).status, 400);
  assert.equal((await a('POST', '/v2/images', { body: { id: 'not-a-uuid' } })).status, 400);
  assert.equal((await a('POST', '/v2/images', { body: { id: img.id } })).status, 409);
  assert.equal((await a('GET', '/v2/images/nope')).status, 404);
  assert.equal((await a('DELETE', '/v2/images')).status, 405);

  const P = 'application/openstack-images-v2.1-json-patch';
  const patch = (ops: unknown, type = P) => a('PATCH', `/v2/images/${img.id}`, { body: ops, type });
  const wrongType = await patch([], 'application/json');
  assert.equal(wrongType.status, 415);
  assert.match(wrongType.headers.get('accept-patch')!, /v2\.1-json-patch/);
  assert.equal((await patch([{ op: 'replace', path: '/status', value: 'active' }])).status, 403);
  assert.equal((await patch([{ op: 'add', path: '/os_glance_import_task', value: 'x' }])).status, 403);
  assert.equal((await patch([{ op: 'remove', path: '/name' }])).status, 403);
  assert.equal((await patch([{ op: 'remove', path: '/nokey' }])).status, 409);
  assert.equal((await patch([{ op: 'replace', path: '/nokey', value: 'v' }])).status, 409);
  assert.equal((await patch([{ op: 'add', path: '/a/b', value: 'x' }])).status, 400);
  assert.equal((await patch([{ op: 'frob', path: '/name', value: 'x' }])).status, 400);
  assert.equal((await patch({ op: 'add' })).status, 400);
  assert.equal((await patch([{ op: 'replace', path: '/visibility', value: 'bogus' }])).status, 400);
  assert.equal((await a('PATCH', `/v2/images/${img.id}`, { raw: '[{', type: P })).status, 400);
  const ok = await patch([
    { op: 'replace', path: '/name', value: 'renamed' },
    { op: 'add', path: '/hw_disk_bus', value: 'virtio' },
    { op: 'remove', path: '/foo' },
    { op: 'add', path: '/tags', value: ['z'] },
    { op: 'replace', path: '/protected', value: true },
  ]);
  assert.equal(ok.status, 200);
  assert.equal(ok.json.name, 'renamed');
  assert.equal(ok.json.hw_disk_bus, 'virtio');
  assert.equal(ok.json.foo, undefined);
  assert.deepEqual(ok.json.tags, ['z']);
  // The v2.0 media type spells operations {"replace": "/path"}.
  const v20 = await patch([{ replace: '/name', value: 'old-style' }], 'application/openstack-images-v2.0-json-patch');
  assert.equal(v20.status, 200);
  assert.equal(v20.json.name, 'old-style');

  assert.equal((await a('DELETE', `/v2/images/${img.id}`)).status, 403, 'protected');
  await patch([{ op: 'replace', path: '/protected', value: false }]);
  assert.equal((await a('PUT', `/v2/images/${img.id}/tags/extra`)).status, 204);
  assert.deepEqual((await a('GET', `/v2/images/${img.id}`)).json.tags, ['extra', 'z']);
  assert.equal((await a('DELETE', `/v2/images/${img.id}/tags/none`)).status, 404);
  assert.equal((await a('DELETE', `/v2/images/${img.id}`)).status, 204);
  assert.equal((await a('GET', `/v2/images/${img.id}`)).status, 404);
});

test('image data: upload, checksums, download with Range, status rules, deactivate', async (t) => {
  const svc = await startTestService(t);
  const adminTok = await token(svc.url);
  const a = api(svc.url, adminTok);
  const img = (await a('POST', '/v2/images', { body: { name: 'd', disk_format: 'raw', container_format: 'bare', visibility: 'public' } })).json;
  const empty = await a('GET', `/v2/images/${img.id}/file`);
  assert.equal(empty.status, 204);
  assert.equal((await a('PUT', `/v2/images/${img.id}/file`, { raw: 'x', type: 'text/plain' })).status, 415);
  const data = randomBytes(70_000);
  assert.equal((await a('PUT', `/v2/images/${img.id}/file`, { raw: data })).status, 204);
  const shown = (await a('GET', `/v2/images/${img.id}`)).json;
  assert.equal(shown.status, 'active');
  assert.equal(shown.size, data.length);
  assert.equal(shown.virtual_size, data.length);
  assert.equal(shown.checksum, createHash('md5').update(data).digest('hex'));
  assert.equal(shown.os_hash_algo, 'sha512');
  assert.equal(shown.os_hash_value, createHash('sha512').update(data).digest('hex'));
  const again = await a('PUT', `/v2/images/${img.id}/file`, { raw: data });
  assert.equal(again.status, 409);
  assert.match(again.json.message, /from active to saving/);

  const r = await fetch(`${svc.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': adminTok } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-md5'), shown.checksum);
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(data));
  const part = await fetch(`${svc.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': adminTok, Range: 'bytes=100-199' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), `bytes 100-199/${data.length}`);
  assert.ok(Buffer.from(await part.arrayBuffer()).equals(data.subarray(100, 200)));
  const tail = await fetch(`${svc.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': adminTok, Range: 'bytes=-10' } });
  assert.ok(Buffer.from(await tail.arrayBuffer()).equals(data.subarray(data.length - 10)));
  const beyond = await a('GET', `/v2/images/${img.id}/file`, { headers: { Range: `bytes=${data.length}-` } });
  assert.equal(beyond.status, 416);

  // Deactivation (admin only): members of the public cannot download, admins can.
  const { projectId } = await addProjectUser(svc.url, adminTok, 'p2', 'u2', 'pw2');
  assert.ok(projectId);
  const user = api(svc.url, await token(svc.url, 'u2', 'pw2', 'p2'));
  assert.equal((await user('POST', `/v2/images/${img.id}/actions/deactivate`)).status, 403);
  assert.equal((await a('POST', `/v2/images/${img.id}/actions/deactivate`)).status, 204);
  assert.equal((await a('POST', `/v2/images/${img.id}/actions/deactivate`)).status, 204, 'idempotent');
  assert.equal((await a('GET', `/v2/images/${img.id}`)).json.status, 'deactivated');
  assert.equal((await user('GET', `/v2/images/${img.id}/file`)).status, 403);
  assert.equal((await a('GET', `/v2/images/${img.id}/file`)).status, 200);
  assert.equal((await a('POST', `/v2/images/${img.id}/actions/reactivate`)).status, 204);
  assert.equal((await user('GET', `/v2/images/${img.id}/file`)).status, 200);
  const queued = (await a('POST', '/v2/images', { body: { name: 'q' } })).json;
  const deact = await a('POST', `/v2/images/${queued.id}/actions/deactivate`);
  assert.equal(deact.status, 403);
  assert.match(deact.json.message, /Not allowed to deactivate image in status 'queued'/);
});

test('staging and glance-direct import', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const info = await a('GET', '/v2/info/import');
  assert.deepEqual(info.json['import-methods'].value, ['glance-direct', 'web-download', 'copy-image']);
  assert.equal((await a('GET', '/v2/info/stores')).json.stores[0].id, 'file');
  const img = (await a('POST', '/v2/images', { body: { name: 'i', disk_format: 'raw', container_format: 'bare' } })).json;
  assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 409, 'nothing staged');
  const data = randomBytes(50_000);
  assert.equal((await a('PUT', `/v2/images/${img.id}/stage`, { raw: data })).status, 204);
  assert.equal((await a('GET', `/v2/images/${img.id}`)).json.status, 'uploading');
  assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download' } } })).status, 409, 'web-download needs a queued image');
  assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 202);
  let status = '';
  for (let i = 0; i < 100 && status !== 'active'; i++) {
    status = (await a('GET', `/v2/images/${img.id}`)).json.status;
    if (status !== 'active') await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(status, 'active');
  const got = await fetch(`${svc.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': (await token(svc.url)) } });
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(data));
});

test('listing: filters, sorting, pagination with next links', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const ids: string[] = [];
  for (let i = 0; i < 7; i++) {
    const r = await a('POST', '/v2/images', { body: { name: `img-${i}`, disk_format: i % 2 ? 'qcow2' : 'raw', container_format: 'bare', tags: i < 3 ? ['low'] : [], flavor: i === 4 ? 'special' : 'plain' } });
    ids.push(r.json.id);
  }
  await a('PUT', `/v2/images/${ids[0]}/file`, { raw: randomBytes(1000) });
  const seen: string[] = [];
  let next: string | undefined = '/v2/images?limit=3&sort=name:asc';
  while (next) {
    const page: any = await a('GET', next);
    assert.equal(page.status, 200);
    seen.push(...page.json.images.map((i: any) => i.name));
    next = page.json.next;
  }
  assert.deepEqual(seen, ids.map((_, i) => `img-${i}`));
  const desc = await a('GET', '/v2/images?sort_key=name&sort_dir=desc');
  assert.equal(desc.json.images[0].name, 'img-6');
  assert.equal((await a('GET', '/v2/images?sort_key=bogus')).status, 400);
  assert.equal((await a('GET', '/v2/images?sort_dir=sideways')).status, 400);
  assert.equal((await a('GET', '/v2/images?limit=-1')).status, 400);
  assert.equal((await a('GET', '/v2/images?marker=nope')).status, 400);
  assert.equal((await a('GET', '/v2/images?created_at=gte:yesterday')).status, 400);
  const names = async (q: string) => (await a('GET', `/v2/images?${q}`)).json.images.map((i: any) => i.name).sort();
  assert.deepEqual(await names('disk_format=qcow2'), ['img-1', 'img-3', 'img-5']);
  assert.deepEqual(await names('name=in:img-2,img-5'), ['img-2', 'img-5']);
  assert.deepEqual(await names('tag=low'), ['img-0', 'img-1', 'img-2']);
  assert.deepEqual(await names('flavor=special'), ['img-4']);
  assert.deepEqual(await names('status=active'), ['img-0']);
  assert.deepEqual(await names('size_min=500'), ['img-0']);
  assert.deepEqual(await names('created_at=lt:2000-01-01T00:00:00Z'), []);
  assert.equal((await names('created_at=gte:2000-01-01T00:00:00Z')).length, 7);
});

test('hostile uploads: over the cap, lying about the format, disconnect halfway; nothing left behind', async (t) => {
  const svc = await startTestService(t, { DISKHUB_IMAGE_SIZE_CAP: String(100_000) });
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  const mk = async (disk_format = 'raw') => (await a('POST', '/v2/images', { body: { name: 'h', disk_format, container_format: 'bare' } })).json.id as string;

  const big = await mk();
  const over = await a('PUT', `/v2/images/${big}/file`, { raw: randomBytes(150_000) });
  assert.equal(over.status, 413);
  assert.equal((await a('GET', `/v2/images/${big}`)).json.status, 'queued');

  const liar = await mk('qcow2');
  const lie = await a('PUT', `/v2/images/${liar}/file`, { raw: randomBytes(20_000) });
  assert.equal(lie.status, 400);
  assert.match(lie.json.message, /format-mismatch: the data is a raw disk image, not the declared qcow2/);
  assert.equal((await a('GET', `/v2/images/${liar}`)).json.status, 'queued');

  // A client that sends half of what it announced and hangs up.
  const cut = await mk();
  await new Promise<void>((resolve) => {
    const u = new URL(`${svc.url}/v2/images/${cut}/file`);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { 'X-Auth-Token': tok, 'Content-Type': 'application/octet-stream', 'Content-Length': '80000' } });
    req.on('error', () => resolve());
    req.write(randomBytes(40_000), () => setTimeout(() => { req.destroy(); resolve(); }, 100));
  });
  let status = 'saving';
  for (let i = 0; i < 50 && status !== 'queued'; i++) {
    status = (await a('GET', `/v2/images/${cut}`)).json.status;
    if (status !== 'queued') await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(status, 'queued');
  assert.deepEqual(await readdir(join(svc.dataDir, 'images')), [], 'no partial data files');
  // Huge headers are refused by the HTTP layer, and the server stays healthy.
  const huge = await fetch(`${svc.url}/v2/images`, { headers: { 'X-Auth-Token': tok, 'X-Junk': 'x'.repeat(40_000) } }).then((r) => r.status).catch(() => 0);
  assert.ok(huge === 431 || huge === 400 || huge === 0, `huge header answered ${huge}`);
  assert.equal((await a('GET', '/healthcheck')).status, 200);
  // The same image still takes a good upload.
  assert.equal((await a('PUT', `/v2/images/${cut}/file`, { raw: randomBytes(1000) })).status, 204);
});

test('the dashboard files are served to browsers; API clients still get the API', async (t) => {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const web = await mkdtemp(join(tmpdir(), 'diskhub-web-'));
  await writeFile(join(web, 'index.html'), '<!doctype html><title>diskhub</title>');
  await writeFile(join(web, 'app.js'), 'console.log(1)');
  const svc = await startTestService(t, { DISKHUB_WEB_DIR: web });
  const get = (path: string, accept: string) => fetch(`${svc.url}${path}`, { headers: { Accept: accept } });
  const page = await get('/', 'text/html,application/xhtml+xml');
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>diskhub/);
  assert.equal((await get('/', 'application/json')).status, 300, 'version discovery unchanged');
  const js = await get('/app.js', '*/*');
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type')!, /javascript/);
  assert.equal((await get('/images/some-id', 'text/html')).status, 200, 'client-side routes get the app');
  assert.equal((await get('/missing.js', '*/*')).status, 404);
  assert.equal((await get('/%2e%2e/%2e%2e/etc/passwd', 'text/html')).status, 200, 'traversal falls back to the app, never the file');
  assert.doesNotMatch(await (await get('/%2e%2e/%2e%2e/etc/passwd', 'text/html')).text(), /root:/);
  assert.equal((await get('/v2/nothing', 'text/html')).status, 404);
});

test('metadata definitions: namespaces by resource type, properties with types and allowed values', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const all = await a('GET', '/v2/metadefs/namespaces');
  assert.equal(all.status, 200);
  assert.ok(all.json.namespaces.length >= 5);
  const forVolumes = await a('GET', '/v2/metadefs/namespaces?resource_types=OS::Cinder::Volume');
  assert.deepEqual(forVolumes.json.namespaces.map((n: any) => n.namespace), ['OS::OperatingSystem']);
  const ns = await a('GET', '/v2/metadefs/namespaces/OS::Compute::LibvirtImage');
  assert.ok(ns.json.properties.hw_disk_bus.enum.includes('virtio'));
  assert.equal((await a('GET', '/v2/metadefs/namespaces/nope')).status, 404);
  assert.equal((await a('GET', '/v2/schemas/metadefs/namespace')).json.name, 'namespace');
  assert.equal((await api(svc.url, null)('GET', '/v2/metadefs/namespaces')).status, 401);
});

test('project quotas: image count and storage; an upload over the quota is cut off with 413 and leaves nothing', async (t) => {
  const svc = await startTestService(t, { DISKHUB_PROJECT_IMAGE_QUOTA: '3', DISKHUB_PROJECT_STORAGE_QUOTA: '100000' });
  const a = api(svc.url, await token(svc.url));
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await a('POST', '/v2/images', { body: { name: `q${i}`, disk_format: 'raw', container_format: 'bare' } });
    assert.equal(r.status, 201);
    ids.push(r.json.id);
  }
  const fourth = await a('POST', '/v2/images', { body: { name: 'q3' } });
  assert.equal(fourth.status, 413);
  assert.match(fourth.json.message, /Maximum number of images/);
  assert.equal((await a('PUT', `/v2/images/${ids[0]}/file`, { raw: randomBytes(60_000) })).status, 204);
  const over = await a('PUT', `/v2/images/${ids[1]}/file`, { raw: randomBytes(60_000) });
  assert.equal(over.status, 413);
  assert.match(over.json.message, /exceeds the quota/);
  assert.equal((await a('GET', `/v2/images/${ids[1]}`)).json.status, 'queued');
  assert.deepEqual(await readdir(join(svc.dataDir, 'images')), [ids[0]], 'only the accepted upload is stored');
  assert.equal((await a('PUT', `/v2/images/${ids[1]}/stage`, { raw: randomBytes(60_000) })).status, 413, 'staging counts too');
  assert.equal((await a('PUT', `/v2/images/${ids[1]}/file`, { raw: randomBytes(30_000) })).status, 204, 'what fits is accepted');
  assert.equal((await a('DELETE', `/v2/images/${ids[0]}`)).status, 204);
  assert.equal((await a('POST', '/v2/images', { body: { name: 'after-delete' } })).status, 201, 'deleting frees quota');
});

test('external identity: tokens from another Keystone are validated there (project, roles, outage → 503)', async (t) => {
  // A diskhub with built-in identity plays the external Keystone; a second one trusts it.
  const keystone = await startTestService(t);
  const adminTok = await token(keystone.url);
  await addProjectUser(keystone.url, adminTok, 'service', 'glance', 'glance-pw', 'admin');
  const { projectId } = await addProjectUser(keystone.url, adminTok, 'team', 'alice', 'alice-pw');
  const images = await startTestService(t, {
    DISKHUB_KEYSTONE_URL: `${keystone.url}/identity/v3`, DISKHUB_KEYSTONE_USER: 'glance', DISKHUB_KEYSTONE_PASSWORD: 'glance-pw', DISKHUB_KEYSTONE_PROJECT: 'service',
  });
  assert.equal((await api(images.url, null)('GET', '/identity/v3')).status, 404, 'no built-in identity');
  const aliceTok = await token(keystone.url, 'alice', 'alice-pw', 'team');
  const alice = api(images.url, aliceTok);
  const created = await alice('POST', '/v2/images', { body: { name: 'from-external' } });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.json.owner, projectId);
  assert.equal((await alice('POST', '/v2/images', { body: { visibility: 'public' } })).status, 403, 'member, not admin');
  const denied = await api(images.url, 'dh1.bogus.token')('GET', '/v2/images');
  assert.equal(denied.status, 401);
  assert.equal(denied.headers.get('www-authenticate'), `Keystone uri="${keystone.url}/identity"`);
  await keystone.close();
  // A token not in the validation cache cannot be checked now.
  const other = await api(images.url, 'dh1.not.cached')('GET', '/v2/images');
  assert.equal(other.status, 503, 'Keystone down: unavailable, not unauthorized');
});
