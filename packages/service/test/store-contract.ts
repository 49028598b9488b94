/**
 * The store contract's test suite (src/stores/store.ts): every store — file, RBD, Swift, S3 —
 * registers it from its own test file and must pass it unchanged:
 *
 *     import { storeContractTests } from './store-contract.js';
 *     storeContractTests('rbd', async (t) => new RbdStore({ ... }), { testOptions: needs('rbd') });
 *
 * `makeStore(t)` gives a fresh, not yet initialised store for one test (or null to skip it, after
 * calling t.skip); the suite calls `init()` and, after the test, `close()`. Objects are written
 * as the image service writes them: whole 64 KiB blocks in 1 MiB batches split into uneven
 * chunks, one write in flight.
 */
import { test, type TestContext, type TestOptions } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { StoreError, type Store } from '../src/stores/store.js';

export type MakeStore = (t: TestContext) => Promise<Store | null> | Store | null;

export interface StoreContractOptions {
  /** node:test options for every test (e.g. testkit's needs(...), a timeout). */
  testOptions?: TestOptions;
}

const KiB = 1024;
const MiB = 1 << 20;

/** Write `data` through a fresh writer as the service does; returns the writer (not committed). */
export async function writeLikeTheService(store: Store, imageId: string, data: Buffer, sizeHint?: number) {
  const writer = await store.begin(store.newTempKey(imageId), sizeHint);
  for (let call = 0; call < data.length; call += MiB) {
    const end = Math.min(data.length, call + MiB);
    const chunks: Buffer[] = [];
    for (let at = call, i = 0; at < end; i++) {
      const n = Math.min(end - at, [300_001, 65536, 1, 777_777][i % 4]!);
      chunks.push(data.subarray(at, at + n));
      at += n;
    }
    await writer.write(chunks);
  }
  return writer;
}

/** A sink that collects what it is sent; `failAfter`: destroys itself once it got more bytes. */
function sink(failAfter = Infinity) {
  const got: Buffer[] = [];
  let bytes = 0;
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      got.push(Buffer.from(chunk));
      bytes += chunk.length;
      if (bytes > failAfter) out.destroy(new Error('client went away'));
      else setImmediate(done);
    },
  });
  out.on('error', () => {});
  return { out, data: () => Buffer.concat(got) };
}

async function sent(store: Store, location: string, range?: { start: number; end: number }): Promise<Buffer> {
  const s = sink();
  await store.send(location, s.out, range);
  await finished(s.out);
  return s.data();
}

async function rejectsNotFound(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StoreError, `${what}: a StoreError, got ${String(e)}`);
    assert.equal(e.kind, 'not-found', `${what}: kind not-found, got ${e.kind} (${e.message})`);
    return true;
  });
}

/** Image data with data blocks, whole zero blocks between them and zero blocks at the end. */
function imageData(): Buffer {
  const data = Buffer.alloc(4 * MiB + 100 * KiB);
  randomBytes(MiB + 5).copy(data, 0);
  randomBytes(200 * KiB).copy(data, 2 * MiB + 64 * KiB - 3);
  data.fill(0x5a, 3 * MiB + 1, 3 * MiB + 2);
  return data;
}

export function storeContractTests(name: string, makeStore: MakeStore, options: StoreContractOptions = {}): void {
  const opened = async (t: TestContext): Promise<Store | null> => {
    const store = await makeStore(t);
    if (!store) return null;
    await store.init();
    t.after(() => store.close());
    return store;
  };
  const it = (title: string, fn: (store: Store, t: TestContext) => Promise<void>): void => {
    void test(`store contract (${name}): ${title}`, options.testOptions ?? {}, async (t) => {
      const store = await opened(t);
      if (store) await fn(store, t);
    });
  };

  it('write, commit, then read any range, size and owns', async (store) => {
    const id = randomUUID();
    const data = randomBytes(3 * MiB + 123);
    const writer = await writeLikeTheService(store, id, data, data.length);
    const location = await writer.commit(id);
    assert.equal(typeof location, 'string');
    assert.ok(store.owns(location), `owns its own location ${location}`);
    assert.equal(await store.size(location), data.length);
    for (const [offset, length] of [[0, 1], [0, 4096], [MiB - 7, 3 * KiB], [MiB, MiB], [2 * MiB + 17, MiB + 106], [data.length - 1, 1]] as const) {
      const got = await store.read(location, offset, length);
      assert.ok(got.equals(data.subarray(offset, offset + length)), `read ${offset}+${length}`);
    }
    // Past the end: shorter, then empty.
    assert.ok((await store.read(location, data.length - 10, 4096)).equals(data.subarray(data.length - 10)));
    assert.equal((await store.read(location, data.length, 4096)).length, 0);
    assert.equal((await store.read(location, data.length + MiB, 10)).length, 0);
  });

  it('send: the whole object, ranges, and an early stop when the client goes away', async (store) => {
    const id = randomUUID();
    const data = randomBytes(3 * MiB + 999);
    const location = await (await writeLikeTheService(store, id, data)).commit(id);
    assert.ok((await sent(store, location)).equals(data), 'whole object');
    for (const [start, end] of [[0, 0], [MiB - 10, 2 * MiB + 5], [data.length - 1, data.length - 1], [4096, MiB - 1]] as const) {
      assert.ok((await sent(store, location, { start, end })).equals(data.subarray(start, end + 1)), `range ${start}-${end}`);
    }
    const gone = sink(MiB);
    await store.send(location, gone.out); // resolves: it must not hang on a destroyed stream
    assert.ok(gone.out.destroyed);
    assert.ok(gone.data().length < data.length, 'stopped before the end');
  });

  it('an empty object', async (store) => {
    const id = randomUUID();
    const location = await (await writeLikeTheService(store, id, Buffer.alloc(0), 0)).commit(id);
    assert.equal(await store.size(location), 0);
    assert.equal((await store.read(location, 0, 100)).length, 0);
    assert.equal((await sent(store, location)).length, 0);
  });

  it('zero runs read back as zeroes (a thin store may skip writing them) and the size counts them', async (store) => {
    const id = randomUUID();
    const data = imageData();
    const location = await (await writeLikeTheService(store, id, data)).commit(id);
    assert.equal(await store.size(location), data.length, 'trailing zero blocks count in the size');
    const zeroes = await store.read(location, 3 * MiB + 64 * KiB, MiB);
    assert.equal(zeroes.length, MiB);
    assert.ok(zeroes.equals(Buffer.alloc(MiB)), 'a zero run reads as zeroes');
    assert.ok((await store.read(location, MiB - 100, 2 * MiB)).equals(data.subarray(MiB - 100, 3 * MiB - 100)), 'data, zeroes, data');
    assert.ok((await store.read(location, data.length - 64 * KiB - 1, MiB)).equals(data.subarray(data.length - 64 * KiB - 1)), 'the zero tail');
    assert.ok((await sent(store, location)).equals(data), 'send');
  });

  it('sizeHint is only a hint: absent, exact or omitted the data is the same', async (store) => {
    const data = randomBytes(MiB + 4321);
    for (const hint of [undefined, data.length]) {
      const id = randomUUID();
      const location = await (await writeLikeTheService(store, id, data, hint)).commit(id);
      assert.equal(await store.size(location), data.length, `hint ${hint}`);
      assert.ok((await sent(store, location)).equals(data), `hint ${hint}`);
    }
  });

  it('delete: the object is gone (not-found after), deleting a missing object is no error', async (store) => {
    const id = randomUUID();
    const location = await (await writeLikeTheService(store, id, randomBytes(100 * KiB))).commit(id);
    await store.delete(location);
    await rejectsNotFound(store.size(location), 'size after delete');
    await rejectsNotFound(store.read(location, 0, 10), 'read after delete');
    await rejectsNotFound(store.send(location, sink().out), 'send after delete');
    await store.delete(location);
  });

  it('discard leaves nothing, and is safe to call twice', async (store) => {
    const id = randomUUID();
    const writer = await writeLikeTheService(store, id, randomBytes(2 * MiB));
    await writer.discard();
    await writer.discard();
    assert.deepEqual(await store.sweep(new Set()), [], 'no temporary data left to sweep');
    // An empty writer too.
    const empty = await store.begin(store.newTempKey(id));
    await empty.discard();
    assert.deepEqual(await store.sweep(new Set()), []);
  });

  it('sweep removes temporary data not in the live set, keeps live and committed data', async (store) => {
    const kept = randomUUID();
    const committedData = randomBytes(300 * KiB);
    const location = await (await writeLikeTheService(store, kept, committedData)).commit(kept);
    // Two writes a crash cut off: one still recorded live in the database, one not.
    const live = await writeLikeTheService(store, randomUUID(), randomBytes(MiB + 1));
    const dead = await writeLikeTheService(store, randomUUID(), randomBytes(MiB + 1));
    const removed = await store.sweep(new Set([live.tempKey]));
    assert.ok(removed.includes(dead.tempKey), `swept ${dead.tempKey}: ${JSON.stringify(removed)}`);
    assert.ok(!removed.includes(live.tempKey), 'a live key is kept');
    assert.ok((await store.read(location, 0, committedData.length)).equals(committedData), 'committed data is kept');
    assert.deepEqual((await store.sweep(new Set([live.tempKey]))), [], 'nothing left to sweep');
    await live.discard();
    await dead.discard().catch(() => {});
    assert.deepEqual(await store.sweep(new Set()), []);
  });

  it('temporary keys are fresh for each upload', async (store) => {
    const id = randomUUID();
    const keys = new Set(Array.from({ length: 20 }, () => store.newTempKey(id)));
    assert.equal(keys.size, 20);
  });

  it('owns: its own locations only; detail has no credential-looking value', async (store) => {
    const id = randomUUID();
    const location = await (await writeLikeTheService(store, id, randomBytes(10))).commit(id);
    assert.ok(store.owns(location));
    for (const foreign of ['', id, 'not a url', 'file:///nonexistent-diskhub-contract/x', 'rbd://00000000-0000-0000-0000-000000000000/nonexistent-diskhub-contract/x/snap',
      'swift+https://nonexistent.invalid/v1/AUTH_x/nonexistent-diskhub-contract/x', 's3://nonexistent.invalid/nonexistent-diskhub-contract/x', 'http://nonexistent.invalid/x']) {
      assert.equal(store.owns(foreign), false, `owns ${JSON.stringify(foreign)}`);
    }
    const detail = JSON.stringify(store.detail());
    assert.doesNotMatch(detail, /password|secret|key"|token/i, `detail ${detail}`);
    assert.doesNotMatch(location, /:[^/@]*@/, 'no user:password@ in a location');
    assert.equal(typeof store.id, 'string');
    assert.equal(typeof store.description, 'string');
  });
}
