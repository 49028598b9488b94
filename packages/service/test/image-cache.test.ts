/**
 * The per-node image cache (Glance's image cache): downloads through it from a real file
 * store wrapped to count what is read from it, LRU pruning at the size bound, corrupt and
 * unverifiable entries, restart clean-up; and the /v2/cache API with the real glance client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir, rm, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { needs, run, runOk, tempDir } from '@diskhub/testkit';
import { FileStore } from '../src/stores/file/file-store.js';
import { ImageCache, type CacheableImage, type CacheSource } from '../src/cache/image-cache.js';
import { jsonLogger } from '../src/log.js';
import { addProjectUser, api, osEnv, startTestService, token } from './helpers.js';

const MiB = 1 << 20;

/** The file store, counting the reads a download makes of it. */
class CountingStore implements CacheSource {
  sends: { location: string; range?: { start: number; end: number } }[] = [];
  constructor(readonly store: FileStore) {}
  send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void> {
    this.sends.push({ location, range });
    return this.store.send(location, out, range);
  }
}

/** Log lines, to see what the cache did. */
function capture() {
  const lines: any[] = [];
  return { log: jsonLogger({ write: (s: string) => { lines.push(JSON.parse(s)); } }, 'info'), lines, count: (msg: string) => lines.filter((l) => l.msg === msg).length };
}

async function setup(t: Parameters<typeof tempDir>[0], maxSize = 64 * MiB) {
  const dir = await tempDir(t);
  const store = new FileStore({ dir: join(dir, 'store') });
  await store.init();
  const counting = new CountingStore(store);
  const logs = capture();
  const cache = new ImageCache(join(dir, 'cache'), maxSize, logs.log);
  await cache.init();
  const image = async (bytes: Buffer, id = crypto.randomUUID()): Promise<CacheableImage> => {
    const w = await store.begin(store.newTempKey(id));
    await w.write([bytes]);
    const location = await w.commit(id);
    return { id, status: 'active', location, size: bytes.length, checksum: createHash('md5').update(bytes).digest('hex'), os_hash_algo: 'sha512', os_hash_value: createHash('sha512').update(bytes).digest('hex') };
  };
  return { dir, store, counting, cache, logs, image };
}

/**
 * Download through the cache into memory. Each chunk is copied as written, as a socket does:
 * the stores reuse a buffer once its write is called back.
 */
async function download(cache: ImageCache, img: CacheableImage, source: CacheSource, range?: { start: number; end: number }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const out = new Writable({ write(chunk: Buffer, _e, cb) { chunks.push(Buffer.from(chunk)); setImmediate(cb); } });
  const finished = new Promise((r) => out.on('finish', r));
  await cache.send(img, source, out, range);
  await finished;
  return Buffer.concat(chunks);
}

/** Byte equality without a diff of megabytes when it fails. */
const sameBytes = (got: Buffer, want: Buffer, what = 'bytes') => assert.ok(got.equals(want), `${what}: ${got.length} bytes differ from the expected ${want.length}`);

const until = async (cond: () => boolean | Promise<boolean>, what: string) => {
  for (let i = 0; i < 500; i++) { if (await cond()) return; await new Promise((r) => setTimeout(r, 10)); }
  assert.fail(`timed out waiting for ${what}`);
};

test('image cache: the first download fills the cache; the next ones (whole and ranged) are byte-identical and never read the store', async (t) => {
  const { counting, cache, image, logs } = await setup(t);
  const bytes = randomBytes(5 * MiB + 12345);
  const img = await image(bytes);
  sameBytes(await download(cache, img, counting), bytes);
  assert.equal(counting.sends.length, 1);
  await until(() => cache.isCached(img.id), 'the fill');
  sameBytes(await download(cache, img, counting), bytes);
  const range = { start: MiB - 10, end: 3 * MiB + 7 };
  sameBytes(await download(cache, img, counting, range), bytes.subarray(range.start, range.end + 1));
  const tail = { start: 5 * MiB + 100, end: bytes.length - 1 };
  sameBytes(await download(cache, img, counting, tail), bytes.subarray(tail.start));
  assert.equal(counting.sends.length, 1, 'served from the cache without touching the store');
  const [entry] = cache.list();
  assert.equal(entry!.image_id, img.id);
  assert.equal(entry!.size, bytes.length);
  assert.equal(entry!.hits, 3);
  assert.equal(logs.count('image cached'), 1);
});

test('image cache: concurrent downloads of one image fill it once; a ranged download does not fill', async (t) => {
  const { counting, cache, image, logs } = await setup(t);
  const bytes = randomBytes(8 * MiB);
  const img = await image(bytes);
  sameBytes(await download(cache, img, counting, { start: 0, end: 99 }), bytes.subarray(0, 100));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(cache.isCached(img.id), false, 'a range is not the image');
  const all = await Promise.all([1, 2, 3].map(() => download(cache, img, counting)));
  for (const got of all) sameBytes(got, bytes);
  await until(() => cache.isCached(img.id), 'the fill');
  assert.equal(logs.count('image cached'), 1);
  assert.equal(counting.sends.length, 4);
});

test('image cache: a fill that fails (its directory gone) costs the download nothing', async (t) => {
  const { dir, counting, cache, image, logs } = await setup(t);
  const bytes = randomBytes(3 * MiB + 1);
  const img = await image(bytes);
  await rm(join(dir, 'cache', 'incomplete'), { recursive: true });
  sameBytes(await download(cache, img, counting), bytes);
  await until(() => logs.count('image cache fill failed') === 1, 'the failed fill');
  assert.equal(cache.isCached(img.id), false);
});

test('image cache: least recently used entries are pruned at image_cache_max_size; larger images are not cached', async (t) => {
  const { counting, cache, image } = await setup(t, 3 * MiB + 1000);
  const [a, b, c, d] = await Promise.all([1, 2, 3, 4].map(() => image(randomBytes(MiB))));
  for (const img of [a!, b!, c!]) { await download(cache, img, counting); await until(() => cache.isCached(img.id), 'the fill'); }
  await new Promise((r) => setTimeout(r, 5));
  await download(cache, a!, counting); // a is now the most recently used
  await download(cache, d!, counting);
  await until(() => cache.isCached(d!.id), 'the fill');
  assert.deepEqual(cache.list().map((e) => e.image_id).sort(), [a!.id, c!.id, d!.id].sort(), 'b, the least recently used, went');
  assert.ok(cache.used <= cache.maxSize);
  const big = await image(randomBytes(4 * MiB));
  await download(cache, big, counting);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(cache.isCached(big.id), false);
});

test('image cache: a corrupt entry is detected when served, never sent, dropped and re-filled; data that does not match the image hash is never cached', async (t) => {
  const { dir, counting, cache, image, logs } = await setup(t);
  const bytes = randomBytes(4 * MiB + 77);
  const img = await image(bytes);
  await download(cache, img, counting);
  await until(() => cache.isCached(img.id), 'the fill');
  // One bit flipped in the third block of the cached file.
  const fh = await open(join(dir, 'cache', img.id), 'r+');
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, 2 * MiB + 5);
  one[0]! ^= 0x01;
  await fh.write(one, 0, 1, 2 * MiB + 5);
  await fh.close();
  counting.sends = [];
  sameBytes(await download(cache, img, counting), bytes, 'the client still gets the right bytes');
  assert.deepEqual(counting.sends, [{ location: img.location, range: { start: 2 * MiB, end: bytes.length - 1 } }], 'the rest came from the store from the bad block on');
  assert.equal(cache.isCached(img.id), false);
  assert.equal(logs.count('image cache entry corrupt: dropped, the download continues from the store'), 1);
  // The next download fills it again.
  sameBytes(await download(cache, img, counting), bytes);
  await until(() => cache.isCached(img.id), 'the refill');
  // A truncated file, and a ranged read of the corrupt part.
  await writeFile(join(dir, 'cache', img.id), bytes.subarray(0, MiB));
  counting.sends = [];
  sameBytes(await download(cache, img, counting, { start: 3 * MiB, end: 3 * MiB + 9 }), bytes.subarray(3 * MiB, 3 * MiB + 10));
  assert.equal(counting.sends.length, 1);
  assert.equal(cache.isCached(img.id), false);

  // The store's data is not what the image's hash says: the fill does not verify and nothing is kept.
  const liar = { ...(await image(randomBytes(MiB))), os_hash_value: createHash('sha512').update('something else').digest('hex') };
  await download(cache, liar, counting);
  await until(() => logs.count('image cache fill did not verify: removed') === 1, 'the verification');
  assert.equal(cache.isCached(liar.id), false);
  assert.deepEqual(await readdir(join(dir, 'cache', 'incomplete')), []);
});

test('image cache: a restart keeps verified entries and removes incomplete fills and half-written entries', async (t) => {
  const { dir, counting, cache, image } = await setup(t);
  const img = await image(randomBytes(2 * MiB));
  await download(cache, img, counting);
  await until(() => cache.isCached(img.id), 'the fill');
  const cacheDir = join(dir, 'cache');
  const orphan = crypto.randomUUID();
  await writeFile(join(cacheDir, 'incomplete', orphan), 'partial');
  await writeFile(join(cacheDir, `${orphan}.blocks`), '{}');
  const noSidecar = crypto.randomUUID();
  await writeFile(join(cacheDir, noSidecar), 'data without its block digests');
  const again = new ImageCache(cacheDir, 64 * MiB, jsonLogger({ write: () => {} }, 'silent'));
  await again.init();
  assert.deepEqual(again.list().map((e) => e.image_id), [img.id]);
  assert.deepEqual((await readdir(cacheDir)).sort(), [img.id, `${img.id}.blocks`, 'incomplete', 'queue'].sort());
  assert.deepEqual(await readdir(join(cacheDir, 'incomplete')), []);
  counting.sends = [];
  sameBytes(await download(again, img, counting), await readFile(join(dir, 'store', img.id)));
  assert.equal(counting.sends.length, 0);
});

test('cache API: the glance client queues, lists, downloads from the cache, deletes and clears; non-admins get 403', needs('glance'), async (t) => {
  const svc = await startTestService(t, { DISKHUB_IMAGE_CACHE: 'on' });
  const dir = await tempDir(t);
  const env = { ...osEnv(svc.url), OS_IMAGE_URL: svc.url };
  const glance = (...args: string[]) => runOk('glance', args, { env });
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  const versions = await a('GET', '/versions');
  assert.deepEqual(versions.json.versions.slice(0, 3).map((v: any) => [v.id, v.status]), [['v2.16', 'CURRENT'], ['v2.15', 'SUPPORTED'], ['v2.14', 'SUPPORTED']]);

  const bytes = randomBytes(3 * MiB + 5);
  const file = join(dir, 'disk.raw');
  await writeFile(file, bytes);
  const created = (await a('POST', '/v2/images', { body: { name: 'c', disk_format: 'raw', container_format: 'bare' } })).json;
  assert.equal((await a('PUT', `/v2/images/${created.id}/file`, { raw: bytes })).status, 204);
  const queuedOnly = (await a('POST', '/v2/images', { body: { name: 'q' } })).json;

  await glance('cache-queue', created.id);
  await until(async () => (await a('GET', '/v2/cache')).json.cached_images.length === 1, 'the prefetcher');
  const state = (await a('GET', '/v2/cache')).json;
  assert.deepEqual(Object.keys(state), ['cached_images', 'queued_images']);
  assert.deepEqual(Object.keys(state.cached_images[0]), ['image_id', 'hits', 'last_accessed', 'last_modified', 'size']);
  assert.equal(state.cached_images[0].image_id, created.id);
  assert.equal(state.cached_images[0].size, bytes.length);
  assert.deepEqual(state.queued_images, []);
  const listed = await glance('cache-list');
  assert.match(listed, new RegExp(`${created.id}\\s*\\|\\s*cached`));

  // Served from the cache: the store's file is gone, the download is still byte-identical.
  await rm(join(svc.dataDir, 'images', created.id));
  const out = join(dir, 'out.raw');
  await glance('image-download', '--file', out, created.id);
  sameBytes(await readFile(out), bytes);

  // A plain download over HTTP fills the cache on the way (no queueing); the next one needs no store.
  const second = randomBytes(2 * MiB + 3);
  const other = (await a('POST', '/v2/images', { body: { name: 'd', disk_format: 'raw', container_format: 'bare' } })).json;
  assert.equal((await a('PUT', `/v2/images/${other.id}/file`, { raw: second })).status, 204);
  const fetchBytes = async () => Buffer.from(await (await fetch(`${svc.url}/v2/images/${other.id}/file`, { headers: { 'X-Auth-Token': tok } })).arrayBuffer());
  sameBytes(await fetchBytes(), second);
  await until(async () => (await a('GET', '/v2/cache')).json.cached_images.some((e: any) => e.image_id === other.id), 'the fill');
  await rm(join(svc.dataDir, 'images', other.id));
  sameBytes(await fetchBytes(), second, 'from the cache');
  const ranged = await fetch(`${svc.url}/v2/images/${other.id}/file`, { headers: { 'X-Auth-Token': tok, Range: 'bytes=1048570-1048590' } });
  assert.equal(ranged.status, 206);
  sameBytes(Buffer.from(await ranged.arrayBuffer()), second.subarray(1048570, 1048591), 'a range from the cache');

  // Queueing a non-active image: Glance's 400; an unknown one: 404.
  const notActive = await a('PUT', `/v2/cache/${queuedOnly.id}`);
  assert.equal(notActive.status, 400);
  assert.match(notActive.text, /Only images with status active can be targeted for queueing/);
  const unknown = await a('PUT', '/v2/cache/00000000-0000-0000-0000-000000000000');
  assert.equal(unknown.status, 404);
  assert.match(unknown.text, /Image 00000000-0000-0000-0000-000000000000 not found\./);
  const badTarget = await a('DELETE', '/v2/cache', { headers: { 'x-image-cache-clear-target': 'everything' } });
  assert.equal(badTarget.status, 400);
  assert.match(badTarget.text, /If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string\./);

  // A member of another project is not an admin: 403 on every call, and the glance client says so.
  await addProjectUser(svc.url, tok, 'team', 'bob', 'bob-pw');
  const bob = api(svc.url, await token(svc.url, 'bob', 'bob-pw', 'team'));
  for (const [method, path] of [['GET', '/v2/cache'], ['DELETE', '/v2/cache'], ['DELETE', `/v2/cache/${created.id}`]] as const) {
    const r = await bob(method, path);
    assert.equal(r.status, 403, `${method} ${path}`);
    assert.match(r.text, /Access was denied to this resource/);
  }
  // (an image bob cannot see is not found for him, as in Glance)
  assert.equal((await bob('PUT', `/v2/cache/${created.id}`)).status, 404);
  const bobList = await run('glance', ['cache-list'], { env: { ...osEnv(svc.url, 'bob', 'bob-pw', 'team'), OS_IMAGE_URL: svc.url } });
  assert.notEqual(bobList.code, 0);
  assert.match(bobList.stderr, /403|Forbidden|Access was denied/);

  await glance('cache-delete', created.id);
  assert.deepEqual((await a('GET', '/v2/cache')).json.cached_images.map((e: any) => e.image_id), [other.id]);
  await writeFile(join(svc.dataDir, 'images', created.id), bytes); // (the store's file back, for the next fill)
  await a('PUT', `/v2/cache/${created.id}`);
  await until(async () => (await a('GET', '/v2/cache')).json.cached_images.length === 2, 'the prefetcher');
  // Deleting an image removes it from the node's cache (Glance's cache middleware).
  assert.equal((await a('DELETE', `/v2/images/${other.id}`)).status, 204);
  assert.deepEqual((await a('GET', '/v2/cache')).json.cached_images.map((e: any) => e.image_id), [created.id]);
  await glance('cache-clear', '--target', 'cache');
  assert.deepEqual((await a('GET', '/v2/cache')).json.cached_images, []);
  await glance('cache-clear');
  assert.deepEqual((await a('GET', '/v2/cache')).json, { cached_images: [], queued_images: [] });
});

test('cache API: without a cache (the default with the file store) the API answers Glance\'s 404, and 2.14 is not listed', async (t) => {
  const svc = await startTestService(t);
  const a = api(svc.url, await token(svc.url));
  const r = await a('GET', '/v2/cache');
  assert.equal(r.status, 404);
  assert.match(r.text, /Caching via API is not supported at this site\./);
  const versions = (await a('GET', '/versions')).json.versions.map((v: any) => v.id);
  assert.equal(versions.includes('v2.14'), false);
  assert.equal(versions[0], 'v2.15');
});
