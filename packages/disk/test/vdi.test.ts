/**
 * vdi against qemu-img / qemu-io 7.2: images qemu writes read back byte-exact; random writes
 * through our driver (dynamic and static images, odd offsets, across block boundaries, zero
 * ranges) leave images that `qemu-img check` passes and `qemu-img compare` finds equal to a raw
 * reference; hostile headers give DiskErrors, never a crash or a huge allocation.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, checkSource, FileSource, isDiskError, getFormat } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run } from '@diskhub/testkit';
import { assertWritesLanded, assertReadsAsExpected, mutationRounds, randomWrites, readAll } from './random-writes.js';


test('vdi read: qemu-io patterns in dynamic and static images read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, opts] of [['dyn', []], ['static', ['-o', 'static=on']]] as const) {
    const img = join(dir, `${name}.vdi`);
    await qemuImg('create', '-q', '-f', 'vdi', ...opts, img, '5000001');
    await qemuIo('-c', 'write -P 0x11 1000 3000000', '-c', 'write -P 0x22 1048570 12', '-c', 'write -z 2097152 1048576',
      '-c', 'write -P 0x33 4194303 805889', img);
    await qemuImg('convert', '-O', 'raw', img, join(dir, `${name}.raw`));
    const expected = new Uint8Array(await readFile(join(dir, `${name}.raw`)));
    await assertReadsAsExpected(img, expected, name);
  }
});

test('vdi write: random writes and zero ranges pass qemu-img check and compare equal to a raw reference', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const size = 6 * 1048576 + 512;
  for (const [name, opts, seed] of [['dyn', [], 7], ['static', ['-o', 'static=on'], 11], ['prefilled', [], 13]] as const) {
    const img = join(dir, `${name}.vdi`);
    const ref = join(dir, `${name}.raw`);
    await qemuImg('create', '-q', '-f', 'vdi', ...opts, img, String(size));
    if (name === 'prefilled') await qemuIo('-c', 'write -P 0x5a 524288 2097152', img);
    await qemuImg('convert', '-O', 'raw', img, ref);
    const image = await openImage(img, { writable: true });
    const reference = new Uint8Array(await readFile(ref));
    try {
      await randomWrites(image, reference, seed, 40, 1536 * 1024, 5 * 1048576);
    } finally {
      await closeChain(image);
    }
    await writeFile(ref, reference);
    await assertWritesLanded(img, 'vdi', ref, reference, name);
  }
});

test('vdi check: bad block map entries, duplicated blocks and a wrong allocated count are corruptions', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vdi');
  await qemuImg('create', '-q', '-f', 'vdi', base, '4M');
  await qemuIo('-c', 'write -P 1 0 64k', '-c', 'write -P 2 1M 64k', base);
  const clean = await readFile(base);
  const cases: Record<string, (b: Buffer) => void> = {
    clean: () => {},
    tooLarge: (b) => b.writeUInt32LE(9, 0x200 + 8),
    duplicate: (b) => b.writeUInt32LE(0, 0x200 + 4),
    count: (b) => b.writeUInt32LE(5, 388),
    discarded: (b) => { b.writeUInt32LE(0xfffffffe, 0x200 + 4); b.writeUInt32LE(1, 388); },
  };
  for (const [name, damage] of Object.entries(cases)) {
    const bytes = Buffer.from(clean);
    damage(bytes);
    const path = join(dir, `${name}.vdi`);
    await writeFile(path, bytes);
    const peer = await run('qemu-img', ['check', '--output=json', path]);
    const source = await FileSource.open(path);
    const ours = await checkSource(source).finally(() => source.close());
    assert.equal(ours.corruptions ?? 0, JSON.parse(peer.stdout).corruptions ?? 0, `${name}: corruptions`);
    assert.deepEqual(ours.messages, peer.stderr.split('\n').filter((l) => l.startsWith('ERROR')), `${name}: messages`);
  }
});

test('vdi hostile headers: typed errors with clear messages, bounded memory', async (t) => {
  const dir = await tempDir(t);
  const header = (patch: (v: DataView) => void, length = 1024): Uint8Array => {
    const b = new Uint8Array(1024);
    const v = new DataView(b.buffer);
    v.setUint32(64, 0xbeda107f, true);
    v.setUint32(68, 0x00010001, true);
    v.setUint32(76, 1, true);
    v.setUint32(340, 512, true);
    v.setUint32(344, 1024, true);
    v.setUint32(360, 512, true);
    v.setBigUint64(368, 1048576n, true);
    v.setUint32(376, 1048576, true);
    v.setUint32(384, 1, true);
    for (let i = 512; i < 1024; i++) b[i] = 0xff;
    patch(v);
    return b.subarray(0, length);
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['block size 0', header((v) => v.setUint32(376, 0, true)), /block size 0 is not 1048576/],
    ['huge block count', header((v) => { v.setUint32(384, 0x1fffff00, true); v.setBigUint64(368, 1n << 40n, true); }), /block map of \d+ blocks is larger than/],
    ['too many blocks', header((v) => v.setUint32(384, 0x3fffffff, true)), /too many blocks/],
    ['block map outside the file', header((v) => v.setUint32(340, 0x7ffffe00, true)), /block map .* extends past the end of the file/],
    ['disk larger than the map', header((v) => v.setBigUint64(368, 1n << 30n, true)), /image bitmap has room for 1048576/],
    ['absurd disk size', header((v) => v.setBigUint64(368, 1n << 62n, true)), /Unsupported VDI image size/],
    ['parent uuid', header((v) => v.setUint32(440, 1, true)), /non-NULL parent UUID/],
    ['version', header((v) => v.setUint32(68, 0x00020000, true)), /unsupported VDI image \(version 2\.0\)/],
    ['cut after the signature', header(() => {}, 100), /sector size 0 is not 512/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.vdi`);
    await writeFile(path, bytes);
    await assert.rejects(openImage(path), (e) => isDiskError(e) && message.test(e.message), name);
  }
  // An allocated entry far past the end of the file reads as zeroes, as in QEMU.
  const farPath = join(dir, 'far.vdi');
  await writeFile(farPath, header((v) => { v.setUint32(512, 0x7ffffff0, true); v.setUint32(388, 1, true); }));
  const far = await openImage(farPath);
  const b = new Uint8Array(4096).fill(9);
  await far.read(b, 0);
  assert.ok(b.every((x) => x === 0));
  await closeChain(far);
});

test('vdi mutations: damaged copies of a qemu-made image only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'm.vdi');
  await qemuImg('create', '-q', '-f', 'vdi', img, '3M');
  await qemuIo('-c', 'write -P 0x61 0 4096', '-c', 'write -P 0x62 2097152 4096', img);
  const r = await mutationRounds(getFormat('vdi'), new Uint8Array(await readFile(img)), 1500, [0, 1024], 101);
  assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
});
