/**
 * `qemu-img rebase` in safe mode, as a function over images: before an overlay is pointed at
 * another backing device, every range it leaves to its backing chain and that reads
 * differently through the new one is written into the overlay itself, so that its content
 * does not change when the header does. Ranges the overlay allocates are skipped, and so are
 * ranges that nothing above the new backing image allocates when that image is part of the
 * old chain (rebasing onto an image further down). Ranges that read as zeroes both through the
 * old chain and through the new backing device (the block status of each) are not read at all,
 * and a side known to read zeroes is not read (bench/chain.mjs's 2 GiB compare: 2139 → 1571 MiB
 * read; BENCHMARKS.md).
 *
 * The comparison is made in 512-byte sectors, as qemu-img makes it; only differing runs are
 * written. A crash at any point leaves the overlay reading as before: it still names its old
 * backing file, and what was written into it equals what it read through that.
 */
import type { BlockDevice } from '../blockdev.js';
import type { Image } from '../format.js';
import { throwIfAborted, DiskError } from '../errors.js';
import { pageAlignedBytes } from '../source.js';
import { walkExtents, type OperationOptions } from './common.js';

export interface RebaseOptions extends OperationOptions {
  /** What the overlay will read through afterwards; absent: nothing (the overlay is flattened). */
  newBacking?: BlockDevice;
  /**
   * When the new backing image is already in the overlay's chain: its depth there (1 = the
   * overlay's backing file). Ranges no image above it allocates read the same through both.
   */
  newBackingDepth?: number;
  /** Pieces read and compared at once (default 4). */
  parallel?: number;
}

export interface RebaseStats {
  /** Bytes of the overlay that were written (data or zeroes). */
  bytesWritten: number;
}

/** qemu-img rebase's IO_BUF_SIZE: the most it compares in one step. */
const PIECE = 2 << 20;
const SECTOR = 512;
/** Block compared at once before looking at single sectors (most of a differing piece differs or not in large runs). */
const BLOCK = 64 << 10;

/** Read `buf.length` bytes at `offset` from `dev`, zeroes past its end or without one. */
async function readPadded(dev: BlockDevice | undefined, buf: Uint8Array, offset: number): Promise<void> {
  const inside = dev ? Math.max(0, Math.min(buf.length, dev.size - offset)) : 0;
  if (inside > 0) await dev!.read(buf.subarray(0, inside), offset);
  buf.fill(0, inside);
}

/** Does sector [s, s + SECTOR) differ between the two 32-bit views? (Random data: at the first word.) */
function sectorDiffers(a: Int32Array, b: Int32Array, s: number): boolean {
  const from = s >> 2, to = from + (SECTOR >> 2);
  for (let i = from; i < to; i++) if (a[i] !== b[i]) return true;
  return false;
}

/** Runs [start, end) of sectors where `a` and `b` differ. */
export function differingRuns(a: Uint8Array, b: Uint8Array): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  const A = Buffer.from(a.buffer, a.byteOffset, a.length);
  const B = Buffer.from(b.buffer, b.byteOffset, b.length);
  // Sectors of a differing block are told apart in JavaScript over 32-bit words (one native
  // call per sector cost 0.3 s for 1 GiB of data): where both views are 4-byte aligned.
  const words = a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 && a.length % SECTOR === 0
    ? [new Int32Array(a.buffer, a.byteOffset, a.length >> 2), new Int32Array(b.buffer, b.byteOffset, b.length >> 2)] as const
    : undefined;
  let open = -1;
  for (let blk = 0; blk < a.length; blk += BLOCK) {
    const blkEnd = Math.min(a.length, blk + BLOCK);
    if (A.compare(B, blk, blkEnd, blk, blkEnd) === 0) {
      if (open >= 0) { runs.push([open, blk]); open = -1; }
      continue;
    }
    for (let s = blk; s < blkEnd; s += SECTOR) {
      const e = Math.min(blkEnd, s + SECTOR);
      const differs = words ? sectorDiffers(words[0], words[1], s) : A.compare(B, s, e, s, e) !== 0;
      if (differs && open < 0) open = s;
      else if (!differs && open >= 0) { runs.push([open, s]); open = -1; }
    }
  }
  if (open >= 0) runs.push([open, a.length]);
  return runs;
}

export async function rebaseImage(overlay: Image, options: RebaseOptions = {}): Promise<RebaseStats> {
  const { signal, onProgress, newBacking, newBackingDepth } = options;
  if (!overlay.write) throw new DiskError('EROFS', 'The image is not writable');
  const oldBacking = overlay.backing;
  const oldSize = oldBacking?.size ?? 0;
  const newSize = newBacking?.size ?? 0;
  const parallel = options.parallel ?? 4;
  const stats: RebaseStats = { bytesWritten: 0 };
  const size = overlay.size;
  const pool: Array<[Uint8Array, Uint8Array]> = [];
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;

  /**
   * Compare one piece, which lies wholly below or above each backing device's end. A side known
   * to read as zeroes (block status) is not read: its buffer is zero-filled.
   */
  async function piece(offset: number, length: number, oldZero: boolean, newZero: boolean): Promise<void> {
    const bufs = pool.pop() ?? [pageAlignedBytes(PIECE), pageAlignedBytes(PIECE)];
    try {
      const oldBuf = bufs[0].subarray(0, length), newBuf = bufs[1].subarray(0, length);
      const oldPastEnd = offset >= oldSize;
      // Worded as qemu-img words them.
      await Promise.all([
        readPadded(oldPastEnd || oldZero ? undefined : oldBacking, oldBuf, offset).catch((e: unknown) => { throw new DiskError('EIO', 'error while reading from old backing file', { cause: e }); }),
        readPadded(newZero ? undefined : newBacking, newBuf, offset).catch((e: unknown) => { throw new DiskError('EIO', 'error while reading from new backing file', { cause: e }); }),
      ]);
      const writes: Promise<void>[] = [];
      for (const [s, e] of differingRuns(oldBuf, newBuf)) {
        // Past the old backing device's end the overlay read zeroes: keep reading zeroes.
        writes.push(oldPastEnd && overlay.writeZeroes
          ? overlay.writeZeroes(offset + s, e - s, { mayUnmap: false })
          : overlay.write!(oldBuf.subarray(s, e), offset + s));
        stats.bytesWritten += e - s;
      }
      await Promise.all(writes).catch((e: unknown) => { throw new DiskError('EIO', `Error while writing to COW image: ${e instanceof Error ? e.message : String(e)}`, { cause: e }); });
    } finally {
      pool.push(bufs);
    }
  }

  /**
   * [offset, end) of the overlay read through the old chain, which reads zeroes there when
   * `oldZero`: the pieces to compare, with whether the new backing device reads zeroes in each
   * (its block status). Ranges that read zeroes through both need no reading at all.
   */
  async function* pieces(offset: number, end: number, oldZero: boolean): AsyncIterable<[number, number, boolean, boolean]> {
    const newEnd = Math.min(end, newSize);
    const spans: Array<[number, number, boolean]> = [];
    if (newBacking && offset < newEnd) {
      for await (const n of walkExtents(newBacking, offset, newEnd - offset, signal)) spans.push([n.offset, n.offset + n.length, n.zero]);
    }
    if (end > Math.max(offset, newSize)) spans.push([Math.max(offset, newSize), end, true]);
    for (const [from, to, newZero] of spans) {
      if (oldZero && newZero) continue;
      for (let pos = from; pos < to;) {
        let next = Math.min(to, (Math.floor(pos / PIECE) + 1) * PIECE);
        if (pos < oldSize && next > oldSize) next = oldSize;
        yield [pos, next, oldZero, newZero];
        pos = next;
      }
    }
  }

  onProgress?.(0, size);
  try {
    for await (const e of walkExtents(overlay, 0, size, signal)) {
      // Allocated in the overlay (data or zero clusters): not read through any backing file.
      if (e.present && e.depth === 0) { onProgress?.(e.offset + e.length, size); continue; }
      // Nothing between the overlay and the new backing image allocates this range.
      if (newBackingDepth !== undefined && (!e.present || e.depth >= newBackingDepth)) { onProgress?.(e.offset + e.length, size); continue; }
      for await (const [pos, next, oldZero, newZero] of pieces(e.offset, e.offset + e.length, e.zero)) {
        throwIfAborted(signal);
        if (failure !== undefined) throw failure;
        const p = piece(pos, next - pos, oldZero, newZero).then(() => { onProgress?.(next, size); }, (err: unknown) => { failure ??= err; });
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        if (inFlight.size >= parallel) await Promise.race(inFlight);
      }
      onProgress?.(e.offset + e.length, size);
    }
  } finally {
    await Promise.allSettled([...inFlight]);
  }
  if (failure !== undefined) throw failure;
  onProgress?.(size, size);
  return stats;
}
