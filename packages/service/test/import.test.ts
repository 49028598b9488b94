/**
 * Image import as tasks: glance-direct and web-download run as api_image_import tasks (the
 * tasks API, the image's tasks, the os_glance_* properties), web-download's URL filtering and
 * address checks (every rule, redirects included), the size cap while streaming, a stalled
 * server, the decompression and metadata-injection plugins, /v2/info/import and /v2/info/usage.
 * The web server is a local one on 127.0.0.1 the test starts; the service is configured to
 * allow that one address (loopback is refused otherwise, which one test checks).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, run, runOk, tempDir } from '@diskhub/testkit';
import { addProjectUser, api, osEnv, startTestService, token, type Api } from './helpers.js';
import { assertStored, until } from './helpers.js';

interface WebServer { url: string; port: number; hits: string[] }

/** A local web server: /data/N (N bytes, seeded), /raw (the bytes given), redirects, a stall, an endless body. */
async function webServer(t: { after(fn: () => unknown): void }, files: Record<string, Buffer> = {}): Promise<WebServer> {
  const hits: string[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server: Server = createServer((req, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    hits.push(url.pathname);
    const file = files[url.pathname];
    if (file) { res.writeHead(200, { 'Content-Length': String(file.length) }); res.end(file); return; }
    if (url.pathname === '/redirect') { res.writeHead(302, { Location: url.searchParams.get('to')! }); res.end(); return; }
    if (url.pathname.startsWith('/loop/')) {
      const n = Number(url.pathname.slice(6));
      res.writeHead(301, { Location: `/loop/${n + 1}` }); res.end(); return;
    }
    if (url.pathname === '/stall') { res.writeHead(200, { 'Content-Length': '100000' }); res.write(Buffer.alloc(1000, 1)); return; }
    if (url.pathname === '/endless') {
      // No Content-Length: only the size cap stops it.
      res.writeHead(200);
      const chunk = Buffer.alloc(65536, 3);
      const pump = () => { while (res.write(chunk)); };
      res.on('drain', pump);
      pump();
      return;
    }
    res.writeHead(404); res.end('no');
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });
  const port = (server.address() as import('node:net').AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, port, hits };
}

/** The image's one import task once it has ended. */
async function importEnded(a: Api, imageId: string): Promise<any> {
  const tasks = await until(`the import task of ${imageId}`, async () => (await a('GET', `/v2/images/${imageId}/tasks`)).json.tasks,
    (ts: any[]) => ts.length > 0 && ts.every((x) => x.status === 'success' || x.status === 'failure'));
  assert.equal(tasks.length, 1);
  return tasks[0];
}

const newImage = async (a: Api, extra: Record<string, unknown> = {}) =>
  (await a('POST', '/v2/images', { body: { name: 'imp', disk_format: 'raw', container_format: 'bare', ...extra } })).json;

const webImport = (a: Api, id: string, uri: string) => a('POST', `/v2/images/${id}/import`, { body: { method: { name: 'web-download', uri } } });

const serviceFor = (t: Parameters<typeof startTestService>[0], web: WebServer, env: Record<string, string> = {}) => startTestService(t, {
  DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port),
  DISKHUB_SHUTDOWN_GRACE: '1', DISKHUB_TASK_POLL_SECONDS: '1', ...env,
});

test('glance-direct import is a task: tasks API, image tasks, os_glance_* properties, policies', async (t) => {
  const web = await webServer(t);
  const svc = await serviceFor(t, web);
  const admin = await token(svc.url);
  const a = api(svc.url, admin);
  const img = await newImage(a);
  const data = randomBytes(300_000);
  assert.equal((await a('PUT', `/v2/images/${img.id}/stage`, { raw: data })).status, 204);
  const r = await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'glance-direct' } } });
  assert.equal(r.status, 202);
  assert.equal(r.headers.get('openstack-image-import-methods'), 'glance-direct,web-download,copy-image');
  const task = await importEnded(a, img.id);
  assert.equal(task.status, 'success', task.message);
  assert.equal(task.type, 'api_image_import');
  assert.equal(task.image_id, img.id);
  assert.deepEqual(task.result, { image_id: img.id });
  assert.deepEqual(task.input, { image_id: img.id, import_req: { method: { name: 'glance-direct' } }, backend: ['file'] });
  assert.equal(task.deleted, false);
  assert.match(task.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$/);
  assert.match(task.request_id, /^req-/);
  const done = (await a('GET', `/v2/images/${img.id}`)).json;
  assert.equal(done.status, 'active');
  assert.equal(done.checksum, createHash('md5').update(data).digest('hex'));
  assert.equal(done.os_glance_import_task, undefined, 'the import lock is dropped at the end');
  assert.equal(done.os_glance_importing_to_stores, '');

  // The tasks API (admin by default: tasks_api_access is role:admin in Glance 25).
  const shown = await a('GET', `/v2/tasks/${task.id}`);
  assert.equal(shown.status, 200);
  assert.deepEqual(Object.keys(shown.json), ['id', 'input', 'type', 'status', 'owner', 'message', 'result', 'created_at', 'updated_at', 'self', 'schema', 'image_id', 'request_id', 'user_id', 'expires_at']);
  assert.match(shown.json.expires_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const list = await a('GET', '/v2/tasks?status=success&sort_dir=asc');
  assert.equal(list.status, 200);
  assert.deepEqual(list.json.tasks.map((x: any) => x.id), [task.id]);
  assert.equal(list.json.tasks[0].input, undefined, 'the list shows task stubs');
  assert.equal(list.json.first, '/v2/tasks?status=success&sort_dir=asc');
  assert.equal((await a('GET', '/v2/tasks?status=nope')).status, 400);
  assert.equal((await a('GET', '/v2/tasks?sort_dir=up')).status, 400);
  assert.equal((await a('GET', '/v2/tasks?marker=xyz')).status, 400);
  assert.equal((await a('GET', '/v2/tasks/00000000-0000-0000-0000-000000000000')).status, 404);
  assert.equal((await a('DELETE', `/v2/tasks/${task.id}`)).status, 405);
  const schema = (await a('GET', '/v2/schemas/task')).json;
  assert.equal(schema.name, 'task');
  assert.deepEqual(schema.properties.type.enum, ['import', 'api_image_import']);
  assert.equal((await a('GET', '/v2/schemas/tasks')).json.properties.tasks.items.properties.input, undefined);
  // The deprecated POST /v2/tasks: admin only; recorded, and failed with the reason.
  const legacy = await a('POST', '/v2/tasks', { body: { type: 'import', input: { import_from: 'http://example.com/x', import_from_format: 'raw' } } });
  assert.equal(legacy.status, 201);
  assert.equal(legacy.json.status, 'failure');
  assert.equal((await a('POST', '/v2/tasks', { body: { type: 'nope', input: {} } })).status, 400);

  // A member of another project: no tasks API, and the image's tasks only for images it sees.
  await addProjectUser(svc.url, admin, 'p2', 'u2', 'pw2');
  const b = api(svc.url, await token(svc.url, 'u2', 'pw2', 'p2'));
  assert.equal((await b('GET', '/v2/tasks')).status, 403);
  assert.equal((await b('GET', `/v2/tasks/${task.id}`)).status, 403);
  assert.equal((await b('POST', '/v2/tasks', { body: { type: 'import', input: {} } })).status, 403);
  assert.equal((await b('GET', `/v2/images/${img.id}/tasks`)).status, 404);
  const own = await newImage(b);
  assert.equal((await b('PUT', `/v2/images/${own.id}/stage`, { raw: data })).status, 204);
  assert.equal((await b('POST', `/v2/images/${own.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 202);
  assert.equal((await importEnded(b, own.id)).status, 'success');
  assert.equal((await a('POST', `/v2/images/${own.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 409, 'active: no second import');
});

test('web-download streams the URL into the store; the import checks of Glance', async (t) => {
  const data = randomBytes(2_000_000);
  const web = await webServer(t, { '/disk.raw': data });
  const svc = await serviceFor(t, web);
  const a = api(svc.url, await token(svc.url));
  const img = await newImage(a);
  assert.equal((await webImport(a, img.id, `${web.url}/disk.raw`)).status, 202);
  const importing = (await a('GET', `/v2/images/${img.id}`)).json;
  assert.ok(['importing', 'active'].includes(importing.status), importing.status);
  const task = await importEnded(a, img.id);
  assert.equal(task.status, 'success', task.message);
  const done = await assertStored(svc.url, img.id, data);
  assert.equal(done.os_glance_failed_import, '', 'Glance keeps the key, empty');

  // Glance's request checks.
  const q = await newImage(a);
  assert.match((await a('POST', `/v2/images/${q.id}/import`, { body: {} })).json.message, /requires a 'method' field/);
  assert.match((await a('POST', `/v2/images/${q.id}/import`, { body: { method: {} } })).json.message, /requires a 'name' field/);
  assert.match((await a('POST', `/v2/images/${q.id}/import`, { body: { method: { name: 'glance-download' } } })).json.message, /Unknown import method name 'glance-download'/);
  assert.match((await a('POST', `/v2/images/${q.id}/import`, { body: { method: { name: 'copy-image' } } })).json.message, /Only images with status active can be targeted for copying/);
  assert.equal((await a('POST', `/v2/images/${q.id}/import`, { body: { method: { name: 'glance-direct' } } })).status, 409);
  const elsewhere = await a('POST', `/v2/images/${q.id}/import`, { body: { method: { name: 'web-download', uri: `${web.url}/disk.raw` }, stores: ['elsewhere'] } });
  assert.equal(elsewhere.status, 409);
  assert.equal(elsewhere.json.message, 'Store for identifier elsewhere not found');
  assert.match((await a('POST', `/v2/images/${q.id}/import`, { body: { method: { name: 'web-download', uri: `${web.url}/disk.raw` }, all_stores: 'yes' } })).json.message, /'all_stores' must be boolean value only/);
  assert.equal((await webImport(a, img.id, `${web.url}/disk.raw`)).status, 409, 'active image');
  const noFormat = (await a('POST', '/v2/images', { body: { name: 'nf' } })).json;
  assert.match((await webImport(a, noFormat.id, `${web.url}/disk.raw`)).json.message, /'container_format' needs to be set before import/);
});

test('web-download: Glance import filtering, every rule, answered 400 before any task', async (t) => {
  const web = await webServer(t);
  const svc = await serviceFor(t, web, {
    DISKHUB_IMPORT_DISALLOWED_HOSTS: 'bad.example', DISKHUB_IMPORT_DISALLOWED_SCHEMES: 'ftp', DISKHUB_IMPORT_DISALLOWED_PORTS: '8080',
  });
  const a = api(svc.url, await token(svc.url));
  const img = await newImage(a);
  const refused = async (uri: string) => {
    const r = await webImport(a, img.id, uri);
    assert.equal(r.status, 400, uri);
    assert.equal(r.json.message ?? r.text, `URI for web-download does not pass filtering: ${uri}`);
  };
  await refused('ftp://127.0.0.1/x');                     // scheme not in allowed_schemes
  await refused('file:///etc/passwd');                    // no host, and not an allowed scheme
  await refused(`http://127.0.0.1:${web.port + 1}/x`);   // port not in allowed_ports
  await refused('http:///x');                             // no host
  await refused('not a url');
  const noUri = await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download' } } });
  assert.equal(noUri.json.message, 'URI for web-download does not pass filtering: None');
  assert.equal((await a('GET', `/v2/images/${img.id}`)).json.status, 'queued');
  assert.equal((await a('GET', `/v2/images/${img.id}/tasks`)).json.tasks.length, 0);
});

test('web-download: deny lists apply when no allow list is set; an allow list of hosts', async (t) => {
  const web = await webServer(t);
  // No allowed schemes or ports: the deny lists are what counts (Glance ignores a deny list when its allow list is set).
  const svc = await startTestService(t, {
    DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_SHUTDOWN_GRACE: '1', DISKHUB_CONFIG: await configFile(t, {
      importAllowedSchemes: '', importDisallowedSchemes: 'https', importAllowedPorts: '', importDisallowedPorts: `${web.port}`,
      importAllowedHosts: 'localhost,127.0.0.1', importDisallowedHosts: '127.0.0.1',
    }),
  });
  const a = api(svc.url, await token(svc.url));
  const img = await newImage(a);
  const msg = async (uri: string) => (await webImport(a, img.id, uri)).json?.message;
  assert.match(await msg(`https://127.0.0.1:1/x`), /does not pass filtering/, 'disallowed scheme');
  assert.match(await msg(`http://127.0.0.1:${web.port}/x`), /does not pass filtering/, 'disallowed port');
  assert.match(await msg(`http://10.1.2.3:1/x`), /does not pass filtering/, 'host not in allowed_hosts');
  // 127.0.0.1 is in both host lists: the allow list wins. The port is not spelled: not checked.
  const ok = await webImport(a, img.id, 'http://127.0.0.1/nothing-listens-here');
  assert.equal(ok.status, 202);
  const task = await importEnded(a, img.id);
  assert.equal(task.status, 'failure');
});

async function configFile(t: { after(fn: () => unknown): void }, settings: Record<string, unknown>): Promise<string> {
  const path = `${await tempDir(t as never)}/config.json`;
  await writeFile(path, JSON.stringify(settings));
  return path;
}

test('web-download: loopback, private and link-local addresses refused unless allowed; redirects checked and limited', async (t) => {
  const data = randomBytes(10_000);
  const web = await webServer(t, { '/d': data });
  // This service allows no special network: the test server on loopback is out of reach.
  const svc = await startTestService(t, { DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port), DISKHUB_SHUTDOWN_GRACE: '1', DISKHUB_WEB_DOWNLOAD_MAX_REDIRECTS: '3' });
  const a = api(svc.url, await token(svc.url));
  const fails = async (uri: string, message: RegExp) => {
    const img = await newImage(a);
    assert.equal((await webImport(a, img.id, uri)).status, 202, uri);
    const task = await importEnded(a, img.id);
    assert.equal(task.status, 'failure', uri);
    assert.match(task.message, message, uri);
    const after = (await a('GET', `/v2/images/${img.id}`)).json;
    assert.equal(after.status, 'queued', 'a failed import leaves the image queued');
    assert.equal(after.os_glance_failed_import, 'file');
    assert.equal(after.os_glance_import_task, undefined);
  };
  await fails(`${web.url}/d`, /127\.0\.0\.1, a loopback address/);
  await fails(`http://localhost:${web.port}/d`, /a loopback address/);   // through DNS (/etc/hosts)
  await fails(`http://[::1]:${web.port}/d`, /::1, a loopback address/);
  await fails(`http://[::ffff:127.0.0.1]:${web.port}/d`, /loopback/);      // IPv4-mapped
  await fails(`http://10.0.0.1:${web.port}/d`, /10\.0\.0\.1, a private address/);
  await fails(`http://192.168.1.1:${web.port}/d`, /private address/);
  await fails(`http://169.254.169.254:${web.port}/d`, /link-local address/);   // the metadata service
  await fails(`http://0.0.0.0:${web.port}/d`, /unspecified address/);
  assert.equal(web.hits.length, 0, 'nothing reached the server');

  // Now a service that allows only 127.0.0.1: a redirect to another loopback address, or past the limit, fails.
  const svc2 = await serviceFor(t, web, { DISKHUB_WEB_DOWNLOAD_MAX_REDIRECTS: '3' });
  const b = api(svc2.url, await token(svc2.url));
  const fails2 = async (uri: string, message: RegExp) => {
    const img = await newImage(b);
    assert.equal((await webImport(b, img.id, uri)).status, 202);
    const task = await importEnded(b, img.id);
    assert.equal(task.status, 'failure');
    assert.match(task.message, message);
  };
  await fails2(`${web.url}/redirect?to=${encodeURIComponent(`http://127.0.0.2:${web.port}/d`)}`, /127\.0\.0\.2, a loopback address/);
  await fails2(`${web.url}/redirect?to=${encodeURIComponent(`http://127.0.0.1:${web.port + 1}/d`)}`, /does not pass filtering/);
  await fails2(`${web.url}/redirect?to=${encodeURIComponent('ftp://127.0.0.1/d')}`, /does not pass filtering/);
  await fails2(`${web.url}/loop/0`, /more than 3 redirects/);
  await fails2(`${web.url}/missing`, /HTTP Error 404/);
  // A redirect within what is allowed is followed.
  const img = await newImage(b);
  assert.equal((await webImport(b, img.id, `${web.url}/redirect?to=/d`)).status, 202);
  assert.equal((await importEnded(b, img.id)).status, 'success');
  assert.equal((await b('GET', `/v2/images/${img.id}`)).json.checksum, createHash('md5').update(data).digest('hex'));
});

test('web-download: the size cap stops an endless body; a stalled server times out', async (t) => {
  const web = await webServer(t, { '/big': randomBytes(300_000) });
  const svc = await serviceFor(t, web, { DISKHUB_IMAGE_SIZE_CAP: '200000', DISKHUB_WEB_DOWNLOAD_TIMEOUT: '1' });
  const a = api(svc.url, await token(svc.url));
  for (const [path, message] of [['/endless', /size cap is 200000 bytes/], ['/big', /size cap is 200000 bytes/], ['/stall', /timed out/]] as const) {
    const img = await newImage(a);
    assert.equal((await webImport(a, img.id, `${web.url}${path}`)).status, 202);
    const task = await importEnded(a, img.id);
    assert.equal(task.status, 'failure', path);
    assert.match(task.message, message, path);
    const after = (await a('GET', `/v2/images/${img.id}`)).json;
    assert.equal(after.status, 'queued');
    assert.equal(after.size, null);
  }
});

test('plugins: image_decompression (gzip, xz, zstd, zip; a bomb stops at the cap), inject_image_metadata', async (t) => {
  const data = randomBytes(500_000);
  const xz = spawnSync('xz', ['-c'], { input: data }).stdout;
  const zst = spawnSync('zstd', ['-c', '-q'], { input: data }).stdout;
  const bomb = gzipSync(Buffer.alloc(50 << 20));
  const corrupt = Buffer.from(xz);
  corrupt.writeUInt32BE(0xdeadbeef, Math.floor(corrupt.length / 2));
  // Zip archives written by Python's zipfile (deflated, stored, two files, a damaged one).
  const zips = JSON.parse(spawnSync('python3', ['-c', `
import io, json, sys, zipfile, base64
data = sys.stdin.buffer.read()
def z(method, names):
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w', method) as f:
        for n in names: f.writestr(n, data)
    return b.getvalue()
bad = bytearray(z(zipfile.ZIP_STORED, ['disk.raw'])); bad[200] ^= 0xff
print(json.dumps({k: base64.b64encode(v).decode() for k, v in {'deflated': z(zipfile.ZIP_DEFLATED, ['disk.raw']), 'stored': z(zipfile.ZIP_STORED, ['disk.raw']), 'two': z(zipfile.ZIP_DEFLATED, ['a', 'b']), 'bad': bytes(bad)}.items()}))
`], { input: data, maxBuffer: 16 << 20 }).stdout.toString()) as Record<string, string>;
  const zip = (k: string) => Buffer.from(zips[k]!, 'base64');
  const web = await webServer(t, {
    '/d.gz': gzipSync(data), '/d.xz': xz, '/d.zst': zst, '/bomb.gz': bomb, '/bad.xz': corrupt, '/plain': data,
    '/d.zip': zip('deflated'), '/stored.zip': zip('stored'), '/two.zip': zip('two'), '/bad.zip': zip('bad'),
  });
  const svc = await serviceFor(t, web, {
    DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_decompression,inject_image_metadata', DISKHUB_IMAGE_SIZE_CAP: String(10 << 20),
    DISKHUB_INJECT_METADATA_PROPERTIES: 'hw_vif_model:virtio,os_source:web', DISKHUB_INJECT_IGNORE_USER_ROLES: 'nobody',
  });
  const a = api(svc.url, await token(svc.url));
  const md5 = createHash('md5').update(data).digest('hex');
  for (const path of ['/d.gz', '/d.xz', '/d.zst', '/d.zip', '/stored.zip', '/plain']) {
    const img = await newImage(a);
    assert.equal((await webImport(a, img.id, `${web.url}${path}`)).status, 202);
    const task = await importEnded(a, img.id);
    assert.equal(task.status, 'success', `${path}: ${task.message}`);
    const done = (await a('GET', `/v2/images/${img.id}`)).json;
    assert.equal(done.checksum, md5, path);
    assert.equal(done.size, data.length);
    assert.equal(done.hw_vif_model, 'virtio');
    assert.equal(done.os_source, 'web');
  }
  for (const [path, message] of [['/bomb.gz', /size cap/], ['/bad.xz', /decompression failed: xz/], ['/two.zip', /Archive contains more than one file/], ['/bad.zip', /does not match its recorded CRC-32/]] as const) {
    const img = await newImage(a);
    assert.equal((await webImport(a, img.id, `${web.url}${path}`)).status, 202);
    const task = await importEnded(a, img.id);
    assert.equal(task.status, 'failure', path);
    assert.match(task.message, message);
    assert.equal((await a('GET', `/v2/images/${img.id}`)).json.hw_vif_model, undefined, 'nothing injected into a failed import');
  }
  // container_format compressed: stored as it came.
  const kept = await newImage(a, { container_format: 'compressed' });
  assert.equal((await webImport(a, kept.id, `${web.url}/d.zst`)).status, 202);
  assert.equal((await importEnded(a, kept.id)).status, 'success');
  assert.equal((await a('GET', `/v2/images/${kept.id}`)).json.size, zst.length);
});

test('inject_image_metadata skips a requester with an ignored role (admin by default)', async (t) => {
  const data = randomBytes(1000);
  const web = await webServer(t, { '/d': data });
  const svc = await serviceFor(t, web, { DISKHUB_IMAGE_IMPORT_PLUGINS: 'inject_image_metadata', DISKHUB_INJECT_METADATA_PROPERTIES: 'os_source:web' });
  const admin = await token(svc.url);
  const a = api(svc.url, admin);
  const img = await newImage(a);
  await webImport(a, img.id, `${web.url}/d`);
  assert.equal((await importEnded(a, img.id)).status, 'success');
  assert.equal((await a('GET', `/v2/images/${img.id}`)).json.os_source, undefined, 'admin is in ignore_user_roles');
  await addProjectUser(svc.url, admin, 'p3', 'u3', 'pw3');
  const b = api(svc.url, await token(svc.url, 'u3', 'pw3', 'p3'));
  const mine = await newImage(b);
  await webImport(b, mine.id, `${web.url}/d`);
  assert.equal((await importEnded(b, mine.id)).status, 'success');
  assert.equal((await b('GET', `/v2/images/${mine.id}`)).json.os_source, 'web');
});

test('/v2/info/import and /v2/info/usage', async (t) => {
  const web = await webServer(t);
  const svc = await serviceFor(t, web, { DISKHUB_PROJECT_IMAGE_QUOTA: '10', DISKHUB_ENABLED_IMPORT_METHODS: 'web-download' });
  const a = api(svc.url, await token(svc.url));
  assert.deepEqual((await a('GET', '/v2/info/import')).json, { 'import-methods': { description: 'Import methods available.', type: 'array', value: ['web-download'] } });
  const img = await newImage(a);
  await a('PUT', `/v2/images/${img.id}/file`, { raw: randomBytes(3 << 20) });
  const staged = await newImage(a);
  await a('PUT', `/v2/images/${staged.id}/stage`, { raw: randomBytes(2 << 20) });
  assert.match((await a('POST', `/v2/images/${staged.id}/import`, { body: { method: { name: 'glance-direct' } } })).json.message, /Unknown import method name 'glance-direct'/);
  const usage = (await a('GET', '/v2/info/usage')).json.usage;
  assert.deepEqual(usage, {
    image_size_total: { usage: 3, limit: -1 },
    image_stage_total: { usage: 2, limit: -1 },
    image_count_total: { usage: 2, limit: 10 },
    image_count_uploading: { usage: 1, limit: -1 },
  });
});

test('plugin image_conversion: raw to qcow2 and qcow2 to raw with the engine, checked by qemu-img; an unsafe source refused before converting', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const raw = join(dir, 'src.raw');
  await qemuImg('create', '-f', 'raw', raw, '16M');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x11 12M 64k', raw]);
  const qcow = join(dir, 'src.qcow2');
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, qcow);
  const overlay = join(dir, 'overlay.qcow2');
  await qemuImg('create', '-f', 'qcow2', '-b', qcow, '-F', 'qcow2', overlay);
  const web = await webServer(t, { '/src.raw': await readFile(raw), '/src.qcow2': await readFile(qcow), '/overlay.qcow2': await readFile(overlay) });
  for (const [output, path, declared] of [['qcow2', '/src.raw', 'raw'], ['raw', '/src.qcow2', 'qcow2'], ['qcow2', '/src.qcow2', 'qcow2']] as const) {
    const svc = await serviceFor(t, web, { DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_conversion', DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: output });
    const a = api(svc.url, await token(svc.url));
    const img = await newImage(a, { disk_format: declared, container_format: 'bare' });
    assert.equal((await webImport(a, img.id, `${web.url}${path}`)).status, 202);
    const task = await importEnded(a, img.id);
    assert.equal(task.status, 'success', `${path} → ${output}: ${task.message}`);
    const done = (await a('GET', `/v2/images/${img.id}`)).json;
    assert.equal(done.disk_format, output);
    assert.equal(done.container_format, 'bare');
    assert.equal(done.virtual_size, 16 << 20);
    const stored = join(dir, `stored-${output}-${path.slice(1)}`);
    const got = await fetch(`${svc.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': await token(svc.url) } });
    const bytes = Buffer.from(await got.arrayBuffer());
    await writeFile(stored, bytes);
    assert.equal(done.checksum, createHash('md5').update(bytes).digest('hex'));
    if (output === 'qcow2') await qemuImg('check', '-f', 'qcow2', stored);
    // The stored image reads back as the source, as qemu-img sees both.
    await qemuImg('compare', '-f', 'raw', '-F', output, raw, stored);
  }
  // A qcow2 with a backing file: refused by the inspector before any conversion; formats as they were.
  const svc = await serviceFor(t, web, { DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_conversion', DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: 'raw' });
  const a = api(svc.url, await token(svc.url));
  const img = await newImage(a, { disk_format: 'qcow2' });
  assert.equal((await webImport(a, img.id, `${web.url}/overlay.qcow2`)).status, 202);
  const task = await importEnded(a, img.id);
  assert.equal(task.status, 'failure');
  assert.match(task.message, /backing/);
  const after = (await a('GET', `/v2/images/${img.id}`)).json;
  assert.equal(after.status, 'queued');
  assert.equal(after.disk_format, 'qcow2');
  assert.deepEqual((await readdir(join(svc.dataDir, 'staging'))).filter((f) => f.includes('convert')), [], 'no temporary file left');
  // A conversion file a crash left behind (its image no longer importing) is removed when a node starts.
  await writeFile(join(svc.dataDir, 'staging', `${img.id}.convert-source`), 'left over');
  await startTestService(t, { DISKHUB_DATA_DIR: svc.dataDir, DISKHUB_NODE_ID: 'second-node' });
  assert.deepEqual((await readdir(join(svc.dataDir, 'staging'))).filter((f) => f.includes('convert')), []);
});

test('copy-image: an active image copied to another store (admin), as Glance checks it; the copy is a new location', async (t) => {
  const web = await webServer(t);
  const dirs = [await tempDir(t), await tempDir(t)];
  const svc = await serviceFor(t, web, { DISKHUB_STORES: `fast:file:${dirs[0]},cheap:file:${dirs[1]}`, DISKHUB_ENABLED_IMPORT_METHODS: 'glance-direct,web-download,copy-image' });
  const admin = await token(svc.url);
  const a = api(svc.url, admin);
  const img = await newImage(a);
  const data = randomBytes(700_000);
  assert.equal((await a('PUT', `/v2/images/${img.id}/file`, { raw: data })).status, 204);
  assert.equal((await a('GET', `/v2/images/${img.id}`)).json.stores, 'fast');
  const copy = (body: Record<string, unknown>, as = a) => as('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'copy-image' }, ...body } });
  assert.equal((await copy({ stores: ['fast'] })).json.message, "Image is already present at store 'fast'");
  assert.equal((await copy({ stores: ['nowhere'] })).status, 409);
  await addProjectUser(svc.url, admin, 'p4', 'u4', 'pw4');
  const b = api(svc.url, await token(svc.url, 'u4', 'pw4', 'p4'));
  // copy_image is admin-only in Glance 25, even for the image's owner.
  const own = await newImage(b);
  assert.equal((await b('PUT', `/v2/images/${own.id}/file`, { raw: data })).status, 204);
  const denied = await b('POST', `/v2/images/${own.id}/import`, { body: { method: { name: 'copy-image' }, stores: ['cheap'] } });
  assert.equal(denied.status, 403);
  assert.match(denied.json.message, /copy_image/);
  const queued = await newImage(a);
  assert.equal((await a('POST', `/v2/images/${queued.id}/import`, { body: { method: { name: 'copy-image' }, stores: ['cheap'] } })).json.message, 'Only images with status active can be targeted for copying');
  assert.equal((await copy({ stores: ['cheap'] })).status, 202);
  const task = await importEnded(a, img.id);
  assert.equal(task.status, 'success', task.message);
  const done = await assertStored(svc.url, img.id, data);
  assert.equal(done.stores, 'fast,cheap');
  assert.equal(done.os_glance_importing_to_stores, '');
  assert.equal(done.os_glance_import_task, undefined);
  // The copy is whole in the second store's directory.
  const files = (await readdir(dirs[1])).filter((f) => f.includes(img.id));
  assert.equal(files.length, 1);
  assert.ok((await readFile(join(dirs[1], files[0]!))).equals(data));
  // all_stores with nothing left to copy: 202 and no task.
  assert.equal((await copy({ all_stores: true })).status, 202);
  assert.equal((await a('GET', `/v2/images/${img.id}/tasks`)).json.tasks.length, 1);
});

test('the import lock (Glance\'s _enforce_import_lock): a copy-image while the image\'s import task is pending is 409 Image has active task; a lock whose task is gone is taken over', needs('glance'), async (t) => {
  const web = await webServer(t);
  const dirs = [await tempDir(t), await tempDir(t), await tempDir(t)];
  const svc = await serviceFor(t, web, {
    DISKHUB_STORES: `fast:file:${dirs[0]},cheap:file:${dirs[1]},cold:file:${dirs[2]}`, DISKHUB_ENABLED_IMPORT_METHODS: 'glance-direct,web-download,copy-image',
    DISKHUB_TASK_CONCURRENCY: '1', DISKHUB_WEB_DOWNLOAD_TIMEOUT: '60',
  });
  const a = api(svc.url, await token(svc.url));
  const data = randomBytes(300_000);
  const img = await newImage(a);
  assert.equal((await a('PUT', `/v2/images/${img.id}/file`, { raw: data })).status, 204);
  // The node's one task slot: a web-download that stalls.
  const blocker = await newImage(a);
  assert.equal((await webImport(a, blocker.id, `${web.url}/stall`)).status, 202);
  await until('the stalled download to run', async () => (await a('GET', `/v2/images/${blocker.id}/tasks`)).json.tasks, (ts: any[]) => ts[0]?.status === 'processing');
  const copy = (id: string, stores: string[]) => a('POST', `/v2/images/${id}/import`, { body: { method: { name: 'copy-image' }, stores } });
  assert.equal((await copy(img.id, ['cheap'])).status, 202);
  assert.equal((await a('GET', `/v2/images/${img.id}/tasks`)).json.tasks[0].status, 'pending');
  // A second copy while the first is pending: refused, with the glance client as with the API.
  const refused = await run('glance', ['image-import', '--import-method', 'copy-image', '--stores', 'cold', img.id], { env: osEnv(svc.url) });
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /409 Conflict: Image has active task/);
  const again = await copy(img.id, ['cold']);
  assert.equal(again.status, 409);
  assert.equal(again.json.message, 'Image has active task');
  const shown = (await a('GET', `/v2/images/${img.id}`)).json;
  assert.equal(shown.os_glance_importing_to_stores, 'cheap', 'the pending copy\'s stores only');
  assert.equal((await a('GET', `/v2/images/${img.id}/tasks`)).json.tasks.length, 1);

  // A lock naming a task that is gone (its record culled) is stale: the copy takes it over.
  const other = await newImage(a);
  assert.equal((await a('PUT', `/v2/images/${other.id}/file`, { raw: data })).status, 204);
  await svc.db.kysely.insertInto('image_properties').values([
    { image_id: other.id, name: 'os_glance_import_task', value: randomUUID() },
  ]).execute();
  const taken = await copy(other.id, ['cold']);
  assert.equal(taken.status, 202, taken.text);
  const [task] = (await a('GET', `/v2/images/${other.id}/tasks`)).json.tasks;
  // (pending: the node's one slot is still the stalled download's)
  assert.equal(task.status, 'pending');
  const locked = (await a('GET', `/v2/images/${other.id}`)).json;
  assert.equal(locked.os_glance_import_task, task.id, 'the lock is the new task\'s');
  assert.equal(locked.os_glance_importing_to_stores, 'cold');
});
