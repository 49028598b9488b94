/**
 * The stores: the contract suite (store-contract.ts) on the file store, and what is the file
 * store's own: its download path (reused page-aligned buffers, one read ahead of the socket),
 * holes for zero blocks, file:// locations confined to its directory.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { tempDir } from '@diskhub/testkit';
import { FileStore } from '../src/stores/file/file-store.js';
import { storeContractTests, writeLikeTheService } from './store-contract.js';

storeContractTests('file', async (t) => new FileStore({ id: 'file', dir: join(await tempDir(t), 'images') }));

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
