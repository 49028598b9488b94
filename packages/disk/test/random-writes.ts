/** Helpers shared by the block-mapped format tests (vdi, vpc): whole reads, random writes against a reference, mutation rounds. */
import assert from 'node:assert/strict';
import { run } from '@diskhub/testkit';
import { openImage, closeChain, formats, isDiskError, MemorySource, type FormatDriver, type Image } from '@diskhub/disk';

/** The whole virtual disk of an image (and its chain), read through our engine. */
export async function readAll(path: string, format?: string): Promise<Uint8Array> {
  const img = await openImage(path, { format });
  try {
    const buf = new Uint8Array(img.size);
    await img.read(buf, 0);
    return buf;
  } finally {
    await closeChain(img);
  }
}

/**
 * The image at `path` reads as `expected` in full, and in reads at odd offsets that span
 * blocks/clusters (the first byte, across the 1 MiB mark, a long unaligned run, the tail).
 */
export async function assertReadsAsExpected(path: string, expected: Uint8Array, what: string): Promise<void> {
  assert.ok(Buffer.from(await readAll(path)).equals(Buffer.from(expected)), `${what}: contents`);
  const image = await openImage(path);
  try {
    for (const [off, len] of [[1, 1048576], [1048575, 2], [3145000, 1048577], [expected.length - 192, 192]] as const) {
      const b = new Uint8Array(len);
      await image.read(b, off);
      assert.ok(Buffer.from(b).equals(Buffer.from(expected.subarray(off, off + len))), `${what}: read ${off}+${len}`);
    }
  } finally {
    await closeChain(image);
  }
}

/**
 * After writes through our engine: `qemu-img check` is clean, and qemu-img and our reader both
 * see `reference` (what the image should hold; `ref` is the raw file it is saved to).
 */
export async function assertWritesLanded(img: string, format: string, ref: string, reference: Uint8Array, what: string, cwd?: string): Promise<void> {
  const check = await run('qemu-img', ['check', img]);
  assert.equal(check.code, 0, `${what}: qemu-img check: ${check.stdout}${check.stderr}`);
  const cmp = await run('qemu-img', ['compare', '-f', format, '-F', 'raw', img, ref], cwd ? { cwd } : {});
  assert.equal(cmp.code, 0, `${what}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
  assert.ok(Buffer.from(await readAll(img)).equals(Buffer.from(reference)), `${what}: our read-back`);
}

/** A small deterministic PRNG, so a failure can be replayed. */
export function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x % n; };
}

/**
 * `count` writes (a quarter of them write-zeroes) of up to `maxLength` bytes at random offsets,
 * then concurrent small writes into the fresh block at `concurrentAt` (they must not allocate
 * it twice). `reference` ends up holding what the image should read back.
 */
export async function randomWrites(image: Image, reference: Uint8Array, seed: number, count: number, maxLength: number, concurrentAt: number): Promise<void> {
  const rnd = prng(seed);
  for (let i = 0; i < count; i++) {
    const off = rnd(image.size - 1);
    const len = 1 + rnd(Math.min(image.size - off, maxLength));
    if (rnd(4) === 0) {
      await image.writeZeroes!(off, len);
      reference.fill(0, off, off + len);
    } else {
      const data = new Uint8Array(len).fill(1 + rnd(255));
      await image.write!(data, off);
      reference.set(data, off);
    }
  }
  await Promise.all([0, 1, 2, 3].map((k) => image.write!(new Uint8Array(1000).fill(0xc0 + k), concurrentAt + k * 4096)));
  for (let k = 0; k < 4; k++) reference.fill(0xc0 + k, concurrentAt + k * 4096, concurrentAt + k * 4096 + 1000);
  await image.flush!();
}

/**
 * A bounded mutation run over a format parser: `rounds` copies of `image` with a few random
 * bytes (biased to `hot`, the [start, end) range where the headers and tables are) overwritten are
 * opened, read in full and walked with blockStatus. Anything other than a DiskError is a bug;
 * so is a read that takes long (each round must finish quickly: images here are small).
 */
export async function mutationRounds(driver: FormatDriver, image: Uint8Array, rounds: number, hot: [number, number], seed: number): Promise<{ opened: number; refused: number }> {
  const rnd = prng(seed);
  let opened = 0;
  let refused = 0;
  for (let round = 0; round < rounds; round++) {
    const bytes = image.slice();
    for (let k = 1 + rnd(4); k > 0; k--) {
      const at = rnd(3) ? hot[0] + rnd(hot[1] - hot[0]) : rnd(bytes.length);
      bytes[at] = rnd(5) === 0 ? 0xff : rnd(256);
    }
    try {
      const img = await driver.open(new MemorySource(bytes, `mutant-${round}`, true), { formats });
      opened++;
      try {
        // Bounded work: a mutated size may claim terabytes; read at most the first 8 MiB.
        const len = Math.min(img.size, 8 << 20);
        await img.read(new Uint8Array(len), 0);
        let extents = 0;
        for await (const _ of img.blockStatus(0, len)) if (++extents > 100000) throw new Error('blockStatus does not end');
        await img.info();
      } finally {
        await img.close();
      }
    } catch (e) {
      if (!isDiskError(e)) throw new Error(`round ${round} (seed ${seed}): ${(e as Error)?.stack ?? e}`);
      refused++;
    }
  }
  return { opened, refused };
}
