/**
 * A device's guest data as raw bytes, in order (what `qemu-img convert -O raw` writes, as a
 * stream): data extents read in slices with the next slice's read under way while the consumer
 * takes the last, unallocated and zero extents as zeroes without reading (views of one shared
 * zero buffer, which consumers must not write into; isSharedZeroes tells them apart).
 *
 * `reuse`: the data slices are read into two buffers in turn instead of a new one each, so a
 * yielded slice is valid only until the consumer asks for the next one. A consumer that copies
 * (or hashes) each slice before it asks again — a web-download import's ingest — then allocates
 * nothing per slice: a new 4 MiB buffer per slice is 1 GiB of page faults and, as external
 * memory, a garbage collection every few dozen MiB for a 2 GiB image.
 */
import type { BlockDevice } from '../blockdev.js';
import { throwIfAborted } from '../errors.js';
import { walkExtents } from './common.js';

/** Largest slice read or yielded at once. */
const SLICE = 4 << 20;
const ZEROES = new Uint8Array(SLICE);

/** Whether `view` is one of readRaw's zero slices (all zeroes, never written): its consumer may skip copying it. */
export function isSharedZeroes(view: Uint8Array): boolean {
  return view.buffer === ZEROES.buffer;
}

export async function* readRaw(dev: BlockDevice, options: { offset?: number; signal?: AbortSignal; reuse?: boolean } = {}): AsyncGenerator<Uint8Array> {
  const start = options.offset ?? 0;
  const slices = (async function* () {
    for await (const e of walkExtents(dev, start, dev.size - start, options.signal)) {
      for (let at = e.offset; at < e.offset + e.length; at += SLICE) yield { data: e.data, offset: at, length: Math.min(SLICE, e.offset + e.length - at) };
    }
  })();
  /** Buffers the consumer is done with (reuse only): the one yielded last is given back when the consumer asks again. */
  const free: Uint8Array[] = [];
  const next = async (): Promise<Uint8Array | null> => {
    const r = await slices.next();
    if (r.done) return null;
    const { data, offset, length } = r.value;
    if (!data) return ZEROES.subarray(0, length);
    const buf = (options.reuse ? free.pop()?.subarray(0, length) : undefined) ?? new Uint8Array(options.reuse ? SLICE : length).subarray(0, length);
    await dev.read(buf, offset);
    return buf;
  };
  let ahead: Promise<Uint8Array | null> = next();
  try {
    for (;;) {
      const got = await ahead;
      if (!got) return;
      throwIfAborted(options.signal);
      ahead = next();
      // (a rejection of the read ahead is seen at the next turn, or ignored if the consumer stops)
      ahead.catch(() => {});
      yield got;
      // The consumer asked for the next slice: it is done with this one.
      if (options.reuse && !isSharedZeroes(got)) free.push(new Uint8Array(got.buffer, 0, SLICE));
    }
  } finally {
    await ahead.catch(() => null);
  }
}
