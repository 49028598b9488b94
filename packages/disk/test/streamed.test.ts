/**
 * openStreamedImage: images read as they stream in, against `qemu-img convert -O raw` of the
 * same file. qcow2 images made by qemu-img stream (only their tables are kept); one rewritten
 * so its L2 table comes after the data it maps streams through the spill file; other formats
 * are staged. Hostile streams (truncated, tables pointing past the end, a cluster mapped twice,
 * a backing file) never give a wrong byte: either qemu-img's bytes or an error. vmdk sparse
 * extents qemu-img made (streamOptimized, monolithicSparse: tables before grains) stream too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { isSharedZeroes, openStreamedImage, type InspectionReport } from '@diskhub/disk';
import { needs, qemuImg, qemuIo, run, tempDir } from '@diskhub/testkit';

const MiB = 1 << 20;

/** What qemu-img convert -O raw makes of `file`: the sha256 of the bytes, or its error. */
async function qemuRaw(file: string, dir: string): Promise<{ hash: string } | { error: string }> {
  const out = join(dir, `${Math.random().toString(36).slice(2)}.raw`);
  const r = await run('qemu-img', ['convert', '-O', 'raw', file, out]);
  if (r.code !== 0) return { error: r.stderr };
  return { hash: createHash('sha256').update(await readFile(out)).digest('hex') };
}

const refuse = (report: InspectionReport) => { if (!report.safe) throw new Error(`unsafe: ${report.issues.map((i) => i.code).join(', ')}`); };

/**
 * Stream `file` in chunks of `chunk` bytes through openStreamedImage. `reuse`: data() reads into
 * reused buffers (each chunk is hashed before the next is asked for); at most two buffers
 * besides the shared zeroes are then seen.
 */
async function streamed(file: string, dir: string, chunk = 64 * 1024, reuse = false) {
  const img = await openStreamedImage(createReadStream(file, { highWaterMark: chunk }), { spillPath: join(dir, 'spill'), spillCap: 1 << 30, judge: refuse });
  try {
    const h = createHash('sha256');
    let n = 0;
    const buffers = new Set<ArrayBufferLike>();
    for await (const c of img.data({ reuse })) {
      h.update(c);
      n += c.length;
      if (!isSharedZeroes(c)) buffers.add(c.buffer);
    }
    assert.equal(n, img.size);
    if (reuse) assert.ok(buffers.size <= 2, `${buffers.size} buffers`);
    return { mode: img.mode, format: img.format, spilled: img.spilled, hash: h.digest('hex') };
  } finally {
    await img.close();
  }
}

/** A 64 MiB disk with data here and there (a hole at the start, runs, a last cluster). */
async function sourceRaw(dir: string): Promise<string> {
  const raw = join(dir, 'src.raw');
  await qemuImg('create', '-f', 'raw', raw, '64M');
  for (const [pattern, at, len] of [['0x5a', '1M', '3M'], ['0x11', '12M', '64k'], ['0x77', '40M', '8M'], ['0x01', '65472k', '64k']]) {
    await qemuIo('-f', 'raw', '-c', `write -P ${pattern} ${at} ${len}`, raw);
  }
  // Incompressible data too, so compressed clusters differ in size.
  const fh = await import('node:fs/promises').then((m) => m.open(raw, 'r+'));
  await fh.write(Buffer.from(Array.from({ length: 5 * MiB }, (_, i) => (i * 2654435761) >>> 24)), 0, 5 * MiB, 20 * MiB);
  await fh.close();
  return raw;
}

/** Swap a qcow2's (first) L2 table with the last data cluster it maps: the table then follows its data; the image stays consistent. */
async function tableAfterData(src: string, dst: string): Promise<void> {
  const b = Buffer.from(await readFile(src));
  const cs = 2 ** b.readUInt32BE(20);
  const l1 = Number(b.readBigUInt64BE(40));
  const mask = 0x00fffffffffffe00n;
  const l1e = b.readBigUInt64BE(l1);
  const l2 = Number(l1e & mask);
  let last = -1, lastHost = 0;
  for (let i = 0; i < cs / 8; i++) {
    const host = Number(b.readBigUInt64BE(l2 + i * 8) & mask);
    if (host > lastHost) { lastHost = host; last = i; }
  }
  const table = Buffer.from(b.subarray(l2, l2 + cs));
  const data = Buffer.from(b.subarray(lastHost, lastHost + cs));
  table.writeBigUInt64BE((table.readBigUInt64BE(last * 8) & ~mask) | BigInt(l2), last * 8);
  data.copy(b, l2);
  table.copy(b, lastHost);
  b.writeBigUInt64BE((l1e & ~mask) | BigInt(lastHost), l1);
  await writeFile(dst, b);
}

test('qcow2 made by qemu-img (plain, compressed zlib and zstd, small clusters) streams without staging; byte-exact with qemu-img convert', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const raw = await sourceRaw(dir);
  const expected = await qemuRaw(raw, dir);
  for (const [name, args] of [
    ['plain', []], ['compressed', ['-c']], ['zstd', ['-c', '-o', 'compression_type=zstd']], ['4k-clusters', ['-o', 'cluster_size=4096']],
  ] as const) {
    const file = join(dir, `${name}.qcow2`);
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', ...args, raw, file);
    assert.deepEqual(await qemuRaw(file, dir), expected);
    for (const [chunk, reuse] of [[65536, false], [1000, false], [4 * MiB, false], [65536, true]] as const) {
      const got = await streamed(file, dir, chunk, reuse);
      assert.equal(got.mode, 'streamed', name);
      assert.equal(got.hash, (expected as { hash: string }).hash, `${name}, chunks of ${chunk}${reuse ? ', buffers reused' : ''}`);
      // Only the metadata is kept: the header, refcount table and blocks, L1 and L2 clusters, never the data.
      const cs = 2 ** (await readFile(file)).readUInt32BE(20);
      const l2Tables = Math.ceil((64 * MiB) / ((cs / 8) * cs));
      assert.ok(got.spilled <= (8 + l2Tables) * cs, `${name}: ${got.spilled} bytes spilled`);
    }
  }
});

test('a qcow2 whose L2 table follows its data streams through the spill file; vmdk sparse extents made by qemu-img stream; other formats are staged; all byte-exact', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const raw = await sourceRaw(dir);
  const expected = await qemuRaw(raw, dir);
  const plain = join(dir, 'plain.qcow2');
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, plain);
  const late = join(dir, 'late.qcow2');
  await tableAfterData(plain, late);
  await qemuImg('check', late);
  assert.deepEqual(await qemuRaw(late, dir), expected);
  const got = await streamed(late, dir);
  assert.equal(got.mode, 'streamed');
  assert.equal(got.hash, (expected as { hash: string }).hash);
  assert.ok(got.spilled > 10 * MiB, 'the data before its table waited in the spill file');
  for (const [fmt, opts, mode] of [
    ['vmdk', ['-o', 'subformat=streamOptimized'], 'streamed'], ['vmdk', ['-o', 'subformat=monolithicSparse'], 'streamed'],
    ['vhdx', [], 'staged'], ['vpc', [], 'staged'], ['raw', [], 'staged'],
  ] as const) {
    const file = join(dir, `copy-${opts.join('')}.${fmt}`);
    await qemuImg('convert', '-f', 'raw', '-O', fmt, ...opts, raw, file);
    const want = await qemuRaw(file, dir);
    const r = await streamed(file, dir);
    assert.equal(r.mode, mode, `${fmt} ${opts.join(' ')}`);
    assert.equal(r.hash, (want as { hash: string }).hash, fmt);
    // A vmdk streams with only its header, descriptor and grain tables kept.
    if (mode === 'streamed') assert.ok(r.spilled <= 256 * 1024, `${fmt}: ${r.spilled} bytes spilled`);
  }
  // A cut vmdk stream: qemu-img's bytes or an error.
  const cut = join(dir, 'cut.vmdk');
  await writeFile(cut, (await readFile(join(dir, 'copy--osubformat=streamOptimized.vmdk'))).subarray(0, 300 * 1024));
  const wantCut = await qemuRaw(cut, dir);
  const gotCut = await streamed(cut, dir).then((r) => ({ hash: r.hash }), (e: Error) => ({ error: e.message }));
  if ('hash' in gotCut) assert.deepEqual(gotCut, wantCut);
});

test('hostile qcow2 streams: qemu-img\'s bytes or an error, never a wrong byte', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const raw = await sourceRaw(dir);
  const plain = join(dir, 'plain.qcow2');
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, plain);
  const good = await readFile(plain);
  const cs = 2 ** good.readUInt32BE(20);
  const l1 = Number(good.readBigUInt64BE(40));
  const l2 = Number(good.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const firstData = (b: Buffer) => { for (let i = 0; ; i++) { const e = b.readBigUInt64BE(l2 + i * 8); if (e) return i; } };
  const cases: Record<string, (b: Buffer) => Buffer> = {
    truncated: (b) => b.subarray(0, Math.floor(b.length / 2)),
    'cut in the header': (b) => b.subarray(0, 300),
    'L2 entry past the end': (b) => { b.writeBigUInt64BE((1n << 63n) | BigInt(b.length + 100 * cs), l2 + firstData(b) * 8); return b; },
    'L1 entry past the end': (b) => { b.writeBigUInt64BE((1n << 63n) | BigInt(b.length + 64 * cs), l1); return b; },
    'a cluster mapped twice': (b) => { const i = firstData(b); b.writeBigUInt64BE(b.readBigUInt64BE(l2 + i * 8), l2 + (i + 300) * 8); return b; },
    'L2 entry into the L1 table': (b) => { b.writeBigUInt64BE((1n << 63n) | BigInt(l1 - (l1 % cs)), l2 + firstData(b) * 8); return b; },
    'virtual size 1 PiB': (b) => { b.writeBigUInt64BE(1n << 50n, 24); return b; },
  };
  for (const [name, hurt] of Object.entries(cases)) {
    const file = join(dir, `${name.replace(/ /g, '-')}.qcow2`);
    await writeFile(file, hurt(Buffer.from(good)));
    const want = await qemuRaw(file, dir);
    let got: { hash: string } | { error: string };
    try {
      const r = await streamed(file, dir);
      got = { hash: r.hash };
    } catch (e) {
      got = { error: (e as Error).message };
    }
    if ('hash' in got) assert.deepEqual(got, want, `${name}: streamed bytes differ from qemu-img's (${'error' in want ? want.error : ''})`);
    else assert.ok(got.error.length > 0, name);
  }
  // A backing file: staged, and judged (refused) before any byte is given.
  const overlay = join(dir, 'overlay.qcow2');
  await qemuImg('create', '-f', 'qcow2', '-b', plain, '-F', 'qcow2', overlay);
  await assert.rejects(openStreamedImage(createReadStream(overlay), { spillPath: join(dir, 'spill'), spillCap: 1 << 30, judge: refuse }), /unsafe: .*backing-file/);
  // The spill cap: a layout that needs more than it fails.
  const late = join(dir, 'late.qcow2');
  await tableAfterData(plain, late);
  const img = await openStreamedImage(createReadStream(late), { spillPath: join(dir, 'spill'), spillCap: 4 * MiB, judge: refuse });
  await assert.rejects((async () => { for await (const _ of img.data()) void _; })(), /spill limit/);
  await img.close();
});
