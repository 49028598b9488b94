/**
 * The qcow2 read path against qemu-img's own reading: every guest byte equal to
 * `qemu-img convert -O raw` of the same image, for external data files, backing chains named
 * relatively from other directories, and snapshot views; damaged images give a DiskError.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, readFile, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hostio } from '@diskhub/hostio';
import { openImage, closeChain, isDiskError, type Image } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run } from '@diskhub/testkit';

async function readAll(img: Image): Promise<Uint8Array> {
  const buf = new Uint8Array(img.size);
  for (let off = 0; off < img.size; off += 4 << 20) await img.read(buf.subarray(off, Math.min(img.size, off + (4 << 20))), off);
  return buf;
}

/** Our bytes for `path` equal qemu-img's raw conversion of it. */
async function assertReadsLikeQemu(path: string, dir: string, options: Parameters<typeof openImage>[1] = {}, peerArgs: string[] = []): Promise<void> {
  const raw = join(dir, 'peer.raw');
  await qemuImg('convert', ...peerArgs, '-O', 'raw', path, raw);
  const img = await openImage(path, options);
  try {
    const ours = await readAll(img);
    const peer = await readFile(raw);
    assert.equal(ours.length, peer.length, `${path}: size`);
    assert.ok(Buffer.from(ours).equals(peer), `${path}: bytes differ from qemu-img's`);
  } finally {
    await closeChain(img);
  }
}

const be64 = (n: bigint) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, n, false); return b; };
async function patch(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const fh = await open(path, 'r+');
  try { await fh.write(bytes, 0, bytes.length, offset); } finally { await fh.close(); }
}
const u64At = async (path: string, at: number) => Number(new DataView((await readFile(path)).buffer).getBigUint64(at, false));

test('qcow2 read: every cluster size from 512 B to 2 MiB, v2 and v3, odd sizes', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const cs of [512, 1024, 4096, 65536, 1 << 21]) {
    for (const compat of ['0.10', '1.1']) {
      const p = join(dir, `c${cs}-${compat}.qcow2`);
      await qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs},compat=${compat}`, p, '5000000');
      await qemuIo('-f', 'qcow2', '-c', 'write -P 0x11 1000 70000', '-c', 'write -P 0x22 2M 300k', '-c', 'write -z 2100k 8k',
        '-c', 'discard 2M 4k', '-c', 'write -P 0x33 4999000 1000', p);
      await assertReadsLikeQemu(p, dir);
    }
  }
});

test('qcow2 read: a backing chain named relatively from other directories, with a shorter base', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'a', 'b'), { recursive: true });
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'base.raw'), '3M');
  await qemuIo('-f', 'raw', '-c', 'write -P 1 0 3M', join(dir, 'base.raw'));
  // mid lives in a/ and names ../base.raw; top lives in a/b/ and names ../mid.qcow2.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '../base.raw', '-F', 'raw', 'mid.qcow2', '6M'], { cwd: join(dir, 'a') });
  await qemuIo('-f', 'qcow2', '-c', 'write -P 2 1M 64k', '-c', 'write -z 2M 64k', join(dir, 'a', 'mid.qcow2'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '../mid.qcow2', '-F', 'qcow2', 'top.qcow2', '8M'], { cwd: join(dir, 'a', 'b') });
  await qemuIo('-f', 'qcow2', '-c', 'write -P 3 1032k 8k', '-c', 'write -P 4 7M 4k', join(dir, 'a', 'b', 'top.qcow2'));
  await assertReadsLikeQemu(join(dir, 'a', 'b', 'top.qcow2'), dir);
});

test('qcow2 read: an external data file needs an explicit opt-in', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 'df.qcow2');
  // An absolute name: QEMU 7.2 resolves a relative data file name against its working
  // directory, diskhub against the image's directory (as for backing files).
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'df.data')}`, p, '4M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 9 64k 1M', p);
  await assert.rejects(openImage(p), (e) => isDiskError(e, 'EUNSAFE') && /df\.data/.test(e.message));
  await assertReadsLikeQemu(p, dir, { allowExternalData: true });
});

test('qcow2 read: the view of an internal snapshot', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 's.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', p, '4M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 5 0 1M', p);
  await qemuImg('snapshot', '-c', 'one', p);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 6 512k 1M', '-c', 'discard 0 64k', p);
  await qemuImg('snapshot', '-c', 'two', p);
  await qemuIo('-f', 'qcow2', '-c', 'write -z 0 4M', p);
  await assertReadsLikeQemu(p, dir, { snapshot: 'one' }, ['-l', 'one']);
  await assertReadsLikeQemu(p, dir, { snapshot: '2' }, ['-l', 'snapshot.id=2']);
  await assertReadsLikeQemu(p, dir);
  await assert.rejects(openImage(p, { snapshot: 'three' }), (e) => isDiskError(e, 'ENOENT'));
});

test('qcow2 read: damaged tables give a DiskError naming the problem, never a crash', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 1 0 128k', base);
  const l1 = await u64At(base, 40);
  const l1Entry = new DataView((await readFile(base)).buffer).getBigUint64(l1, false);
  const l2Offset = Number(l1Entry & 0x00fffffffffffe00n);
  assert.ok(l2Offset > 0);
  const cases: Array<[string, (p: string) => Promise<void>, RegExp]> = [
    ['L2 table past the end of the file', (p) => patch(p, l1, be64((1n << 63n) | (1n << 40n))), /L2 table at offset .* past the end/],
    ['L2 table unaligned', (p) => patch(p, l1, be64((1n << 63n) | BigInt(l2Offset + 512))), /L2 table offset .* unaligned/],
    ['data cluster unaligned', (p) => patch(p, l2Offset, be64((1n << 63n) | 0x50200n)), /cluster allocation offset .* unaligned/],
    ['compressed cluster of garbage', (p) => patch(p, l2Offset, be64((1n << 62n) | (3n << 54n) | 0x30000n)), /does not decompress/],
    ['compressed cluster past the end', (p) => patch(p, l2Offset, be64((1n << 62n) | (1n << 40n))), /past the end/],
  ];
  for (const [name, damage, message] of cases) {
    const p = join(dir, `${name.replace(/\W+/g, '-')}.qcow2`);
    await copyFile(base, p);
    await damage(p);
    const img = await openImage(p);
    try {
      await assert.rejects(img.read(new Uint8Array(65536), 0), (e) => isDiskError(e) && message.test(e.message), name);
    } finally {
      await closeChain(img);
    }
  }
});

test('qcow2 open: randomly damaged headers open with a DiskError or read without crashing', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const seedPath = join(dir, 'seed.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', seedPath, '1M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 1 0 64k', seedPath);
  await qemuImg('snapshot', '-c', 's', seedPath);
  const seed = new Uint8Array(await readFile(seedPath));
  let x = 7;
  const rand = (n: number) => { x = (x * 1103515245 + 12345) & 0x7fffffff; return x % n; };
  const p = join(dir, 'm.qcow2');
  for (let round = 0; round < 200; round++) {
    const b = seed.slice();
    for (let k = 1 + rand(6); k > 0; k--) b[rand(round % 2 ? 128 : Math.min(b.length, 5 * 4096))] = rand(256);
    await writeFile(p, b);
    try {
      const img = await openImage(p, { backing: false });
      try {
        await img.read(new Uint8Array(Math.min(img.size, 256 << 10)), 0);
        for await (const e of img.blockStatus(0, Math.min(img.size, 1 << 20))) void e;
      } finally {
        await closeChain(img);
      }
    } catch (e) {
      assert.ok(isDiskError(e), `round ${round}: ${(e as Error).stack}`);
    }
  }
});

test('qcow2 read: a large sparse image (4 TiB virtual) maps and converts like qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 'big.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', p, '4T');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 1 0 64k', '-c', 'write -P 2 1T 1M', '-c', 'write -z 2T 64k', '-c', 'write -P 3 4398046445568 65536', p);
  const peerMap = await run('qemu-img', ['map', '--output=json', p]);
  const { diskhub } = await import('@diskhub/testkit');
  const ourMap = await diskhub(['img', 'map', '--output=json', p]);
  assert.equal(ourMap.stdout, peerMap.stdout);
  const ours = join(dir, 'ours.raw'), peer = join(dir, 'peer.raw');
  const r = await diskhub(['img', 'convert', '-O', 'raw', p, ours]);
  assert.equal(r.code, 0, r.stderr);
  await qemuImg('convert', '-O', 'raw', p, peer);
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ours, peer]);
  assert.equal(cmp.code, 0, cmp.stdout);
});

test('qcow2 open: absurd header fields, truncation and backing loops give clear typed errors quickly', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
  const variants: Array<[string, (p: string) => Promise<void>, RegExp]> = [
    ['cluster_bits 30', (p) => patch(p, 20, new Uint8Array([0, 0, 0, 30])), /cluster size/i],
    ['huge L1 size', (p) => patch(p, 36, new Uint8Array([0x7f, 0xff, 0xff, 0xff])), /L1 table too large/],
    ['L1 past the end', (p) => patch(p, 40, be64(1n << 44n)), /L1 table .* past the end/],
    ['refcount table past the end', (p) => patch(p, 48, be64(1n << 44n)), /refcount table .* past the end/],
    ['backing name longer than the header', async (p) => { await patch(p, 8, be64(65000n)); await patch(p, 16, new Uint8Array([0, 0, 3, 0])); }, /backing file name/i],
    ['truncated header', (p) => open(p, 'r+').then(async (fh) => { await fh.truncate(50); await fh.close(); }), /truncated|past the end/],
  ];
  for (const [name, damage, message] of variants) {
    const p = join(dir, `${name.replace(/\W+/g, '-')}.qcow2`);
    await copyFile(base, p);
    await damage(p);
    await assert.rejects(openImage(p, { format: 'qcow2' }), (e) => isDiskError(e) && message.test(e.message), name);
  }
  // a → b → a
  await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'b.qcow2', '-F', 'qcow2', join(dir, 'a.qcow2'), '1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'a.qcow2', '-F', 'qcow2', join(dir, 'b.qcow2'), '1M');
  await assert.rejects(openImage(join(dir, 'a.qcow2')), (e) => isDiskError(e, 'ELOOP'));
});

test('qcow2 read: a run of compressed clusters reads like qemu-img reads it, whole or in pieces, inflated on the threadpool or on the main thread; a bad cluster is named, the others still read', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  // 4 MiB of compressible text (64 clusters of 64 KiB), compressed by qemu-img: one run of neighbours.
  const words = ['disk', 'image', 'cluster', 'qcow2', 'zlib', 'sector', 'backing', 'refcount'];
  let x = 1;
  const text = Array.from({ length: 900_000 }, () => { x = (x * 1103515245 + 12345) & 0x7fffffff; return words[x % words.length]; }).join(' ');
  const plain = Buffer.from(text).subarray(0, 4 << 20);
  await writeFile(join(dir, 'text.raw'), plain);
  const good = join(dir, 'c.qcow2');
  await qemuImg('convert', '-c', '-O', 'qcow2', join(dir, 'text.raw'), good);
  await assertReadsLikeQemu(good, dir);

  // Garbage over cluster 20's deflate stream (reserved block type).
  const p = join(dir, 'bad.qcow2');
  await copyFile(good, p);
  const bytes = await readFile(p);
  const be = (at: number) => bytes.readBigUInt64BE(at);
  const l2 = Number(be(Number(be(40))) & 0x00fffffffffffe00n);
  const entry = be(l2 + 20 * 8);
  assert.equal(entry >> 62n, 1n, 'cluster 20 is compressed');
  const host = Number(entry & ((1n << 54n) - 1n));
  await patch(p, host, Buffer.alloc(16, 0xff));

  // hostio's inflateRaw (the threadpool) when the addon has it, then this thread's zlib.
  const threadpool = hostio?.inflateRaw;
  if (process.env.CI === 'true') assert.ok(threadpool, 'the hostio addon inflates on the threadpool');
  for (const where of threadpool ? ['threadpool', 'main thread'] : ['main thread']) {
    if (where === 'main thread' && hostio) delete hostio.inflateRaw;
    try {
      const img = await openImage(good);
      try {
        assert.ok(Buffer.from(await readAll(img)).equals(plain), `${where}: whole`);
        // Pieces of 3000 bytes: most start or end inside a cluster (a cluster is then inflated
        // once and its bytes handed out from the last one kept).
        const pieces = new Uint8Array(plain.length);
        for (let at = 0; at < plain.length; at += 3000) await img.read(pieces.subarray(at, Math.min(plain.length, at + 3000)), at);
        assert.ok(Buffer.from(pieces).equals(plain), `${where}: in pieces`);
      } finally {
        await closeChain(img);
      }
      const bad = await openImage(p);
      try {
        await assert.rejects(readAll(bad), (e) => isDiskError(e, 'ECORRUPT') && e.message.includes(`0x${host.toString(16)} does not decompress`), where);
        // The clusters after it still read, in one request.
        const tail = new Uint8Array(2 << 20);
        await bad.read(tail, 2 << 20);
        assert.ok(Buffer.from(tail).equals(plain.subarray(2 << 20)), `${where}: after the bad cluster`);
      } finally {
        await closeChain(bad);
      }
    } finally {
      if (threadpool && hostio) hostio.inflateRaw = threadpool;
    }
  }
});
