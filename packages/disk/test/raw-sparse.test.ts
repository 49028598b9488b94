/**
 * Sparse raw files: block status from SEEK_DATA/SEEK_HOLE (the hostio addon), hole punching
 * for write-zeroes, fallocate preallocation; checked against qemu-img map/info on the same files.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { deflateRawSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { hostio, hostioLoadError } from '@diskhub/hostio';
import { openImage, closeChain, FileSource } from '@diskhub/disk';
import { tempDir, qemuImg, needs, diskhub } from '@diskhub/testkit';

const ci = process.env.CI === 'true';
/** The addon is built by `npm run build`; in CI a missing addon is a failure, locally a skip. */
const addon = (): { skip?: string } => (hostio || ci ? {} : { skip: `hostio addon unavailable: ${hostioLoadError}` });

const MiB = 1 << 20;

/** A 64 MiB sparse file with data at 1 MiB (64 KiB), 10 MiB (3 MiB) and the last 4 KiB. */
async function sparseFile(dir: string): Promise<{ path: string; data: [number, number][] }> {
  const path = join(dir, 'sparse.raw');
  const fh = await open(path, 'w');
  await fh.truncate(64 * MiB);
  const data: [number, number][] = [[1 * MiB, 65536], [10 * MiB, 3 * MiB], [64 * MiB - 4096, 4096]];
  for (const [off, len] of data) await fh.write(new Uint8Array(len).fill(0xa5), 0, len, off);
  await fh.close();
  return { path, data };
}

test('hostio: the addon is built and loads (required in CI)', () => {
  if (!ci && !hostio) return;
  assert.ok(hostio, `hostio addon failed to load: ${hostioLoadError}`);
});

test('hostio: inflateRaw — streams fill their outputs on the threadpool; bytes past a stream\'s end are ignored, an exactly filled output is accepted, a short stream reports its length, garbage reports zlib\'s message', addon(), async () => {
  if (!hostio) return;
  assert.ok(hostio.inflateRaw, 'the addon has inflateRaw');
  const plain = Buffer.alloc(65536);
  for (let i = 0; i < plain.length; i++) plain[i] = (i * 7919) % 251 < 40 ? i & 0xff : 0x61;
  const stream = deflateRawSync(plain);
  const outs = [new Uint8Array(65536), new Uint8Array(1000), new Uint8Array(65536), new Uint8Array(4096), new Uint8Array(100)];
  const results = await hostio.inflateRaw([
    Buffer.concat([stream, Buffer.alloc(511, 0x5a)]), outs[0]!, // the next sector's bytes follow
    stream, outs[1]!, // output smaller than the stream: filled, not an error
    stream.subarray(0, stream.length >> 1), outs[2]!, // truncated: fewer bytes
    Buffer.from([0xff, 0xff, 0xff, 0xff]), outs[3]!, // reserved block type
    new Uint8Array(0), outs[4]!, // nothing at all
  ]);
  assert.equal(results[0], 65536);
  assert.ok(Buffer.from(outs[0]!).equals(plain));
  assert.equal(results[1], 1000);
  assert.ok(Buffer.from(outs[1]!).equals(plain.subarray(0, 1000)));
  assert.equal(typeof results[2], 'number');
  assert.ok((results[2] as number) > 0 && (results[2] as number) < 65536, `truncated stream: ${results[2]}`);
  assert.ok(Buffer.from(outs[2]!).subarray(0, results[2] as number).equals(plain.subarray(0, results[2] as number)));
  assert.equal(results[3], 'invalid block type');
  assert.equal(results[4], 0);
  // Many calls at once (as a convert makes them) all settle with the right bytes.
  const many = await Promise.all(Array.from({ length: 64 }, async () => {
    const out = new Uint8Array(65536);
    const [n] = await hostio!.inflateRaw!([stream, out]);
    return n === 65536 && Buffer.from(out).equals(plain);
  }));
  assert.ok(many.every(Boolean));
  assert.throws(() => hostio!.inflateRaw!([stream]), TypeError);
  assert.throws(() => hostio!.inflateRaw!([stream, [] as unknown as Uint8Array]), TypeError);
});

test('hostio: read fills the view from the offset, short only at the end of the file; past the end 0; a directory rejects with EISDIR; FileSource.read gives the same bytes as a plain read', addon(), async (t) => {
  if (!hostio) return;
  assert.ok(hostio.read, 'the addon has read');
  const dir = await tempDir(t);
  const path = join(dir, 'f.bin');
  const bytes = new Uint8Array(3 * MiB + 123).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
  const fh = await open(path, 'w+');
  await fh.write(bytes, 0, bytes.length, 0);
  try {
    const view = new Uint8Array(MiB + 5);
    assert.equal(await hostio.read(fh.fd, view, 4097), view.length);
    assert.deepEqual(view, bytes.subarray(4097, 4097 + view.length));
    const tail = new Uint8Array(4096).fill(0xee);
    assert.equal(await hostio.read(fh.fd, tail, bytes.length - 100), 100);
    assert.deepEqual(tail.subarray(0, 100), bytes.subarray(bytes.length - 100));
    assert.equal(tail[100], 0xee, 'nothing written past what was read');
    assert.equal(await hostio.read(fh.fd, tail, bytes.length + MiB), 0);
    const src = await FileSource.open(path);
    try {
      const got = new Uint8Array(2 * MiB);
      assert.equal(await src.read(got, MiB - 1), got.length);
      assert.deepEqual(got, bytes.subarray(MiB - 1, 3 * MiB - 1));
    } finally {
      await src.close();
    }
  } finally {
    await fh.close();
  }
  const d = await open(dir, 'r');
  try {
    await assert.rejects(hostio.read(d.fd, new Uint8Array(16), 0), (e: NodeJS.ErrnoException) => e.code === 'EISDIR' && /Is a directory/.test(e.message));
  } finally {
    await d.close();
  }
});

test('hostio: zeroBlock finds the first all-zero block from `from` on, blocks cut at the end of the view, at any alignment of the view', addon(), () => {
  if (!hostio) return;
  assert.ok(hostio.zeroBlock, 'the addon has zeroBlock');
  const backing = new Uint8Array(64 * 1024 + 3).fill(0x5a);
  for (const shift of [0, 1, 3]) {
    const view = backing.subarray(shift, shift + 64 * 1024);
    view.fill(0x5a);
    assert.equal(hostio.zeroBlock(view, 0, 4096), view.length, 'no zero block');
    view.fill(0, 8192 + 1, 12288); // one non-zero byte left at the block's start
    view.fill(0, 20480, 24575); // ... and one at its end
    assert.equal(hostio.zeroBlock(view, 0, 4096), view.length);
    view[24575] = 0;
    assert.equal(hostio.zeroBlock(view, 0, 4096), 20480);
    assert.equal(hostio.zeroBlock(view, 512, 4096), view.length, 'blocks counted from `from`: none of them all zero');
    view[8192] = 0;
    assert.equal(hostio.zeroBlock(view, 0, 4096), 8192);
    assert.equal(hostio.zeroBlock(view, 12288, 4096), 20480);
    // The last block is cut at the end of the view.
    view.fill(0, view.length - 100);
    assert.equal(hostio.zeroBlock(view, view.length - 100 - 2 * 4096, 4096), view.length - 100);
    assert.equal(hostio.zeroBlock(view, view.length, 4096), view.length);
  }
});

test('raw: host extents come from SEEK_DATA/SEEK_HOLE, holes are never read', addon(), async (t) => {
  const dir = await tempDir(t);
  const { path, data } = await sparseFile(dir);
  const src = await FileSource.open(path, { readOnly: true });
  try {
    const got: [number, number][] = [];
    let covered = 0;
    for await (const e of src.hostExtents(0, 64 * MiB + 8192)) {
      assert.equal(e.offset, covered, 'extents are contiguous');
      covered += e.length;
      if (e.data) got.push([e.offset, e.length]);
    }
    assert.equal(covered, 64 * MiB + 8192);
    // Filesystems allocate in blocks (4 KiB here), so data runs are exactly what we wrote.
    assert.deepEqual(got, data);
    // A window starting inside a hole and ending inside data.
    const part: Array<[number, number, boolean]> = [];
    for await (const e of src.hostExtents(MiB - 4096, 8192)) part.push([e.offset, e.length, e.data]);
    assert.deepEqual(part, [[MiB - 4096, 4096, false], [MiB, 4096, true]]);
  } finally {
    await src.close();
  }
});

test('raw: map agrees with qemu-img map on a sparse file', { ...addon(), ...needs('qemu-img') }, async (t) => {
  const dir = await tempDir(t);
  const { path } = await sparseFile(dir);
  type MapEntry = { start: number; length: number; data: boolean; zero: boolean };
  const peer = JSON.parse(await qemuImg('map', '--output=json', '-f', 'raw', path)) as MapEntry[];
  const ours = JSON.parse((await diskhub(['img', 'map', '--output=json', '-f', 'raw', path])).stdout) as MapEntry[];
  const shape = (l: MapEntry[]) => l.map((e) => [e.start, e.length, e.data, e.zero]);
  assert.deepEqual(shape(ours), shape(peer));
});

test('raw: write-zeroes punches a hole (blocks freed, reads zero)', addon(), async (t) => {
  const dir = await tempDir(t);
  const { path } = await sparseFile(dir);
  const before = (await stat(path)).blocks * 512;
  const img = await openImage(path, { writable: true });
  try {
    await img.writeZeroes!(10 * MiB, 2 * MiB);
    await img.flush!();
    const buf = new Uint8Array(3 * MiB);
    await img.read(buf, 10 * MiB);
    assert.ok(buf.subarray(0, 2 * MiB).every((b) => b === 0));
    assert.ok(buf.subarray(2 * MiB).every((b) => b === 0xa5));
  } finally {
    await closeChain(img);
  }
  const after = (await stat(path)).blocks * 512;
  assert.equal(before - after, 2 * MiB);
  assert.equal((await stat(path)).size, 64 * MiB);
});

test('raw: create -o preallocation=falloc reserves the blocks like qemu-img', { ...addon(), ...needs('qemu-img') }, async (t) => {
  const dir = await tempDir(t);
  const ours = join(dir, 'ours.raw');
  const peer = join(dir, 'peer.raw');
  const r = await diskhub(['img', 'create', '-f', 'raw', '-o', 'preallocation=falloc', ours, '8M']);
  assert.equal(r.code, 0, r.stderr);
  await qemuImg('create', '-f', 'raw', '-o', 'preallocation=falloc', peer, '8M');
  const [a, b] = [JSON.parse(await qemuImg('info', '--output=json', ours)), JSON.parse(await qemuImg('info', '--output=json', peer))];
  assert.equal(a['virtual-size'], b['virtual-size']);
  assert.equal(a['actual-size'], b['actual-size']);
  assert.ok(a['actual-size'] >= 8 * MiB);
});

test('raw: convert keeps a sparse source sparse and equal', { ...addon(), ...needs('qemu-img') }, async (t) => {
  const dir = await tempDir(t);
  const { path } = await sparseFile(dir);
  const out = join(dir, 'out.raw');
  const r = await diskhub(['img', 'convert', '-f', 'raw', '-O', 'raw', path, out]);
  assert.equal(r.code, 0, r.stderr);
  await qemuImg('compare', '-f', 'raw', '-F', 'raw', path, out);
  // Only the written data (3 MiB + 68 KiB) may be allocated, not the 64 MiB.
  assert.ok((await stat(out)).blocks * 512 <= 4 * MiB, `output allocates ${(await stat(out)).blocks * 512} bytes`);
});

test('raw: serialWrites — writes queued at once land in queue order (overlapping ones: the last wins), writev and reservations as without it; errors reject with the errno; an idle writer does not keep the process alive', addon(), async (t) => {
  assert.ok(hostio?.openWriter && hostio.writerWrite && hostio.closeWriter, 'the addon has the serial writer');
  const dir = await tempDir(t);
  const path = join(dir, 'serial.raw');
  const piece = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);
  const src = await FileSource.open(path, { create: true, reserveWrites: true, serialWrites: true });
  const expected = new Uint8Array(4 * MiB);
  try {
    // 200 writes issued without waiting, each overlapping the one before: only in-order
    // completion gives the expected bytes.
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      const at = (i * 12289) % (3 * MiB);
      const data = piece(i % 3 === 0 ? 512 << 10 : 40000, i);
      expected.set(data, at);
      writes.push(i % 2 ? src.write(data, at) : src.writev!([data.subarray(0, 1000), data.subarray(1000)], at));
    }
    await Promise.all(writes);
    const back = new Uint8Array(expected.length);
    await src.read(back, 0);
    const end = Math.max(...Array.from({ length: 200 }, (_, i) => ((i * 12289) % (3 * MiB)) + (i % 3 === 0 ? 512 << 10 : 40000)));
    assert.equal(await src.size(), end);
    assert.ok(Buffer.from(back.subarray(0, end)).equals(Buffer.from(expected.subarray(0, end))), 'content is the writes applied in queue order');
  } finally {
    await src.close();
  }
  await src.close(); // closing twice is harmless

  // A write the kernel refuses rejects with its errno, worded as strerror; the writer goes on.
  const fh = await open(path, 'r');
  try {
    const w = hostio.openWriter(fh.fd);
    await assert.rejects(hostio.writerWrite(w, [piece(4096, 1)], 0, false), (e: NodeJS.ErrnoException) => e.code === 'EBADF' && e.message === 'Bad file descriptor');
    await assert.rejects(hostio.writerWrite(w, [piece(1 << 20, 1)], 0, true), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
    assert.throws(() => hostio!.writerWrite!(w, [], 0, false), TypeError);
    await hostio.closeWriter(w);
    assert.throws(() => hostio!.writerWrite!(w, [piece(10, 1)], 0, false), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
  } finally {
    await fh.close();
  }

  // /dev/null refuses the reservations; the writes still go through the writer.
  const sink = await FileSource.open('/dev/null', { readOnly: false, reserveWrites: true, serialWrites: true });
  try {
    await sink.write(piece(1 * MiB, 5), 0);
    await sink.writev!([piece(512 << 10, 6)], 1 * MiB);
  } finally {
    await sink.close();
  }

  // A writer left open and idle does not hold the event loop: the process ends by itself.
  const script = `import { hostio } from '@diskhub/hostio'; import { openSync } from 'node:fs';
    const w = hostio.openWriter(openSync(${JSON.stringify(path)}, 'r+'));
    await hostio.writerWrite(w, [new Uint8Array(10).fill(1)], 0, false);
    console.log('written');`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: fileURLToPath(new URL('.', import.meta.url)), encoding: 'utf8', timeout: 20_000 });
  assert.equal(child.status, 0, `${child.signal ?? ''} ${child.stderr}`);
  assert.equal(child.stdout.trim(), 'written');
});

test('raw: reserveWrites — large writes land whole, the size is the writes\' own (KEEP_SIZE), nothing more is allocated; a file that refuses fallocate still takes writes', addon(), async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'reserved.raw');
  const src = await FileSource.open(path, { create: true, reserveWrites: true });
  const piece = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (i * 31 + seed) & 0xff);
  try {
    await src.write(piece(1 * MiB, 1), 3 * MiB);
    assert.equal(await src.size(), 4 * MiB);
    await src.writev!([piece(256 << 10, 2), piece(256 << 10, 3)], 8 * MiB);
    assert.equal(await src.size(), 8 * MiB + (512 << 10));
    await src.write(piece(4096, 4), 0); // below the reservation threshold
    const back = new Uint8Array(1 * MiB);
    await src.read(back, 3 * MiB);
    assert.deepEqual(back, piece(1 * MiB, 1));
    await src.read(back.subarray(0, 256 << 10), 8 * MiB + (256 << 10));
    assert.deepEqual(back.subarray(0, 256 << 10), piece(256 << 10, 3));
  } finally {
    await src.close();
  }
  const allocated = (await stat(path)).blocks * 512;
  assert.equal(allocated, 1 * MiB + (512 << 10) + 4096);
  // /dev/null refuses fallocate (ENODEV): the source stops reserving and the writes go through.
  const sink = await FileSource.open('/dev/null', { readOnly: false, reserveWrites: true });
  try {
    await sink.write(piece(1 * MiB, 5), 0);
    await sink.writev!([piece(512 << 10, 6)], 1 * MiB);
  } finally {
    await sink.close();
  }
});

test('hostio: exchange swaps two names at once; a missing name is ENOENT and nothing moves', addon(), async (t) => {
  if (!hostio) return;
  assert.ok(hostio.exchange, 'the addon has exchange');
  const dir = await tempDir(t);
  const a = join(dir, 'a'), b = join(dir, 'b');
  await writeFile(a, 'first');
  await writeFile(b, 'second');
  const inoA = (await stat(a)).ino;
  hostio.exchange(a, b);
  assert.equal(await readFile(a, 'utf8'), 'second');
  assert.equal(await readFile(b, 'utf8'), 'first');
  assert.equal((await stat(b)).ino, inoA, 'the same file, under the other name');
  assert.throws(() => hostio!.exchange!(a, join(dir, 'missing')), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  assert.equal(await readFile(a, 'utf8'), 'second');
});

test('hostio: dropCleanCache frees a clean file\'s cached pages and keeps its content; a dirty file is left alone (fincore counts them)', addon(), async (t) => {
  if (!hostio) return;
  assert.ok(hostio.dropCleanCache, 'the addon has dropCleanCache');
  const [major, minor] = release().split('.').map(Number) as [number, number];
  if (major < 6 || (major === 6 && minor < 5)) { t.skip('cachestat needs Linux 6.5'); return; }
  const dir = await tempDir(t);
  const resident = (p: string) => Number(spawnSync('fincore', ['-b', '-n', '-o', 'RES', p], { encoding: 'utf8' }).stdout.trim());
  const clean = join(dir, 'clean'), dirty = join(dir, 'dirty');
  const content = new Uint8Array(4 * MiB).map((_, i) => i * 7);
  await writeFile(clean, content);
  assert.equal(spawnSync('sync', [clean]).status, 0);
  await readFile(clean);
  assert.ok(resident(clean) > 0, 'cached after reading');
  const fh = await open(clean, 'r');
  await hostio.dropCleanCache(fh.fd);
  await fh.close();
  assert.equal(resident(clean), 0, 'the clean pages are gone');
  assert.deepEqual(new Uint8Array(await readFile(clean)), content);
  await writeFile(dirty, content); // (not synced: dirty in the page cache)
  const fd = await open(dirty, 'r');
  await hostio.dropCleanCache(fd.fd);
  await fd.close();
  assert.equal(resident(dirty), 4 * MiB, 'a file with dirty pages keeps them all');
  await assert.rejects(hostio.dropCleanCache(999999), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
});
