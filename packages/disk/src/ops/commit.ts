/**
 * `qemu-img commit` as a function over an image chain: what the images above `base` allocate
 * (data and zero clusters, the topmost one winning) is written into `base`, through the same
 * pipeline as convert. Ranges that no image above `base` allocates are left alone, so base
 * keeps its own data and its own backing file's. Emptying the top image afterwards (unless
 * `-d`) is the caller's step: only once the data is safely in `base`.
 */
import type { BlockDevice, Extent } from '../blockdev.js';
import type { Image } from '../format.js';
import { DiskError } from '../errors.js';
import { chainOf } from '../open.js';
import { convertImage } from './convert.js';
import type { OperationOptions } from './common.js';

export interface CommitOptions extends OperationOptions {
  /** `-r`: bytes per second. */
  rateLimit?: number;
  /** Flush `base` to stable storage at the end (qemu-img's default cache mode, writeback, does on close). */
  flush?: boolean;
}

/**
 * The top image as seen from above `base` (at `baseDepth` in its chain): reads are the top's,
 * and only ranges some image above `base` allocates are reported present.
 */
class AboveBase implements BlockDevice {
  readonly size: number;
  constructor(private readonly top: Image, private readonly baseDepth: number) { this.size = top.size; }
  read(buf: Uint8Array, offset: number): Promise<void> { return this.top.read(buf, offset); }
  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    for await (const e of this.top.blockStatus(offset, length)) {
      yield e.present && e.depth < this.baseDepth ? e : { ...e, data: false, zero: true, present: false, hostOffset: undefined, hostFile: undefined };
    }
  }
  async close(): Promise<void> { /* the chain belongs to the caller */ }
}

export async function commitImage(top: Image, base: Image, options: CommitOptions = {}): Promise<void> {
  const baseDepth = chainOf(top).indexOf(base);
  if (baseDepth < 1) throw new DiskError('EINVAL', `'${base.source.name}' is not in the backing chain of '${top.source.name}'`);
  if (base.size < top.size) {
    // QEMU's commit job grows the base to the top's size first (block/commit.c, commit_run:
    // blk_truncate with PREALLOC_MODE_OFF); the grown range reads as zeroes until the data
    // above base lands there.
    if (!base.resize) throw new DiskError('EUNSUPPORTED', `Top image ${top.source.name} is larger than its base image ${base.source.name}, whose format cannot be resized`);
    await base.resize(top.size, { preallocation: 'off' });
  }
  await convertImage(new AboveBase(top, baseDepth), base, {
    targetHasBacking: true,
    targetIsZero: false,
    flush: options.flush,
    ...(options.rateLimit ? { rateLimit: options.rateLimit } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
}
