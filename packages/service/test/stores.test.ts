/**
 * The stores: the contract suite (store-contract.ts) on the file store (and on the tests'
 * memory store, which the service tests use as a second backend), what is the file store's own
 * (its download path: reused page-aligned buffers, one read ahead of the socket; holes for
 * zero blocks; file:// locations confined to its directory), and StoreSource: images read by
 * the disk engine through Store.read, checked against qemu-img, fetching only what is needed.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { needs, qemuImg, qemuIo, tempDir } from '@diskhub/testkit';
import { inspectSource, openSource, type ByteSource } from '@diskhub/disk';
import { FileStore } from '../src/stores/file/file-store.js';
import { StoreSource } from '../src/stores/store-source.js';
import { describeInside } from '../src/inside.js';
import { storeContractTests, writeLikeTheService } from './store-contract.js';
import { MemoryStore } from './memory-store.js';

storeContractTests('file', async (t) => new FileStore({ id: 'file', dir: join(await tempDir(t), 'images') }));
storeContractTests('memory (test double)', () => new MemoryStore('mem'));

/**
 * A sink that takes `delayMs` per write and keeps copies of what it was given. With a large
 * highWaterMark writes queue up inside it, so a sender that reused a buffer before its write
 * callback would be caught sending wrong bytes.
 */
function sink(delayMs: number, failAfter = Infinity, highWaterMark = 64 * 1024) {
  const got: Buffer[] = [];
  let bytes = 0;
  const out = new Writable({
    highWaterMark,
    write(chunk: Buffer, _enc, done) {
      // Copy only after the delay: a buffer the sender reused early would show up as wrong data.
      setTimeout(() => {
        got.push(Buffer.from(chunk));
        bytes += chunk.length;
        if (bytes > failAfter) out.destroy(new Error('client went away'));
        else done();
      }, delayMs);
    },
  });
  out.on('error', () => {});
  return { out, data: () => Buffer.concat(got) };
}

test('send: whole files and ranges across the 1 MiB reads arrive intact through a slow socket', async (t) => {
  const dir = await tempDir(t);
  const store = new FileStore({ dir });
  const data = randomBytes((5 << 20) + 123);
  await writeFile(join(dir, 'img'), data);
  const img = store.locationOf('img');
  const whole = sink(1, Infinity, 16 << 20);
  await store.send(img, whole.out);
  await finished(whole.out);
  assert.ok(whole.data().equals(data));
  for (const [start, end] of [[(1 << 20) - 10, (3 << 20) + 5], [0, 0], [data.length - 1, data.length - 1], [4096, (1 << 20) - 1]] as const) {
    const part = sink(0);
    await store.send(img, part.out, { start, end });
    await finished(part.out);
    assert.ok(part.data().equals(data.subarray(start, end + 1)), `range ${start}-${end}`);
  }
  const empty = sink(0);
  await writeFile(join(dir, 'empty'), Buffer.alloc(0));
  await store.send(store.locationOf('empty'), empty.out);
  await finished(empty.out);
  assert.equal(empty.data().length, 0);
});

test('send: a client that goes away mid-download ends the send instead of hanging', async (t) => {
  const dir = await tempDir(t);
  const store = new FileStore({ dir });
  await writeFile(join(dir, 'img'), randomBytes(8 << 20));
  const gone = sink(0, 2 << 20);
  await store.send(store.locationOf('img'), gone.out); // resolves (the test would time out otherwise)
  assert.ok(gone.out.destroyed);
  assert.ok(gone.data().length < 8 << 20);
});

test('an upload\'s zero blocks are left as holes: the file reads back the same and allocates only its data', async (t) => {
  const dir = await tempDir(t);
  const store = new FileStore({ dir });
  await store.init();
  const MiB = 1 << 20;
  // 64 MiB: data at the start, a run of data straddling block edges in the middle, zeroes at the end
  // (the size must still be right), and zero bytes inside a data block (kept, they are data).
  const data = Buffer.alloc(64 * MiB);
  randomBytes(MiB).copy(data, 0);
  randomBytes(100_000).copy(data, 30 * MiB - 50_000);
  data.fill(7, 40 * MiB + 65536 - 3, 40 * MiB + 65536 + 3);
  const staged = await store.begin(store.newTempKey('img'));
  // Write calls of 1 MiB, as the hasher's batches come, each in uneven chunks (blocks span them).
  for (let call = 0; call < data.length; call += MiB) {
    const chunks: Buffer[] = [];
    for (let at = call, i = 0; at < call + MiB; i++) {
      const n = Math.min(call + MiB - at, [777_777, 65536, 1, 300_000][i % 4]!);
      chunks.push(data.subarray(at, at + n));
      at += n;
    }
    await staged.write(chunks);
  }
  const location = await staged.commit('img');
  const path = join(dir, 'img');
  assert.equal(location, `file://${path}`);
  assert.ok((await readFile(path)).equals(data));
  const st = await stat(path);
  assert.equal(st.size, data.length);
  // Data: 1 MiB + 100 kB (in 3 blocks) + 6 bytes (2 blocks): well under 2 MiB allocated where 64 MiB was sent.
  assert.ok(st.blocks * 512 <= 2 * MiB, `allocated ${st.blocks * 512} bytes`);
  assert.ok(st.blocks * 512 >= MiB, `allocated ${st.blocks * 512} bytes (the data itself must be there)`);
});

test('file store: locations are file:// URLs of files directly in its directory, nothing else', async (t) => {
  const dir = await tempDir(t);
  const store = new FileStore({ id: 'fast', dir: join(dir, 'images') });
  await store.init();
  const data = randomBytes(1000);
  const location = await (await writeLikeTheService(store, 'a1b2', data)).commit('a1b2');
  assert.equal(location, `file://${dir}/images/a1b2`);
  assert.ok(store.owns(location));
  for (const other of [`file://${dir}/images/../images/a1b2`, `file://${dir}/images/./a1b2`, `file://${dir}/images//a1b2`, `file://${dir}/images/`,
    `file://${dir}/images/.partial-x`, `file://${dir}/a1b2`, `file://${dir}/images/sub/a1b2`, `file://localhost${dir}/images/a1b2`,
    `${dir}/images/a1b2`, 'a1b2', `file://${dir}/images/a1b2/..`]) {
    assert.equal(store.owns(other), false, other);
  }
  // A location that is not the store's is refused before any file is touched.
  await writeFile(join(dir, 'secret'), 'x');
  await assert.rejects(store.read(`file://${dir}/images/../secret`, 0, 1), /not in file store 'fast'/);
  await assert.rejects(store.delete(`file://${dir}/secret`), /not in file store 'fast'/);
  assert.equal(await readFile(join(dir, 'secret'), 'utf8'), 'x');
  // Temporary keys must be the store's own.
  await assert.rejects(store.begin('../escape'), /bad temporary key/);
  assert.deepEqual(store.detail(), { data_dir: join(dir, 'images'), chunk_size: 65536, thin_provisioning: true });
});

/** A qcow2 made by qemu-img with data written by qemu-io: 64 MiB virtual, 3 MiB data. */
async function qcow2(t: test.TestContext): Promise<{ path: string; bytes: Buffer }> {
  const dir = await tempDir(t);
  const path = join(dir, 'disk.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', path, '64M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 40M 2M', path);
  return { path, bytes: await readFile(path) };
}

test('StoreSource on the file store: the engine reads a stored qcow2 as qemu-img does', needs('qemu-img', 'qemu-io'), async (t) => {
  const { path, bytes } = await qcow2(t);
  const store = new FileStore({ dir: join(await tempDir(t), 'images') });
  await store.init();
  const location = await (await writeLikeTheService(store, 'img1', bytes)).commit('img1');
  const source = new StoreSource(store, location);
  const info = JSON.parse(await qemuImg('info', '--output=json', path)) as { format: string; 'virtual-size': number };
  const report = await inspectSource(source);
  assert.equal(report.format, info.format);
  assert.equal(report.virtualSize, info['virtual-size']);
  assert.equal(report.safe, true);
  // The allocation the engine sees through the store is qemu-img map's.
  const image = await openSource(source, { format: 'qcow2' });
  let data = 0;
  for await (const e of image.blockStatus(0, image.size)) if (e.data) data += e.length;
  await image.close();
  const map = JSON.parse(await qemuImg('map', '--output=json', path)) as { length: number; data: boolean }[];
  assert.equal(data, map.filter((e) => e.data).reduce((n, e) => n + e.length, 0));
  // Reads past the end are short; the source cannot be written.
  const tail = new Uint8Array(100);
  assert.equal(await source.read(tail, bytes.length - 10), 10);
  assert.equal(await source.read(tail, bytes.length + 5), 0);
  await assert.rejects((source as ByteSource).write(new Uint8Array(1), 0), /read-only/);
});

test('StoreSource on a slow remote store: x-diskhub/inside reads a few blocks, not the image', needs('qemu-img', 'qemu-io'), async (t) => {
  const { path } = await qcow2(t);
  // A 19 MiB image in a store that takes 5 ms per call (a remote object store's round trip).
  const store = new MemoryStore('slow', 'slow', { delayMs: 5 });
  await store.init();
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x33 8M 16M', path);
  const withMore = await readFile(path);
  assert.ok(withMore.length > 16 << 20, `image is ${withMore.length} bytes`);
  const location = await (await writeLikeTheService(store, 'img2', withMore)).commit('img2');
  store.bytesRead = 0;
  store.readCalls = 0;
  const source = new StoreSource(store, location);
  const inside = await describeInside(source, 64);
  assert.equal(inside.format, 'qcow2');
  assert.equal(inside.virtual_size, 64 << 20);
  assert.equal(inside.allocation!.totals.data, (1 + 2 + 16) << 20);
  // (the allocation picture reads the qcow2 tables; the OS inspection probes for partition tables and filesystems)
  assert.ok(store.bytesRead < 3 << 20, `fetched ${store.bytesRead} of ${withMore.length} bytes`);
  assert.ok(store.readCalls < 20, `${store.readCalls} store reads`);
});

test('StoreSource caches blocks: repeated and concurrent small reads are one store read each', async () => {
  const store = new MemoryStore('cache');
  const data = randomBytes(3 << 20);
  const location = await (await writeLikeTheService(store, 'img3', data)).commit('img3');
  const source = new StoreSource(store, location, { blockSize: 64 * 1024, blocks: 4 });
  const read = async (offset: number, n: number) => {
    const buf = new Uint8Array(n);
    const got = await source.read(buf, offset);
    assert.ok(Buffer.from(buf.subarray(0, got)).equals(data.subarray(offset, offset + n)), `read ${offset}+${n}`);
  };
  await Promise.all([read(0, 512), read(100, 512), read(4096, 4096)]);
  assert.equal(store.readCalls, 1, 'three reads of one block: one store read');
  await read(65536 - 10, 20); // spans blocks 0 and 1
  assert.equal(store.readCalls, 2);
  for (let b = 2; b < 7; b++) await read(b * 65536, 1); // evicts the oldest blocks (4 kept)
  const before = store.readCalls;
  await read(0, 1);
  assert.equal(store.readCalls, before + 1, 'an evicted block is read again');
  // A large read goes to the store in one request, uncached.
  await read(1 << 20, 1 << 20);
  assert.equal(store.readCalls, before + 2);
});
