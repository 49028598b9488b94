/**
 * dmg (UDIF): nothing on Debian writes dmg files, so testkit's writer crafts them (a data fork,
 * mish tables in an XML plist or a resource fork, the koly trailer) with patterns planted at
 * odd sectors. Oracles: QEMU 7.2 (`qemu-img convert -f dmg -O raw`, info) for raw, zlib, zero,
 * ignore and comment chunks; dmg2img for bzip2 chunks, which Debian's QEMU cannot read (its
 * dmg-bz2 module is not built); and the planted bytes themselves. Hostile trailers, tables and
 * chunks give DiskErrors (compared with whether qemu-img opens the file at all).
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openImage, closeChain, coalesce, isDiskError, getFormat, type Extent } from '@diskhub/disk';
import { buildDmg, dmgPattern, needs, qemuImg, run, runOk, tempDir, type DmgChunkSpec, type DmgSpec } from '@diskhub/testkit';
import { mutationRounds, readAll } from './random-writes.js';

const S = 512;

/** Every chunk type QEMU 7.2 on Debian reads, at odd sector counts, over two partitions. */
function qemuReadable(): DmgChunkSpec[][] {
  return [
    [
      { kind: 'raw', sectors: 3, data: dmgPattern(3 * S, 1) },
      { kind: 'comment', sectors: 0 },
      { kind: 'zlib', sectors: 9, data: dmgPattern(9 * S, 2) },
      { kind: 'zero', sectors: 100 },
      { kind: 'zlib', sectors: 2048, data: Buffer.concat([dmgPattern(700 * S, 3), Buffer.alloc(1000 * S), dmgPattern(348 * S, 4)]) },
    ],
    [
      { kind: 'ignore', sectors: 7 },
      { kind: 'raw', sectors: 1, data: dmgPattern(S, 5) },
      { kind: 'zlib', sectors: 1, data: new Uint8Array(randomBytes(S)) },
      { kind: 'zero', sectors: 5000 },
      { kind: 'raw', sectors: 130, data: dmgPattern(130 * S, 6) },
    ],
  ];
}

async function ourInfo(path: string): Promise<{ format: string; size: number }> {
  const img = await openImage(path);
  try {
    return { format: img.format, size: img.size };
  } finally {
    await closeChain(img);
  }
}

async function extentsOf(path: string): Promise<Extent[]> {
  const img = await openImage(path);
  try {
    const out: Extent[] = [];
    for await (const e of coalesce(img.blockStatus(0, img.size))) out.push(e);
    return out;
  } finally {
    await closeChain(img);
  }
}

/** Reads at odd offsets and lengths match the planted bytes. */
async function oddReads(path: string, expected: Uint8Array): Promise<void> {
  const img = await openImage(path);
  try {
    for (const [off, len] of [[1, 700], [1535, 2], [6000, 60000], [expected.length - 77, 77], [511, 513 * 40]] as const) {
      const b = new Uint8Array(len);
      await img.read(b, off);
      assert.ok(Buffer.from(b).equals(Buffer.from(expected.subarray(off, off + len))), `read ${off}+${len}`);
    }
  } finally {
    await closeChain(img);
  }
}

test('dmg read: crafted images (plist and resource fork; raw, zlib, zero, ignore, comment chunks) read as qemu-img convert -f dmg gives them', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const variants: [string, DmgSpec][] = [
    ['plist', { partitions: qemuReadable() }],
    ['resource fork', { partitions: qemuReadable(), tables: 'resource-fork' }],
    ['data fork offset and mish data offsets', { partitions: qemuReadable(), leadingBytes: 1000, partitionDataOffsets: true }],
    // Chunks past the koly sector count are never read.
    ['sector count below the chunks', { partitions: qemuReadable(), sectorCount: 2000n }],
  ];
  for (const [name, spec] of variants) {
    const { bytes, expected } = buildDmg(spec);
    const path = join(dir, `${name.replace(/ /g, '-')}.dmg`);
    await writeFile(path, bytes);
    await qemuImg('convert', '-f', 'dmg', '-O', 'raw', path, `${path}.raw`);
    const peer = await readFile(`${path}.raw`);
    const ours = await readAll(path);
    assert.ok(Buffer.from(ours).equals(peer), `${name}: same bytes as qemu-img convert`);
    assert.ok(Buffer.from(ours).equals(Buffer.from(expected.subarray(0, ours.length))), `${name}: the planted bytes`);
    const info = JSON.parse(await qemuImg('info', '--output=json', path));
    assert.deepEqual(await ourInfo(path), { format: info.format, size: info['virtual-size'] }, `${name}: probed format and virtual size`);
    await oddReads(path, ours);
  }
});

test('dmg trailer search: the koly is found where QEMU finds it (files that do not end with it, or not on a sector boundary)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const partitions: DmgChunkSpec[][] = [[{ kind: 'raw', sectors: 2, data: dmgPattern(2 * S, 21) }, { kind: 'zlib', sectors: 5, data: dmgPattern(5 * S, 22) }]];
  const base = buildDmg({ partitions }).bytes.length;
  let found = 0, lost = 0;
  // Whether the trailer is found depends on the file length modulo 512 and on how far it sits from the end.
  for (const lead of [0, 1, 200, 511]) {
    for (const trailing of [0, 1, 3, 4, 200, 508, 509, 511, 512, 600]) {
      const { bytes, expected } = buildDmg({ partitions, leadingBytes: lead, trailingBytes: trailing });
      const path = join(dir, `l${lead}-t${trailing}.dmg`);
      await writeFile(path, bytes);
      const peer = await run('qemu-img', ['convert', '-f', 'dmg', '-O', 'raw', path, `${path}.raw`]);
      const ours = await readAll(path, 'dmg').then((b) => b, (e: unknown) => e);
      const what = `file of ${base + lead + trailing} bytes, ${trailing} after the trailer`;
      if (peer.code === 0) {
        found++;
        assert.ok(ours instanceof Uint8Array && Buffer.from(ours).equals(Buffer.from(expected)), `${what}: read as qemu-img reads it (${String(ours)})`);
      } else {
        lost++;
        assert.match(peer.stderr, /Could not locate UDIF trailer/, what);
        assert.ok(isDiskError(ours) && /Could not locate UDIF trailer/.test(ours.message), `${what}: refused as qemu-img refuses it (${String(ours)})`);
      }
    }
  }
  assert.ok(found > 0 && lost > 0, `both outcomes seen (${found} found, ${lost} not)`);
});

test('dmg block status: zero and ignore chunks are holes, stored chunks data; without holes the map is qemu-img\'s', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const holes = join(dir, 'holes.dmg');
  await writeFile(holes, buildDmg({ partitions: qemuReadable() }).bytes);
  const simple = (e: Extent) => [e.offset / S, e.length / S, e.data, e.zero];
  assert.deepEqual((await extentsOf(holes)).map(simple), [
    [0, 12, true, false], [12, 100, false, true], [112, 2048, true, false],
    [2160, 7, false, true], [2167, 2, true, false], [2169, 5000, false, true], [7169, 130, true, false],
  ]);
  // QEMU's dmg driver has no block status: qemu-img map calls every byte data, which is what
  // diskhub says of an image without zero or ignore chunks.
  const full = join(dir, 'full.dmg');
  await writeFile(full, buildDmg({ partitions: [[{ kind: 'raw', sectors: 5, data: dmgPattern(5 * S, 9) }, { kind: 'zlib', sectors: 33, data: dmgPattern(33 * S, 8) }]] }).bytes);
  const peer = JSON.parse(await qemuImg('map', '--output=json', full));
  const ours = await extentsOf(full);
  assert.deepEqual(ours.map((e) => ({ start: e.offset, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data })), peer);
});

test('dmg bzip2 chunks: decoded (QEMU 7.2 on Debian cannot), equal to dmg2img and the planted bytes', needs('qemu-img', 'dmg2img', 'bzip2'), async (t) => {
  const dir = await tempDir(t);
  const mixed = Buffer.concat([dmgPattern(300 * 1024, 11), Buffer.alloc(200 * 1024, 0x61), randomBytes(100 * 1024), Buffer.alloc(424 * 1024)]);
  const partitions: DmgChunkSpec[][] = [[
    { kind: 'bzip2', sectors: 2048, data: mixed },
    { kind: 'zlib', sectors: 3, data: dmgPattern(3 * S, 12) },
    { kind: 'bzip2', sectors: 1, data: dmgPattern(S, 13) },
    { kind: 'zero', sectors: 77 },
    // Long runs of one byte: the initial run-length stage at its limits.
    { kind: 'bzip2', sectors: 4096, data: Buffer.alloc(4096 * S, 0xff) },
    { kind: 'raw', sectors: 2, data: dmgPattern(2 * S, 14) },
  ]];
  const { bytes, expected } = buildDmg({ partitions });
  const path = join(dir, 'bz.dmg');
  await writeFile(path, bytes);
  const ours = await readAll(path);
  assert.ok(Buffer.from(ours).equals(Buffer.from(expected)), 'the planted bytes');
  await runOk('dmg2img', ['-s', path, `${path}.dmg2img`]);
  assert.ok(Buffer.from(ours).equals(await readFile(`${path}.dmg2img`)), 'same as dmg2img');
  await oddReads(path, expected);
  // Why dmg2img is the oracle here: qemu-img skips bzip2 chunks and fails reads of them.
  const q = await run('qemu-img', ['convert', '-f', 'dmg', '-O', 'raw', path, `${path}.raw`]);
  assert.notEqual(q.code, 0);
  assert.match(q.stderr, /dmg-bzip2 module is missing/);

  // Multi-block streams (bzip2 -1: 100 kB blocks) in one chunk.
  const multi = Buffer.concat([dmgPattern(1024 * 1024, 15), randomBytes(800 * 1024), Buffer.alloc(224 * 1024, 1)]);
  const level1 = join(dir, 'bz1.dmg');
  const built = buildDmg({ partitions: [[{ kind: 'bzip2', level: 1, sectors: multi.length / S, data: multi }]] });
  await writeFile(level1, built.bytes);
  await runOk('dmg2img', ['-s', level1, `${level1}.dmg2img`]);
  const read1 = Buffer.from(await readAll(level1));
  assert.ok(read1.equals(multi), 'bzip2 -1 multi-block chunk: the planted bytes');
  assert.ok(read1.equals(await readFile(`${level1}.dmg2img`)), 'bzip2 -1 multi-block chunk: same as dmg2img');
});
