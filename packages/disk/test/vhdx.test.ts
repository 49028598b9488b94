/**
 * vhdx against qemu-img / qemu-io 7.2: images qemu writes (dynamic and fixed, block sizes 1 to
 * 256 MiB, log sizes, both block_state_zero modes) read back byte-exact; random writes through
 * our driver (allocations go through the log) leave images `qemu-img check` passes and
 * `qemu-img compare` finds equal to a raw reference; an image with pending log entries is
 * refused read-only, and replayed by a writable open to the bytes QEMU's own replay gives;
 * differencing images read through their parent; hostile input gives DiskErrors.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, checkSource, FileSource, isDiskError, getFormat, crc32c } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run, vhdxCrafting, VHDX_BAT_GUID_DWORD, VHDX_METADATA_GUID_DWORD } from '@diskhub/testkit';
import { assertWritesLanded, mutationRounds, randomWrites, readAll } from './random-writes.js';

const MiB = 1 << 20;
const { currentHeaderSlot, fixChecksum, regionEntry, setLogGuid, logEntry, makeDirtyVhdx } = vhdxCrafting(crc32c);
const BAT = VHDX_BAT_GUID_DWORD;
const METADATA = VHDX_METADATA_GUID_DWORD;

test('vhdx read: qemu-io patterns in qemu-img images (dynamic/fixed, block and log sizes) read back as qemu-img convert -O raw gives them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const variants: [string, string[], string][] = [
    ['default', [], '20000000'],
    ['bs1m', ['-o', 'block_size=1M,log_size=3M'], '9437696'],
    ['fixed', ['-o', 'subformat=fixed,block_size=2M'], '9M'],
    ['nozero', ['-o', 'block_state_zero=off,block_size=32M'], '70M'],
    ['bs256m', ['-o', 'block_size=256M'], '600M'],
  ];
  for (const [name, opts, size] of variants) {
    const img = join(dir, `${name}.vhdx`);
    await qemuImg('create', '-q', '-f', 'vhdx', ...opts, img, size);
    await qemuIo('-c', 'write -P 0x11 1000 3000000', '-c', 'write -P 0x22 1048570 12', '-c', 'write -z 2097152 1048576',
      '-c', 'write -P 0x33 4194303 805889', '-c', 'write -P 0x44 8388096 512', img);
    await qemuImg('convert', '-O', 'raw', img, join(dir, `${name}.raw`));
    const expected = new Uint8Array(await readFile(join(dir, `${name}.raw`)));
    const ours = await readAll(img);
    assert.equal(ours.length, expected.length, `${name}: size`);
    assert.ok(Buffer.from(ours).equals(Buffer.from(expected)), `${name}: contents`);
    // Allocation from the BAT: what is reported as zero reads as zero.
    const image = await openImage(img);
    try {
      let covered = 0;
      for await (const e of image.blockStatus(0, image.size)) {
        assert.equal(e.offset, covered);
        covered += e.length;
        if (e.zero) assert.ok(expected.subarray(e.offset, e.offset + e.length).every((x) => x === 0), `${name}: zero extent at ${e.offset} reads zero`);
      }
      assert.equal(covered, image.size);
    } finally {
      await closeChain(image);
    }
  }
});

test('vhdx write: random writes through the log pass qemu-img check and compare equal to a raw reference', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const size = 6 * MiB + 512;
  for (const [name, opts, seed] of [
    ['zero-state', ['-o', 'block_size=1M'], 7], ['not-present', ['-o', 'block_size=1M,block_state_zero=off'], 11],
    ['fixed', ['-o', 'subformat=fixed,block_size=1M'], 13], ['big-block', ['-o', 'block_size=8M'], 17],
  ] as const) {
    const img = join(dir, `${name}.vhdx`);
    const ref = join(dir, `${name}.raw`);
    await qemuImg('create', '-q', '-f', 'vhdx', ...opts, img, String(size));
    await qemuIo('-c', 'write -P 0x5a 524288 1048576', img);
    await qemuImg('convert', '-O', 'raw', img, ref);
    const before = await readFile(img);
    const seqBefore = before.readBigUInt64LE(currentHeaderSlot(before) + 8);
    const image = await openImage(img, { writable: true });
    const reference = new Uint8Array(await readFile(ref));
    try {
      await randomWrites(image, reference, seed, 30, 1536 * 1024, 5 * MiB);
    } finally {
      await closeChain(image);
    }
    await writeFile(ref, reference);
    const after = await readFile(img);
    const cur = currentHeaderSlot(after);
    assert.ok(after.readBigUInt64LE(cur + 8) > seqBefore, `${name}: header sequence advanced`);
    assert.notEqual(after.subarray(cur + 32, cur + 48).toString('hex'), before.subarray(currentHeaderSlot(before) + 32, currentHeaderSlot(before) + 48).toString('hex'), `${name}: new data write GUID`);
    assert.ok(after.subarray(cur + 48, cur + 64).every((x) => x === 0), `${name}: log GUID cleared`);
    await assertWritesLanded(img, 'vhdx', ref, reference, name);
  }
});

test('vhdx write: BAT entries of new blocks reach the file at flush (one log transaction for many blocks), before the image is closed', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'b.vhdx');
  await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, String(40 * MiB));
  const want = new Uint8Array(40 * MiB);
  const image = await openImage(img, { writable: true });
  try {
    // 33 new blocks, not in order, some split over two writes.
    for (const block of [3, 0, 39, ...Array.from({ length: 30 }, (_, i) => 5 + i)]) {
      const data = new Uint8Array(MiB).fill(block + 1);
      want.set(data, block * MiB);
      await image.write!(data.subarray(0, 300000), block * MiB);
      await image.write!(data.subarray(300000), block * MiB + 300000);
    }
    await image.flush!();
    // Read by qemu-img while still open: every block is there, and the file is consistent.
    const raw = join(dir, 'flushed.raw');
    await qemuImg('convert', '-U', '-O', 'raw', img, raw);
    assert.ok((await readFile(raw)).equals(want), 'qemu-img reads the flushed blocks');
    assert.match(await qemuImg('check', '-U', img), /No errors were found/);
    // One more block after the flush, written by close.
    want.fill(0x77, 36 * MiB, 37 * MiB);
    await image.write!(new Uint8Array(MiB).fill(0x77), 36 * MiB);
  } finally {
    await closeChain(image);
  }
  const raw = join(dir, 'closed.raw');
  await qemuImg('convert', '-O', 'raw', img, raw);
  assert.ok((await readFile(raw)).equals(want), 'qemu-img reads every block after close');
  assert.match(await qemuImg('check', img), /No errors were found/);
});

test('vhdx log replay: a pending log is refused read-only, replayed on a writable open to the bytes QEMU replays', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const ours = await makeDirtyVhdx(dir);
  const theirs = join(dir, 'theirs.vhdx');
  await copyFile(ours, theirs);
  // Read-only: refused with QEMU's words, as qemu-img refuses it.
  await assert.rejects(openImage(ours), (e: unknown) => isDiskError(e, 'EROFS') && /opened read-only, but contains a log that needs to be replayed/.test((e as Error).message) && /qemu-img check -r all/.test((e as Error).message));
  const q = await run('qemu-img', ['info', theirs]);
  assert.notEqual(q.code, 0);
  assert.match(q.stderr, /contains a log that needs to be replayed/);
  // QEMU replays on check -r all; we replay on a writable open.
  const qc = await run('qemu-img', ['check', '-r', 'all', theirs]);
  assert.equal(qc.code, 0, qc.stdout + qc.stderr);
  const src = await FileSource.open(ours, { readOnly: false });
  const result = await checkSource(src, { repair: 'all' });
  await src.close();
  assert.equal(result['corruptions-fixed'], 1);
  assert.equal(result.corruptions, 0);
  await qemuImg('convert', '-O', 'raw', theirs, join(dir, 'theirs.raw'));
  const expected = await readFile(join(dir, 'theirs.raw'));
  const got = Buffer.from(await readAll(ours));
  assert.ok(got.equals(expected), 'replayed contents equal QEMU\'s replay');
  // What the entries said: sector overwritten, range zeroed, new block mapped.
  assert.equal(got.subarray(4096, 4104).toString('latin1'), 'leading!');
  assert.equal(got[4200], 0x77);
  assert.ok(got.subarray(2 * MiB + 8192, 2 * MiB + 16384).every((x) => x === 0));
  assert.equal(got[2 * MiB + 16384], 0x22);
  assert.ok(got.subarray(5 * MiB, 6 * MiB).every((x) => x === 0x5e));
  // After our replay QEMU opens it read-only and finds it clean.
  const qcheck = await run('qemu-img', ['check', ours]);
  assert.equal(qcheck.code, 0, qcheck.stdout + qcheck.stderr);
  await qemuImg('convert', '-O', 'raw', ours, join(dir, 'ours.raw'));
  assert.ok((await readFile(join(dir, 'ours.raw'))).equals(expected));
});

test('vhdx log: an entry with a wrong checksum, another log GUID or a stale sequence is not replayed; a torn sequence stops at the tear', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const clean = await makeDirtyVhdx(dir);
  const base = await readFile(clean);
  const logOffset = Number(base.readBigUInt64LE(currentHeaderSlot(base) + 72));
  const cases: Record<string, (b: Buffer) => void> = {
    badCrc: (b) => { b[logOffset + 4096 + 100] ^= 1; b[logOffset + 3 * 4096 + 100] ^= 1; },
    otherGuid: (b) => { b[logOffset + 40] ^= 1; b[logOffset + 3 * 4096 + 40] ^= 1; },
    tornSecond: (b) => { b[logOffset + 3 * 4096 + 4096 + 7] ^= 1; },
  };
  for (const [name, damage] of Object.entries(cases)) {
    const ours = join(dir, `${name}.vhdx`);
    const theirs = join(dir, `${name}.q.vhdx`);
    const b = Buffer.from(base);
    damage(b);
    await writeFile(ours, b);
    await writeFile(theirs, b);
    const qc = await run('qemu-img', ['check', '-r', 'all', theirs]);
    const img = await openImage(ours, { writable: true }).catch((e) => e);
    if (qc.code !== 0) {
      assert.ok(isDiskError(img), `${name}: QEMU refuses (${qc.stderr.trim()}), so do we`);
      continue;
    }
    assert.ok(!(img instanceof Error), `${name}: ${img}`);
    await closeChain(img);
    await qemuImg('convert', '-O', 'raw', theirs, join(dir, `${name}.raw`));
    assert.ok(Buffer.from(await readAll(ours)).equals(await readFile(join(dir, `${name}.raw`))), `${name}: same bytes as QEMU`);
  }
});

test('vhdx differencing: read through the parent named by the parent locator (QEMU 7.2 refuses these images)', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const parent = join(dir, 'parent.vhdx');
  await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', parent, '4M');
  await qemuIo('-c', 'write -P 0x11 0 4M', parent);
  // The child: a qemu-made image turned differencing by hand (has_parent, a parent locator,
  // sector bitmap entries): block 0 fully present, block 1 partially present (sectors 8..15
  // set), blocks 2-3 not present (from the parent).
  const child = join(dir, 'child.vhdx');
  await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,block_state_zero=off', child, '4M');
  await qemuIo('-c', 'write -P 0x22 0 1M', '-c', 'write -P 0x33 1M 1M', child);
  const b = Buffer.from(await readFile(child));
  const bat = regionEntry(b, BAT);
  const meta = regionEntry(b, METADATA);
  // Differencing BAT layout: chunk ratio (2^23 * 512 / 1 MiB = 4096) payload entries, then the bitmap entry.
  const e1 = b.readBigUInt64LE(bat.offset + 8);
  b.writeBigUInt64LE((e1 & ~7n) | 7n, bat.offset + 8);
  const bitmapAt = Math.ceil(b.length / MiB) * MiB;
  const grown = Buffer.alloc(bitmapAt + MiB);
  b.copy(grown);
  // Block 1's sectors start at bit 2048 (block index 1 * 2048 sectors per block).
  grown[bitmapAt + (2048 + 8) / 8] = 0xff;
  grown.writeBigUInt64LE(BigInt(bitmapAt) | 6n, bat.offset + 4096 * 8);
  // File parameters: has_parent; a parent locator item after the five QEMU wrote.
  const count = grown.readUInt16LE(meta.offset + 10);
  for (let i = 0; i < count; i++) {
    const at = meta.offset + 32 + i * 32;
    if (grown.readUInt32LE(at) === 0xcaa16737) grown.writeUInt32LE(2, meta.offset + grown.readUInt32LE(at + 16) + 4);
  }
  const loc = Buffer.alloc(512);
  Buffer.from('b04aefb7d19e4a81b78925b8e9445913', 'hex').copy(loc); // type (bytes as written; only read back)
  const key = Buffer.from('relative_path', 'utf16le');
  const val = Buffer.from('.\\parent.vhdx', 'utf16le');
  loc.writeUInt16LE(1, 18);
  loc.writeUInt32LE(32, 20);
  loc.writeUInt32LE(32 + key.length, 24);
  loc.writeUInt16LE(key.length, 28);
  loc.writeUInt16LE(val.length, 30);
  key.copy(loc, 32);
  val.copy(loc, 32 + key.length);
  const locOffset = 128 * 1024;
  loc.copy(grown, meta.offset + locOffset);
  const e = meta.offset + 32 + count * 32;
  grown.writeUInt32LE(0xa8d35f2d, e); grown.writeUInt16LE(0xb30b, e + 4); grown.writeUInt16LE(0x454d, e + 6);
  Buffer.from('abf7d3d84834ab0c', 'hex').copy(grown, e + 8);
  grown.writeUInt32LE(locOffset, e + 16);
  grown.writeUInt32LE(loc.length, e + 20);
  grown.writeUInt32LE(4, e + 24);
  grown.writeUInt16LE(count + 1, meta.offset + 10);
  await writeFile(child, grown);
  const q = await run('qemu-img', ['info', child]);
  assert.notEqual(q.code, 0, 'QEMU 7.2 does not open differencing vhdx');
  const got = Buffer.from(await readAll(child));
  const expected = Buffer.alloc(4 * MiB, 0x11);
  expected.fill(0x22, 0, MiB);
  expected.fill(0x33, MiB + 8 * 512, MiB + 16 * 512);
  assert.ok(got.equals(expected), 'child over parent');
  const img = await openImage(child);
  try {
    assert.equal(img.backingRef?.filename, './parent.vhdx');
    const map = [];
    for await (const x of img.blockStatus(0, img.size)) map.push([x.offset, x.length, x.depth]);
    assert.deepEqual(map[0], [0, MiB, 0]);
    assert.deepEqual(map[1], [MiB, 4096, 1]);
    assert.deepEqual(map[2], [MiB + 4096, 4096, 0]);
  } finally {
    await closeChain(img);
  }
  await assert.rejects(openImage(child, { writable: true }), (x: unknown) => isDiskError(x, 'EUNSUPPORTED'));
});

test('vhdx hostile: damaged headers, region tables, BAT, block size and logs are DiskErrors with clear messages', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vhdx');
  await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '8M');
  await qemuIo('-c', 'write -P 1 0 64k', '-c', 'write -P 2 3M 64k', base);
  const clean = await readFile(base);
  const bat = regionEntry(clean, BAT);
  const meta = regionEntry(clean, METADATA);
  const paramsAt = meta.offset + clean.readUInt32LE(meta.offset + 32 + 16);
  const logAt = Number(clean.readBigUInt64LE(currentHeaderSlot(clean) + 72));
  const cases: Record<string, [(b: Buffer) => Buffer, RegExp]> = {
    bothHeaders: [(b) => { b[0x10000 + 200] ^= 1; b[0x20000 + 200] ^= 1; return b; }, /No valid VHDX header/],
    regionOutside: [(b) => { b.writeBigUInt64LE(BigInt(b.length + 64 * MiB), regionEntry(b, METADATA).at + 16); fixChecksum(b, 0x30000, 65536); b.copy(b, 0x40000, 0x30000, 0x40000); return b; }, /outside the file/],
    batTooSmall: [(b) => { b.writeUInt32LE(4, regionEntry(b, BAT).at + 24); fixChecksum(b, 0x30000, 65536); b.copy(b, 0x40000, 0x30000, 0x40000); return b; }, /BAT region .* too small/],
    blockNotPow2: [(b) => { b.writeUInt32LE(3 * MiB, paramsAt); return b; }, /not a power of two/],
    blockTooBig: [(b) => { b.writeUInt32LE(512 * MiB, paramsAt); return b; }, /outside 1 MiB/],
    batPastEnd: [(b) => { b.writeBigUInt64LE(BigInt(1024 * MiB) | 6n, bat.offset + 8); return b; }, /points after end of file/],
    batIntoLog: [(b) => { b.writeBigUInt64LE(BigInt(logAt) | 6n, bat.offset + 8); return b; }, /overlaps/],
    hugeLogEntry: [(b) => {
      const g = Buffer.alloc(16, 7);
      setLogGuid(b, g);
      const e = logEntry(1n, g, [{ kind: 'zero', offset: 0, length: 2 ** 40 }], b.length);
      e.copy(b, logAt);
      return b;
    }, /past the end of the file/],
    loopingLog: [(b) => {
      const g = Buffer.alloc(16, 9);
      setLogGuid(b, g);
      // One entry as long as the whole log, with a bad checksum: validating it wraps the read
      // index back to where it started, so a search that only stops on wrapping never ends
      // (QEMU 7.2 spins here); ours has a budget of sector reads.
      const e = logEntry(1n, g, [], b.length);
      e.writeUInt32LE(MiB, 8); // the whole 1 MiB log
      e.copy(b, logAt);
      return b;
    }, /does not terminate/],
  };
  for (const [name, [damage, message]] of Object.entries(cases)) {
    const img = join(dir, `${name}.vhdx`);
    await writeFile(img, damage(Buffer.from(clean)));
    await assert.rejects(async () => { const i = await openImage(img, { writable: true }); await closeChain(i); },
      (e: unknown) => isDiskError(e) && message.test((e as Error).message), name);
    // (Not on the log cases: QEMU would write a TiB of zeroes, or spin forever.)
    if (['bothHeaders', 'regionOutside', 'batTooSmall', 'blockNotPow2', 'blockTooBig'].includes(name)) {
      const q = await run('qemu-img', ['check', '-r', 'all', img]);
      assert.notEqual(q.code, 0, `${name}: qemu-img also refuses: ${q.stdout}`);
    }
  }
  // check reports BAT damage as corruptions (the image opens for checking), as qemu-img does.
  for (const name of ['batPastEnd', 'batIntoLog']) {
    const src = await FileSource.open(join(dir, `${name}.vhdx`));
    const r = await checkSource(src);
    await src.close();
    assert.equal(r.corruptions, 1, name);
    const q = await run('qemu-img', ['check', join(dir, `${name}.vhdx`)]);
    assert.equal(q.code, 2, `${name}: qemu-img check counts it too`);
  }
});

test('vhdx mutation: randomly damaged headers, region tables, metadata and BAT only ever give DiskErrors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'm.vhdx');
  await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '4M');
  await qemuIo('-c', 'write -P 3 0 1M', base);
  const bytes = new Uint8Array(await readFile(base));
  const driver = getFormat('vhdx');
  const hot = await mutationRounds(driver, bytes, 150, [0x10000, 0x10000 + 128], 3);
  const meta = await mutationRounds(driver, bytes, 150, [0x30000, 0x30000 + 128], 5);
  const bat = await mutationRounds(driver, bytes, 150, [2 * MiB, 2 * MiB + 32], 9);
  const items = await mutationRounds(driver, bytes, 150, [3 * MiB, 3 * MiB + 256], 11);
  const values = await mutationRounds(driver, bytes, 100, [3 * MiB + 65536, 3 * MiB + 65536 + 48], 13);
  assert.ok(hot.opened + hot.refused === 150 && meta.refused > 0 && bat.opened > 0 && items.refused > 0 && values.refused > 0);
});
