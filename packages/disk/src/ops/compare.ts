/**
 * `qemu-img compare`: are two devices the same guest-visible disk? Ranges neither image
 * allocates are skipped without reading; mismatches are reported at 512-byte sector
 * granularity, as qemu-img reports them.
 */
import type { BlockDevice, Extent } from '../blockdev.js';
import { throwIfAborted } from '../errors.js';
import { pageAlignedBytes } from '../source.js';
import { walkExtents, firstNonZero, type OperationOptions } from './common.js';

export interface CompareOptions extends OperationOptions {
  /** `-s`: a size or allocation difference is a mismatch. */
  strict?: boolean;
}

export type CompareResult =
  | { identical: true; sizeMismatch: boolean }
  | { identical: false; sizeMismatch: boolean; reason: 'content'; offset: number }
  | { identical: false; sizeMismatch: true; reason: 'size' }
  | { identical: false; sizeMismatch: boolean; reason: 'allocation'; offset: number };

const SECTOR = 512;
const CHUNK = 1 << 20;

/** Iterate two extent streams side by side, yielding ranges where both statuses are constant. */
async function* zipExtents(a: AsyncIterable<Extent>, b: AsyncIterable<Extent>): AsyncIterable<[Extent, Extent, number, number]> {
  const ia = a[Symbol.asyncIterator]();
  const ib = b[Symbol.asyncIterator]();
  let ea = (await ia.next()).value as Extent | undefined;
  let eb = (await ib.next()).value as Extent | undefined;
  while (ea && eb) {
    const start = Math.max(ea.offset, eb.offset);
    const end = Math.min(ea.offset + ea.length, eb.offset + eb.length);
    if (end > start) yield [ea, eb, start, end];
    if (ea.offset + ea.length <= end) ea = (await ia.next()).value as Extent | undefined;
    if (eb && eb.offset + eb.length <= end) eb = (await ib.next()).value as Extent | undefined;
  }
}

/** First 512-byte sector boundary at or below the first differing byte, or -1. */
function firstDifference(x: Uint8Array, y: Uint8Array): number {
  const bx = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  const by = Buffer.from(y.buffer, y.byteOffset, y.byteLength);
  if (bx.equals(by)) return -1;
  for (let off = 0; off < bx.length; off += SECTOR) {
    const end = Math.min(bx.length, off + SECTOR);
    if (bx.compare(by, off, end, off, end) !== 0) return off;
  }
  return -1;
}

/** Compare [offset, end) of `dev` against zeroes; returns the first non-zero sector or -1. */
async function checkZero(dev: BlockDevice, offset: number, end: number, buf: Uint8Array, signal?: AbortSignal): Promise<number> {
  for await (const e of walkExtents(dev, offset, end - offset, signal)) {
    if (!e.data && e.zero) continue;
    for (let pos = e.offset; pos < e.offset + e.length; pos += CHUNK) {
      throwIfAborted(signal);
      const n = Math.min(CHUNK, e.offset + e.length - pos);
      const view = buf.subarray(0, n);
      await dev.read(view, pos);
      const i = firstNonZero(view);
      if (i >= 0) return pos + i - ((pos + i) % SECTOR);
    }
  }
  return -1;
}

/** Chunks read ahead while the current one is compared. */
const READ_AHEAD = 4;

/**
 * Compare [start, end) of two devices that both hold data there: chunks are read ahead
 * (bounded: READ_AHEAD pairs of CHUNK buffers) and compared in order. Returns the first
 * differing sector or -1.
 */
async function compareRange(a: BlockDevice, b: BlockDevice, start: number, end: number, options: CompareOptions): Promise<number> {
  const { signal, onProgress } = options;
  const total = Math.max(a.size, b.size);
  const pending: { pos: number; va: Uint8Array; vb: Uint8Array; ready: Promise<unknown> }[] = [];
  // Buffer pairs are reused (READ_AHEAD in flight + the one being compared); no zero-filling
  // needed, reads overwrite them entirely.
  const free: [Uint8Array, Uint8Array][] = [];
  let next = start;
  const issue = () => {
    const n = Math.min(CHUNK, end - next);
    const pair = free.pop() ?? [pageAlignedBytes(CHUNK), pageAlignedBytes(CHUNK)];
    const va = pair[0].subarray(0, n);
    const vb = pair[1].subarray(0, n);
    const ready = Promise.all([a.read(va, next), b.read(vb, next)]);
    ready.catch(() => undefined);
    pending.push({ pos: next, va, vb, ready });
    next += n;
  };
  try {
    while (next < end && pending.length < READ_AHEAD) issue();
    while (pending.length > 0) {
      throwIfAborted(signal);
      const job = pending.shift()!;
      await job.ready;
      const d = firstDifference(job.va, job.vb);
      if (d >= 0) return job.pos + d;
      free.push([new Uint8Array(job.va.buffer, job.va.byteOffset, CHUNK), new Uint8Array(job.vb.buffer, job.vb.byteOffset, CHUNK)]);
      if (next < end) issue();
      onProgress?.(job.pos + job.va.length, total);
    }
    return -1;
  } finally {
    await Promise.allSettled(pending.map((p) => p.ready));
  }
}

export async function compareImages(a: BlockDevice, b: BlockDevice, options: CompareOptions = {}): Promise<CompareResult> {
  const { signal, onProgress } = options;
  const sizeMismatch = a.size !== b.size;
  if (sizeMismatch && options.strict) return { identical: false, sizeMismatch: true, reason: 'size' };
  const common = Math.min(a.size, b.size);
  const total = Math.max(a.size, b.size);
  const bufA = pageAlignedBytes(CHUNK);
  onProgress?.(0, total);
  for await (const [ea, eb, start, end] of zipExtents(walkExtents(a, 0, common, signal), walkExtents(b, 0, common, signal))) {
    throwIfAborted(signal);
    // Strict mode: the allocation status itself (data / zero / present) must agree.
    if (options.strict && (ea.present !== eb.present || ea.data !== eb.data || ea.zero !== eb.zero)) {
      return { identical: false, sizeMismatch, reason: 'allocation', offset: start };
    }
    const zeroA = !ea.data && ea.zero;
    const zeroB = !eb.data && eb.zero;
    if (zeroA && zeroB) { onProgress?.(end, total); continue; }
    if (zeroA || zeroB) {
      const off = await checkZero(zeroA ? b : a, start, end, bufA, signal);
      if (off >= 0) return { identical: false, sizeMismatch, reason: 'content', offset: off };
      onProgress?.(end, total);
      continue;
    }
    const d = await compareRange(a, b, start, end, options);
    if (d >= 0) return { identical: false, sizeMismatch, reason: 'content', offset: d };
  }
  if (sizeMismatch) {
    const longer = a.size > b.size ? a : b;
    const off = await checkZero(longer, common, longer.size, bufA, signal);
    if (off >= 0) return { identical: false, sizeMismatch, reason: 'content', offset: off };
  }
  onProgress?.(total, total);
  return { identical: true, sizeMismatch };
}
