/**
 * The RBD store against a real Ceph cluster (.ci/services/ceph.sh), with the rbd CLI as the
 * peer: what the store commits is what `rbd export` reads, carries Glance's protected snapshot,
 * stays thin, survives a delete while cloned, and leaves nothing behind when a write fails.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { runOk, tempDir } from '@diskhub/testkit';
import { StoreError, type Store } from '../src/stores/store.js';
import { RbdStore } from '../src/stores/rbd/rbd-store.js';
import { rbdStoreOptions } from '../src/stores/rbd/factory.js';
import { buildStore, StoreConfigError } from '../src/stores/registry.js';
import '../src/stores/builtin.js';
import { storeContractTests } from './store-contract.js';
import { parseRbdLocation, formatRbdLocation } from '../src/stores/rbd/location.js';
import { loadLibrbd } from '@diskhub/rbd';
import { ceph, glanceStore, PARTIAL_TAG, rbdCli, rbdExport, type CephCluster } from './ceph.js';

const MiB = 1 << 20;

// The contract every store passes; the images it commits are deleted after each test (the
// pool outlives the test run, unlike a file store's temporary directory).
storeContractTests('rbd', (t) => {
  const c = ceph(t);
  if (!c) return null;
  const store = glanceStore(c);
  const committed: string[] = [];
  const begin = store.begin.bind(store);
  store.begin = async (tempKey, sizeHint) => {
    const writer = await begin(tempKey, sizeHint);
    const commit = writer.commit.bind(writer);
    return Object.assign(writer, { commit: async (id: string) => { const l = await commit(id); committed.push(l); return l; } });
  };
  t.after(async () => { for (const l of committed) await store.delete(l); });
  return store;
});

/** Writes `data` as the image service does: 1 MiB batches of uneven chunks, one call in flight. */
async function upload(store: Store, imageId: string, data: Buffer, sizeHint?: number) {
  const writer = await store.begin(store.newTempKey(imageId), sizeHint);
  for (let at = 0; at < data.length; at += MiB) {
    const batch = data.subarray(at, Math.min(data.length, at + MiB));
    const cut = Math.min(batch.length, 333_333);
    await writer.write(cut < batch.length ? [batch.subarray(0, cut), batch.subarray(cut)] : [batch]);
  }
  return writer;
}

/**
 * A connected store for one test; null when the test was skipped. `defer` queues clean-up that
 * runs after the test, last queued first, before the store is closed.
 */
async function connected(t: TestContext): Promise<{ c: CephCluster; store: RbdStore; defer: (fn: () => Promise<unknown>) => void } | null> {
  const c = ceph(t);
  if (!c) return null;
  const store = glanceStore(c);
  await store.init();
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await store.close();
  });
  return { c, store, defer: (fn) => cleanups.push(fn) };
}

function collect(): { out: Writable; data: () => Buffer } {
  const got: Buffer[] = [];
  const out = new Writable({ write(chunk: Buffer, _e, done) { got.push(Buffer.from(chunk)); done(); } });
  return { out, data: () => Buffer.concat(got) };
}

async function images(c: CephCluster): Promise<string[]> {
  return JSON.parse(await rbdCli(c, ['ls', '--format', 'json', c.pool])) as string[];
}

test('a committed image is rbd export-identical, under its id, with a protected snapshot "snap"', async (t) => {
  const env = await connected(t);
  if (!env) return;
  const { c, store, defer } = env;
  const id = randomUUID();
  const data = randomBytes(5 * MiB + 12_345);
  const writer = await upload(store, id, data, data.length);
  assert.ok((await images(c)).includes(writer.tempKey), 'the data is staged under the temporary name');
  assert.ok(!(await images(c)).includes(id));
  const location = await writer.commit(id);
  defer(() => store.delete(location));
  assert.equal(location, `rbd://${c.fsid}/${c.pool}/${id}/snap`);
  assert.equal(store.owns(location), true);
  const names = await images(c);
  assert.ok(names.includes(id) && !names.includes(writer.tempKey), 'renamed on commit');

  const snaps = JSON.parse(await rbdCli(c, ['snap', 'ls', '--format', 'json', `${c.pool}/${id}`])) as { name: string }[];
  assert.deepEqual(snaps.map((s) => s.name), ['snap']);
  const info = JSON.parse(await rbdCli(c, ['info', '--format', 'json', `${c.pool}/${id}@snap`])) as { size: number; protected: string; features: string[]; order: number };
  assert.equal(info.protected, 'true');
  assert.equal(info.size, data.length);
  assert.ok(info.features.includes('layering'), 'clonable (layering)');
  assert.equal(info.order, 23, 'objects of rbd_store_chunk_size (8 MiB)');
  assert.ok((await rbdExport(c, `${c.pool}/${id}@snap`)).equals(data));
  assert.ok((await rbdExport(c, `${c.pool}/${id}`)).equals(data));

  assert.equal(await store.size(location), data.length);
  assert.ok((await store.read(location, 3 * MiB - 7, 100_000)).equals(data.subarray(3 * MiB - 7, 3 * MiB - 7 + 100_000)));
  assert.ok((await store.read(location, data.length - 10, 4096)).equals(data.subarray(data.length - 10)), 'shorter only at the end');
  assert.equal((await store.read(location, data.length, 10)).length, 0);
  const all = collect();
  await store.send(location, all.out);
  assert.ok(all.data().equals(data));
  const part = collect();
  await store.send(location, part.out, { start: 4 * MiB + 1, end: 5 * MiB + 100 });
  assert.ok(part.data().equals(data.subarray(4 * MiB + 1, 5 * MiB + 101)));
});

test('an upload of unknown size grows the image and ends at the exact size', async (t) => {
  const env = await connected(t);
  if (!env) return;
  const { c, store, defer } = env;
  const id = randomUUID();
  const data = randomBytes(19 * MiB + 3);
  const location = await (await upload(store, id, data)).commit(id);
  defer(() => store.delete(location));
  const info = JSON.parse(await rbdCli(c, ['info', '--format', 'json', `${c.pool}/${id}`])) as { size: number };
  assert.equal(info.size, data.length);
  assert.ok((await rbdExport(c, `${c.pool}/${id}@snap`)).equals(data));
});

test('thin provisioning: zero blocks are not written (rbd du), and read back as zeroes', async (t) => {
  const env = await connected(t);
  if (!env) return;
  const { c, store, defer } = env;
  const id = randomUUID();
  const data = Buffer.alloc(64 * MiB);
  randomBytes(MiB).copy(data, 32 * MiB);
  data.write('tail', 64 * MiB - 4);
  const location = await (await upload(store, id, data, data.length)).commit(id);
  defer(() => store.delete(location));
  const du = JSON.parse(await rbdCli(c, ['du', '--format', 'json', `${c.pool}/${id}`])) as { images: { name: string; snapshot?: string; used_size: number }[] };
  const used = du.images.reduce((n, i) => n + i.used_size, 0);
  // One 8 MiB object holds the random MiB, one the tail: 16 MiB of 64.
  assert.ok(used <= 16 * MiB, `rbd du reports ${used} bytes used`);
  assert.ok((await rbdExport(c, `${c.pool}/${id}@snap`)).equals(data));

  const dense = glanceStore(c, { thinProvisioning: false });
  await dense.init();
  defer(() => dense.close());
  const id2 = randomUUID();
  const location2 = await (await upload(dense, id2, data, data.length)).commit(id2);
  defer(() => dense.delete(location2));
  const du2 = JSON.parse(await rbdCli(c, ['du', '--format', 'json', `${c.pool}/${id2}`])) as { images: { used_size: number }[] };
  assert.equal(du2.images.reduce((n, i) => n + i.used_size, 0), 64 * MiB, 'rbd_thin_provisioning=false writes every byte, as Glance does');
});

test('delete removes the snapshot and the image; a snapshot with a clone in vms is refused and kept', async (t) => {
  const env = await connected(t);
  if (!env) return;
  const { c, store, defer } = env;
  const id = randomUUID();
  const data = randomBytes(2 * MiB);
  const location = await (await upload(store, id, data, data.length)).commit(id);
  const clone = `clone-${id}`;
  // Nova's clone, made by the admin (client.glance may not write to vms).
  await rbdCli(c, ['clone', `${c.pool}/${id}@snap`, `${c.clonePool}/${clone}`], 'admin');
  let cloned = true;
  defer(async () => {
    if (cloned) await rbdCli(c, ['rm', '--no-progress', `${c.clonePool}/${clone}`], 'admin');
    await store.delete(location);
  });
  await assert.rejects(store.delete(location), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.match(e.message, /is in use: its snapshot snap has clones \(client\.glance may not list them\); it was not deleted/);
    return true;
  });
  const info = JSON.parse(await rbdCli(c, ['info', '--format', 'json', `${c.pool}/${id}@snap`])) as { protected: string };
  assert.equal(info.protected, 'true', 'the snapshot is still protected');
  assert.ok((await rbdExport(c, `${c.clonePool}/${clone}`, 'admin')).equals(data), 'the clone still reads the image');
  assert.ok((await store.read(location, 0, data.length)).equals(data));

  await rbdCli(c, ['rm', '--no-progress', `${c.clonePool}/${clone}`], 'admin');
  cloned = false;
  await store.delete(location);
  assert.ok(!(await images(c)).includes(id));
  await store.delete(location); // a missing image is no error
  await assert.rejects(store.read(location, 0, 1), (e: unknown) => e instanceof StoreError && e.kind === 'not-found');
});

test('a failed upload leaves no image in the pool; a crashed one is swept', async (t) => {
  const env = await connected(t);
  if (!env) return;
  const { c, store, defer } = env;
  // (other tests may write to the pool at the same time: only this test's names are checked)
  const ours = (names: string[], ...ids: string[]) => names.filter((n) => ids.some((id) => n.includes(id))).sort();

  // The client went away: the service discards the write.
  const id = randomUUID();
  const writer = await upload(store, id, randomBytes(3 * MiB));
  await writer.discard();
  await writer.discard();
  assert.deepEqual(ours(await images(c), id), []);

  // Commit onto an image that exists: refused, the existing image untouched, nothing left over.
  const taken = randomUUID();
  const first = randomBytes(MiB);
  const location = await (await upload(store, taken, first)).commit(taken);
  defer(() => store.delete(location));
  const second = await upload(store, taken, randomBytes(2 * MiB));
  await assert.rejects(second.commit(taken), /already exists/);
  await second.discard();
  assert.deepEqual(ours(await images(c), taken), [taken]);
  assert.ok((await rbdExport(c, `${c.pool}/${taken}@snap`)).equals(first));

  // A node stops between begin and commit; on its next start the sweep removes what the
  // database does not list as live.
  const stopped = glanceStore(c);
  await stopped.init();
  const liveId = randomUUID();
  const deadId = randomUUID();
  const crashedLive = await upload(stopped, liveId, randomBytes(MiB));
  const crashedDead = await upload(stopped, deadId, randomBytes(MiB));
  // A write still going on in another process (the watcher of its image) is never swept.
  const busyId = randomUUID();
  const elsewhere = glanceStore(c);
  await elsewhere.init();
  defer(() => elsewhere.close());
  const busy = await upload(elsewhere, busyId, randomBytes(MiB));
  // Another deployment on the same pool (another partial tag): its dead upload is its own sweep's, never this one's.
  const neighbour = glanceStore(c, { partialTag: `${PARTIAL_TAG}-other` });
  await neighbour.init();
  const neighbourId = randomUUID();
  const theirs = await upload(neighbour, neighbourId, randomBytes(MiB));
  assert.ok(theirs.tempKey.startsWith(`diskhub-partial-${PARTIAL_TAG}-other.${neighbourId}-`), theirs.tempKey);
  assert.ok(crashedDead.tempKey.startsWith(`diskhub-partial-${PARTIAL_TAG}.${deadId}-`), crashedDead.tempKey);
  await neighbour.close();
  await stopped.close();
  const removed = await store.sweep(new Set([crashedLive.tempKey]));
  assert.ok(removed.includes(crashedDead.tempKey) && !removed.includes(crashedLive.tempKey) && !removed.includes(busy.tempKey));
  assert.ok(!removed.includes(theirs.tempKey) && (await images(c)).includes(theirs.tempKey), 'another tag\'s partial upload is left alone');
  const sweeper = glanceStore(c, { partialTag: `${PARTIAL_TAG}-other` });
  await sweeper.init();
  defer(() => sweeper.close());
  assert.deepEqual(await sweeper.sweep(new Set()), [theirs.tempKey], 'its own deployment\'s sweep removes it');
  assert.ok(!(await images(c)).includes(crashedDead.tempKey));
  // (the service test's start-up sweep may run at the same time, with its own live set: only
  // what this sweep answered and what is left at the end are checked)
  const again = await store.sweep(new Set());
  assert.ok(!again.includes(busy.tempKey));
  assert.ok(!(await images(c)).includes(crashedLive.tempKey));
  const busyLocation = await busy.commit(busyId);
  defer(() => elsewhere.delete(busyLocation));
  const snaps = JSON.parse(await rbdCli(c, ['snap', 'ls', '--format', 'json', `${c.pool}/${busyId}`])) as { name: string }[];
  assert.deepEqual(snaps.map((s) => s.name), ['snap'], 'the write that went on committed whole');
  assert.deepEqual(ours(await images(c), liveId, deadId, busyId, taken), [busyId, taken].sort());
});

test('the cephx key is in no error and not in detail()', async (t) => {
  const c = ceph(t);
  if (!c) return;
  const key = /key = (\S+)/.exec(await readFile(c.glanceKeyring, 'utf8'))![1]!;
  const dir = await tempDir(t);
  const wrong = join(dir, 'ceph.client.glance.keyring');
  await runOk('ceph-authtool', ['--create-keyring', wrong, '--gen-key', '-n', 'client.glance']);
  const wrongKey = /key = (\S+)/.exec(await readFile(wrong, 'utf8'))![1]!;
  const bad = glanceStore(c, { keyring: wrong, connectTimeout: 5 });
  const e = await bad.init().then(() => null, (err: unknown) => err);
  assert.ok(e instanceof StoreError, 'a wrong key fails init()');
  assert.match(e.message, /cannot connect to the Ceph cluster as client\.glance/);
  assert.ok(!e.message.includes(wrongKey) && !e.message.includes(key), e.message);

  const store = glanceStore(c);
  await store.init();
  t.after(() => store.close());
  const detail = JSON.stringify(store.detail());
  assert.ok(!detail.includes(key));
  assert.deepEqual(store.detail(), { pool: c.pool, user: 'client.glance', ceph_conf: c.conf, fsid: c.fsid, chunk_size: 8, thin_provisioning: true });
  const notThere = formatRbdLocation(c.fsid, c.pool, randomUUID(), 'snap');
  const e2 = await store.read(notThere, 0, 1).then(() => null, (err: unknown) => err);
  assert.ok(e2 instanceof StoreError && e2.kind === 'not-found' && !e2.message.includes(key));
});

test('init() fails clearly, and in bounded time, for a missing keyring, an unknown pool and an unreachable cluster', { timeout: 60_000 }, async (t) => {
  const c = ceph(t);
  if (!c) return;
  const dir = await tempDir(t);
  await assert.rejects(glanceStore(c, { keyring: join(dir, 'missing.keyring'), connectTimeout: 5 }).init(), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.match(e.message, /cannot connect to the Ceph cluster as client\.glance/);
    return true;
  });
  const noPool = glanceStore(c, { pool: 'no-such-pool' });
  await assert.rejects(noPool.init(), /cannot open pool no-such-pool.*no such pool/);
  await noPool.close();
  // A monitor address where nothing listens: the connection gives up after rados_connect_timeout.
  const conf = join(dir, 'ceph.conf');
  await writeFile(conf, `[global]\nfsid = ${c.fsid}\nmon_host = 127.0.0.1:9\nauth_client_required = cephx\n`);
  const started = Date.now();
  await assert.rejects(glanceStore(c, { confFile: conf, connectTimeout: 3 }).init(), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.equal(e.kind, 'unavailable');
    assert.match(e.message, /cannot connect to the Ceph cluster/);
    return true;
  });
  t.diagnostic(`unreachable cluster refused after ${Date.now() - started} ms`);
});

test('locations: Glance\'s forms parsed and written; foreign ones not owned', async (t) => {
  const env = await connected(t);
  if (!env) return;
  const { c, store, defer } = env;
  assert.deepEqual(parseRbdLocation('rbd://f%2Ds/images/a%20b/snap'), { fsid: 'f-s', pool: 'images', image: 'a b', snapshot: 'snap' });
  assert.equal(parseRbdLocation('rbd://fsid/images/a%40b/snap'), null, 'no @ in an image name (librbd\'s snapshot separator)');
  assert.equal(formatRbdLocation('fsid', 'my pool', 'x(1)', 'snap'), 'rbd://fsid/my%20pool/x%281%29/snap');
  assert.deepEqual(parseRbdLocation('rbd://legacy-image'), { fsid: null, pool: null, image: 'legacy-image', snapshot: null });
  for (const bad of ['rbd://a/b', 'rbd://a//c/d', 'file:///x', 'rbd://a/b/c/d/e', 'rbd://%zz']) assert.equal(parseRbdLocation(bad), null, bad);
  assert.equal(store.owns(`rbd://${c.fsid}/${c.pool}/x/snap`), true);
  assert.equal(store.owns('rbd://00000000-0000-0000-0000-000000000000/images/x/snap'), false, 'another cluster');
  await assert.rejects(store.read('rbd://00000000-0000-0000-0000-000000000000/images/x/snap', 0, 1), (e: unknown) => e instanceof StoreError && e.kind === 'not-found');
  assert.throws(() => new RbdStore({ chunkSizeMiB: 128 }), /rbd_store_chunk_size must be 1 to 64/);
});

test('configuration: Glance\'s option names through the store registry', () => {
  assert.deepEqual(rbdStoreOptions({ id: 'ceph', type: 'rbd', rbd_store_pool: 'p', rbd_store_user: 'glance', rbd_store_ceph_conf: '/etc/ceph/ceph.conf', rbd_store_chunk_size: '4', rados_connect_timeout: -1, rbd_thin_provisioning: 'False' }),
    { id: 'ceph', description: undefined, pool: 'p', user: 'glance', confFile: '/etc/ceph/ceph.conf', keyring: undefined, chunkSizeMiB: 4, connectTimeout: undefined, thinProvisioning: false, partialTag: undefined });
  assert.equal(rbdStoreOptions({ id: 'ceph', type: 'rbd', rbd_store_partial_tag: 'region-two' }).partialTag, 'region-two');
  const store = buildStore({ id: 'ceph', type: 'rbd', rbd_store_pool: 'images', rbd_store_chunk_size: 16, rbd_thin_provisioning: true }, { dataDir: '/nonexistent' });
  assert.ok(store instanceof RbdStore);
  assert.equal(store.type, 'rbd');
  assert.deepEqual(store.detail(), { pool: 'images', user: null, ceph_conf: null, fsid: null, chunk_size: 16, thin_provisioning: true });
  for (const [spec, message] of [
    [{ rbd_store_chunk_size: 'big' }, /rbd_store_chunk_size must be an integer/],
    [{ rbd_store_chunk_size: 128 }, /rbd_store_chunk_size must be 1 to 64/],
    [{ rbd_thin_provisioning: 'maybe' }, /rbd_thin_provisioning must be true or false/],
    [{ rbd_store_pol: 'images' }, /unknown option 'rbd_store_pol'/],
  ] as const) {
    assert.throws(() => buildStore({ id: 'ceph', type: 'rbd', ...spec }, { dataDir: '/nonexistent' }), (e: unknown) => e instanceof StoreConfigError && message.test(e.message));
  }
  // (a tag ends at its '.': one with a '.' would read as another tag's)
  for (const tag of ['a.b', 'x'.repeat(33), 'a/b']) {
    assert.throws(() => buildStore({ id: 'ceph', type: 'rbd', rbd_store_partial_tag: tag }, { dataDir: '/nonexistent' }), /rbd_store_partial_tag must be 1 to 32 letters, digits, '-' or '_'/);
  }
});

test('the librbd addon refuses what is not a handle or a number with a TypeError (no crash)', (t) => {
  if (!ceph(t)) return;
  const { librbd, error } = loadLibrbd();
  assert.ok(librbd, `the addon loads (${error})`);
  const bogus = [{}, null, 42, 'images', Buffer.alloc(8)] as unknown[];
  for (const h of bogus) {
    for (const call of [
      () => librbd.write(h as never, 0, [Buffer.alloc(1)], 0), () => librbd.read(h as never, 0, Buffer.alloc(1)), () => librbd.room(h as never),
      () => librbd.size(h as never), () => librbd.close(h as never), () => librbd.list(h as never), () => librbd.openPool(h as never, 'images'),
      () => librbd.fsid(h as never), () => librbd.snapCreate(h as never, 'snap'),
    ]) {
      assert.throws(call, TypeError);
    }
  }
  assert.throws(() => librbd.connect(1 as never, '', '', 1), TypeError);
  assert.throws(() => librbd.connect('', '', '', -1), TypeError);
});
