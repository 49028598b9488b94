/** Pieces the operations share: progress reporting, extent walking, zero detection. */
import type { BlockDevice, Extent } from '../blockdev.js';
import { throwIfAborted } from '../errors.js';

/** Progress as a fraction in [0, 1]; called often, so callers throttle their own display. */
export type ProgressCallback = (done: number, total: number) => void;

export interface OperationOptions {
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
}

/** Largest block-status query issued at once; keeps per-call work bounded on huge images. */
export const STATUS_STEP = 1 << 30;

/**
 * Extents of [offset, offset+length) in order, queried in bounded steps so a device's
 * status walk never has to materialise a whole multi-terabyte map.
 */
export async function* walkExtents(dev: BlockDevice, offset: number, length: number, signal?: AbortSignal): AsyncIterable<Extent> {
  const end = Math.min(dev.size, offset + length);
  let pos = offset;
  while (pos < end) {
    throwIfAborted(signal);
    const stepEnd = Math.min(end, pos + STATUS_STEP);
    let reached = pos;
    for await (const e of dev.blockStatus(pos, stepEnd - pos)) {
      throwIfAborted(signal);
      // Clip to what was asked; devices may round to their granularity.
      const s = Math.max(e.offset, reached);
      const t = Math.min(e.offset + e.length, stepEnd);
      if (t <= s) continue;
      if (s > reached) {
        // A device that skipped a range: report it as reading zeroes from nowhere.
        yield { offset: reached, length: s - reached, data: false, zero: true, present: false, depth: 0 };
      }
      const clipped: Extent = { ...e, offset: s, length: t - s };
      if (e.hostOffset !== undefined) clipped.hostOffset = e.hostOffset + (s - e.offset);
      yield clipped;
      reached = t;
    }
    if (reached < stepEnd) yield { offset: reached, length: stepEnd - reached, data: false, zero: true, present: false, depth: 0 };
    pos = stepEnd;
  }
}

const ZERO_BLOCK = Buffer.alloc(1 << 20);

/**
 * True when every byte of buf[start, end) is zero. Data blocks almost always have a non-zero
 * byte at one of three sampled places, so most calls return without a native call; the rest
 * are a memcmp against a zero block (no allocation: this runs once per 4 KiB of a convert).
 */
export function isZeroRange(buf: Uint8Array, start: number, end: number): boolean {
  if (end <= start) return true;
  if (buf[start] !== 0 || buf[end - 1] !== 0 || buf[(start + end) >>> 1] !== 0) return false;
  for (let off = start; off < end; off += ZERO_BLOCK.length) {
    const n = Math.min(ZERO_BLOCK.length, end - off);
    if (ZERO_BLOCK.compare(buf, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

/** True when every byte of `buf` is zero. */
export function isZero(buf: Uint8Array): boolean {
  return isZeroRange(buf, 0, buf.length);
}

/** Offset of the first non-zero byte of `buf`, or -1. */
export function firstNonZero(buf: Uint8Array): number {
  for (let off = 0; off < buf.length; off += 4096) {
    const end = Math.min(buf.length, off + 4096);
    if (!isZeroRange(buf, off, end)) {
      for (let i = off; i < end; i++) if (buf[i] !== 0) return i;
    }
  }
  return -1;
}

/**
 * `-r rate_limit` (bytes per second), as QEMU's block jobs and convert apply it: work is let
 * through at once while the bytes done so far are within the rate since the start, and
 * otherwise waits until they are.
 */
export class RateLimiter {
  private readonly start = performance.now();
  private done = 0;
  constructor(private readonly bytesPerSecond: number) {}

  /** Wait until `bytes` more may be processed. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const due = this.start + (this.done / this.bytesPerSecond) * 1000;
    this.done += bytes;
    const wait = due - performance.now();
    if (wait > 0) await new Promise<void>((resolve) => {
      const t = setTimeout(() => { signal?.removeEventListener('abort', stop); resolve(); }, wait);
      const stop = () => { clearTimeout(t); resolve(); };
      signal?.addEventListener('abort', stop, { once: true });
    });
    throwIfAborted(signal);
  }
}
