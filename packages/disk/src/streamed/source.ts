/**
 * A ByteSource over a one-pass stream (an HTTP download), so a format driver can read an image
 * while it arrives instead of after it was staged to a file.
 *
 * A read of bytes not arrived yet waits while the stream is pulled up to them (nothing is pulled
 * while no read waits: the download is paced by the reader). Bytes the stream passes are, in
 * order of preference:
 * - copied into the reads waiting for them, and not kept (a data cluster read as it arrives:
 *   the streaming case, no copy of the image anywhere);
 * - kept in the spill file, at their own offset (a sparse partial copy of the source), when no
 *   read waits for them (data that arrives before the table that maps it, tables read later),
 *   or when `keep` says they will be read again (the metadata a driver re-reads);
 * - the last WINDOW bytes also stay in memory, for reads that overlap the previous one (qcow2
 *   compressed clusters share their boundary sectors).
 * A read of bytes that went to a reader and were not kept (the image maps them twice) fails
 * with EUNSUPPORTED: the source cannot give them again, and a wrong byte is never returned.
 * The spill is capped (`spillCap`): a layout that needs more fails with ELIMIT.
 */
import { DiskError } from '../errors.js';
import { FileSource, type ByteSource, type HostExtent } from '../source.js';

/** Recent bytes kept in memory: more than a compressed cluster's shared sector, less than a read. */
const WINDOW = 1 << 20;
/** Ranges handed to readers and not kept, recorded exactly up to this many; past it everything is kept. */
const MAX_GAPS = 1 << 20;

interface Waiter {
  start: number;
  end: number;
  buf: Uint8Array;
  resolve: (n: number) => void;
  reject: (e: unknown) => void;
}

export interface StreamedSourceOptions {
  /** The spill file (created, or truncated). */
  spillPath: string;
  /** Most bytes the spill file may take. */
  spillCap: number;
  /** Called with every chunk, in order, as it is pulled (the safety inspector reads the source this way). */
  onChunk?: (chunk: Uint8Array) => Promise<void>;
  name?: string;
}

export class StreamedSource implements ByteSource {
  readonly name: string;
  readonly readOnly = true;
  /** Bytes pulled from the stream so far. */
  private pos = 0;
  private ended = false;
  private failure: unknown = null;
  private readonly waiters: Waiter[] = [];
  private pumping: Promise<void> | null = null;
  /** The part of the last chunk pulled that no read has reached yet. */
  private pending: Uint8Array | null = null;
  /** The last bytes pulled: [windowStart, pos). */
  private readonly window: Uint8Array[] = [];
  private windowBytes = 0;
  private windowStart = 0;
  /** Sorted, disjoint ranges below `pos` given to readers and not kept (as flat [start, end, ...]). */
  private readonly gaps: number[] = [];
  /** Keep everything from now on (the gap list is full, or the caller wants a whole copy). */
  private keepAll = false;
  /** Keep nothing from now on (the reader is done; the rest is only drained). */
  private keepNone = false;
  private spilled = 0;
  private closed = false;
  /** Says whether a range readers take will be read again (metadata), so it is kept too. */
  keep: (offset: number, length: number) => boolean = () => false;

  private constructor(
    private readonly input: AsyncIterator<Uint8Array>,
    private readonly spill: FileSource,
    private readonly opts: StreamedSourceOptions,
  ) {
    this.name = opts.name ?? 'stream';
  }

  static async open(input: AsyncIterable<Uint8Array>, opts: StreamedSourceOptions): Promise<StreamedSource> {
    const spill = await FileSource.open(opts.spillPath, { create: true });
    return new StreamedSource(input[Symbol.asyncIterator](), spill, opts);
  }

  /** Bytes pulled so far. */
  get position(): number { return this.pos; }
  /** Bytes the spill file holds. */
  get spilledBytes(): number { return this.spilled; }
  /** Whether the stream has ended. */
  get complete(): boolean { return this.ended; }

  /** The length is not known until the stream ends: until then, as large as a file can be. */
  async size(): Promise<number> {
    return this.ended ? this.pos : Number.MAX_SAFE_INTEGER;
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    const end = offset + buf.length;
    let done = offset;
    for (;;) {
      if (this.failure) throw this.failure;
      // The part already passed: from memory or the spill file (the stream may move on meanwhile).
      const passed = Math.min(end, this.pos);
      if (done < passed) {
        await this.readPassed(buf.subarray(done - offset, passed - offset), done);
        done = passed;
        continue;
      }
      if (done >= end) return buf.length;
      if (this.ended) return done - offset;
      const from = done;
      return new Promise<number>((resolve, reject) => {
        this.waiters.push({ start: from, end, buf: buf.subarray(from - offset), resolve: (n) => resolve(from - offset + n), reject });
        this.pump();
      });
    }
  }

  /** Pull and keep the rest of the stream (a staged copy: every byte in the spill file). */
  async stageRest(): Promise<void> {
    this.keepAll = true;
    await this.drain();
  }

  /** Pull the rest of the stream, keeping nothing (what follows the last byte a reader needs). */
  async discardRest(): Promise<void> {
    this.keepNone = true;
    await this.drain();
  }

  /** The spill file, as a source of its own (a staged source: stageRest first). */
  get spillFile(): FileSource { return this.spill; }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new DiskError('EIO', `${this.name}: the stream was closed`));
    await this.input.return?.().catch(() => {});
    await this.spill.close().catch(() => {});
  }

  private async drain(): Promise<void> {
    while (!this.ended) {
      if (this.failure) throw this.failure;
      await (this.pumping ?? this.pullOne());
    }
    if (this.failure) throw this.failure;
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = (async () => {
      try {
        while (this.waiters.length && !this.ended) await this.pullOne();
        if (this.ended) for (const w of this.waiters.splice(0)) w.resolve(Math.max(0, Math.min(w.end, this.pos) - w.start));
      } catch (e) {
        this.fail(e);
      } finally {
        this.pumping = null;
      }
    })();
  }

  private fail(e: unknown): void {
    this.failure ??= e;
    for (const w of this.waiters.splice(0)) w.reject(this.failure);
  }

  private async pullOne(): Promise<void> {
    let chunk = this.pending;
    this.pending = null;
    if (!chunk) {
      const r = await this.input.next();
      if (r.done) {
        this.ended = true;
        return;
      }
      chunk = r.value;
      if (!chunk.length) return;
      await this.opts.onChunk?.(chunk);
    }
    // Only up to the end of the reads waiting: the rest of a large chunk waits for the next
    // read instead of going to the spill file.
    let want = 0;
    for (const w of this.waiters) want = Math.max(want, w.end);
    if (!this.keepAll && !this.keepNone && want > this.pos && want < this.pos + chunk.length) {
      this.pending = chunk.subarray(want - this.pos);
      chunk = chunk.subarray(0, want - this.pos);
    }
    const start = this.pos;
    const end = start + chunk.length;
    // Into the reads that wait for these bytes; what none takes is kept.
    const taken: [number, number][] = [];
    for (const w of this.waiters) {
      const s = Math.max(w.start, start), t = Math.min(w.end, end);
      if (s >= t) continue;
      w.buf.set(chunk.subarray(s - start, t - start), s - w.start);
      taken.push([s, t]);
    }
    const pieces = this.keepNone ? [] : this.piecesToKeep(start, end, taken);
    // The chunk is in the window before anything awaits: a read of it meanwhile finds it there.
    this.pos = end;
    this.remember(chunk, start);
    for (let i = 0; i < this.waiters.length;) {
      const w = this.waiters[i]!;
      if (w.end <= end) {
        this.waiters.splice(i, 1);
        w.resolve(w.end - w.start);
      } else i++;
    }
    for (const [s, t] of pieces) {
      this.spilled += t - s;
      if (this.spilled > this.opts.spillCap) {
        throw new DiskError('ELIMIT', `${this.name}: more than ${this.opts.spillCap} bytes of the image arrive before the tables that map them (the spill limit)`);
      }
      await this.spill.write(chunk.subarray(s - start, t - start), s);
    }
  }

  /** The parts of [start, end) that no reader took, and what readers took that `keep` asks for; the rest is a gap. */
  private piecesToKeep(start: number, end: number, taken: [number, number][]): [number, number][] {
    taken.sort((a, b) => a[0] - b[0]);
    let at = start;
    const pieces: [number, number][] = [];
    for (const [s, t] of taken) {
      if (s > at) pieces.push([at, s]);
      if (t > at) {
        const from = Math.max(s, at);
        if (this.keepAll || this.keep(from, t - from)) pieces.push([from, t]);
        else this.addGap(from, t);
      }
      at = Math.max(at, t);
    }
    if (at < end) pieces.push([at, end]);
    return pieces;
  }

  private addGap(s: number, t: number): void {
    const n = this.gaps.length;
    if (n && this.gaps[n - 1] === s) this.gaps[n - 1] = t;
    else {
      this.gaps.push(s, t);
      if (this.gaps.length >= MAX_GAPS * 2) this.keepAll = true;
    }
  }

  /** The window: the last chunks, at least WINDOW bytes of them, and always the whole last chunk. */
  private remember(chunk: Uint8Array, start: number): void {
    this.window.push(chunk);
    this.windowBytes += chunk.length;
    while (this.windowBytes - this.window[0]!.length >= WINDOW) {
      this.windowBytes -= this.window.shift()!.length;
    }
    this.windowStart = start + chunk.length - this.windowBytes;
  }

  /** Copy [offset, offset + buf.length), inside the window, into buf. */
  private fromWindow(buf: Uint8Array, offset: number): void {
    let at = this.windowStart;
    for (const c of this.window) {
      const s = Math.max(offset, at), t = Math.min(offset + buf.length, at + c.length);
      if (s < t) buf.set(c.subarray(s - at, t - at), s - offset);
      at += c.length;
    }
  }

  private async readPassed(buf: Uint8Array, offset: number): Promise<void> {
    const end = offset + buf.length;
    if (offset >= this.windowStart) {
      this.fromWindow(buf, offset);
      return;
    }
    // The part before the window comes from the spill file, and must not fall in a gap.
    const spillEnd = Math.min(end, this.windowStart);
    const gap = this.firstGap(offset, spillEnd);
    if (gap) {
      throw new DiskError('EUNSUPPORTED', `${this.name}: the image reads bytes at offset ${gap} a second time after they streamed past (a cluster mapped twice); it cannot be converted as it streams`);
    }
    const n = await this.spill.read(buf.subarray(0, spillEnd - offset), offset);
    if (n < spillEnd - offset) buf.fill(0, n, spillEnd - offset);
    if (end > spillEnd) this.fromWindow(buf.subarray(spillEnd - offset), spillEnd);
  }

  /** The start of the first gap byte in [s, t), if any. */
  private firstGap(s: number, t: number): number | null {
    const g = this.gaps;
    let lo = 0, hi = g.length / 2;
    // first gap whose end > s
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (g[mid * 2 + 1]! <= s) lo = mid + 1; else hi = mid;
    }
    if (lo * 2 < g.length && g[lo * 2]! < t) return Math.max(s, g[lo * 2]!);
    return null;
  }

  // --- the rest of ByteSource: a read-only source

  async write(): Promise<void> { throw new DiskError('EROFS', `${this.name}: read-only`); }
  async truncate(): Promise<void> { throw new DiskError('EROFS', `${this.name}: read-only`); }
  async punchHole(): Promise<void> { throw new DiskError('EROFS', `${this.name}: read-only`); }
  async allocate(): Promise<void> { throw new DiskError('EROFS', `${this.name}: read-only`); }
  async *hostExtents(offset: number, length: number): AsyncIterable<HostExtent> { yield { offset, length, data: true }; }
  async allocatedSize(): Promise<number> { return this.pos; }
  async flush(): Promise<void> {}
}
