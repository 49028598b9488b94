/**
 * bochs: qemu-img cannot create these, so the test writes growing redolog images (version 1 and
 * 2 headers, sparse sector bitmaps, unallocated extents) following the format, and uses qemu-img
 * 7.2 as the oracle: `qemu-img convert -O raw` and our read agree byte for byte, and so do the
 * virtual sizes. Hostile headers give DiskErrors; a bounded mutation run finds nothing else.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, isDiskError, getFormat } from '@diskhub/disk';
import { tempDir, qemuImg, needs } from '@diskhub/testkit';
import { mutationRounds, prng, readAll } from './random-writes.js';

export interface BochsSpec {
  version?: 1 | 2;
  diskSize: number;
  extentSize: number;
  /** Extra catalog entries past what the disk needs. */
  spareCatalog?: number;
  seed: number;
}

/** A growing redolog: random extents allocated (in shuffled order), random sectors stored in each. */
export function bochsImage(spec: BochsSpec): Uint8Array {
  const rnd = prng(spec.seed);
  const extents = Math.ceil(spec.diskSize / spec.extentSize) + (spec.spareCatalog ?? 0);
  const sectorsPerExtent = spec.extentSize / 512;
  const bitmapBytes = Math.ceil(sectorsPerExtent / 8);
  const bitmapBlocks = Math.ceil(bitmapBytes / 512);
  const headerSize = 512;
  const dataOffset = headerSize + extents * 4;
  const catalog = new Uint32Array(extents).fill(0xffffffff);
  const order: number[] = [];
  for (let i = 0; i < extents; i++) if (rnd(3) !== 0) order.push(i);
  for (let i = order.length - 1; i > 0; i--) { const j = rnd(i + 1); [order[i], order[j]] = [order[j]!, order[i]!]; }
  order.forEach((extent, k) => { catalog[extent] = k; });
  const perExtent = 512 * (bitmapBlocks + sectorsPerExtent);
  const out = new Uint8Array(dataOffset + order.length * perExtent);
  const v = new DataView(out.buffer);
  const put = (s: string, at: number) => out.set(new TextEncoder().encode(s), at);
  put('Bochs Virtual HD Image', 0);
  put('Redolog', 32);
  put('Growing', 48);
  v.setUint32(64, spec.version === 1 ? 0x00010000 : 0x00020000, true);
  v.setUint32(68, headerSize, true);
  v.setUint32(72, extents, true);
  v.setUint32(76, bitmapBytes, true);
  v.setUint32(80, spec.extentSize, true);
  v.setBigUint64(spec.version === 1 ? 84 : 88, BigInt(spec.diskSize), true);
  for (let i = 0; i < extents; i++) v.setUint32(headerSize + 4 * i, catalog[i]!, true);
  order.forEach((_, k) => {
    const base = dataOffset + k * perExtent;
    for (let s = 0; s < sectorsPerExtent; s++) {
      const at = base + 512 * (bitmapBlocks + s);
      // Every sector gets data; only those with their bit set are part of the disk.
      out.fill(1 + rnd(255), at, at + 512);
      if (rnd(2)) out[base + (s >> 3)]! |= 1 << (s & 7);
    }
  });
  return out;
}

test('bochs read: images written by the format read back as qemu-img convert -O raw gives them', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const specs: [string, BochsSpec][] = [
    ['v2', { diskSize: 3 * 1048576, extentSize: 32768, seed: 1 }],
    ['v1', { version: 1, diskSize: 1048576 + 1000, extentSize: 4096, seed: 2 }],
    ['big-extents', { diskSize: 5 * 1048576, extentSize: 1048576, spareCatalog: 3, seed: 3 }],
  ];
  for (const [name, spec] of specs) {
    const path = join(dir, `${name}.bochs`);
    await writeFile(path, bochsImage(spec));
    await qemuImg('convert', '-O', 'raw', path, `${path}.raw`);
    assert.ok(Buffer.from(await readAll(path)).equals(await readFile(`${path}.raw`)), `${name}: contents`);
    const peer = JSON.parse(await qemuImg('info', '--output=json', path));
    const img = await openImage(path);
    try {
      assert.equal(img.format, 'bochs', `${name}: probed`);
      assert.equal(img.size, peer['virtual-size'], `${name}: virtual size`);
      const b = new Uint8Array(1500);
      await img.read(b, 511);
      assert.ok(Buffer.from(b).equals((await readFile(`${path}.raw`)).subarray(511, 2011)), `${name}: odd read`);
    } finally {
      await closeChain(img);
    }
  }
});

test('bochs hostile headers: typed errors with clear messages, bounded memory', async (t) => {
  const dir = await tempDir(t);
  const base = () => bochsImage({ diskSize: 65536, extentSize: 4096, seed: 5 });
  const patched = (patch: (v: DataView) => void) => { const b = base(); patch(new DataView(b.buffer)); return b; };
  const cases: [string, Uint8Array, RegExp][] = [
    ['catalog too large', patched((v) => v.setUint32(72, 0x100001, true)), /Catalog size is too large/],
    ['catalog past the end', patched((v) => v.setUint32(72, 0xfffff, true)), /bochs catalog .* extends past the end of the file/],
    ['catalog too small', patched((v) => v.setBigUint64(88, 1n << 30n, true)), /Catalog size is too small/],
    ['extent 256', patched((v) => v.setUint32(80, 256, true)), /Extent size must be at least 512/],
    ['extent 3000', patched((v) => v.setUint32(80, 3000 * 2, true)), /is not a power of two/],
    ['extent 16M', patched((v) => v.setUint32(80, 16 << 20, true)), /is too large/],
    ['subtype', patched((v) => v.setUint8(48, 0x55)), /not in Bochs format/],
    ['truncated', base().subarray(0, 300), /not in Bochs format/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.bochs`);
    await writeFile(path, bytes);
    await assert.rejects(openImage(path, { format: 'bochs' }), (e) => isDiskError(e) && message.test(e.message), name);
  }
});

test('bochs mutations: damaged copies only ever give DiskErrors', async () => {
  const bytes = bochsImage({ diskSize: 262144, extentSize: 8192, seed: 9 });
  const r = await mutationRounds(getFormat('bochs'), bytes, 1500, [0, 1024], 113);
  assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
});
