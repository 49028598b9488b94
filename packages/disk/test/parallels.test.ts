/**
 * parallels against qemu-img / qemu-io 7.2: images qemu-img creates and qemu-io writes
 * ("WithouFreSpacExt") and hand-made old-format ("WithoutFreeSpace") images read back as
 * `qemu-img convert -O raw` gives them; check reports what qemu-img check reports; hostile
 * headers give DiskErrors, never a crash or a huge allocation.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, checkSource, FileSource, isDiskError, getFormat } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run } from '@diskhub/testkit';
import { mutationRounds, readAll } from './random-writes.js';

/** An old-format image: 4 KiB clusters, BAT entries in sectors. */
function oldFormat(sectorCount: bigint, bat: number[], clusters: number[]): Uint8Array {
  const dataOff = 8;
  const b = new Uint8Array((dataOff + clusters.length * 8) * 512);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode('WithoutFreeSpace'), 0);
  v.setUint32(16, 2, true);
  v.setUint32(20, 16, true);
  v.setUint32(24, 1, true);
  v.setUint32(28, 8, true);
  v.setUint32(32, bat.length, true);
  v.setBigUint64(36, sectorCount, true);
  v.setUint32(48, dataOff, true);
  bat.forEach((e, i) => v.setUint32(64 + 4 * i, e, true));
  clusters.forEach((fill, i) => b.fill(fill, (dataOff + i * 8) * 512, (dataOff + i * 8 + 8) * 512));
  return b;
}

async function sameAsQemu(path: string, what: string): Promise<void> {
  const raw = `${path}.raw`;
  await qemuImg('convert', '-f', 'parallels', '-O', 'raw', path, raw);
  assert.ok(Buffer.from(await readAll(path, 'parallels')).equals(await readFile(raw)), `${what}: contents`);
  const peer = JSON.parse(await qemuImg('info', '--output=json', path));
  const img = await openImage(path);
  try {
    assert.equal(img.format, 'parallels');
    assert.equal(img.size, peer['virtual-size'], `${what}: virtual size`);
  } finally {
    await closeChain(img);
  }
}

test('parallels read: qemu-img/qemu-io images and old-format images read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, opts] of [['default', []], ['small', ['-o', 'cluster_size=64k']], ['odd', ['-o', 'cluster_size=3k']]] as const) {
    const img = join(dir, `${name}.parallels`);
    await qemuImg('create', '-q', '-f', 'parallels', ...opts, img, '5000192');
    await qemuIo('-c', 'write -P 0x11 1000 300000', '-c', 'write -P 0x22 3145728 4096', '-c', 'write -P 0x33 4999680 512', '-c', 'write -P 0x44 70000 7', img);
    await sameAsQemu(img, name);
  }
  const old = join(dir, 'old.parallels');
  // The old format's sector count is 32 bits: the high word is ignored.
  await writeFile(old, oldFormat((1n << 32n) + 64n, [0, 8, 0, 16], [0x33, 0x44]));
  await sameAsQemu(old, 'old format');
});

test('parallels check: clusters outside the file, leaks and an unclean close reported as qemu-img check reports them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.parallels');
  await qemuImg('create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', base, '1M');
  await qemuIo('-c', 'write -P 1 0 64k', '-c', 'write -P 2 512k 4k', '-c', 'write -P 3 128k 4k', base);
  const clean = await readFile(base);
  const cases: Record<string, (b: Buffer) => Buffer> = {
    clean: (b) => b,
    leak: (b) => Buffer.concat([b, Buffer.alloc(100000)]),
    outside: (b) => { b.writeUInt32LE(1000, 64 + 4); return b; },
    inuse: (b) => { b.writeUInt32LE(0x746f6e59, 44); return b; },
  };
  for (const [name, damage] of Object.entries(cases)) {
    const path = join(dir, `${name}.parallels`);
    await writeFile(path, damage(Buffer.from(clean)));
    const peerRun = await run('qemu-img', ['check', '--output=json', path]);
    const peer = JSON.parse(peerRun.stdout);
    const source = await FileSource.open(path);
    const ours = await checkSource(source).finally(() => source.close());
    for (const key of ['corruptions', 'leaks', 'allocated-clusters', 'fragmented-clusters', 'total-clusters', 'image-end-offset'] as const) {
      assert.equal(ours[key] ?? 0, peer[key] ?? 0, `${name}: ${key}`);
    }
    assert.deepEqual(ours.messages, peerRun.stderr.split('\n').filter((l) => l.startsWith('ERROR')), `${name}: messages`);
  }
});

test('parallels hostile headers: typed errors with clear messages, bounded memory', async (t) => {
  const dir = await tempDir(t);
  const header = (patch: (v: DataView) => void): Uint8Array => {
    const b = oldFormat(64n, [0, 8], [1]);
    patch(new DataView(b.buffer));
    return b;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['zero tracks', header((v) => v.setUint32(28, 0, true)), /Zero sectors per track/],
    ['huge cluster', header((v) => v.setUint32(28, 0x7fffffff, true)), /Too big cluster/],
    ['catalog too large', header((v) => v.setUint32(32, 0x7fffffff, true)), /Catalog too large/],
    ['BAT past the end of the file', header((v) => v.setUint32(32, 0x1000000, true)), /BAT .* extends past the end of the file/],
    ['BAT over the engine limit', header((v) => v.setUint32(32, 0x10000000, true)), /larger than the engine's limit/],
    ['version 3', header((v) => v.setUint32(16, 3, true)), /not in Parallels format/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.parallels`);
    await writeFile(path, bytes);
    await assert.rejects(openImage(path, { format: 'parallels' }), (e) => isDiskError(e) && message.test(e.message), name);
  }
  // A BAT entry far past the end of the file reads as zeroes, as in QEMU.
  const far = join(dir, 'far.parallels');
  await writeFile(far, header((v) => v.setUint32(64, 0xfffffff0, true)));
  const b = new Uint8Array(4096).fill(9);
  const img = await openImage(far);
  await img.read(b, 0);
  await closeChain(img);
  assert.ok(b.every((x) => x === 0));
});

test('parallels mutations: damaged copies of a qemu-made image only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'm.parallels');
  await qemuImg('create', '-q', '-f', 'parallels', '-o', 'cluster_size=4k', img, '2M');
  await qemuIo('-c', 'write -P 0x61 0 4096', '-c', 'write -P 0x62 1048576 4096', img);
  const r = await mutationRounds(getFormat('parallels'), new Uint8Array(await readFile(img)), 1500, [0, 2048], 107);
  assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
});
