/**
 * The operations (convert, compare, map) over in-memory layered devices whose allocation is
 * known exactly, so that what they read, write and skip can be asserted.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { convertImage, compareImages, differingRuns, mapImage, ConcatDevice, isDiskError, type BlockDevice, type Extent } from '@diskhub/disk';
import { randomBytes } from 'node:crypto';

type State = 'data' | 'zero' | 'unalloc';
const CL = 64 * 1024;

/** A device made of clusters that are data, zero or unallocated (falling through to `backing`). */
class LayeredDevice implements BlockDevice {
  readonly clusterSize = CL;
  readonly states: State[];
  readonly bytes: Uint8Array;
  reads: [number, number][] = [];
  writes: [number, number][] = [];
  zeroed: [number, number][] = [];
  compressed: number[] = [];
  inFlightReads = 0;
  maxInFlightReads = 0;
  constructor(readonly size: number, readonly backing?: LayeredDevice) {
    this.states = new Array(Math.ceil(size / CL)).fill('unalloc');
    this.bytes = new Uint8Array(size);
  }
  fill(cluster: number, byte: number): this {
    this.states[cluster] = 'data';
    this.bytes.fill(byte, cluster * CL, (cluster + 1) * CL);
    return this;
  }
  depth(): number { return this.backing ? 1 + this.backing.depth() : 0; }
  private stateAt(c: number, d = 0): { state: State; depth: number } {
    const s = this.states[c]!;
    if (s !== 'unalloc' || !this.backing) return { state: s, depth: s === 'unalloc' ? this.depth() + d : d };
    return this.backing.stateAt(c, d + 1);
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    this.reads.push([offset, buf.length]);
    this.inFlightReads++;
    this.maxInFlightReads = Math.max(this.maxInFlightReads, this.inFlightReads);
    await new Promise((r) => setImmediate(r));
    this.inFlightReads--;
    for (let i = 0; i < buf.length; i++) {
      const c = Math.floor((offset + i) / CL);
      let dev: LayeredDevice | undefined = this;
      while (dev && dev.states[c] === 'unalloc') dev = dev.backing;
      buf[i] = dev && dev.states[c] === 'data' ? dev.bytes[offset + i]! : 0;
    }
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.writes.push([offset, buf.length]);
    this.bytes.set(buf, offset);
    for (let c = Math.floor(offset / CL); c * CL < offset + buf.length; c++) this.states[c] = 'data';
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.zeroed.push([offset, length]);
    this.bytes.fill(0, offset, offset + length);
    for (let c = Math.floor(offset / CL); c * CL < offset + length; c++) this.states[c] = 'zero';
  }
  async writeCompressed(buf: Uint8Array, offset: number): Promise<void> {
    this.compressed.push(offset);
    await this.write(buf, offset);
  }
  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    for (let pos = offset; pos < offset + length;) {
      const c = Math.floor(pos / CL);
      const end = Math.min(offset + length, (c + 1) * CL);
      const { state, depth } = this.stateAt(c);
      yield {
        offset: pos, length: end - pos, depth,
        data: state === 'data', zero: state !== 'data', present: state !== 'unalloc',
        ...(state === 'data' ? { hostOffset: c * CL * 2 + (pos - c * CL) } : {}),
      };
      pos = end;
    }
  }
  async close(): Promise<void> {}
}

const covers = (ranges: [number, number][], off: number, len: number) => ranges.some(([o, l]) => o <= off && off + len <= o + l);
const overlaps = (ranges: [number, number][], off: number, len: number) => ranges.some(([o, l]) => o < off + len && off < o + l);

test('convert: reads only allocated data, turns zero runs into holes, keeps content', async () => {
  const src = new LayeredDevice(64 * CL).fill(1, 0x11).fill(2, 0x22).fill(40, 0x40);
  src.bytes.fill(0, 2 * CL, 2 * CL + 8192); // a zero run inside data
  src.states[10] = 'zero';
  const dst = new LayeredDevice(64 * CL);
  const stats = await convertImage(src, dst, { targetIsZero: true });
  for (const [o, l] of src.reads) assert.ok([1, 2, 40].includes(Math.floor(o / CL)) && l <= 2 * CL, `read ${o}+${l} is inside data`);
  assert.equal(stats.bytesRead, 3 * CL);
  assert.ok(!overlaps(dst.writes, 2 * CL, 8192), 'zero run inside data is not written');
  assert.ok(!overlaps(dst.writes, 10 * CL, CL), 'zero cluster not written');
  assert.deepEqual(dst.zeroed, [], 'a zero target needs no explicit zeroes');
  assert.deepEqual(Buffer.from(dst.bytes), Buffer.from(src.bytes));
});

test('convert: every -S block that is all zero inside data becomes a hole and every other block is written, whatever the zero runs\' lengths and alignment', async () => {
  // 4 MiB of data with zero runs from a few bytes to over a megabyte at arbitrary offsets.
  let seed = 7;
  const rand = (n: number) => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
  const src = new LayeredDevice(64 * CL);
  for (let c = 0; c < 64; c++) src.fill(c, 1 + (c % 250));
  for (let i = 0; i < 60; i++) {
    const len = [1, 511, 4096, 5000, 12288, 70000, 300000, 1.2e6][rand(8)]!;
    const at = rand(src.size - len);
    src.bytes.fill(0, at, at + len);
  }
  for (const sparse of [512, 4096, 12288]) {
    const dst = new LayeredDevice(64 * CL);
    await convertImage(src, dst, { targetIsZero: true, sparseSize: sparse });
    const written = new Uint8Array(src.size);
    for (const [o, l] of dst.writes) written.fill(1, o, o + l);
    for (let b = 0; b < src.size; b += sparse) {
      const end = Math.min(src.size, b + sparse);
      const zero = src.bytes.subarray(b, end).every((x) => x === 0);
      const wrote = written.subarray(b, end);
      assert.ok(zero ? wrote.every((x) => x === 0) : wrote.every((x) => x === 1), `-S ${sparse}: block at ${b} (${zero ? 'zero' : 'data'}) ${zero ? 'was written' : 'was not written whole'}`);
    }
    assert.deepEqual(Buffer.from(dst.bytes), Buffer.from(src.bytes));
  }
});

test('convert: -S 0 writes every byte; a non-zero target gets explicit zeroes', async () => {
  const src = new LayeredDevice(8 * CL).fill(3, 0x33);
  const full = new LayeredDevice(8 * CL);
  await convertImage(src, full, { sparseSize: 0, targetIsZero: true });
  assert.ok(covers(full.writes, 0, CL) && full.states.every((s) => s === 'data'));
  const dirty = new LayeredDevice(8 * CL);
  for (let c = 0; c < 8; c++) dirty.fill(c, 0xee);
  await convertImage(src, dirty, { targetIsZero: false });
  assert.deepEqual(Buffer.from(dirty.bytes), Buffer.from(src.bytes));
  assert.ok(covers(dirty.zeroed, 0, 3 * CL));
});

test('convert with a backing file on the target (-B): unallocated stays unallocated, zeroes are explicit', async () => {
  const base = new LayeredDevice(8 * CL).fill(0, 0x01).fill(1, 0x01);
  const top = new LayeredDevice(8 * CL, base).fill(2, 0x02);
  top.states[1] = 'zero';
  const dst = new LayeredDevice(8 * CL);
  await convertImage(top, dst, { targetIsZero: true, targetHasBacking: true });
  // Cluster 0 comes from the source's own backing: present, copied. Cluster 1 is a zero
  // cluster over data: written as zeroes. Clusters 3.. are unallocated everywhere: skipped.
  assert.equal(dst.states[0], 'data');
  assert.equal(dst.states[1], 'zero');
  assert.equal(dst.states[2], 'data');
  assert.deepEqual(dst.states.slice(3), new Array(5).fill('unalloc'));
  // -S 0 allocates everything the source has, but still leaves the backing file visible.
  const full = new LayeredDevice(8 * CL);
  await convertImage(top, full, { targetIsZero: true, targetHasBacking: true, sparseSize: 0 });
  assert.deepEqual(full.states, ['data', 'data', 'data', 'unalloc', 'unalloc', 'unalloc', 'unalloc', 'unalloc']);
});

test('convert -c: every non-zero cluster goes through writeCompressed, zero clusters stay holes', async () => {
  const src = new LayeredDevice(16 * CL).fill(0, 1).fill(1, 2).fill(5, 3);
  src.bytes.fill(0, CL, 2 * CL);
  const dst = new LayeredDevice(16 * CL);
  await convertImage(src, dst, { compress: true, targetIsZero: true });
  assert.deepEqual(dst.compressed.sort((a, b) => a - b), [0, 5 * CL]);
  assert.deepEqual(dst.writes.filter(([o]) => !dst.compressed.includes(o)), []);
  const plain = { size: 4 * CL, read: async () => {}, write: async () => {}, blockStatus: src.blockStatus.bind(src), close: async () => {} } as unknown as BlockDevice;
  await assert.rejects(convertImage(src, plain, { compress: true }), (e) => isDiskError(e, 'EINVAL') || isDiskError(e, 'EUNSUPPORTED'));
});

test('convert: at most `parallel` reads in flight on a huge image; abort stops it with EABORTED', async () => {
  const size = 2048 * CL; // 128 MiB
  const src = new LayeredDevice(size);
  for (let c = 0; c < 2048; c += 2) src.states[c] = 'data';
  const dst = new LayeredDevice(size);
  await convertImage(src, dst, { parallel: 3, targetIsZero: true, chunkSize: CL });
  assert.ok(src.maxInFlightReads <= 3 && src.maxInFlightReads >= 2, `max in flight ${src.maxInFlightReads}`);
  const ac = new AbortController();
  let seen = 0;
  const dst2 = new LayeredDevice(size);
  await assert.rejects(convertImage(src, dst2, {
    targetIsZero: true, signal: ac.signal,
    onProgress: (done) => { if (done > 0 && ++seen === 5) ac.abort(); },
  }), (e) => isDiskError(e, 'EABORTED'));
  const writesAtAbort = dst2.writes.length;
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(dst2.writes.length, writesAtAbort, 'nothing written after the abort returned');
  assert.ok(writesAtAbort < 1024);
});

test('map: merges runs with the same status and reports depth and presence through the chain', async () => {
  const base = new LayeredDevice(8 * CL).fill(4, 9).fill(5, 9);
  const top = new LayeredDevice(8 * CL, base).fill(0, 1);
  top.states[6] = 'zero';
  const out: Extent[] = [];
  for await (const e of mapImage(top)) out.push(e);
  assert.deepEqual(out.map((e) => [e.offset / CL, e.length / CL, e.depth, e.present, e.data, e.zero]), [
    [0, 1, 0, true, true, false],
    [1, 3, 1, false, false, true],
    [4, 1, 1, true, true, false], // host offsets of clusters 4 and 5 are not contiguous
    [5, 1, 1, true, true, false],
    [6, 1, 0, true, false, true],
    [7, 1, 1, false, false, true],
  ]);
  const part: Extent[] = [];
  for await (const e of mapImage(top, { start: CL / 2, length: CL })) part.push(e);
  assert.deepEqual(part.map((e) => [e.offset, e.length]), [[CL / 2, CL / 2], [CL, CL / 2]]);
});

test('compare: first differing sector, zero vs unallocated is equal, strict sees allocation and size', async () => {
  const a = new LayeredDevice(8 * CL).fill(1, 5);
  const b = new LayeredDevice(8 * CL).fill(1, 5);
  b.bytes[CL + 1000] = 6;
  assert.deepEqual(await compareImages(a, b), { identical: false, sizeMismatch: false, reason: 'content', offset: CL + 512 });
  const c = new LayeredDevice(8 * CL).fill(1, 5);
  c.states[3] = 'zero';
  assert.deepEqual(await compareImages(a, c), { identical: true, sizeMismatch: false });
  assert.deepEqual(await compareImages(a, c, { strict: true }), { identical: false, sizeMismatch: false, reason: 'allocation', offset: 3 * CL });
  const longer = new LayeredDevice(9 * CL).fill(1, 5).fill(8, 7);
  assert.deepEqual(await compareImages(a, longer), { identical: false, sizeMismatch: true, reason: 'content', offset: 8 * CL });
  assert.deepEqual(await compareImages(a, longer, { strict: true }), { identical: false, sizeMismatch: true, reason: 'size' });
});

test('concatenated sources read and report status across the seams', async () => {
  const a = new LayeredDevice(2 * CL).fill(1, 1);
  const b = new LayeredDevice(3 * CL).fill(0, 2);
  const cat = new ConcatDevice([a, b]);
  assert.equal(cat.size, 5 * CL);
  const buf = new Uint8Array(4);
  await cat.read(buf, 2 * CL - 2);
  assert.deepEqual([...buf], [1, 1, 2, 2]);
  const st: Extent[] = [];
  for await (const e of cat.blockStatus(0, cat.size)) st.push(e);
  assert.deepEqual(st.filter((e) => e.data).map((e) => e.offset / CL), [1, 2]);
});

test('convert: a failing write stops the copy with the failing offset, nothing keeps running', async () => {
  const src = new LayeredDevice(256 * CL);
  for (let c = 0; c < 256; c++) src.fill(c, 1 + (c % 200));
  const dst = new LayeredDevice(256 * CL);
  let writes = 0;
  const realWrite = dst.write.bind(dst);
  dst.write = async (buf, off) => {
    if (++writes === 20) throw Object.assign(new Error('No space left on device'), { code: 'ENOSPC' });
    return realWrite(buf, off);
  };
  await assert.rejects(convertImage(src, dst, { targetIsZero: true, chunkSize: CL, parallel: 4 }),
    (e) => isDiskError(e, 'EIO') && /^error while writing at byte \d+: No space left on device$/.test(e.message));
  const settled = dst.writes.length;
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(dst.writes.length, settled);
  assert.equal(src.inFlightReads, 0, 'no read left running');
});

test('settled: a failure is thrown only after every pending piece of work has settled, and the first one wins', async () => {
  const { settled } = await import('@diskhub/disk/blockdev');
  const log: string[] = [];
  const later = (ms: number, what: string, fail = false) => new Promise<void>((resolve, reject) => setTimeout(() => { log.push(what); if (fail) reject(new Error(what)); else resolve(); }, ms));
  // The body fails while two reads are still running: both finish before the body's error is thrown.
  const work: Promise<unknown>[] = [];
  await assert.rejects(settled(work, async () => {
    work.push(later(30, 'slow read'), later(5, 'failed read', true));
    throw new Error('body');
  }), /body/);
  assert.deepEqual(log, ['failed read', 'slow read']);
  // Without a body: the first rejection in order, after all have settled.
  log.length = 0;
  await assert.rejects(settled([later(20, 'a', true), later(1, 'b', true), later(40, 'c')]), /^Error: a$/);
  assert.deepEqual(log, ['b', 'a', 'c']);
  await settled([later(1, 'only')]);
  await settled([]);
});

test('rebase\'s differingRuns: the runs of differing 512-byte sectors, whether a sector differs in its first byte, its last or not at all, aligned or not', () => {
  const size = 300 * 1024; // several 64 KiB blocks and a partial one
  const a = new Uint8Array(randomBytes(size));
  const b = a.slice();
  const touched = [0, 1, 2, 130, 131, 300, 301, 302, 303, 599];
  for (const [k, sector] of touched.entries()) b[sector * 512 + (k % 2 ? 511 : 0)]! ^= 0x80; // first or last byte
  b[128 * 512 + 260] ^= 1; // a byte in the middle of sector 128, alone in its 64 KiB block
  const expected: Array<[number, number]> = [];
  for (let s = 0; s < size / 512; s++) {
    let differs = false;
    for (let i = s * 512; i < (s + 1) * 512; i++) if (a[i] !== b[i]) { differs = true; break; }
    const last = expected[expected.length - 1];
    if (differs && last && last[1] === s * 512) last[1] += 512;
    else if (differs) expected.push([s * 512, (s + 1) * 512]);
  }
  assert.deepEqual(differingRuns(a, b), expected);
  // Views that start one byte into their buffers (not 4-byte aligned): the same runs.
  const shift = (x: Uint8Array) => { const c = new Uint8Array(x.length + 1); c.set(x, 1); return c.subarray(1); };
  assert.deepEqual(differingRuns(shift(a), shift(b)), expected);
  assert.deepEqual(differingRuns(a, a.slice()), []);
});
