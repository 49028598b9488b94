/**
 * `qemu-img convert` as a function over block devices: copy what the source allocates into
 * the target, skipping unallocated and zero ranges (from blockStatus, never by reading
 * holes), detecting zero runs inside data (`-S`), optionally compressing each cluster.
 *
 * Reads run ahead of writes with at most `parallel` chunks in flight (bounded memory:
 * parallel × chunkSize); writes happen in order unless `outOfOrder` (`-W`).
 */
import { settled, type BlockDevice } from '../blockdev.js';
import { DiskError, throwIfAborted } from '../errors.js';
import { pageAlignedBytes } from '../source.js';
import { hostio } from '@diskhub/hostio';
import type { Image } from '../format.js';
import { walkExtents, isZero, isZeroRange, RateLimiter, type OperationOptions } from './common.js';

export interface ConvertOptions extends OperationOptions {
  /** `-S`: zero runs of at least this many bytes (aligned) become holes; 0 writes every byte. Default 4 KiB. */
  sparseSize?: number;
  /** `-c`: store each cluster compressed (the target needs writeCompressed). */
  compress?: boolean;
  /** The target already reads as zeroes (freshly created, or --target-is-zero). */
  targetIsZero?: boolean;
  /** The target has a backing file (`-B`): leave ranges the source does not allocate unallocated, write zeroes explicitly. */
  targetHasBacking?: boolean;
  /** `-m`: chunks in flight. Default 8. */
  parallel?: number;
  /** `-W`: allow writes to complete out of order. */
  outOfOrder?: boolean;
  /** Bytes per chunk (rounded up to the target's cluster size). Default 2 MiB. */
  chunkSize?: number;
  /** Flush the target to stable storage at the end (default true; qemu-img's default cache mode "unsafe" does not). */
  flush?: boolean;
  /**
   * `-C` (copy offloading, qemu-img's copy_range): each data range is handed from the source's
   * copyRangeTo to the target's copyRangeFrom (copy_file_range between host files), so it is
   * stored as data, zero blocks inside it included. The first range that cannot be copied so
   * (a format without it, compressed or encrypted data, the kernel refusing) turns it off for
   * the rest of the convert, which then reads and writes with `-S` detection, as qemu-img does.
   */
  copyRange?: boolean;
  /**
   * `--salvage`: a read that fails is retried sector by sector, and each sector that still
   * cannot be read is copied as zeroes and reported here (qemu-img prints a warning) instead of
   * ending the convert.
   */
  onReadError?: (offset: number, error: unknown) => void;
  /** `-r`: at most this many bytes per second are copied (data and written zero blocks; skipped and zeroed ranges are free). */
  rateLimit?: number;
}

export interface ConvertStats {
  /** Bytes of the source actually read. */
  bytesRead: number;
  /** Bytes written as data to the target. */
  bytesWritten: number;
  /** Bytes written as explicit zeroes. */
  bytesZeroed: number;
}

export const DEFAULT_SPARSE_SIZE = 4096;
const DEFAULT_CHUNK = 2 << 20;
/** Largest single writeZeroes request. */
const ZERO_STEP = 256 << 20;
/** Largest span of a zero run tested in one go (zeroRuns; at most the zero block isZeroRange compares with). */
const MAX_ZERO_SPAN = 1 << 20;
/** What --salvage retries a failed read in (qemu-img's BDRV_SECTOR_SIZE). */
const SALVAGE_SECTOR = 512;
/** qemu-img's limit for -m. */
export const MAX_PARALLEL = 16;

type Job =
  | { kind: 'data'; offset: number; length: number; buf?: Uint8Array; runs?: Run[]; copy?: boolean }
  | { kind: 'zero'; offset: number; length: number }
  | { kind: 'fill'; offset: number; length: number };

/** A piece of a data chunk [start, end) that is all zeroes (`zero`) or not, at `-S` granularity. */
interface Run { start: number; end: number; zero: boolean }

type ConvertTarget = BlockDevice & Partial<Pick<Image, 'writeCompressed' | 'clusterSize'>>;

/** An I/O failure with where it happened, worded as qemu-img words it. */
function located(e: unknown, doing: 'reading' | 'writing', offset: number): unknown {
  if (e instanceof DiskError && (e.code === 'EABORTED' || e.message.startsWith('error while'))) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new DiskError(e instanceof DiskError ? e.code : 'EIO', `error while ${doing} at byte ${offset}: ${message}`, { cause: e });
}

export async function convertImage(src: BlockDevice, dst: ConvertTarget, options: ConvertOptions = {}): Promise<ConvertStats> {
  const { signal, onProgress } = options;
  const sparse = options.sparseSize ?? DEFAULT_SPARSE_SIZE;
  const parallel = options.parallel ?? 8;
  if (!Number.isSafeInteger(sparse) || sparse < 0) throw new DiskError('EINVAL', `Invalid sparse size ${sparse}`);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > MAX_PARALLEL) {
    throw new DiskError('EINVAL', `Invalid number of coroutines. Allowed number of coroutines is between 1 and ${MAX_PARALLEL}`);
  }
  if (dst.size < src.size) throw new DiskError('EINVAL', `The target is smaller (${dst.size} bytes) than the source (${src.size} bytes)`);
  if (!dst.write) throw new DiskError('EROFS', 'The target image is not writable');
  const cluster = dst.clusterSize && dst.clusterSize > 0 ? dst.clusterSize : 512;
  if (options.compress && !dst.writeCompressed) throw new DiskError('EUNSUPPORTED', 'Compression not supported for this file format');
  const chunk = Math.ceil((options.chunkSize ?? DEFAULT_CHUNK) / cluster) * cluster;
  const targetIsZero = !!options.targetIsZero && !options.targetHasBacking;
  const stats: ConvertStats = { bytesRead: 0, bytesWritten: 0, bytesZeroed: 0 };
  const total = src.size;

  // Buffers are reused: at most `parallel` chunks exist at any time.
  const pool: Uint8Array[] = [];
  const takeBuffer = () => pool.pop() ?? pageAlignedBytes(chunk);
  const giveBuffer = (b: Uint8Array) => { if (b.byteLength === chunk && pool.length < parallel) pool.push(b); };
  const fillZero = new Uint8Array(Math.min(chunk, DEFAULT_CHUNK));

  /** What to do with each range, before chunking: copy, zero, skip. */
  type Action = 'copy' | 'fill' | 'zero' | 'skip';
  const actionOf = (e: { data: boolean; zero: boolean; present: boolean }): Action => {
    // What the source does not allocate anywhere reads through the target's own backing file.
    if (options.targetHasBacking && !e.present) return 'skip';
    if (e.data || !e.zero) return 'copy';
    if (sparse === 0) return 'fill';
    return targetIsZero ? 'skip' : 'zero';
  };

  /** A range with one action cut into jobs: data chunks aligned to the chunk size, so that target clusters are written whole. */
  function jobsOf(r: { action: Action; offset: number; length: number }): Job[] {
    if (r.action === 'skip') return [];
    if (r.action === 'zero') return [{ kind: 'zero', offset: r.offset, length: r.length }];
    // Data (or, with -S 0, zeroes written as data).
    const jobs: Job[] = [];
    for (let pos = r.offset; pos < r.offset + r.length;) {
      const next = Math.min(r.offset + r.length, (Math.floor(pos / chunk) + 1) * chunk);
      jobs.push(r.action === 'fill' ? { kind: 'fill', offset: pos, length: next - pos } : { kind: 'data', offset: pos, length: next - pos });
      pos = next;
    }
    return jobs;
  }

  /**
   * The jobs in guest order, from ranges with one action (adjacent extents merged: drivers may
   * report cluster by cluster). One generator, not one for the ranges and one for the jobs: every
   * level of async generator costs each item a round of promises.
   */
  async function* plan(): AsyncIterable<Job> {
    let cur: { action: Action; offset: number; length: number } | undefined;
    for await (const e of walkExtents(src, 0, src.size, signal)) {
      const action = actionOf(e);
      if (cur && cur.action === action && cur.offset + cur.length === e.offset) { cur.length += e.length; continue; }
      if (cur) for (const job of jobsOf(cur)) yield job;
      cur = { action, offset: e.offset, length: e.length };
    }
    if (cur) for (const job of jobsOf(cur)) yield job;
  }

  /** -C: still copying ranges (cleared by the first range that cannot be copied). */
  let copying = !!options.copyRange && !!src.copyRangeTo;

  async function read(job: Job): Promise<Job> {
    if (job.kind === 'data' && copying) job.copy = true;
    else if (job.kind === 'data') {
      const buf = takeBuffer().subarray(0, job.length);
      await src.read(buf, job.offset).catch((e) => {
        if (!options.onReadError) throw located(e, 'reading', job.offset);
        return salvage(buf, job.offset);
      });
      stats.bytesRead += job.length;
      job.buf = buf;
    }
    return job;
  }

  /** Read what can be read of [offset, offset+buf.length) in 512-byte sectors; zeroes for the rest. */
  async function salvage(buf: Uint8Array, offset: number): Promise<void> {
    for (let p = 0; p < buf.length; p += SALVAGE_SECTOR) {
      throwIfAborted(signal);
      const piece = buf.subarray(p, Math.min(buf.length, p + SALVAGE_SECTOR));
      try {
        await src.read(piece, offset + p);
      } catch (e) {
        piece.fill(0);
        options.onReadError!(offset + p, e);
      }
    }
  }

  async function writeZeroes(offset: number, length: number): Promise<void> {
    if (targetIsZero) return;
    if (dst.writeZeroes) {
      // In bounded steps, so that cancelling never waits for a huge range to be zeroed.
      for (let p = offset; p < offset + length; p += ZERO_STEP) {
        throwIfAborted(signal);
        await dst.writeZeroes(p, Math.min(ZERO_STEP, offset + length - p), { mayUnmap: !options.targetHasBacking });
      }
    } else {
      for (let p = offset; p < offset + length; p += fillZero.length) {
        await dst.write!(fillZero.subarray(0, Math.min(fillZero.length, offset + length - p)), p);
      }
    }
    stats.bytesZeroed += length;
  }

  /**
   * Start the writes of one data chunk and return their completion. Every driver call is made
   * before this returns, so calls for consecutive chunks reach the target in guest order (its
   * allocation order) while their I/O overlaps.
   */
  function writeData(buf: Uint8Array, offset: number, runs?: Run[]): Promise<void> {
    const work: Promise<void>[] = [];
    const data = (piece: Uint8Array, at: number, compressed: boolean) => {
      work.push(compressed ? dst.writeCompressed!(piece, at) : dst.write!(piece, at));
      stats.bytesWritten += piece.length;
    };
    if (options.compress) {
      // Whole clusters are compressed concurrently (the driver spreads the work over the
      // threadpool); an all-zero cluster stays a hole; partial clusters at the edges of a
      // range are written plainly.
      for (let p = 0; p < buf.length;) {
        const abs = offset + p;
        const next = Math.min(buf.length, (Math.floor(abs / cluster) + 1) * cluster - offset);
        const piece = buf.subarray(p, next);
        const whole = abs % cluster === 0 && (piece.length === cluster || abs + piece.length === dst.size || abs + piece.length === src.size);
        if (isZero(piece)) work.push(writeZeroes(abs, piece.length));
        else data(piece, abs, whole);
        p = next;
      }
    } else if (sparse === 0) data(buf, offset, false);
    else {
      for (const r of runs ?? zeroRuns(buf, offset)) {
        if (r.zero) work.push(writeZeroes(offset + r.start, r.end - r.start));
        else data(buf.subarray(r.start, r.end), offset + r.start, false);
      }
    }
    return settled(work);
  }

  /** Runs of sparse-size-aligned blocks of `buf` (at guest `offset`), zero or not. */
  function zeroRuns(buf: Uint8Array, offset: number): Run[] {
    const runs: Run[] = [];
    let cur: Run | undefined;
    for (let p = 0; p < buf.length;) {
      let next = Math.min(buf.length, p + sparse - ((offset + p) % sparse));
      const zero = isZeroRange(buf, p, next);
      if (!zero) {
        // Data blocks run on until an all-zero block: found in C by hostio (one call per chunk,
        // where this scan was a tenth of a convert's JavaScript), or here a block at a time on
        // its first byte alone (random data's first byte is nearly never zero).
        const length = buf.length;
        if (hostio?.zeroBlock) next = hostio.zeroBlock(buf, next, sparse);
        else while (next < length) {
          while (next + sparse <= length && buf[next] !== 0) next += sparse;
          if (next >= length) break;
          const blockEnd = Math.min(length, next + sparse);
          if (buf[next] === 0 && buf[blockEnd - 1] === 0 && isZeroRange(buf, next, blockEnd)) break;
          next = blockEnd;
        }
      } else {
        // Zero runs are seldom one block long: test the blocks after this one many at a time,
        // doubling the span while they stay zero (one memcmp per span instead of one call
        // per block; a span that is not all zero falls back to block by block).
        for (let span = sparse; next < buf.length; span = Math.min(span * 2, MAX_ZERO_SPAN)) {
          const spanEnd = Math.min(buf.length, next + span);
          if (!isZeroRange(buf, next, spanEnd)) break;
          next = spanEnd;
        }
      }
      if (cur && cur.zero === zero) cur.end = next;
      else runs.push(cur = { start: p, end: next, zero });
      p = next;
    }
    return runs;
  }

  /** After a read: find the chunk's zero runs now, while earlier chunks are still being written. */
  function prepare(job: Job): Job {
    if (job.kind === 'data' && !job.copy && sparse > 0 && !options.compress) job.runs = zeroRuns(job.buf!, job.offset);
    return job;
  }

  /** Start a job's writes (all driver calls made before it returns); resolves when they have landed. */
  function write(job: Job): Promise<void> {
    throwIfAborted(signal);
    return writeJob(job).then(() => {
      done += job.length;
      onProgress?.(Math.min(done, total), total);
    }, (e) => { throw located(e, 'writing', job.offset); });
  }

  function writeJob(job: Job): Promise<void> {
    if (job.kind === 'zero') return writeZeroes(job.offset, job.length);
    if (job.kind === 'fill') {
      const work: Promise<void>[] = [];
      for (let p = job.offset; p < job.offset + job.length; p += fillZero.length) {
        const n = Math.min(fillZero.length, job.offset + job.length - p);
        work.push(dst.write!(fillZero.subarray(0, n), p));
        stats.bytesWritten += n;
      }
      return settled(work);
    }
    if (job.copy) {
      return src.copyRangeTo!(job.offset, job.length, dst, job.offset).then(() => { stats.bytesWritten += job.length; }, async () => {
        // qemu-img's convert_co_do_copy: copy_range is turned off and the range retried.
        copying = false;
        job.copy = false;
        await writeJob(prepare(await read(job)));
      });
    }
    return writeData(job.buf!, job.offset, job.runs).then(() => {
      giveBuffer(new Uint8Array(job.buf!.buffer, job.buf!.byteOffset, chunk));
      job.buf = undefined;
    });
  }

  const limiter = options.rateLimit ? new RateLimiter(options.rateLimit) : undefined;
  let done = 0;
  onProgress?.(0, total);
  // Every read or write started and not yet settled; on failure we wait for them all.
  const pending = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p);
    p.then(() => pending.delete(p), () => pending.delete(p));
    return p;
  };
  try {
    if (options.outOfOrder) {
      for await (const job of plan()) {
        throwIfAborted(signal);
        if (limiter && job.kind !== 'zero') await limiter.take(job.length, signal);
        // Not awaited here: `pending` holds it, and the race below and the wait after the loop (or
        // on failure) settle it.
        void track(read(job).then(write));
        if (pending.size >= parallel) await Promise.race(pending);
      }
      await Promise.all(pending);
    } else {
      // Writes are started one chunk after another in guest order (the target allocates in
      // that order) and overlap each other; each chunk's read and zero scan run as soon as
      // a slot is free. At most `parallel` chunks are read or being written at once.
      const queue: Promise<void>[] = [];
      let issued: Promise<unknown> = Promise.resolve();
      let failure: unknown;
      for await (const job of plan()) {
        throwIfAborted(signal);
        if (limiter && job.kind !== 'zero') await limiter.take(job.length, signal);
        const ready = track(read(job).then(prepare));
        const previous = issued;
        const started = ready.then(async (j) => {
          await previous;
          if (failure !== undefined) throw failure;
          return { landed: write(j) };
        });
        issued = started.then(() => undefined, () => undefined);
        const finished = track(started.then((s) => s.landed).catch((e: unknown) => { failure ??= e; throw e; }));
        queue.push(finished);
        if (queue.length >= parallel) await queue.shift();
      }
      await Promise.all(queue);
    }
  } finally {
    // Never leave reads or writes running behind the caller's back (it may delete the target).
    await Promise.allSettled([...pending]);
  }
  if (dst.flush && options.flush !== false) await dst.flush();
  onProgress?.(total, total);
  return stats;
}
