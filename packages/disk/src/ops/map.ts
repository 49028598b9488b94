/**
 * `qemu-img map`: the allocation of a device (through its backing chain) as runs with the
 * same status, merged the way qemu-img merges them before printing.
 */
import type { BlockDevice, Extent } from '../blockdev.js';
import { sameStatus } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { walkExtents, type OperationOptions } from './common.js';

export interface MapOptions extends OperationOptions {
  start?: number;
  length?: number;
}

/** Merged extents of [start, start+length) (clipped to the device). */
export async function* mapImage(dev: BlockDevice, options: MapOptions = {}): AsyncIterable<Extent> {
  const start = options.start ?? 0;
  if (!Number.isSafeInteger(start) || start < 0) throw new DiskError('EINVAL', `Invalid start offset ${start}`);
  if (start >= dev.size) return;
  const length = Math.min(options.length ?? dev.size - start, dev.size - start);
  let cur: Extent | undefined;
  for await (const e of walkExtents(dev, start, length, options.signal)) {
    if (cur && cur.offset + cur.length === e.offset && sameStatus(cur, e)) {
      cur.length += e.length;
    } else {
      if (cur) yield cur;
      cur = { ...e };
    }
    options.onProgress?.(e.offset + e.length - start, length);
  }
  if (cur) yield cur;
}
