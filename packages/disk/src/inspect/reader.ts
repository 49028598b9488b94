/**
 * What a format inspector reads through: bounded byte ranges, the total size, and the last
 * bytes. Two implementations: over a ByteSource (random access, a file on disk), and over a
 * stream (an upload arriving over HTTP), which never holds more than the ranges inspectors
 * asked for, the first HEAD_KEEP bytes and the last TAIL_KEEP bytes.
 */
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';

export interface InspectReader {
  /**
   * Bytes [offset, offset+length): shorter only when the data ends first. Throws
   * DiskError ELIMIT when the range is larger than MAX_READ, and, for a stream, when it lies
   * behind the bytes already streamed past (outside the retained head).
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Total length of the data (for a stream: resolves when the stream ends). */
  size(): Promise<number>;
  /** The last `length` (≤ TAIL_KEEP) bytes of the data. */
  tail(length: number): Promise<Uint8Array>;
}

/** The most one inspector read may ask for (a qcow2 header cluster is at most 2 MiB). */
export const MAX_READ = 4 << 20;
/** A stream keeps its first bytes, so inspectors that look again at the start need no luck. */
export const HEAD_KEEP = 4 << 20;
/** ... and its last bytes, for trailers (vhd footer, dmg koly block, vmdk stream footer). */
export const TAIL_KEEP = 4096;

function checkRequest(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new DiskError('EINVAL', `inspector read at ${offset} (${length} bytes) is not a valid range`);
  }
  if (length > MAX_READ) throw new DiskError('ELIMIT', `a structure of ${length} bytes is larger than the inspector reads (${MAX_READ})`);
}

/** Random access over a ByteSource (the file is read, never written). */
export class SourceReader implements InspectReader {
  private sizeCache?: Promise<number>;
  constructor(private readonly source: ByteSource) {}
  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRequest(offset, length);
    const size = await this.size();
    const n = Math.max(0, Math.min(length, size - offset));
    const buf = new Uint8Array(n);
    const got = n ? await this.source.read(buf, offset) : 0;
    return buf.subarray(0, got);
  }
  size(): Promise<number> {
    return (this.sizeCache ??= this.source.size());
  }
  async tail(length: number): Promise<Uint8Array> {
    const size = await this.size();
    const n = Math.min(length, TAIL_KEEP, size);
    return this.read(size - n, n);
  }
}

interface Capture {
  offset: number;
  buf: Uint8Array;
  /** Bytes filled from the start of buf. */
  filled: number;
  resolve(b: Uint8Array): void;
}

/**
 * A forward-only stream fed with push(). Reads for ranges ahead of the stream wait until the
 * stream passes them (or ends); reads inside the retained head are served at any time.
 */
export class StreamReader implements InspectReader {
  private pos = 0;
  private ended = false;
  private captures: Capture[] = [];
  private readonly head = new Uint8Array(HEAD_KEEP);
  private readonly tailBuf = new Uint8Array(TAIL_KEEP);
  private tailLen = 0;
  private endWaiters: Array<() => void> = [];

  /** Bytes pushed so far. */
  get position(): number { return this.pos; }
  /** Some inspector is waiting for bytes the stream has not reached yet. */
  get waiting(): boolean { return this.captures.length > 0; }

  read(offset: number, length: number): Promise<Uint8Array> {
    try {
      checkRequest(offset, length);
    } catch (e) {
      return Promise.reject(e);
    }
    const end = offset + length;
    const headEnd = Math.min(this.pos, HEAD_KEEP);
    // The first part of the range that the retained head already holds.
    const fromHead = offset < headEnd ? Math.min(length, headEnd - offset) : 0;
    const rest = offset + fromHead;
    if (fromHead === length) return Promise.resolve(this.head.slice(offset, end));
    if (this.ended) {
      if (rest >= this.pos) return Promise.resolve(this.head.slice(offset, offset + fromHead));
      const tailStart = this.pos - this.tailLen;
      if (fromHead === 0 && offset >= tailStart) {
        return Promise.resolve(this.tailBuf.slice(offset - tailStart, Math.min(end, this.pos) - tailStart));
      }
    }
    if (rest < this.pos) {
      return Promise.reject(new DiskError('ELIMIT', `inspector read at offset ${offset} comes after the stream passed it (at ${this.pos})`));
    }
    return new Promise((resolve) => {
      const buf = new Uint8Array(length);
      if (fromHead) buf.set(this.head.subarray(offset, rest));
      this.captures.push({ offset, buf, filled: fromHead, resolve });
    });
  }

  size(): Promise<number> {
    if (this.ended) return Promise.resolve(this.pos);
    return new Promise((resolve) => this.endWaiters.push(() => resolve(this.pos)));
  }

  async tail(length: number): Promise<Uint8Array> {
    await this.size();
    const n = Math.min(length, this.tailLen);
    return this.tailBuf.slice(this.tailLen - n, this.tailLen);
  }

  /** Feed the next bytes of the stream. */
  push(chunk: Uint8Array): void {
    if (this.ended) throw new Error('StreamReader: push after end');
    const start = this.pos;
    const end = start + chunk.length;
    if (start < HEAD_KEEP) this.head.set(chunk.subarray(0, Math.min(chunk.length, HEAD_KEEP - start)), start);
    if (this.captures.length) {
      const done: Capture[] = [];
      for (const c of this.captures) {
        const want = c.offset + c.filled;
        if (want >= end || want < start) continue;
        const n = Math.min(end - want, c.buf.length - c.filled);
        c.buf.set(chunk.subarray(want - start, want - start + n), c.filled);
        c.filled += n;
        if (c.filled === c.buf.length) done.push(c);
      }
      if (done.length) {
        this.captures = this.captures.filter((c) => !done.includes(c));
        for (const c of done) c.resolve(c.buf);
      }
    }
    // Keep the last TAIL_KEEP bytes.
    if (chunk.length >= TAIL_KEEP) {
      this.tailBuf.set(chunk.subarray(chunk.length - TAIL_KEEP));
      this.tailLen = TAIL_KEEP;
    } else {
      const keep = Math.min(this.tailLen, TAIL_KEEP - chunk.length);
      this.tailBuf.copyWithin(0, this.tailLen - keep, this.tailLen);
      this.tailBuf.set(chunk, keep);
      this.tailLen = keep + chunk.length;
    }
    this.pos = end;
  }

  /** The stream is complete: pending reads get what exists, size() and tail() resolve. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const c of this.captures) c.resolve(c.buf.subarray(0, c.filled));
    this.captures = [];
    for (const w of this.endWaiters) w();
    this.endWaiters = [];
  }
}
