/**
 * Several stores at once (Glance's multi-store, issue 19): configuration, /v2/info/stores,
 * uploads to a chosen store, the locations API, delete from one store, downloads falling
 * through a store that is down, a store failing mid-write or on commit, crash recovery in
 * every store, and store credentials kept out of answers and logs. The second backend is the
 * in-memory test store (memory-store.ts); statuses and messages are Glance 25's.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhubBin, needs, run, runOk, tempDir } from '@diskhub/testkit';
import { ConfigError, jsonLogger, loadConfig, startService } from '../src/index.js';
import { ADMIN_PASSWORD, addProjectUser, api, osEnv, token } from './helpers.js';
import { memoryStores, registerMemoryStores, type MemoryStore } from './memory-store.js';

registerMemoryStores();

const SECRET = 'sup3r-s3cret-value-42';
const PATCH = 'application/openstack-images-v2.1-json-patch';

interface Started { url: string; dataDir: string; logs: () => string; mem: MemoryStore; admin: ReturnType<typeof api>; adminToken: string }

/** A service with stores fast (file, default), cheap (file) and mem (memory, with a secret in its configuration). */
async function start(t: TestContext, settings: Record<string, unknown> = {}, dataDir?: string): Promise<Started> {
  const dir = dataDir ?? await tempDir(t, 'diskhub-stores-');
  const configFile = join(await tempDir(t), 'config.json');
  await writeFile(configFile, JSON.stringify({
    stores: {
      fast: { type: 'file', path: 'fast' },
      cheap: { type: 'file', path: 'cheap', description: 'Cheap disks' },
      mem: { type: 'memory', secret: SECRET },
    },
    defaultStore: 'fast',
    // (these tests are about the stores: no per-node image cache in front of them)
    imageCache: 'off',
    ...settings,
  }));
  const cfg = loadConfig({ DISKHUB_DATA_DIR: dir, DISKHUB_PORT: '0', DISKHUB_BIND: '127.0.0.1', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD }, {}, configFile);
  let logText = '';
  const svc = await startService(cfg, jsonLogger({ write: (s: string) => { logText += s; } }, 'info'));
  t.after(() => svc.close());
  const adminToken = await token(svc.url);
  return { url: svc.url, dataDir: dir, logs: () => logText, mem: memoryStores.get('mem')!, admin: api(svc.url, adminToken), adminToken };
}

async function createImage(a: ReturnType<typeof api>, body: Record<string, unknown> = {}): Promise<string> {
  const r = await a('POST', '/v2/images', { body: { name: 'img', disk_format: 'raw', container_format: 'bare', ...body } });
  assert.equal(r.status, 201, r.text);
  return r.json.id;
}

async function download(url: string, tok: string, id: string): Promise<{ status: number; body: Buffer }> {
  const r = await fetch(`${url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': tok } });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}

const patch = (a: ReturnType<typeof api>, id: string, ops: unknown[]) => a('PATCH', `/v2/images/${id}`, { body: ops, type: PATCH });

test('stores: /v2/info/stores and its admin detail, store ids on create, uploads to a chosen store, data removed from its store on delete', async (t) => {
  const s = await start(t, { showMultipleLocations: true, showImageDirectUrl: true });
  const info = await s.admin('GET', '/v2/info/stores');
  assert.equal(info.status, 200);
  assert.deepEqual(info.json, { stores: [
    { id: 'fast', description: 'Local file store', default: 'true' },
    { id: 'cheap', description: 'Cheap disks' },
    { id: 'mem', description: 'Memory store (tests)' },
  ] });
  const detail = await s.admin('GET', '/v2/info/stores/detail');
  assert.equal(detail.status, 200, detail.text);
  assert.deepEqual(detail.json.stores[1], { id: 'cheap', description: 'Cheap disks', type: 'file', properties: { data_dir: join(s.dataDir, 'cheap'), chunk_size: 65536, thin_provisioning: true } });
  assert.deepEqual(detail.json.stores[2].properties, { endpoint: 'https://memory.invalid', bucket: 'mem' });
  assert.ok(!detail.text.includes(SECRET), 'no credential in the detail');
  await addProjectUser(s.url, s.adminToken, 'team', 'bob', 'bob-pw');
  const bob = api(s.url, await token(s.url, 'bob', 'bob-pw', 'team'));
  assert.equal((await bob('GET', '/v2/info/stores/detail')).status, 403, 'detail is admin only');
  assert.equal((await bob('GET', '/v2/info/stores')).status, 200);

  const created = await s.admin('POST', '/v2/images', { body: { name: 'x' } });
  assert.equal(created.headers.get('openstack-image-store-ids'), 'fast,cheap,mem');

  // X-Image-Meta-Store chooses the store; an unknown one is Glance's 400 and changes nothing.
  const data = randomBytes(300_000);
  const id = await createImage(s.admin);
  const unknown = await s.admin('PUT', `/v2/images/${id}/file`, { raw: data, headers: { 'X-Image-Meta-Store': 'nope' } });
  assert.equal(unknown.status, 400);
  assert.match(unknown.json.message, /Store for identifier nope not found/);
  assert.equal((await s.admin('GET', `/v2/images/${id}`)).json.status, 'queued');
  assert.equal((await s.admin('PUT', `/v2/images/${id}/file`, { raw: data, headers: { 'X-Image-Meta-Store': 'cheap' } })).status, 204);
  const shown = (await s.admin('GET', `/v2/images/${id}`)).json;
  assert.equal(shown.stores, 'cheap');
  const url = `file://${join(s.dataDir, 'cheap', id)}`;
  assert.deepEqual(shown.locations, [{ url, metadata: { store: 'cheap' } }]);
  assert.equal(shown.direct_url, url);
  assert.ok(existsSync(join(s.dataDir, 'cheap', id)));
  assert.ok(!existsSync(join(s.dataDir, 'fast', id)));
  assert.ok((await download(s.url, s.adminToken, id)).body.equals(data));
  // Without the header: the default store.
  const id2 = await createImage(s.admin);
  assert.equal((await s.admin('PUT', `/v2/images/${id2}/file`, { raw: data })).status, 204);
  assert.equal((await s.admin('GET', `/v2/images/${id2}`)).json.stores, 'fast');
  // Into the memory store too.
  const id3 = await createImage(s.admin);
  assert.equal((await s.admin('PUT', `/v2/images/${id3}/file`, { raw: data, headers: { 'X-Image-Meta-Store': 'mem' } })).status, 204);
  assert.ok(s.mem.objects.get(id3)!.equals(data));
  assert.ok((await download(s.url, s.adminToken, id3)).body.equals(data));

  // An image with copies in two stores: deleting it removes both.
  s.mem.objects.set('second-copy', Buffer.from(data));
  assert.equal((await patch(s.admin, id, [{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/second-copy', metadata: {} } }])).status, 200);
  assert.equal((await s.admin('GET', `/v2/images/${id}`)).json.stores, 'cheap,mem');
  for (const i of [id, id2, id3]) assert.equal((await s.admin('DELETE', `/v2/images/${i}`)).status, 204);
  assert.ok(!s.mem.objects.has('second-copy'));
  assert.ok(!existsSync(join(s.dataDir, 'cheap', id)));
  assert.ok(!existsSync(join(s.dataDir, 'fast', id2)));
  assert.ok(!s.mem.objects.has(id3));
});

test('stores: locations and direct_url are hidden by default, and the locations API is closed (403 as Glance)', async (t) => {
  const s = await start(t);
  const id = await createImage(s.admin);
  assert.equal((await s.admin('PUT', `/v2/images/${id}/file`, { raw: randomBytes(1000) })).status, 204);
  const shown = (await s.admin('GET', `/v2/images/${id}`)).json;
  assert.equal(shown.stores, 'fast');
  assert.equal('locations' in shown, false);
  assert.equal('direct_url' in shown, false);
  s.mem.objects.set('obj', randomBytes(10));
  const add = await patch(s.admin, id, [{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/obj', metadata: {} } }]);
  assert.equal(add.status, 403);
  assert.match(add.json.message, /It's not allowed to add locations if locations are invisible\./);
  const remove = await patch(s.admin, id, [{ op: 'remove', path: '/locations/0' }]);
  assert.equal(remove.status, 403);
  assert.match(remove.json.message, /It's not allowed to remove locations if locations are invisible\./);
  const replace = await patch(s.admin, id, [{ op: 'replace', path: '/locations', value: [{ url: 'memory://mem/obj', metadata: {} }] }]);
  assert.equal(replace.status, 403);
  assert.match(replace.json.message, /It's not allowed to update locations if locations are invisible\./);
});

test('stores: the locations API (add, replace, remove) validates as Glance 25 does', async (t) => {
  const s = await start(t, { showMultipleLocations: true });
  const data = randomBytes(200_000);
  const id = await createImage(s.admin);
  assert.equal((await s.admin('PUT', `/v2/images/${id}/file`, { raw: data })).status, 204);
  const fastUrl = `file://${join(s.dataDir, 'fast', id)}`;
  s.mem.objects.set('copy1', Buffer.from(data));

  const added = await patch(s.admin, id, [{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/copy1', metadata: {} } }]);
  assert.equal(added.status, 200, added.text);
  assert.deepEqual(added.json.locations, [{ url: fastUrl, metadata: { store: 'fast' } }, { url: 'memory://mem/copy1', metadata: { store: 'mem' } }]);
  assert.equal(added.json.stores, 'fast,mem');

  const bad = async (ops: unknown[], status: number, message: RegExp) => {
    const r = await patch(s.admin, id, ops);
    assert.equal(r.status, status, `${JSON.stringify(ops)}: ${r.text}`);
    assert.match(r.json.message, message);
  };
  const add = (url: string, path = '/locations/-') => [{ op: 'add', path, value: { url, metadata: {} } }];
  await bad(add('memory://mem/copy1'), 400, /The location memory:\/\/mem\/copy1 already exists/);
  await bad(add('memory://mem/missing'), 400, /^Invalid location$/);
  await bad(add(fastUrl), 400, /^Invalid location$/); // file:// is a restricted scheme, even the store's own data
  await bad(add('file:///etc/passwd'), 400, /^Invalid location$/);
  await bad(add('http://nowhere.invalid/x'), 400, /^Invalid location$/);
  s.mem.objects.set('empty', Buffer.alloc(0));
  await bad(add('memory://mem/empty'), 400, /^Invalid location$/);
  s.mem.objects.set('copy2', Buffer.from(data));
  await bad(add('memory://mem/copy2', '/locations/x'), 400, /Invalid position for adding a location\./);
  await bad(add('memory://mem/copy2', '/locations'), 400, /Invalid JSON pointer for this resource: '\/locations'/);
  await bad([{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/copy2' } }], 400, /'metadata' is a required property/);
  await bad([{ op: 'remove', path: '/locations/7' }], 400, /Invalid position for removing a location\./);
  await bad([{ op: 'replace', path: '/locations', value: [] }], 403, /Cannot set locations to empty list\./);
  await bad([{ op: 'replace', path: '/locations', value: [{ url: 'memory://mem/copy2', metadata: {} }] }], 400, /Original locations is not empty: \[\{'url': 'file:\/\//);

  // Inserting at a position; replacing with the same URLs changes only metadata and order.
  const at0 = await patch(s.admin, id, add('memory://mem/copy2', '/locations/0'));
  assert.equal(at0.status, 200, at0.text);
  assert.deepEqual(at0.json.locations.map((l: any) => l.url), ['memory://mem/copy2', fastUrl, 'memory://mem/copy1']);
  const reordered = await patch(s.admin, id, [{ op: 'replace', path: '/locations', value: [
    { url: fastUrl, metadata: { note: 'primary' } }, { url: 'memory://mem/copy1', metadata: {} }, { url: 'memory://mem/copy2', metadata: {} },
  ] }]);
  assert.equal(reordered.status, 200, reordered.text);
  assert.deepEqual(reordered.json.locations[0], { url: fastUrl, metadata: { note: 'primary', store: 'fast' } });

  // Removing a location removes its data from the store (Glance's StoreLocations.pop).
  const removed = await patch(s.admin, id, [{ op: 'remove', path: '/locations/0' }]);
  assert.equal(removed.status, 200, removed.text);
  assert.ok(!existsSync(join(s.dataDir, 'fast', id)), 'the fast copy is gone');
  assert.equal(removed.json.stores, 'mem,mem');
  assert.ok((await download(s.url, s.adminToken, id)).body.equals(data), 'downloads now read the memory store');
  assert.equal((await patch(s.admin, id, [{ op: 'remove', path: '/locations/-' }])).status, 200);
  assert.ok(!s.mem.objects.has('copy2'));
  await bad([{ op: 'remove', path: '/locations/0' }], 403, /Cannot remove last location in the image\./);

  // A queued image gets its data from a location: active, its size from the store, the validation data kept.
  const q = await createImage(s.admin);
  const md5 = createHash('md5').update(data).digest('hex');
  const sha512 = createHash('sha512').update(data).digest('hex');
  s.mem.objects.set('q', Buffer.from(data));
  const activated = await patch(s.admin, q, [{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/q', metadata: {}, validation_data: { checksum: md5, os_hash_algo: 'sha512', os_hash_value: sha512 } } }]);
  assert.equal(activated.status, 200, activated.text);
  assert.equal(activated.json.status, 'active');
  assert.equal(activated.json.size, data.length);
  assert.equal(activated.json.checksum, md5);
  assert.equal(activated.json.os_hash_value, sha512);
  const wrong = await patch(s.admin, q, [{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/copy1', metadata: {}, validation_data: { os_hash_algo: 'sha512', os_hash_value: 'ab'.repeat(64) } } }]);
  assert.equal(wrong.status, 409);
  assert.match(wrong.json.message, /os_hash_value is already set with a different value/);

  // Policy: the project that owns the image may (Glance 25's defaults); another project may not.
  await addProjectUser(s.url, s.adminToken, 'team', 'bob', 'bob-pw');
  const bobToken = await token(s.url, 'bob', 'bob-pw', 'team');
  const bob = api(s.url, bobToken);
  const own = await createImage(bob);
  s.mem.objects.set('bob1', randomBytes(5000));
  assert.equal((await patch(bob, own, add('memory://mem/bob1'))).status, 200);
  const pub = await createImage(s.admin, { visibility: 'public' });
  s.mem.objects.set('pub', randomBytes(5000));
  assert.equal((await patch(s.admin, pub, add('memory://mem/pub'))).status, 200);
  const refused = await patch(bob, pub, add('memory://mem/copy1'));
  assert.equal(refused.status, 403, refused.text);
  assert.match(refused.json.message, /You do not own this image/);
});

test('stores: a policy file can make removing locations admin-only (Glance\'s new default for delete_image_location); a patch may mix locations and properties', async (t) => {
  const policyFile = join(await tempDir(t), 'policy.yaml');
  await writeFile(policyFile, '"delete_image_location": "role:admin"\n');
  const s = await start(t, { showMultipleLocations: true, policyFile });
  await addProjectUser(s.url, s.adminToken, 'team', 'bob', 'bob-pw');
  const bob = api(s.url, await token(s.url, 'bob', 'bob-pw', 'team'));
  const id = await createImage(bob);
  assert.equal((await bob('PUT', `/v2/images/${id}/file`, { raw: randomBytes(4000) })).status, 204);
  s.mem.objects.set('b2', randomBytes(4000));
  // Adding (set_image_location) stays the owner's; one patch adds a location and sets a property.
  const mixed = await patch(bob, id, [{ op: 'add', path: '/locations/-', value: { url: 'memory://mem/b2', metadata: {} } }, { op: 'add', path: '/os_distro', value: 'debian' }]);
  assert.equal(mixed.status, 200, mixed.text);
  assert.equal(mixed.json.stores, 'fast,mem');
  assert.equal(mixed.json.os_distro, 'debian');
  const refused = await patch(bob, id, [{ op: 'remove', path: '/locations/1' }]);
  assert.equal(refused.status, 403);
  assert.match(refused.json.message, /You are not authorized to complete delete_image_location action\./);
  assert.equal((await bob('DELETE', `/v2/stores/mem/${id}`)).status, 403);
  assert.ok(s.mem.objects.has('b2'), 'nothing was deleted');
  assert.equal((await patch(s.admin, id, [{ op: 'remove', path: '/locations/1' }])).status, 200);
  assert.ok(!s.mem.objects.has('b2'));
});

test('stores: DELETE /v2/stores/{store}/{image} as Glance, and downloads fall through a store that is down', async (t) => {
  const s = await start(t, { showMultipleLocations: true });
  const data = randomBytes(150_000);
  const id = await createImage(s.admin);
  assert.equal((await s.admin('PUT', `/v2/images/${id}/file`, { raw: data })).status, 204);
  s.mem.objects.set('m1', Buffer.from(data));
  // The memory copy first: downloads try it first.
  assert.equal((await patch(s.admin, id, [{ op: 'add', path: '/locations/0', value: { url: 'memory://mem/m1', metadata: {} } }])).status, 200);
  s.mem.faults.down = true;
  const through = await download(s.url, s.adminToken, id);
  assert.equal(through.status, 200);
  assert.ok(through.body.equals(data), 'read from the file store when the memory store is down');
  assert.ok(!s.logs().includes(SECRET), 'the store error was logged without its credential');
  s.mem.faults.down = false;

  const del = (store: string, image = id, a = s.admin) => a('DELETE', `/v2/stores/${store}/${image}`);
  let r = await del('nope');
  assert.equal(r.status, 409);
  assert.match(r.json.message, /The selected store nope is not available on this node\./);
  r = await del('cheap');
  assert.equal(r.status, 404);
  assert.match(r.json.message, new RegExp(`Image ${id} is not stored in store cheap\\.`));
  r = await del('fast', '00000000-0000-0000-0000-000000000000');
  assert.equal(r.status, 404);
  assert.match(r.json.message, /Failed to find image 00000000-0000-0000-0000-000000000000/);
  await addProjectUser(s.url, s.adminToken, 'team', 'bob', 'bob-pw');
  assert.equal((await del('fast', id, api(s.url, await token(s.url, 'bob', 'bob-pw', 'team')))).status, 404, 'a private image of another project does not exist for bob');
  assert.equal((await del('fast')).status, 204);
  assert.ok(!existsSync(join(s.dataDir, 'fast', id)));
  assert.equal((await s.admin('GET', `/v2/images/${id}`)).json.stores, 'mem');
  r = await del('mem');
  assert.equal(r.status, 403);
  assert.match(r.json.message, /Cannot delete image data from the only store containing it\. Consider deleting the image instead\./);
  // The only copy's store is down: 503, not a hang or a 500; back up: the data again.
  s.mem.faults.down = true;
  const down = await fetch(`${s.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': s.adminToken, Accept: 'application/json' } });
  assert.equal(down.status, 503);
  assert.ok(!(await down.text()).includes(SECRET));
  s.mem.faults.down = false;
  assert.ok((await download(s.url, s.adminToken, id)).body.equals(data));
  const queued = await createImage(s.admin);
  r = await del('fast', queued);
  assert.equal(r.status, 409);
  assert.match(r.json.message, /It's not allowed to remove image data from store if image status is not 'active'/);
});

test('stores: a store failing mid-write or on commit leaves no data, no location, the image queued (503; 413 when full)', async (t) => {
  const s = await start(t, { showMultipleLocations: true });
  const data = randomBytes(5 << 20);
  const id = await createImage(s.admin);
  const upload = () => s.admin('PUT', `/v2/images/${id}/file`, { raw: data, headers: { 'X-Image-Meta-Store': 'mem' } });
  const unchanged = async (what: string) => {
    const img = (await s.admin('GET', `/v2/images/${id}`)).json;
    assert.equal(img.status, 'queued', what);
    assert.deepEqual(img.locations, [], what);
    assert.equal(img.stores, undefined, what);
    assert.equal(s.mem.temp.size, 0, `${what}: no temporary object left`);
    assert.equal(s.mem.objects.size, 0, `${what}: no object`);
  };
  for (const [faults, status, message, what] of [
    [{ failAfterBytes: 3 << 20, failKind: 'unavailable' }, 503, /The image store 'mem' is unavailable \(writing the data\)/, 'mid-write'],
    [{ failCommit: true, failKind: 'failed' }, 503, /The image store 'mem' is unavailable \(committing the data\)/, 'on commit'],
    [{ failAfterBytes: 1 << 20, failKind: 'full' }, 413, /Image storage media is full: image store 'mem'/, 'full'],
  ] as const) {
    s.mem.faults = { ...faults };
    const discards = s.mem.discards;
    const r = await upload();
    assert.equal(r.status, status, `${what}: ${r.text}`);
    assert.match(r.json.message, message);
    assert.ok(!r.text.includes(SECRET), `${what}: no credential in the answer`);
    assert.ok(s.mem.discards > discards, `${what}: discard was called`);
    await unchanged(what);
  }
  assert.ok(!s.logs().includes(SECRET), 'no credential in the logs');
  assert.match(s.logs(), /upload failed: store/);
  // The store is back: the same image uploads.
  s.mem.faults = {};
  assert.equal((await upload()).status, 204);
  assert.equal((await s.admin('GET', `/v2/images/${id}`)).json.stores, 'mem');
});

test('stores: crash recovery sweeps every store; a restart keeps images in every store', async (t) => {
  const dataDir = await tempDir(t, 'diskhub-stores-');
  const first = await start(t, {}, dataDir);
  const id = await createImage(first.admin);
  assert.equal((await first.admin('PUT', `/v2/images/${id}/file`, { raw: randomBytes(1000), headers: { 'X-Image-Meta-Store': 'cheap' } })).status, 204);
  // Temporary files a crash left in both file stores.
  await writeFile(join(dataDir, 'fast', '.partial-crashed-aaaaaaaaaaaa'), 'x');
  await writeFile(join(dataDir, 'cheap', '.partial-crashed-bbbbbbbbbbbb'), 'y');
  const second = await start(t, {}, dataDir);
  assert.deepEqual(await readdir(join(dataDir, 'fast')), []);
  assert.deepEqual(await readdir(join(dataDir, 'cheap')), [id]);
  assert.equal((await download(second.url, second.adminToken, id)).status, 200);
});

test('stores: configuration — DISKHUB_STORES, the default store, and what is refused', async (t) => {
  const dir = await tempDir(t);
  const base = { DISKHUB_DATA_DIR: dir };
  assert.deepEqual(loadConfig(base).stores, [{ id: 'file', type: 'file', path: 'images' }], 'without configuration: one file store as before');
  const cfg = loadConfig({ ...base, DISKHUB_STORES: 'fast:file:/srv/fast, cheap:file:rel/cheap', DISKHUB_DEFAULT_STORE: 'cheap' });
  assert.deepEqual(cfg.stores, [{ id: 'fast', type: 'file', path: '/srv/fast' }, { id: 'cheap', type: 'file', path: 'rel/cheap' }]);
  assert.equal(cfg.defaultStore, 'cheap');
  // Options of other types come from the config file's stores.<id>.
  const file = join(dir, 'c.json');
  await writeFile(file, JSON.stringify({ stores: { ceph: { type: 'rbd', pool: 'images', user: 'glance' } } }));
  assert.deepEqual(loadConfig({ ...base, DISKHUB_STORES: 'ceph:rbd,local:file:/x' }, {}, file).stores, [{ id: 'ceph', type: 'rbd', pool: 'images', user: 'glance' }, { id: 'local', type: 'file', path: '/x' }]);
  assert.throws(() => loadConfig({ ...base, DISKHUB_STORES: 'ceph:file:/x' }, {}, file), /store 'ceph' is file here but rbd in the config file/);
  assert.throws(() => loadConfig({ ...base, DISKHUB_STORES: 'ceph:rbd:/x' }), /only file stores take a path here/);
  assert.throws(() => loadConfig({ ...base, DISKHUB_STORES: 'justaname' }), /'justaname' is not id:type or id:file:PATH/);
  assert.throws(() => loadConfig({ ...base, DISKHUB_STORES: 'a:file:/x', DISKHUB_DEFAULT_STORE: 'b' }), /defaultStore 'b' is not one of the configured stores \(a\)/);
  assert.throws(() => loadConfig({ ...base, DISKHUB_SHOW_MULTIPLE_LOCATIONS: 'maybe' }), ConfigError);
  assert.equal(loadConfig({ ...base, DISKHUB_SHOW_MULTIPLE_LOCATIONS: 'true' }).showMultipleLocations, true);
  // The service refuses to start on an unknown type, a duplicate id, or a file store option it does not know.
  for (const [stores, message] of [
    ['x:nosuch', /unknown store type 'nosuch'/],
    ['a:file:/tmp/a,a:file:/tmp/b', /store id 'a' is configured twice/],
    ['os_glance_staging:file:/tmp/s', /the os_glance_ prefix is reserved/],
  ] as const) {
    const c = loadConfig({ ...base, DISKHUB_STORES: stores, DISKHUB_PORT: '0', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD });
    await assert.rejects(startService(c, jsonLogger({ write: () => true }, 'silent')), message);
  }
  // diskhub serve says so and exits 1.
  const served = await run(process.execPath, [diskhubBin, 'serve', '--port', '0'], { env: { ...process.env, DISKHUB_DATA_DIR: dir, DISKHUB_STORES: 'x:nosuch', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD } });
  assert.equal(served.code, 1);
  assert.match(served.stderr, /diskhub serve: store 'x': unknown store type 'nosuch' \(known: file/);
});

/** `| key | value |` rows of a glance client table. */
function glanceTable(out: string): Record<string, string> {
  const rows: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^\|\s*(\S[^|]*?)\s*\|\s*(.*?)\s*\|$/.exec(line);
    if (m && m[1] !== 'Property') rows[m[1]!] = m[2]!;
  }
  return rows;
}

test('glance client: stores-info (--detail), image-create --store, location-add, stores-delete', needs('glance'), async (t) => {
  const s = await start(t, { showMultipleLocations: true });
  const env = osEnv(s.url);
  const glance = (...args: string[]) => runOk('glance', args, { env });
  const info = await glance('stores-info');
  assert.match(info, /fast/);
  assert.match(info, /cheap/);
  const detail = await glance('stores-info', '--detail');
  assert.match(detail, /data_dir/);
  assert.ok(!detail.includes(SECRET));

  const dir = await tempDir(t);
  const file = join(dir, 'disk.raw');
  const data = randomBytes(400_000);
  await writeFile(file, data);
  const created = glanceTable(await glance('image-create', '--store', 'cheap', '--file', file, '--disk-format', 'raw', '--container-format', 'bare', '--name', 'on-cheap'));
  assert.equal(created.status, 'active');
  assert.equal(created.stores, 'cheap');
  const id = created.id!;
  assert.ok(existsSync(join(s.dataDir, 'cheap', id)));

  // A second copy in the memory store, added as a location; then the cheap copy removed with stores-delete.
  s.mem.objects.set('copy', Buffer.from(data));
  await glance('location-add', '--url', 'memory://mem/copy', '--metadata', '{}', id);
  const shown = glanceTable(await glance('image-show', id));
  assert.equal(shown.stores, 'cheap,mem');
  await glance('stores-delete', '--store', 'cheap', id);
  assert.ok(!existsSync(join(s.dataDir, 'cheap', id)));
  assert.equal(glanceTable(await glance('image-show', id)).stores, 'mem');
  const saved = join(dir, 'saved.raw');
  await glance('image-download', '--file', saved, id);
  assert.ok((await readFile(saved)).equals(data), 'downloaded from the memory store');
  // The client shows Glance's refusal of an unknown store.
  const unknown = await run('glance', ['image-create', '--store', 'nope', '--file', file, '--disk-format', 'raw', '--container-format', 'bare'], { env });
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stdout + unknown.stderr, /nope/);
});
