/** FileStore.send: the download path (reused page-aligned buffers, one read ahead of the socket). */
import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { tempDir } from '@diskhub/testkit';
import { FileStore } from '../src/store.js';

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
  const store = new FileStore(dir);
  const data = randomBytes((5 << 20) + 123);
  await writeFile(join(dir, 'img'), data);
  const whole = sink(1, Infinity, 16 << 20);
  await store.send('img', whole.out);
  await finished(whole.out);
  assert.ok(whole.data().equals(data));
  for (const [start, end] of [[(1 << 20) - 10, (3 << 20) + 5], [0, 0], [data.length - 1, data.length - 1], [4096, (1 << 20) - 1]] as const) {
    const part = sink(0);
    await store.send('img', part.out, { start, end });
    await finished(part.out);
    assert.ok(part.data().equals(data.subarray(start, end + 1)), `range ${start}-${end}`);
  }
  const empty = sink(0);
  await writeFile(join(dir, 'empty'), Buffer.alloc(0));
  await store.send('empty', empty.out);
  await finished(empty.out);
  assert.equal(empty.data().length, 0);
});

test('send: a client that goes away mid-download ends the send instead of hanging', async (t) => {
  const dir = await tempDir(t);
  const store = new FileStore(dir);
  await writeFile(join(dir, 'img'), randomBytes(8 << 20));
  const gone = sink(0, 2 << 20);
  await store.send('img', gone.out); // resolves (the test would time out otherwise)
  assert.ok(gone.out.destroyed);
  assert.ok(gone.data().length < 8 << 20);
});
