/**
 * The Swift store against a real Swift (the all-in-one of .ci/services/swift.sh), checked with
 * Swift's own client: static large objects really made of segments in <container>_segments,
 * downloads byte-identical, nothing left by a discard or a failed write, 401 re-authentication,
 * Keystone v3 catalog and region choice, clear errors for wrong credentials and unreachable
 * endpoints.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '@diskhub/testkit';
import { StoreError } from '../src/stores/store.js';
import { SwiftStore, type SwiftStoreOptions } from '../src/stores/swift/swift-store.js';
import { needSwift, freshName, swiftCli, swiftCliList, swiftList, swiftListSettled, swiftStat, swiftHead, swiftDrop, expireSwiftTokens, SWIFT_AUTH, SWIFT_USER, SWIFT_KEY } from './swift-peer.js';
import { storeContractTests, writeLikeTheService as writeImage } from './store-contract.js';

const MiB = 1 << 20;

/** A store on a fresh container (removed after the test), not initialised; null when Swift is not running (outside CI). */
async function newSwiftStore(t: TestContext, options: Partial<SwiftStoreOptions> = {}): Promise<SwiftStore | null> {
  if (!await needSwift(t)) return null;
  const container = freshName('swift-test');
  const store = new SwiftStore('swift-test', {
    authAddress: SWIFT_AUTH, authVersion: '1', user: SWIFT_USER, key: SWIFT_KEY, timeoutMs: 10_000,
    container, createContainerOnPut: true, ...options,
  });
  t.after(() => swiftDrop(container, `${container}_segments`));
  return store;
}

/** The same, initialised. */
async function swiftStore(t: TestContext, options: Partial<SwiftStoreOptions> = {}): Promise<SwiftStore | null> {
  const store = await newSwiftStore(t, options);
  t.after(() => store?.close());
  await store?.init();
  return store;
}

// Glance's defaults: images of known size are single objects, others static large objects.
storeContractTests('swift', (t) => newSwiftStore(t));
// Every image a static large object of 1 MiB segments.
storeContractTests('swift, 1 MiB SLO segments', (t) => newSwiftStore(t, { largeObjectSize: 1, largeObjectChunkSize: 1 << 20 }));


const containerOf = (store: SwiftStore) => store.detail().container as string;

test('a large image is a static large object: segments in <container>_segments, the manifest, byte-identical through the swift client', async (t) => {
  const store = await swiftStore(t, { largeObjectChunkSize: MiB });
  if (!store) return;
  const container = containerOf(store);
  const id = randomUUID();
  const data = randomBytes(5 * MiB + 12345);
  const writer = await writeImage(store, id, data);
  const location = await writer.commit(id);
  assert.equal(location, `swift+config://swift-test/${container}/${id}`);

  const stat = await swiftStat(container, id);
  assert.equal(stat.get('X-Static-Large-Object'), 'True', 'an SLO manifest');
  assert.equal(stat.get('Content Length'), String(data.length));
  const segments = await swiftCliList(`${container}_segments`);
  assert.deepEqual(segments, [1, 2, 3, 4, 5, 6].map((n) => `${writer.tempKey}/${String(n).padStart(8, '0')}`), 'six segments of 1 MiB and no marker left');

  const dir = await tempDir(t);
  await swiftCli('download', container, id, '-o', join(dir, 'out'));
  assert.ok((await readFile(join(dir, 'out'))).equals(data), 'the swift client downloads the same bytes');
  assert.ok((await store.read(location, 3 * MiB - 5, MiB)).equals(data.subarray(3 * MiB - 5, 4 * MiB - 5)), 'a range across segments');

  await store.delete(location);
  assert.deepEqual(await swiftList(container), [], 'the manifest is gone');
  assert.deepEqual(await swiftList(`${container}_segments`), [], 'and its segments');
});

test('a known size below swift_store_large_object_size is one plain object; at or above it, an SLO', async (t) => {
  const store = await swiftStore(t, { largeObjectSize: 2 * MiB, largeObjectChunkSize: MiB });
  if (!store) return;
  const container = containerOf(store);
  const small = randomUUID();
  const smallData = randomBytes(2 * MiB - 1);
  await (await writeImage(store, small, smallData, smallData.length)).commit(small);
  const smallStat = await swiftHead(container, small);
  assert.equal(smallStat.get('x-static-large-object'), null);
  assert.equal(smallStat.get('etag'), createHash('md5').update(smallData).digest('hex'));
  const large = randomUUID();
  await (await writeImage(store, large, randomBytes(2 * MiB), 2 * MiB)).commit(large);
  assert.equal((await swiftHead(container, large)).get('x-static-large-object'), 'True');
  assert.equal((await swiftList(`${container}_segments`)).length, 2);
});

test('discard and a failed commit leave no object, no segment and no marker', async (t) => {
  const store = await swiftStore(t, { largeObjectChunkSize: MiB });
  if (!store) return;
  const container = containerOf(store);
  const id = randomUUID();
  const writer = await writeImage(store, id, randomBytes(3 * MiB + 5));
  // (listings may lag behind the objects on a loaded machine: swiftListSettled)
  const empty = (names: string[]) => names.length === 0;
  assert.ok((await swiftListSettled(`${container}_segments`, (names) => names.length >= 3)).length >= 3, 'segments and the marker exist while writing');
  await writer.discard();
  assert.deepEqual(await swiftListSettled(`${container}_segments`, empty), []);
  assert.deepEqual(await swiftListSettled(container, empty), []);

  // The commit fails (the image's container vanished under it): what was written goes too.
  const failing = await writeImage(store, randomUUID(), randomBytes(2 * MiB + 1));
  await swiftDrop(container);
  await assert.rejects(failing.commit(failing.tempKey.split('.')[0]!), (e: unknown) => e instanceof StoreError && /404/.test(e.message));
  await failing.discard();
  assert.deepEqual(await swiftListSettled(`${container}_segments`, empty), [], 'segments removed after the failed commit');
  assert.deepEqual(await swiftListSettled(container, empty), []);
});

test('a crash mid-upload: sweep removes its segments and marker, keeps live uploads and committed images', async (t) => {
  const store = await swiftStore(t, { largeObjectChunkSize: MiB });
  if (!store) return;
  const container = containerOf(store);
  const keptId = randomUUID();
  const kept = await writeImage(store, keptId, randomBytes(2 * MiB + 3));
  const location = await kept.commit(keptId);
  const crashed = await writeImage(store, randomUUID(), randomBytes(2 * MiB + 3));
  const live = await writeImage(store, randomUUID(), randomBytes(MiB + 3));
  // A second node's view after the crash: a fresh store on the same container.
  const other = new SwiftStore('swift-test', { authAddress: SWIFT_AUTH, authVersion: '1', user: SWIFT_USER, key: SWIFT_KEY, timeoutMs: 10_000, container });
  await other.init();
  assert.deepEqual(await other.sweep(new Set([live.tempKey])), [crashed.tempKey]);
  const left = await swiftList(`${container}_segments`);
  assert.ok(!left.some((n) => n.includes(crashed.tempKey)), 'no segment of the crashed upload');
  assert.ok(left.some((n) => n.startsWith(`${kept.tempKey}/`)), 'the committed image keeps its segments');
  assert.ok(left.includes(`.partial/${live.tempKey}`), 'the live upload keeps its marker');
  assert.equal(await other.size(location), 2 * MiB + 3);
  await crashed.discard();
  await live.discard();
});

test('an expired token (401) authenticates again, in reads and between segments of a write', async (t) => {
  const store = await swiftStore(t, { largeObjectChunkSize: MiB });
  if (!store) return;
  const id = randomUUID();
  const data = randomBytes(3 * MiB);
  const writer = await store.begin(store.newTempKey(id));
  await writer.write([data.subarray(0, 2 * MiB)]);
  const before = store.connection.authCount;
  await expireSwiftTokens();
  await writer.write([data.subarray(2 * MiB)]);
  const location = await writer.commit(id);
  assert.equal(store.connection.authCount, before + 1, 'one new token for the write');
  await expireSwiftTokens();
  assert.ok((await store.read(location, 0, 3 * MiB)).equals(data));
  assert.equal(store.connection.authCount, before + 2, 'one new token for the read');
});

test('wrong credentials: a clear error at init that names the user, not the key', async (t) => {
  if (!await needSwift(t)) return;
  const store = new SwiftStore('bad', { authAddress: SWIFT_AUTH, authVersion: '1', user: SWIFT_USER, key: 'not-the-key-4242', timeoutMs: 5000 });
  await assert.rejects(store.init(), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.match(e.message, /refused user test:tester \(401\)/);
    assert.doesNotMatch(e.message, /not-the-key-4242/);
    return true;
  });
});

test('a missing container without swift_store_create_container_on_put: a clear error', async (t) => {
  if (!await needSwift(t)) return;
  const store = new SwiftStore('s', { authAddress: SWIFT_AUTH, authVersion: '1', user: SWIFT_USER, key: SWIFT_KEY, timeoutMs: 5000, container: freshName('missing') });
  await assert.rejects(store.init(), /does not exist; create it or set swift_store_create_container_on_put/);
});

/** Listen on a free loopback port until the test ends (`before`: run first then, e.g. to drop connections). */
async function listen(server: Server | ReturnType<typeof createTcpServer>, t: TestContext, before?: () => void): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { before?.(); return new Promise<void>((r) => server.close(() => r())); });
  return (server.address() as { port: number }).port;
}

test('an unreachable endpoint: refused at once, and a silent one times out; neither hangs', async (t) => {
  // A port nobody listens on: one the system gave and took back.
  const closed = createTcpServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const closedPort = (closed.address() as { port: number }).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const refused = new SwiftStore('s', { authAddress: `http://127.0.0.1:${closedPort}/auth/v1.0`, authVersion: '1', user: 'u:u', key: 'k', timeoutMs: 1000 });
  await assert.rejects(refused.init(), (e: unknown) => e instanceof StoreError && e.kind === 'unavailable' && /Swift authentication at .*: cannot reach the server \(ECONNREFUSED\)/.test(e.message));

  const sockets: Socket[] = [];
  const silent = createTcpServer((s) => { sockets.push(s); });
  const port = await listen(silent, t, () => { for (const s of sockets) s.destroy(); });
  const store = new SwiftStore('s', { authAddress: `http://127.0.0.1:${port}/auth/v1.0`, authVersion: '1', user: 'u:u', key: 'k', timeoutMs: 500 });
  const started = Date.now();
  await assert.rejects(store.init(), (e: unknown) => e instanceof StoreError && e.kind === 'unavailable' && /no answer within 500 ms/.test(e.message));
  assert.ok(Date.now() - started < 5000, 'gave up after the timeout');
});

test('swift_store_multiple_containers_seed: images go to <container>_<first id characters>', async (t) => {
  if (!await needSwift(t)) return;
  const base = freshName('seeded');
  const store = new SwiftStore('s', { authAddress: SWIFT_AUTH, authVersion: '1', user: SWIFT_USER, key: SWIFT_KEY, timeoutMs: 10_000, container: base, multipleContainersSeed: 2, createContainerOnPut: true, largeObjectChunkSize: MiB });
  await store.init();
  const ids = ['ab' + randomUUID().slice(2), 'cd' + randomUUID().slice(2)];
  t.after(() => swiftDrop(`${base}_ab`, `${base}_cd`, `${base}_ab_segments`, `${base}_cd_segments`));
  for (const id of ids) {
    const location = await (await writeImage(store, id, randomBytes(MiB + 1))).commit(id);
    assert.equal(location, `swift+config://s/${base}_${id.slice(0, 2)}/${id}`);
    assert.deepEqual(await swiftList(`${base}_${id.slice(0, 2)}`), [id]);
  }
  const crashed = await writeImage(store, 'cd' + randomUUID().slice(2), randomBytes(MiB + 1));
  assert.deepEqual(await store.sweep(new Set()), [crashed.tempKey], 'sweep looks in every segments container');
  await crashed.discard();
});

/**
 * Keystone v3 in front of the real Swift: a minimal identity endpoint that answers the
 * password-auth request with a catalog (an object-store endpoint in two regions, one of them
 * the real Swift) and a real tempauth token, so that the store's request, catalog and region
 * handling meet a real object server. It records what the store sent.
 */
async function keystone(t: TestContext): Promise<{ url: string; requests: unknown[] }> {
  const auth = await fetch(SWIFT_AUTH, { headers: { 'X-Auth-User': SWIFT_USER, 'X-Auth-Key': SWIFT_KEY } });
  const storage = auth.headers.get('x-storage-url')!;
  const token = auth.headers.get('x-auth-token')!;
  const requests: unknown[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v3/auth/tokens') { res.writeHead(404).end(); return; }
      const parsed = JSON.parse(body);
      requests.push(parsed);
      if (parsed.auth.identity.password.user.password !== 'secret-pass') { res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"error":{"code":401}}'); return; }
      res.writeHead(201, { 'X-Subject-Token': token, 'Content-Type': 'application/json' }).end(JSON.stringify({ token: {
        expires_at: new Date(Date.now() + 3600_000).toISOString(),
        catalog: [
          { type: 'image', endpoints: [{ interface: 'public', region_id: 'RegionTwo', url: 'http://127.0.0.1:9/image' }] },
          { type: 'object-store', endpoints: [
            { interface: 'public', region_id: 'RegionOne', region: 'RegionOne', url: 'http://127.0.0.1:9/v1/AUTH_elsewhere' },
            { interface: 'internal', region_id: 'RegionTwo', region: 'RegionTwo', url: 'http://127.0.0.1:9/v1/AUTH_internal' },
            { interface: 'public', region_id: 'RegionTwo', region: 'RegionTwo', url: storage },
          ] },
        ],
      } }));
    });
  });
  const port = await listen(server, t);
  return { url: `http://127.0.0.1:${port}/v3`, requests };
}

test('Keystone v3: password auth scoped to the project, the object-store endpoint of the chosen region', async (t) => {
  if (!await needSwift(t)) return;
  const ks = await keystone(t);
  const container = freshName('keystone');
  t.after(() => swiftDrop(container));
  const base = { authAddress: ks.url, authVersion: '3' as const, user: 'demo:alice', key: 'secret-pass', timeoutMs: 5000, container, createContainerOnPut: true };
  const store = new SwiftStore('ks', { ...base, region: 'RegionTwo' });
  await store.init();
  assert.deepEqual(ks.requests[0], { auth: {
    identity: { methods: ['password'], password: { user: { name: 'alice', domain: { id: 'default' }, password: 'secret-pass' } } },
    scope: { project: { name: 'demo', domain: { id: 'default' } } },
  } });
  const id = randomUUID();
  const data = randomBytes(100_000);
  const location = await (await writeImage(store, id, data, data.length)).commit(id);
  assert.deepEqual(await swiftList(container), [id], 'written to the real Swift of RegionTwo');
  assert.ok((await store.read(location, 0, data.length)).equals(data));

  await assert.rejects(new SwiftStore('ks', base).init(), /object-store endpoints in several regions \(RegionOne, RegionTwo\): set swift_store_region/);
  await assert.rejects(new SwiftStore('ks', { ...base, region: 'RegionThree' }).init(), /no object-store endpoint \(public, region RegionThree\)/);
  await assert.rejects(new SwiftStore('ks', { ...base, key: 'wrong-pass' }).init(), (e: unknown) =>
    e instanceof StoreError && /refused user alice in project demo \(401\)/.test(e.message) && !e.message.includes('wrong-pass'));
});

test('a download that breaks off is resumed with a Range from the first byte not received', async (t) => {
  const store = await swiftStore(t);
  if (!store) return;
  const id = randomUUID();
  const data = randomBytes(4 * MiB + 17);
  await (await writeImage(store, id, data, data.length)).commit(id);

  // A TCP relay in front of Swift that cuts the first object GET after 1.5 MiB of its answer.
  const ranges: string[] = [];
  let cut = false;
  const relay = createTcpServer((client) => {
    const upstream = connect(Number(new URL(SWIFT_AUTH).port), '127.0.0.1');
    let cutAt = Infinity;
    let sent = 0;
    client.on('data', (d: Buffer) => {
      const text = d.toString('latin1');
      if (text.startsWith('GET ') && text.includes(`/${id} `)) {
        ranges.push(/\r\nrange: ([^\r]*)/i.exec(text)?.[1] ?? 'none');
        if (!cut) { cut = true; cutAt = sent + 1.5 * MiB; }
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (sent + d.length > cutAt) { client.write(d.subarray(0, cutAt - sent)); client.destroy(); upstream.destroy(); return; }
      sent += d.length;
      client.write(d);
    });
    for (const s of [client, upstream]) { s.on('error', () => {}); s.on('close', () => { client.destroy(); upstream.destroy(); }); }
  });
  const port = await listen(relay, t);
  await store.connection.connect();
  const storage = new URL(store.connection.url!);
  const relayed = new SwiftStore('swift-test', {
    authAddress: SWIFT_AUTH, authVersion: '1', user: SWIFT_USER, key: SWIFT_KEY, timeoutMs: 10_000,
    container: containerOf(store), endpoint: `http://127.0.0.1:${port}${storage.pathname}`,
  });
  await relayed.init();
  t.after(() => relayed.close());
  const got: Buffer[] = [];
  const out = new Writable({ write(chunk: Buffer, _e, done) { got.push(chunk); done(); } });
  await relayed.send(`swift+config://swift-test/${containerOf(store)}/${id}`, out);
  assert.ok(Buffer.concat(got).equals(data), 'the whole object, once');
  assert.equal(ranges.length, 2, `two GETs: ${JSON.stringify(ranges)}`);
  assert.equal(ranges[0], 'none');
  assert.match(ranges[1]!, /^bytes=\d+-$/);
  assert.ok(Number(/=(\d+)/.exec(ranges[1]!)![1]) > MiB, 'resumed past what was received');
});
