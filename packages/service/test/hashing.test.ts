/**
 * UploadHasher: md5 and sha512, off the main thread (libuv's thread pool through the hostio
 * addon, or worker threads without it), give the digests of the whole stream.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hostio } from '@diskhub/hostio';
import { isSharedZeroes, openImage, readRaw } from '@diskhub/disk';
import { tempDir } from '@diskhub/testkit';
import { UploadHasher } from '../src/hashing.js';

const expected = (data: Buffer) => ({
  md5: createHash('md5').update(data).digest('hex'),
  sha512: createHash('sha512').update(data).digest('hex'),
});

async function feed(h: UploadHasher, data: Buffer, chunk: number): Promise<void> {
  for (let at = 0; at < data.length; at += chunk) await h.update(data.subarray(at, at + chunk));
}

test('digests equal those of the whole data, for uneven chunks and several uploads at once', async () => {
  const inputs = [randomBytes(37 << 20), randomBytes((5 << 20) + 17), randomBytes(100), Buffer.alloc(0)];
  const hashers = inputs.map(() => new UploadHasher());
  await Promise.all(inputs.map((d, i) => feed(hashers[i], d, [65536, 1 << 20, 7, 1][i])));
  const got = await Promise.all(hashers.map((h) => h.digest()));
  assert.deepEqual(got, inputs.map(expected));
});

test('a dropped upload does not disturb the others, and chunks from a shared pool are hashed as sent', async () => {
  const pool = randomBytes(12 << 20);
  const dropped = new UploadHasher();
  const kept = new UploadHasher();
  await feed(dropped, pool, 1 << 20);
  await dropped.drop();
  // Views into one large buffer: the worker must hash the views, not the whole buffer.
  await feed(kept, pool.subarray(3, (9 << 20) + 5), 333_333);
  assert.deepEqual(await kept.digest(), expected(pool.subarray(3, (9 << 20) + 5)));
});

test('with a sink, the data is written in order from the batches, and a failed write fails the upload', async () => {
  const data = randomBytes((9 << 20) + 1234);
  const written: Buffer[] = [];
  const h = new UploadHasher(async (batch) => {
    await new Promise((r) => setTimeout(r, 2)); // a slow disk: batches must not be reused before their write
    written.push(Buffer.from(batch));
  });
  await feed(h, data, 100_000);
  await h.finish();
  assert.ok(Buffer.concat(written).equals(data));
  assert.deepEqual(await h.digest(), expected(data));

  const failing = new UploadHasher(async () => { throw new Error('disk full'); });
  await assert.rejects(async () => { await feed(failing, data, 1 << 20); await failing.finish(); }, /disk full/);
  await failing.drop();
});

test('readRaw\'s shared zeroes (a converted image\'s holes) are hashed and written as zero batches without a copy, on the workers and on the thread pool', async (t) => {
  // A sparse raw disk: data runs that end off the 1 MiB batch grid, holes between them.
  const dir = await tempDir(t);
  const file = join(dir, 'disk.raw');
  const fh = await open(file, 'w');
  await fh.truncate(23 << 20);
  const runs = [[(1 << 20) + 4096, (3 << 20) + 8192], [13 << 20, 1 << 20], [(22 << 20) + 8192, 4096]];
  for (const [at, n] of runs) await fh.write(randomBytes(n), 0, n, at);
  await fh.close();
  const image = await openImage(file, { format: 'raw' });
  const chunks: Buffer[] = [];
  let zeroViews = 0;
  try {
    for await (const c of readRaw(image)) {
      if (isSharedZeroes(c)) zeroViews++;
      chunks.push(Buffer.from(c.buffer, c.byteOffset, c.length));
    }
  } finally {
    await image.close();
  }
  assert.ok(zeroViews >= 2, `${zeroViews} zero views`);
  const data = await readFile(file);
  for (const mode of ['workers', 'threadpool']) {
    if (mode === 'threadpool' && !hostio?.digestUpdate) continue;
    process.env.DISKHUB_UPLOAD_HASHING = mode === 'threadpool' ? 'threadpool' : '';
    try {
      const written: Buffer[] = [];
      let zeroBatches = 0;
      const h = new UploadHasher(async (batch, zero) => {
        if (zero) zeroBatches++;
        written.push(Buffer.from(batch));
      });
      for (const c of chunks) await h.update(c);
      assert.deepEqual(await h.digest(), expected(data), mode);
      assert.ok(Buffer.concat(written).equals(data), mode);
      assert.ok(zeroBatches >= 10, `${mode}: ${zeroBatches} zero batches`);
    } finally {
      delete process.env.DISKHUB_UPLOAD_HASHING;
    }
  }
});

test('the sha512 worker does not keep a process alive after its uploads finish', () => {
  const url = new URL('../src/hashing.js', import.meta.url).href;
  const script = `import { UploadHasher } from '${url}';
    const h = new UploadHasher(); await h.update(Buffer.alloc(5 << 20, 1)); console.log((await h.digest()).sha512.length);
    const d = new UploadHasher(); await d.update(Buffer.alloc(5 << 20, 2)); await d.drop();`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.signal, null, 'process was killed after the timeout: the worker kept it alive');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), '128');
});

test('the hashes run on the thread pool through the addon; the worker threads give the same digests', (t) => {
  // CI builds the addon (hostio/build.mjs fails without it there): the fast path must be the one tested.
  if (!hostio?.digestUpdate) {
    if (process.env.CI === 'true') assert.fail('hostio lacks digestUpdate');
    t.skip('hostio addon without digestUpdate');
  }
  const url = new URL('../src/hashing.js', import.meta.url).href;
  const script = `import { UploadHasher } from '${url}';
    import { randomBytes } from 'node:crypto';
    const data = randomBytes((11 << 20) + 3);
    const h = new UploadHasher();
    for (let at = 0; at < data.length; at += 300_000) await h.update(data.subarray(at, at + 300_000));
    console.log(data.toString('base64').length, JSON.stringify(await h.digest()), JSON.stringify(await import('node:crypto').then((c) => ({
      md5: c.createHash('md5').update(data).digest('hex'), sha512: c.createHash('sha512').update(data).digest('hex') }))));`;
  for (const mode of ['threadpool', 'workers']) {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, DISKHUB_UPLOAD_HASHING: mode } });
    assert.equal(r.status, 0, r.stderr);
    const [, got, want] = r.stdout.trim().split(' ');
    assert.equal(got, want, mode);
  }
});

test('on the thread pool, all uploads together keep at most one update per algorithm in flight (two pool threads stay free for file I/O)', async (t) => {
  if (!hostio?.digestUpdate) {
    if (process.env.CI === 'true') assert.fail('hostio lacks digestUpdate');
    t.skip('hostio addon without digestUpdate');
    return;
  }
  const mode = process.env.DISKHUB_UPLOAD_HASHING;
  process.env.DISKHUB_UPLOAD_HASHING = 'threadpool';
  t.after(() => { if (mode === undefined) delete process.env.DISKHUB_UPLOAD_HASHING; else process.env.DISKHUB_UPLOAD_HASHING = mode; });
  const io = hostio;
  const original = io.digestUpdate!;
  let inFlight = 0;
  let most = 0;
  let calls = 0;
  io.digestUpdate = async (d, views) => {
    calls++;
    most = Math.max(most, ++inFlight);
    try { await original.call(io, d, views); } finally { inFlight--; }
  };
  t.after(() => { io.digestUpdate = original; });
  const inputs = Array.from({ length: 4 }, () => randomBytes(9 << 20));
  const hashers = inputs.map(() => new UploadHasher());
  await Promise.all(inputs.map((d, i) => feed(hashers[i]!, d, 65536)));
  assert.deepEqual(await Promise.all(hashers.map((h) => h.digest())), inputs.map(expected));
  assert.ok(calls >= 8, `${calls} updates`);
  assert.equal(most, 2);
});

test('hostio digests: equal to node:crypto over several views, and misuse is a typed error, not a crash', async (t) => {
  if (!hostio?.digestUpdate) {
    if (process.env.CI === 'true') assert.fail('hostio lacks digestUpdate');
    t.skip('hostio addon without digestUpdate');
    return;
  }
  const io = hostio;
  const data = randomBytes((3 << 20) + 5);
  for (const algorithm of ['md5', 'sha512'] as const) {
    const d = io.digestOpen!(algorithm);
    const running = io.digestUpdate!(d, [data.subarray(0, 7), data.subarray(7, 1 << 20), data.subarray(1 << 20)]);
    // One update at a time per digest, and no digest while one runs.
    assert.throws(() => io.digestUpdate!(d, [data]), (e: NodeJS.ErrnoException) => e.code === 'EBUSY');
    assert.throws(() => io.digestFinal!(d), (e: NodeJS.ErrnoException) => e.code === 'EBUSY');
    await running;
    await io.digestUpdate!(d, []);
    assert.equal(Buffer.from(io.digestFinal!(d)).toString('hex'), createHash(algorithm).update(data).digest('hex'));
    assert.throws(() => io.digestFinal!(d), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
    assert.throws(() => io.digestUpdate!(d, [data]), (e: NodeJS.ErrnoException) => e.code === 'EINVAL');
  }
  assert.throws(() => io.digestOpen!('sha1' as 'md5'), TypeError);
  assert.throws(() => io.digestUpdate!(io.digestOpen!('md5'), [new Uint16Array(4) as unknown as Uint8Array]), TypeError);
});
