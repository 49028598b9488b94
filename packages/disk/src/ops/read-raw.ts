/**
 * A device's guest data as raw bytes, in order (what `qemu-img convert -O raw` writes, as a
 * stream): data extents read in slices with the next slice's read under way while the consumer
 * takes the last, unallocated and zero extents as zeroes without reading (views of one shared
 * zero buffer, which consumers must not write into).
 */
import type { BlockDevice } from '../blockdev.js';
import { throwIfAborted } from '../errors.js';
import { walkExtents } from './common.js';

/** Largest slice read or yielded at once. */
const SLICE = 4 << 20;
const ZEROES = new Uint8Array(SLICE);

export async function* readRaw(dev: BlockDevice, options: { offset?: number; signal?: AbortSignal } = {}): AsyncGenerator<Uint8Array> {
  const start = options.offset ?? 0;
  const slices = (async function* () {
    for await (const e of walkExtents(dev, start, dev.size - start, options.signal)) {
      for (let at = e.offset; at < e.offset + e.length; at += SLICE) yield { data: e.data, offset: at, length: Math.min(SLICE, e.offset + e.length - at) };
    }
  })();
  const next = async (): Promise<Uint8Array | null> => {
    const r = await slices.next();
    if (r.done) return null;
    const { data, offset, length } = r.value;
    if (!data) return ZEROES.subarray(0, length);
    const buf = new Uint8Array(length);
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
    }
  } finally {
    await ahead.catch(() => null);
  }
}
