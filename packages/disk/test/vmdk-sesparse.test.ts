/**
 * vmdk seSparse (ESXi snapshot extents), read-only as QEMU 7.2 reads them. qemu-img cannot
 * create seSparse, so the images are crafted (test/sesparse-writer.ts) and QEMU is the oracle:
 * its `convert -O raw`, `info` and `map` of each crafted image must equal ours.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain, isDiskError, mapImage, checkSource, FileSource, type CheckResult } from '@diskhub/disk';
import { tempDir, qemuImg, qemuIo, needs, run, diskhub } from '@diskhub/testkit';
import { prng } from './random-writes.js';
import { allocatedEntry, buildSeSparse, seSparseDescriptor, writeSeSparse, type SeSparseGrain, type SeSparseSpec } from './sesparse-writer.js';

const MiB = 1 << 20;
/** 50 MiB and 2.5 KiB: four grain tables (16 MiB each), the last grain partial. */
const CAPACITY = (50 * MiB + 2560) / 512;

function grainData(seed: number): Uint8Array {
  const rnd = prng(seed);
  const b = new Uint8Array(4096);
  for (let i = 0; i < b.length; i++) b[i] = rnd(256);
  return b;
}

/**
 * Every kind of entry: data grains (one at index 5000, whose index needs the high bits),
 * zero and unmapped grains, a table slot without a table (the third), grains in the
 * second and fourth tables, the partial last grain.
 */
function mixedGrains(): SeSparseGrain[] {
  const last = Math.floor((CAPACITY - 1) / 8);
  return [
    { grain: 0, kind: 'data', data: grainData(1) },
    { grain: 1, kind: 'zero' },
    { grain: 2, kind: 'unmapped' },
    { grain: 5, kind: 'data', data: grainData(2), index: 5000 },
    { grain: 6, kind: 'data', data: grainData(3) },
    { grain: 4096, kind: 'data', data: grainData(4) },
    { grain: 4097, kind: 'zero' },
    { grain: 4096 * 3 + 17, kind: 'data', data: grainData(5) },
    { grain: last, kind: 'data', data: grainData(6) },
  ];
}

async function check(path: string): Promise<CheckResult> {
  const source = await FileSource.open(path, { readOnly: true });
  try {
    return await checkSource(source);
  } finally {
    await source.close();
  }
}

async function craft(dir: string, name: string, spec: SeSparseSpec, desc: { parentCid?: string; parentHint?: string } = {}): Promise<string> {
  const extent = `${name}-sesparse.vmdk`;
  await writeSeSparse(join(dir, extent), buildSeSparse(spec));
  const path = join(dir, `${name}.vmdk`);
  await writeFile(path, seSparseDescriptor({ extent, sectors: spec.capacity, ...desc }));
  return path;
}

/** qemu-img and diskhub agree on convert -O raw (byte-exact), info and map. */
async function assertSameAsQemu(dir: string, path: string, what: string): Promise<void> {
  const peerRaw = join(dir, 'peer.raw');
  const ourRaw = join(dir, 'ours.raw');
  await qemuImg('convert', '-O', 'raw', path, peerRaw);
  const r = await diskhub(['img', 'convert', '-O', 'raw', path, ourRaw]);
  assert.equal(r.code, 0, `${what}: diskhub img convert: ${r.stderr}`);
  assert.ok((await readFile(peerRaw)).equals(await readFile(ourRaw)), `${what}: convert -O raw is byte-exact`);

  const peerInfo = JSON.parse(await qemuImg('info', '--output=json', path));
  const ours = await diskhub(['img', 'info', '--output=json', path]);
  assert.equal(ours.code, 0, `${what}: diskhub img info: ${ours.stderr}`);
  const ourInfo = JSON.parse(ours.stdout);
  delete peerInfo['actual-size'];
  delete ourInfo['actual-size'];
  assert.deepEqual(ourInfo, peerInfo, `${what}: info`);

  const peerMap = JSON.parse(await qemuImg('map', '--output=json', path));
  const ourMap = await diskhub(['img', 'map', '--output=json', path]);
  assert.equal(ourMap.code, 0, `${what}: diskhub img map: ${ourMap.stderr}`);
  assert.deepEqual(JSON.parse(ourMap.stdout), peerMap, `${what}: map`);
}

test('vmdk seSparse: crafted extents read as qemu-img reads them (convert, info, map)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const path = await craft(dir, 'snap', { capacity: CAPACITY, grains: mixedGrains() });
  await assertSameAsQemu(dir, path, 'standalone');

  // A grain directory larger than the capacity needs, and an empty image.
  const roomy = await craft(dir, 'roomy', { capacity: CAPACITY, grains: mixedGrains().slice(0, 4), gdSectors: 3 });
  await assertSameAsQemu(dir, roomy, 'roomy directory');
  const empty = await craft(dir, 'empty', { capacity: 8192, grains: [] });
  await assertSameAsQemu(dir, empty, 'empty');

  // Read-only, as in QEMU: opening for writing is refused with QEMU's words.
  await assert.rejects(openImage(path, { writable: true }), (e) => isDiskError(e, 'EUNSUPPORTED') && /No write support for seSparse/.test(e.message));
  // qemu-img check walks every grain: clean here, as ours.
  const peerCheck = await run('qemu-img', ['check', path]);
  const ourCheck = await check(path);
  assert.equal(peerCheck.code, 0, peerCheck.stderr);
  assert.equal(ourCheck['check-errors'], 0);
});

test('vmdk seSparse: a snapshot over its parent (parentFileNameHint, CID) reads through where unallocated', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.vmdk');
  await qemuImg('create', '-q', '-f', 'vmdk', base, String(CAPACITY * 512));
  await qemuIo('-f', 'vmdk', '-c', `write -P 0x55 0 ${CAPACITY * 512}`, base);
  const cid = (JSON.parse(await qemuImg('info', '--output=json', base))['format-specific'].data.cid as number).toString(16);
  const path = await craft(dir, 'snap', { capacity: CAPACITY, grains: mixedGrains() }, { parentCid: cid, parentHint: 'base.vmdk' });
  await assertSameAsQemu(dir, path, 'over a parent');
  const image = await openImage(path);
  try {
    assert.equal(image.backing?.format, 'vmdk');
    // Unallocated grain 3 shows the parent; zero (1) and unmapped (2) grains hide it.
    const b = new Uint8Array(4 * 4096);
    await image.read(b, 0);
    assert.ok(b.subarray(4096, 3 * 4096).every((x) => x === 0), 'zero and unmapped grains read as zeroes');
    assert.ok(b.subarray(3 * 4096).every((x) => x === 0x55), 'an unallocated grain reads the parent');
  } finally {
    await closeChain(image);
  }
});

test('vmdk seSparse hostile headers and tables: DiskErrors where QEMU refuses too, bounded time and memory', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const grains = mixedGrains().slice(0, 5);
  const cases: [string, Partial<SeSparseSpec>, RegExp][] = [
    ['bad magic', { patch: { 0: 0xcafebabfn } }, /Bad const header magic: 0x00000000cafebabf/],
    ['version 2.2', { patch: { 8: 0x0000000200000002n } }, /Unsupported version: 0x0000000200000002/],
    ['grain size 16', { patch: { 24: 16n } }, /Unsupported grain size: 16/],
    ['grain table size 128', { patch: { 32: 128n } }, /Unsupported grain table size: 128/],
    ['flags', { patch: { 40: 1n } }, /Unsupported flags/],
    ['reserved', { patch: { 64: 5n } }, /Unsupported reserved bits/],
    ['padding', { patch: { 504: 1n } }, /non-zero const header padding/],
    ['volatile magic', { patch: { 512: 0xcafen } }, /Bad volatile header magic/],
    ['volatile header outside the file', { patch: { 80: 1n << 40n } }, /Bad volatile header magic: 0x0000000000000000/],
    ['dirty journal', { patch: { [512 + 24]: 1n } }, /Image is dirty, Replaying journal not supported/],
    ['directory outside the file', { patch: { 128: 1n << 32n } }, /grain directory .* outside the file/],
    ['huge directory', { patch: { 136: 1n << 40n } }, /L1 size too big/],
  ];
  for (const [name, extra, message] of cases) {
    const path = await craft(dir, name.replace(/ /g, '-'), { capacity: CAPACITY, grains, ...extra });
    await assert.rejects(openImage(path), (e) => isDiskError(e) && message.test(e.message), name);
    const peer = await run('qemu-img', ['info', path]);
    if (!/outside the file|L1 size/.test(message.source)) assert.notEqual(peer.code, 0, `${name}: qemu-img refuses it too`);
  }
  // A capacity far beyond what any table covers is refused before anything is allocated.
  const huge = await craft(dir, 'huge', { capacity: CAPACITY, grains, patch: { 16: 1n << 62n } });
  await assert.rejects(openImage(huge), (e) => isDiskError(e, 'ELIMIT') && /capacity/.test(e.message));

  // Entries QEMU refuses on access: reads and block status fail there with ECORRUPT, as qemu-img convert fails.
  const entries: [string, Partial<SeSparseSpec>, number][] = [
    ['directory entry without the allocated marker', { gdEntries: { 1: 0x2000000000000001n } }, 4096 * 4096],
    ['directory entry past the addressable tables', { gdEntries: { 1: 0x10000000ffffffffn } }, 4096 * 4096],
    ['table entry of type 4', { gtEntries: { 6: 4n << 60n } }, 6 * 4096],
    ['unallocated table entry with bits set', { gtEntries: { 6: 12345n } }, 6 * 4096],
    ['grain beyond the directory', { gdSectors: 1, patch: { 16: 1n << 30n } }, 2 ** 30 * 512 - 4096],
  ];
  for (const [name, extra, at] of entries) {
    const path = await craft(dir, name.replace(/ /g, '-'), { capacity: CAPACITY, grains, ...extra });
    const image = await openImage(path);
    try {
      await image.read(new Uint8Array(4096), 0); // the first grain is fine
      await assert.rejects(image.read(new Uint8Array(4096), at), (e) => isDiskError(e, 'ECORRUPT'), `${name}: read`);
      await assert.rejects((async () => { for await (const _ of mapImage(image)) { /* walk */ } })(), (e) => isDiskError(e, 'ECORRUPT'), `${name}: map`);
    } finally {
      await closeChain(image);
    }
    const peer = await run('qemu-img', ['convert', '-O', 'raw', path, join(dir, 'out.raw')]);
    assert.notEqual(peer.code, 0, `${name}: qemu-img convert fails too`);
  }

  // A grain index far past the end of the file reads as zeroes, as through QEMU's file layer.
  const far = await craft(dir, 'far', { capacity: CAPACITY, grains: [{ grain: 0, kind: 'zero' }], gtEntries: { 0: allocatedEntry(2 ** 30) } });
  await assertSameAsQemu(dir, far, 'grain past the end of the file');
  const peerCheck = await run('qemu-img', ['check', far]);
  await assert.rejects(check(far), (e) => isDiskError(e, 'ECORRUPT') && /points after EOF/.test(e.message));
  assert.match(peerCheck.stderr + peerCheck.stdout, /points after EOF/);
});
