/**
 * vmdk against qemu-img / qemu-io 7.2: every subformat qemu-img creates, written with qemu-io
 * patterns (odd offsets, across grain and extent boundaries, zero ranges), reads back byte-exact;
 * block status agrees with `qemu-img map`; info agrees with `qemu-img info`; extents outside the
 * image's folder need an opt-in; hostile headers and descriptors give DiskErrors.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, isDiskError, getFormat, mapImage, FileSource, checkSource } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run, diskhub } from '@diskhub/testkit';
import { assertWritesLanded, mutationRounds, randomWrites, readAll } from './random-writes.js';

const SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'] as const;
/** Writes that cross grains (64 KiB), the 2 GiB extent boundary of the split subformats, and zero a range. */
const PATTERNS = ['write -P 0x11 1000 300000', 'write -P 0x22 65530 12', 'write -z 131072 65536', 'write -P 0x33 2147483000 2000', 'write -P 0x44 2300000001 70001'];
const SIZE = 2400000000;

async function expectSameBytes(path: string, raw: string, what: string, opts: { allowExternalData?: boolean } = {}): Promise<void> {
  const rawFile = await FileSource.open(raw);
  const img = await openImage(path, opts);
  try {
    assert.equal(img.size, await rawFile.size(), `${what}: size`);
    // Compare the interesting windows (and a sample of the rest): the disks are 2.4 GB sparse.
    for (const [off, len] of [[0, 400000], [2147400000, 200000], [2299999000, 80000], [SIZE - 4096, 4096], [1000000000, 65536]] as const) {
      const b = new Uint8Array(len);
      await img.read(b, off);
      const want = new Uint8Array(len);
      await rawFile.read(want, off);
      assert.ok(Buffer.from(b).equals(want), `${what}: read ${off}+${len}`);
    }
  } finally {
    await rawFile.close();
    await closeChain(img);
  }
}

test('vmdk read: qemu-io patterns in every subformat read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const sub of SUBFORMATS) {
    const img = join(dir, `${sub}.vmdk`);
    if (sub === 'streamOptimized') {
      // streamOptimized is written by convert (grains compressed, in order), as qemu-img does.
      const src = join(dir, 'stream-src.qcow2');
      await qemuImg('create', '-q', '-f', 'qcow2', src, String(SIZE));
      await qemuIo('-f', 'qcow2', ...PATTERNS.flatMap((p) => ['-c', p]), src);
      await qemuImg('convert', '-O', 'vmdk', '-o', `subformat=${sub}`, src, img);
    } else {
      await qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${sub}`, img, String(SIZE));
      await qemuIo('-f', 'vmdk', ...PATTERNS.flatMap((p) => ['-c', p]), img);
    }
    const raw = join(dir, `${sub}.raw`);
    await qemuImg('convert', '-O', 'raw', img, raw);
    await expectSameBytes(img, raw, sub);

    // info: the same keys and values as qemu-img's (actual-size aside: it is what the host allocated).
    const peer = JSON.parse(await qemuImg('info', '--output=json', img));
    const image = await openImage(img);
    try {
      const ours = JSON.parse(JSON.stringify(await image.info()));
      delete peer['actual-size'];
      delete ours['actual-size'];
      assert.deepEqual(ours, peer, `${sub}: info`);

      // map: equal where qemu-img reports allocation (it has no offsets for compressed grains).
      const peerMap = JSON.parse(await qemuImg('map', '--output=json', img)) as Record<string, unknown>[];
      const ourMap: Record<string, unknown>[] = [];
      for await (const e of mapImage(image)) {
        ourMap.push({ start: e.offset, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data, ...(e.hostOffset !== undefined ? { offset: e.hostOffset } : {}) });
      }
      const strip = (m: Record<string, unknown>[]) => m.map((e) => ({ ...e, compressed: undefined }));
      assert.deepEqual(JSON.parse(JSON.stringify(strip(ourMap))), JSON.parse(JSON.stringify(strip(peerMap))), `${sub}: map`);
    } finally {
      await closeChain(image);
    }
  }
});

test('vmdk read: grains stored out of guest order, in order and not at all read as qemu-img reads them, whole or in pieces', needs('qemu-img', 'qemu-io'), async (t) => {
  // A request is read with one read per run of grains that neighbour each other in the file:
  // here grains 40..33 are stored backwards, 0..15 forwards, 16..32 not at all, then one more.
  const dir = await tempDir(t);
  const img = join(dir, 'm.vmdk');
  await qemuImg('create', '-q', '-f', 'vmdk', img, '8M');
  const writes: string[] = [];
  for (let g = 40; g >= 33; g--) writes.push('-c', `write -P ${g} ${g * 65536} 65536`);
  writes.push('-c', `write -P 0x61 0 ${16 * 65536}`, '-c', 'write -P 0x62 6553600 1000');
  await qemuIo('-f', 'vmdk', ...writes, img);
  const raw = join(dir, 'm.raw');
  await qemuImg('convert', '-O', 'raw', img, raw);
  const want = await readFile(raw);
  const image = await openImage(img);
  try {
    const whole = new Uint8Array(want.length);
    await image.read(whole, 0);
    assert.ok(Buffer.from(whole).equals(want), 'one read of the whole disk');
    const pieces = new Uint8Array(want.length);
    for (let at = 0; at < want.length; at += 300000) await image.read(pieces.subarray(at, Math.min(want.length, at + 300000)), at);
    assert.ok(Buffer.from(pieces).equals(want), 'reads of 300000 bytes');
  } finally {
    await closeChain(image);
  }
});

test('vmdk read: zeroed grains, parents by parentFileNameHint, CID checks', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vmdk');
  const top = join(dir, 'top.vmdk');
  await qemuImg('create', '-q', '-f', 'vmdk', base, '4M');
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x55 0 4M', base);
  await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', '-b', 'base.vmdk', '-F', 'vmdk', top);
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x66 70000 1000', '-c', 'write -z 1048576 131072', '-c', 'write -z 3000 10', top);
  const raw = join(dir, 'top.raw');
  await qemuImg('convert', '-O', 'raw', top, raw);
  const expected = await readFile(raw);
  assert.ok(Buffer.from(await readAll(top)).equals(expected), 'chain contents');
  const image = await openImage(top);
  try {
    assert.equal(image.backing?.format, 'vmdk');
    const ours = JSON.parse(JSON.stringify(await image.info()));
    const peer = JSON.parse(await qemuImg('info', '--output=json', top));
    delete ours['actual-size'];
    delete peer['actual-size'];
    assert.deepEqual(ours, peer, 'info with a parent');
  } finally {
    await closeChain(image);
  }
  // A parent whose CID changed is refused on read-through, as QEMU refuses it.
  const baseText = await readFile(base);
  const at = baseText.indexOf('CID=');
  baseText.write('CID=0badc1d0', at, 'latin1');
  await writeFile(base, baseText);
  const broken = await openImage(top);
  try {
    await assert.rejects(broken.read(new Uint8Array(512), 200000), (e) => isDiskError(e, 'ECORRUPT') && /parent/.test(e.message));
  } finally {
    await closeChain(broken);
  }
});

test('vmdk extents: names outside the descriptor folder need the opt-in; the rest resolve relative to the descriptor', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const secret = join(dir, 'secret.bin');
  await writeFile(secret, Buffer.alloc(1024 * 1024, 0x7e));
  const sub = join(dir, 'sub');
  await run('mkdir', [sub]);
  const descriptor = (extent: string) => `# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 2048 FLAT "${extent}" 0\n`;
  for (const name of [secret, '../secret.bin', 'a/../../secret.bin']) {
    const p = join(sub, 'evil.vmdk');
    await writeFile(p, descriptor(name));
    await assert.rejects(openImage(p), (e) => isDiskError(e, 'EUNSAFE') && e.message.includes(name), name);
    const img = await openImage(p, { allowExternalData: true });
    const b = new Uint8Array(16);
    await img.read(b, 100);
    assert.ok(b.every((x) => x === 0x7e), `${name}: read with the opt-in`);
    await closeChain(img);
  }
  // Relative names inside the folder open without an opt-in, relative to the descriptor (not the cwd).
  await writeFile(join(sub, 'data.bin'), Buffer.alloc(1024 * 1024, 0x3c));
  await writeFile(join(sub, 'ok.vmdk'), descriptor('data.bin'));
  const ok = await openImage(join(sub, 'ok.vmdk'));
  const b = new Uint8Array(8);
  await ok.read(b, 0);
  assert.ok(b.every((x) => x === 0x3c));
  await closeChain(ok);
  // The CLI's info refuses too, with the reason.
  await writeFile(join(sub, 'evil.vmdk'), descriptor('/etc/passwd'));
  const source = await FileSource.open(join(sub, 'evil.vmdk'));
  await assert.rejects(getFormat('vmdk').open(source, {}), (e) => isDiskError(e, 'EUNSAFE'));
  await source.close();
});

/** A monolithicSparse header with fields patched (1 MiB disk, 64 KiB grains, GD at sector 21). */
function sparseImage(patch: (v: DataView, b: Uint8Array) => void = () => {}): Uint8Array {
  const b = new Uint8Array(64 * 1024);
  const v = new DataView(b.buffer);
  v.setUint32(0, 0x564d444b, true);
  v.setUint32(4, 1, true);
  v.setUint32(8, 3, true);
  v.setBigUint64(12, 2048n, true);
  v.setBigUint64(20, 128n, true);
  v.setBigUint64(28, 1n, true);
  v.setBigUint64(36, 20n, true);
  v.setUint32(44, 512, true);
  v.setBigUint64(48, 0n, true);
  v.setBigUint64(56, 21n, true);
  v.setBigUint64(64, 128n, true);
  b.set(Buffer.from('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicSparse"\nRW 2048 SPARSE "x.vmdk"\n'), 512);
  v.setUint32(21 * 512, 22, true);
  patch(v, b);
  return b;
}

test('vmdk hostile input: typed errors with clear messages, bounded memory', async (t) => {
  const dir = await tempDir(t);
  const cases: [string, Uint8Array, RegExp][] = [
    ['sane', sparseImage(), /^$/],
    ['grain size 0', sparseImage((v) => v.setBigUint64(20, 0n, true)), /L1 entry size is invalid/],
    ['grain not a power of two', sparseImage((v) => v.setBigUint64(20, 100n, true)), /not a power of two/],
    ['huge grain', sparseImage((v) => v.setBigUint64(20, 1n << 30n, true)), /Invalid granularity/],
    ['huge capacity', sparseImage((v) => v.setBigUint64(12, 1n << 52n, true)), /L1 size too big|too large/],
    ['GT too big', sparseImage((v) => v.setUint32(44, 4096, true)), /L2 table size too big/],
    ['GD outside the file', sparseImage((v) => v.setBigUint64(56, 1n << 30n, true)), /grain directory .* outside the file/],
    ['version 4', sparseImage((v) => v.setUint32(4, 4, true)), /Unsupported VMDK version 4/],
    ['truncated', sparseImage((v) => v.setBigUint64(64, 1n << 20n, true)), /File truncated/],
    ['no CID', sparseImage((_, b) => b.fill(0, 512, 1024)), /no CID/],
    ['stream footer missing', sparseImage((v) => v.setBigUint64(56, 0xffffffffffffffffn, true)), /Invalid footer/],
    ['descriptor too large', new Uint8Array(Buffer.from(`# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n${'#'.repeat(1 << 20)}\n`)), /larger than/],
    ['unsupported createType', new Uint8Array(Buffer.from('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="fancy"\n')), /Unsupported image type 'fancy'/],
    ['flat without offset', new Uint8Array(Buffer.from('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 10 FLAT "f.bin"\n')), /Invalid extent line/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.vmdk`);
    await writeFile(path, bytes);
    if (name === 'sane') {
      const img = await openImage(path);
      const b = new Uint8Array(4096);
      await img.read(b, 0);
      await closeChain(img);
      continue;
    }
    await assert.rejects(openImage(path), (e) => isDiskError(e) && message.test(e.message), name);
  }
  // A descriptor loop: a sparse file carrying a descriptor whose extent is the file itself.
  const loop = join(dir, 'loop.vmdk');
  const carrier = sparseImage((v, b) => {
    v.setBigUint64(12, 0n, true);
    b.fill(0, 512, 1024);
    b.set(Buffer.from('# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="twoGbMaxExtentSparse"\nRW 2048 SPARSE "loop.vmdk"\n'), 512);
  });
  await writeFile(loop, carrier.subarray(0, 1024));
  await assert.rejects(openImage(loop), (e) => isDiskError(e, 'ELOOP') || isDiskError(e, 'ELIMIT'), 'descriptor loop');
  // A grain table entry far past the end of the file reads as zeroes, as in QEMU.
  const far = join(dir, 'far.vmdk');
  await writeFile(far, sparseImage((v) => v.setUint32(22 * 512, 0x7fffff00, true)));
  const img = await openImage(far);
  const b = new Uint8Array(4096).fill(9);
  await img.read(b, 0);
  assert.ok(b.every((x) => x === 0));
  await closeChain(img);
});

test('vmdk check: grains past the end of the file are corruptions, as qemu-img check reports them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'c.vmdk');
  await qemuImg('create', '-q', '-f', 'vmdk', img, '4M');
  await qemuIo('-f', 'vmdk', '-c', 'write -P 1 0 64k', img);
  const clean = await readFile(img);
  const gdSector = Number(clean.readBigUInt64LE(56));
  const gtSector = clean.readUInt32LE(gdSector * 512);
  for (const [name, damage] of [['clean', () => {}], ['past EOF', (b: Buffer) => b.writeUInt32LE(0x100000, gtSector * 512)]] as const) {
    const bytes = Buffer.from(clean);
    damage(bytes);
    const path = join(dir, `${name.replace(/ /g, '-')}.vmdk`);
    await writeFile(path, bytes);
    const peer = await run('qemu-img', ['check', path]);
    const source = await FileSource.open(path);
    const ours = await checkSource(source).then(() => undefined, (e: unknown) => e).finally(() => source.close());
    if (name === 'clean') {
      assert.equal(peer.code, 0);
      assert.equal(ours, undefined);
    } else {
      // qemu-img: "ERROR: cluster offset for sector 0 points after EOF", then "Check failed", exit 1.
      assert.equal(peer.code, 1);
      assert.ok(isDiskError(ours, 'ECORRUPT') && peer.stderr.includes(ours.message), `${name}: ${String(ours)} vs ${peer.stderr}`);
    }
    const cli = await diskhub(['img', 'check', path]);
    assert.equal(cli.code, peer.code, `${name}: diskhub img check exit code`);
  }
});

test('vmdk mutations: damaged copies of qemu-made images only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const sub of ['monolithicSparse', 'streamOptimized']) {
    const src = join(dir, 'src.raw');
    await writeFile(src, Buffer.alloc(0));
    await qemuImg('create', '-q', '-f', 'raw', src, '2M');
    await qemuIo('-f', 'raw', '-c', 'write -P 0x61 0 4096', '-c', 'write -P 0x62 1048576 70000', src);
    const img = join(dir, `${sub}.vmdk`);
    await qemuImg('convert', '-O', 'vmdk', '-o', `subformat=${sub}`, src, img);
    const bytes = new Uint8Array(await readFile(img));
    const r = await mutationRounds(getFormat('vmdk'), bytes, 700, [0, 1024], 17);
    assert.ok(r.opened > 0 && r.refused > 0, `${sub}: both outcomes seen: ${JSON.stringify(r)}`);
  }
});

test('vmdk write: random writes and zero ranges pass qemu-img check and compare equal to a raw reference', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const size = 6 * 1048576 + 512;
  for (const [name, opts, seed] of [
    ['sparse', [], 7], ['zeroed', ['-o', 'zeroed_grain=on'], 11], ['flat', ['-o', 'subformat=monolithicFlat'], 13],
    ['split', ['-o', 'subformat=twoGbMaxExtentSparse'], 17], ['prefilled', [], 19],
  ] as const) {
    const img = join(dir, `${name}.vmdk`);
    const ref = join(dir, `${name}.raw`);
    await qemuImg('create', '-q', '-f', 'vmdk', ...opts, img, String(size));
    if (name === 'prefilled') await qemuIo('-f', 'vmdk', '-c', 'write -P 0x5a 524288 2097152', img);
    await qemuImg('convert', '-O', 'raw', img, ref);
    const image = await openImage(img, { writable: true });
    const reference = new Uint8Array(await readFile(ref));
    try {
      await randomWrites(image, reference, seed, 40, 1536 * 1024, 5 * 1048576);
    } finally {
      await closeChain(image);
    }
    await writeFile(ref, reference);
    await assertWritesLanded(img, 'vmdk', ref, reference, name);
  }
  // A write into a delta disk copies the rest of the grain from the parent (qemu-img reads it the same).
  await qemuImg('create', '-q', '-f', 'vmdk', join(dir, 'base.vmdk'), '1M');
  await qemuIo('-f', 'vmdk', '-c', 'write -P 0x31 0 1M', join(dir, 'base.vmdk'));
  await qemuImg('create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', join(dir, 'top.vmdk'));
  const top = await openImage(join(dir, 'top.vmdk'), { writable: true });
  await top.write!(new Uint8Array(100).fill(0x32), 70000);
  await closeChain(top);
  await qemuImg('convert', '-O', 'raw', join(dir, 'top.vmdk'), join(dir, 'top.raw'));
  const expected = Buffer.alloc(1048576, 0x31);
  expected.fill(0x32, 70000, 70100);
  assert.ok((await readFile(join(dir, 'top.raw'))).equals(expected), 'delta write over the parent');
  // streamOptimized grains are written once: a second write to one is refused, as QEMU refuses it.
  await qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', join(dir, 'top.raw'), join(dir, 's.vmdk'));
  const s = await openImage(join(dir, 's.vmdk'), { writable: true });
  await assert.rejects(s.write!(new Uint8Array(65536), 0), (e) => isDiskError(e, 'EIO') && /allocated cluster for streamOptimized/.test(e.message));
  await closeChain(s);
});

test('vmdk streamOptimized: neighbouring compressed grains read together like qemu-img reads them; a damaged grain is named', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const words = ['grain', 'marker', 'deflate', 'stream', 'vmdk', 'sector', 'footer', 'descriptor'];
  let x = 5;
  const text = Buffer.from(Array.from({ length: 300_000 }, () => { x = (x * 1103515245 + 12345) & 0x7fffffff; return words[x % words.length]; }).join(' ')).subarray(0, 1 << 20);
  await writeFile(join(dir, 'text.raw'), text);
  const p = join(dir, 's.vmdk');
  await qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', join(dir, 'text.raw'), p);
  assert.ok(Buffer.from(await readAll(p)).equals(text));

  // Grain markers: sector-aligned (lba u64, size u32) followed by a zlib stream (0x78).
  const file = await readFile(p);
  const markerOf = (grain: number) => {
    for (let at = 512; at + 13 <= file.length; at += 512) {
      if (file.readBigUInt64LE(at) === BigInt(grain * 128) && file.readUInt32LE(at + 8) > 0 && file[at + 12] === 0x78) return at;
    }
    throw new Error(`no marker for grain ${grain}`);
  };
  const damaged = async (name: string, change: (b: Buffer) => void, message: RegExp) => {
    const b = Buffer.from(file);
    change(b);
    const q = join(dir, `${name}.vmdk`);
    await writeFile(q, b);
    const d = await openImage(q);
    try {
      await assert.rejects(d.read(new Uint8Array(d.size), 0), (e) => isDiskError(e, 'ECORRUPT') && message.test(e.message), name);
      // Grains after the damaged one still read, in one request.
      const tail = new Uint8Array(8 * 65536);
      await d.read(tail, 8 * 65536);
      assert.ok(Buffer.from(tail).equals(text.subarray(8 * 65536)), `${name}: the grains after it`);
    } finally {
      await closeChain(d);
    }
  };
  const m3 = markerOf(3);
  const m5 = markerOf(5);
  await damaged('size', (b) => b.writeUInt32LE(0, m3 + 8), new RegExp(`grain at offset ${m3} has an invalid size 0`));
  await damaged('data', (b) => b.fill(0xff, m5 + 12, m5 + 40), new RegExp(`grain at offset ${m5} does not inflate`));
});
