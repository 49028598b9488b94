import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseHeader, geometry, serializeHeader, isQcow2, STANDARD_FEATURE_NAMES } from '@diskhub/disk/qcow2/layout';
import { isDiskError } from '@diskhub/disk';
import { tempDir, qemuImg, needs } from '@diskhub/testkit';

test('qcow2 layout: parses headers written by qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, '10M');
  const cases: Array<[string, string[], (h: ReturnType<typeof parseHeader>) => void]> = [
    ['v3.qcow2', ['-o', 'cluster_size=4096,lazy_refcounts=on,refcount_bits=8', '-b', 'base.qcow2', '-F', 'qcow2'], (h) => {
      assert.equal(h.version, 3);
      assert.equal(h.clusterBits, 12);
      assert.equal(h.refcountOrder, 3);
      assert.equal(h.compatibleFeatures, 1n);
      assert.equal(h.backingFile, 'base.qcow2');
      assert.equal(h.backingFormat, 'qcow2');
    }],
    ['v2.qcow2', ['-o', 'compat=0.10,cluster_size=512'], (h) => {
      assert.equal(h.version, 2);
      assert.equal(h.clusterBits, 9);
      assert.equal(h.refcountOrder, 4);
      assert.equal(h.backingFile, undefined);
    }],
    ['zstd-extl2.qcow2', ['-o', 'compression_type=zstd,extended_l2=on,cluster_size=2M'], (h) => {
      assert.equal(h.compressionType, 1);
      assert.equal(geometry(h).extendedL2, true);
      assert.equal(geometry(h).subclusterSize, 65536);
      assert.equal(h.clusterBits, 21);
      assert.ok(h.featureNames.some((f) => f.type === 'compatible' && f.name === 'lazy refcounts'));
    }],
  ];
  for (const [name, opts, check] of cases) {
    const p = join(dir, name);
    await qemuImg('create', '-q', '-f', 'qcow2', ...opts, p, '10M');
    const bytes = await readFile(p);
    assert.ok(isQcow2(bytes));
    const h = parseHeader(bytes, (await stat(p)).size, p);
    assert.equal(h.size, 10 * 1024 * 1024);
    check(h);
  }
});

test('qcow2 layout: serialised header round-trips and is accepted by qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const p = join(dir, 'src.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', p, '1G');
  const bytes = new Uint8Array(await readFile(p));
  const h = parseHeader(bytes, bytes.length, p);
  h.featureNames = STANDARD_FEATURE_NAMES;
  const again = serializeHeader(h, 65536);
  const h2 = parseHeader(again, bytes.length, p);
  assert.equal(h2.size, h.size);
  assert.equal(h2.l1TableOffset, h.l1TableOffset);
  assert.equal(h2.refcountTableOffset, h.refcountTableOffset);
  assert.equal(h2.compressionType, 1);
  assert.equal(h2.featureNames.length, STANDARD_FEATURE_NAMES.length);
});

test('qcow2 layout: hostile headers give typed errors', () => {
  const good = new Uint8Array(65536);
  const v = new DataView(good.buffer);
  v.setUint32(0, 0x514649fb); v.setUint32(4, 3); v.setUint32(20, 16); v.setBigUint64(24, 1n << 30n);
  v.setUint32(36, 2); v.setBigUint64(40, 0x30000n); v.setBigUint64(48, 0x10000n); v.setUint32(56, 1);
  v.setUint32(96, 4); v.setUint32(100, 112);
  assert.equal(parseHeader(good, 0x40000).size, 1 << 30);
  const mutate = (f: (d: DataView) => void) => { const b = good.slice(); f(new DataView(b.buffer)); return b; };
  const bad: Array<[string, Uint8Array, number]> = [
    ['cluster_bits 30', mutate((d) => d.setUint32(20, 30)), 0x40000],
    ['huge L1', mutate((d) => d.setUint32(36, 0xffffffff)), 0x40000],
    ['L1 past EOF', mutate((d) => d.setBigUint64(40, 0x1000000n)), 0x40000],
    ['refcount table past EOF', mutate((d) => d.setBigUint64(48, 1n << 40n)), 0x40000],
    ['backing name past header', mutate((d) => { d.setBigUint64(8, 65000n); d.setUint32(16, 1000); }), 0x40000],
    ['size beyond 2^53', mutate((d) => d.setBigUint64(24, 1n << 60n)), 0x40000],
    ['truncated', good.subarray(0, 50), 50],
    ['unknown incompatible bit', mutate((d) => d.setBigUint64(72, 1n << 40n)), 0x40000],
    ['extension overrun', mutate((d) => { d.setUint32(112, 0xe2792aca); d.setUint32(116, 0xffffff); }), 0x40000],
  ];
  for (const [what, buf, size] of bad) {
    assert.throws(() => parseHeader(buf, size), (e: unknown) => isDiskError(e), what);
  }
});
