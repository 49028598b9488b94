/**
 * qcow (version 1) against qemu-img / qemu-io 7.2: images qemu-io writes, compressed images
 * (`qemu-img convert -c -O qcow`) and backing chains read back as `qemu-img convert -O raw`
 * gives them; hostile headers, tables and compressed clusters (one that inflates past a
 * cluster) give DiskErrors, never a crash or a huge allocation.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { openImage, closeChain, isDiskError, getFormat } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, diskhub } from '@diskhub/testkit';
import { mutationRounds, readAll } from './random-writes.js';

async function sameAsQemu(path: string, what: string): Promise<void> {
  const raw = `${path}.raw`;
  await qemuImg('convert', '-O', 'raw', path, raw);
  assert.ok(Buffer.from(await readAll(path)).equals(await readFile(raw)), `${what}: contents`);
}

test('qcow read: qemu-io patterns, compressed clusters and backing files read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'a.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', img, '5000192');
  await qemuIo('-c', 'write -P 0x11 1000 300000', '-c', 'write -P 0x22 3145728 4096', '-c', 'write -P 0x33 4999680 512', img);
  await sameAsQemu(img, 'plain');
  // Compressed clusters (qemu-io writes them; qemu-img convert -c -O qcow fails in 7.2), next to plain ones.
  const c = join(dir, 'c.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', c, '3M');
  await qemuIo('-c', 'write -c -P 0x41 0 4096', '-c', 'write -c -P 0x42 8192 4096', '-c', 'write -c -P 0x43 12288 4096',
    '-c', 'write -P 0x44 20000 5000', '-c', 'write -c -P 0x45 2093056 4096', c);
  await sameAsQemu(c, 'compressed');
  const map = await diskhub(['img', 'map', '--output=json', c]);
  const peerMap = await qemuImg('map', '--output=json', c);
  assert.equal(map.stdout, peerMap, 'map of a compressed image');
  // A qcow overlay on the qcow image.
  const top = join(dir, 'top.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', '-b', 'a.qcow', '-F', 'qcow', top);
  await qemuIo('-c', 'write -P 0x77 65536 4096', top);
  await sameAsQemu(top, 'overlay');
  const info = await diskhub(['img', 'info', '--output=json', top]);
  assert.equal(info.stdout, await qemuImg('info', '--output=json', top), 'info');
});

test('qcow hostile headers and clusters: typed errors with clear messages, bounded memory', async (t) => {
  const dir = await tempDir(t);
  const header = (patch: (v: DataView) => void): Uint8Array => {
    const b = new Uint8Array(8192);
    const v = new DataView(b.buffer);
    v.setUint32(0, 0x514649fb);
    v.setUint32(4, 1);
    v.setBigUint64(24, 1n << 20n);
    v.setUint8(32, 12);
    v.setUint8(33, 9);
    v.setBigUint64(40, 48n);
    patch(v);
    return b;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['version 9', header((v) => v.setUint32(4, 9)), /Unsupported qcow version 9/],
    ['cluster bits 20', header((v) => v.setUint8(32, 20)), /Cluster size must be between 512 and 64k/],
    ['l2 bits 2', header((v) => v.setUint8(33, 2)), /L2 table size must be between 512 and 64k/],
    ['size 1', header((v) => v.setBigUint64(24, 1n)), /Image size is too small/],
    ['encrypted', header((v) => v.setUint32(36, 1)), /encrypted qcow \(AES\) images are not supported/],
    ['crypt method 7', header((v) => v.setUint32(36, 7)), /invalid encryption method/],
    ['huge L1', header((v) => { v.setBigUint64(24, 1n << 52n); v.setUint8(32, 9); v.setUint8(33, 6); }), /larger than the engine's limit/],
    ['L1 outside the file', header((v) => v.setBigUint64(40, 1n << 40n)), /L1 table .* extends past the end of the file/],
    ['backing name too long', header((v) => { v.setBigUint64(8, 100n); v.setUint32(16, 5000); }), /Backing file name too long/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.qcow`);
    await writeFile(path, bytes);
    await assert.rejects(openImage(path, { format: 'qcow' }), (e) => isDiskError(e) && message.test(e.message), name);
  }
  // A compressed cluster that inflates past the cluster size (a decompression bomb), and one that
  // falls short of it: refused when read.
  const bomb = header((v) => { v.setBigUint64(48, 4096n); });
  const deflated = zlib.deflateRawSync(Buffer.alloc(1 << 20));
  const compressedEntry = (len: number) => (1n << 63n) | (BigInt(len) << 51n) | 6144n;
  const image = new Uint8Array(8192 + deflated.length);
  image.set(bomb);
  const v = new DataView(image.buffer);
  v.setBigUint64(4096, compressedEntry(Math.min(deflated.length, 4095)));
  image.set(deflated.subarray(0, 2048), 6144);
  const bombPath = join(dir, 'bomb.qcow');
  await writeFile(bombPath, image);
  const img = await openImage(bombPath);
  await assert.rejects(img.read(new Uint8Array(4096), 0), (e) => isDiskError(e) && /does not inflate to 4096 bytes/.test(e.message));
  await closeChain(img);
  v.setBigUint64(4096, compressedEntry(50));
  image.set(zlib.deflateRawSync(Buffer.alloc(100, 1)), 6144);
  await writeFile(bombPath, image);
  const short = await openImage(bombPath);
  await assert.rejects(short.read(new Uint8Array(4096), 0), (e) => isDiskError(e) && /inflates to 100 bytes, not 4096/.test(e.message));
  await closeChain(short);
});

test('qcow mutations: damaged copies of a qemu-made compressed image only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'm.qcow');
  await qemuImg('create', '-q', '-f', 'qcow', img, '1M');
  await qemuIo('-c', 'write -P 0x61 0 8192', '-c', 'write -c -P 0x62 524288 4096', '-c', 'write -c -P 0x63 532480 4096', img);
  for (const f of [img]) {
    const bytes = new Uint8Array(await readFile(f));
    const r = await mutationRounds(getFormat('qcow'), bytes, 1000, [0, Math.min(bytes.length, 12288)], 109);
    assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
  }
});
