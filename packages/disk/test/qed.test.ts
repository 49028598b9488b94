/**
 * qed against qemu-img / qemu-io 7.2: images qemu writes (cluster and table sizes, zero
 * clusters, raw and qcow2 backing files) read back byte-exact; random writes through our driver
 * leave images `qemu-img check` passes and `qemu-img compare` finds equal to a raw reference;
 * an image left with need-check is repaired on a writable open; check finds and repairs what
 * qemu-img does; hostile headers give DiskErrors.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, checkSource, FileSource, MemorySource, isDiskError, getFormat } from '@diskhub/disk';
import { inspectSource } from '@diskhub/disk/inspect/index';
import { tempDir, qemuImg, qemuIo, needs, run } from '@diskhub/testkit';
import { assertWritesLanded, assertReadsAsExpected, mutationRounds, randomWrites, readAll } from './random-writes.js';

const NEED_CHECK = 2;

test('qed read: qemu-io patterns, zero clusters and backing files read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'base.raw'), '6M');
  await qemuIo('-f', 'raw', '-c', 'write -P 0x77 0 6M', join(dir, 'base.raw'));
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '6M');
  await qemuIo('-c', 'write -P 0x66 1M 3M', join(dir, 'base.qcow2'));
  const cases: [string, string[]][] = [
    ['plain', ['-o', 'cluster_size=4k,table_size=2']],
    ['default', []],
    ['big-clusters', ['-o', 'cluster_size=1M,table_size=2']],
    ['raw-backing', ['-b', 'base.raw', '-F', 'raw', '-o', 'cluster_size=16k']],
    ['qcow2-backing', ['-b', 'base.qcow2', '-F', 'qcow2']],
  ];
  for (const [name, opts] of cases) {
    const img = join(dir, `${name}.qed`);
    await run('qemu-img', ['create', '-q', '-f', 'qed', ...opts, img, '5000192'], { cwd: dir });
    await qemuIo('-f', 'qed', '-c', 'write -P 0x11 1000 3000000', '-c', 'write -P 0x22 1048570 12', '-c', 'write -z 2097152 1048576',
      '-c', 'write -z 3000 100', '-c', 'write -P 0x33 4194303 805889', img);
    await qemuImg('convert', '-O', 'raw', img, join(dir, `${name}.raw`));
    const expected = new Uint8Array(await readFile(join(dir, `${name}.raw`)));
    await assertReadsAsExpected(img, expected, name);
  }
});

test('qed write: random writes and zero ranges pass qemu-img check and compare equal to a raw reference; need-check set while dirty', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const size = 6 * 1048576 + 512;
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'base.raw'), String(size));
  await qemuIo('-f', 'raw', '-c', `write -P 0x42 0 ${size}`, join(dir, 'base.raw'));
  for (const [name, opts, seed] of [['small', ['-o', 'cluster_size=4k,table_size=2'], 7], ['default', [], 11], ['backed', ['-b', 'base.raw', '-F', 'raw'], 13]] as const) {
    const img = join(dir, `${name}.qed`);
    const ref = join(dir, `${name}.raw`);
    await run('qemu-img', ['create', '-q', '-f', 'qed', ...opts, img, String(size)], { cwd: dir });
    await qemuImg('convert', '-O', 'raw', img, ref);
    const image = await openImage(img, { writable: true });
    const reference = new Uint8Array(await readFile(ref));
    try {
      // An unflushed allocation: the header says the image needs a check.
      await image.write!(new Uint8Array(512).fill(0xee), 4096);
      reference.fill(0xee, 4096, 4608);
      assert.equal((await readFile(img))[16]! & NEED_CHECK, NEED_CHECK, `${name}: need-check while dirty`);
      await randomWrites(image, reference, seed, 40, 1536 * 1024, 5 * 1048576);
    } finally {
      await closeChain(image);
    }
    assert.equal((await readFile(img))[16]! & NEED_CHECK, 0, `${name}: clean after close`);
    await writeFile(ref, reference);
    await assertWritesLanded(img, 'qed', ref, reference, name, dir);
  }
});

test('qed check: offsets outside the file are corruptions (repaired by -r all), unreferenced clusters leaks, as qemu-img counts them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qed');
  await qemuImg('create', '-q', '-f', 'qed', '-o', 'cluster_size=4k,table_size=2', base, '2M');
  await qemuIo('-f', 'qed', '-c', 'write -P 1 0 8k', '-c', 'write -P 2 1M 4k', base);
  const clean = await readFile(base);
  // Layout: header 0-4k, L1 4k-12k, data 12k-20k, L2 20k-28k, data 28k-32k.
  const l2 = 20480;
  assert.equal(clean.readBigUInt64LE(4096), BigInt(l2), 'the L2 table where expected');
  const cases: Record<string, (b: Buffer) => void> = {
    clean: () => {},
    outside: (b) => b.writeBigUInt64LE(1n << 30n, l2 + 8),
    unaligned: (b) => b.writeBigUInt64LE(12288n + 100n, l2),
    twice: (b) => b.writeBigUInt64LE(12288n, l2 + 8),
    badTable: (b) => b.writeBigUInt64LE(1n << 40n, 4096),
  };
  for (const [name, damage] of Object.entries(cases)) {
    const bytes = Buffer.from(clean);
    damage(bytes);
    const path = join(dir, `${name}.qed`);
    await writeFile(path, bytes);
    const peer = JSON.parse((await run('qemu-img', ['check', '--output=json', path])).stdout);
    const source = await FileSource.open(path);
    const ours = await checkSource(source).finally(() => source.close());
    if (name !== 'clean') assert.ok((peer.corruptions ?? 0) + (peer.leaks ?? 0) > 0, `${name}: the damage is visible to qemu-img`);
    for (const key of ['corruptions', 'leaks', 'allocated-clusters', 'fragmented-clusters'] as const) {
      assert.equal(ours[key] ?? 0, peer[key] ?? 0, `${name}: ${key}`);
    }
    // Repair: ours on one copy, qemu-img on another; both end up with the same check report.
    const mine = join(dir, `${name}-ours.qed`);
    const theirs = join(dir, `${name}-peer.qed`);
    await writeFile(mine, bytes);
    await writeFile(theirs, bytes);
    const rw = await FileSource.open(mine, { readOnly: false });
    await checkSource(rw, { repair: 'all' }).finally(() => rw.close());
    await run('qemu-img', ['check', '-r', 'all', theirs]);
    const after = JSON.parse((await run('qemu-img', ['check', '--output=json', mine])).stdout);
    const peerAfter = JSON.parse((await run('qemu-img', ['check', '--output=json', theirs])).stdout);
    // Offsets outside the file are cleared; a cluster used twice stays a corruption (QEMU cannot tell which user is right).
    assert.equal(after.corruptions ?? 0, peerAfter.corruptions ?? 0, `${name}: corruptions after repair`);
    if (name === 'outside' || name === 'unaligned' || name === 'badTable') assert.equal(after.corruptions ?? 0, 0, `${name}: repaired`);
    assert.equal(after.leaks ?? 0, peerAfter.leaks ?? 0, `${name}: leaks after repair`);
  }
});

test('qed need-check: an image left dirty is repaired and marked clean by a writable open', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'dirty.qed');
  await qemuImg('create', '-q', '-f', 'qed', '-o', 'cluster_size=4k,table_size=2', img, '2M');
  await qemuIo('-f', 'qed', '-c', 'write -P 3 0 4k', '-c', 'write -P 4 1M 4k', img);
  const bytes = await readFile(img);
  // As after a crash: need-check set and an L2 entry pointing past the end of the file
  // (layout: header 0-4k, L1 4k-12k, data 12k-16k, L2 16k-24k).
  bytes[16] = bytes[16]! | NEED_CHECK;
  assert.equal(bytes.readBigUInt64LE(4096), 16384n);
  bytes.writeBigUInt64LE(1n << 30n, 16384 + 8);
  await writeFile(img, bytes);
  const ro = await openImage(img);
  await assert.rejects(ro.read(new Uint8Array(8192), 0), (e) => isDiskError(e) && /cluster offset 0x40000000 .* invalid/.test(e.message));
  await closeChain(ro);
  const rw = await openImage(img, { writable: true });
  const b = new Uint8Array(8192);
  await rw.read(b, 0);
  assert.ok(b.subarray(0, 4096).every((x) => x === 3) && b.subarray(4096).every((x) => x === 0));
  await closeChain(rw);
  assert.equal((await readFile(img))[16]! & NEED_CHECK, 0);
  const check = await run('qemu-img', ['check', img]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
});

test('qed hostile headers: typed errors with clear messages', async (t) => {
  const dir = await tempDir(t);
  const header = (patch: (v: DataView) => void): Uint8Array => {
    const b = new Uint8Array(12288);
    const v = new DataView(b.buffer);
    v.setUint32(0, 0x00444551, true);
    v.setUint32(4, 4096, true);
    v.setUint32(8, 2, true);
    v.setUint32(12, 1, true);
    v.setBigUint64(40, 4096n, true);
    v.setBigUint64(48, 1048576n, true);
    patch(v);
    return b;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['cluster size 0', header((v) => v.setUint32(4, 0, true)), /cluster size 0 is invalid/],
    ['table size 3', header((v) => v.setUint32(8, 3, true)), /table size 3 is invalid/],
    ['unaligned L1', header((v) => v.setBigUint64(40, 4100n, true)), /QED table offset is invalid \(L1 table at 4100\)/],
    ['L1 in the header', header((v) => v.setBigUint64(40, 0n, true)), /QED table offset is invalid \(L1 table at 0\)/],
    ['L1 past the end', header((v) => v.setBigUint64(40, 8192n, true)), /QED table offset is invalid/],
    ['table size 1, as QEMU makes and cannot open', header((v) => v.setUint32(8, 1, true)), /QED table offset is invalid/],
    ['too big for the tables', header((v) => v.setBigUint64(48, 1n << 40n, true)), /larger than its tables can map/],
    ['size not in sectors', header((v) => v.setBigUint64(48, 1000n, true)), /not a multiple of 512/],
    ['unknown features', header((v) => v.setBigUint64(16, 8n, true)), /Unsupported QED features 0x8/],
    ['backing name past the header', header((v) => { v.setBigUint64(16, 1n, true); v.setUint32(56, 4000, true); v.setUint32(60, 200, true); }), /backing file name .* is invalid/],
  ];
  // Found by the fuzzer: the inspector on a file that ends inside the qed header.
  const cut = await inspectSource(new MemorySource(header(() => {}).slice(0, 4), 'cut.qed', true));
  assert.ok(cut.detected.includes('qed'), JSON.stringify(cut));
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.qed`);
    await writeFile(path, bytes);
    await assert.rejects(openImage(path), (e) => isDiskError(e) && message.test(e.message), name);
  }
});

test('qed mutations: damaged copies of a qemu-made image only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'm.qed');
  await qemuImg('create', '-q', '-f', 'qed', '-o', 'cluster_size=4k,table_size=2', img, '3M');
  await qemuIo('-f', 'qed', '-c', 'write -P 0x61 0 4096', '-c', 'write -P 0x62 2097152 4096', img);
  const r = await mutationRounds(getFormat('qed'), new Uint8Array(await readFile(img)), 1500, [0, 20480], 101);
  assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
});
