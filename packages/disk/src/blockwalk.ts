/**
 * Helpers shared by the drivers of block-mapped formats (vdi, vpc, vhdx): walking a byte range
 * block by block, and running metadata-changing writes one after another.
 */
import { DiskError } from './errors.js';
import type { ByteSource } from './source.js';

/** One piece of a byte range that lies inside a single block. */
export interface BlockPiece {
  /** Virtual offset of the piece. */
  pos: number;
  block: number;
  inBlock: number;
  length: number;
}

export function* blockPieces(offset: number, length: number, blockSize: number): Generator<BlockPiece> {
  for (let pos = offset; pos < offset + length;) {
    const inBlock = pos % blockSize;
    const n = Math.min(offset + length - pos, blockSize - inBlock);
    yield { pos, block: Math.floor(pos / blockSize), inBlock, length: n };
    pos += n;
  }
}

/** Host bytes; past the end of the file they read as zeroes (QEMU's file layer does the same). */
export async function readHostOrZero(source: ByteSource, buf: Uint8Array, at: number): Promise<void> {
  const got = await source.read(buf, at);
  if (got < buf.length) buf.fill(0, got);
}

/** Runs tasks strictly one after another (allocation appends and rewrites tables); a failed task does not block later ones. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => {});
    return next;
  }
  /** Resolves when everything queued so far has finished. */
  async idle(): Promise<void> {
    await this.tail;
  }
}

/**
 * What vdi and vpc images share: a host file, writes serialised through one queue, and the
 * read-only guard. Subclasses implement the format.
 */
export abstract class QueuedWriteImage {
  /** Writes run one after another: allocation appends at the end and rewrites tables. */
  protected readonly writeQueue = new SerialQueue();
  constructor(readonly source: ByteSource, protected readonly writable: boolean) {}

  async flush(): Promise<void> {
    await this.writeQueue.idle();
    if (this.writable) await this.source.flush();
  }

  async close(): Promise<void> {
    await this.writeQueue.idle();
    await this.source.close();
  }

  protected checkWritable(): void {
    if (!this.writable) throw new DiskError('EROFS', `${this.source.name}: image is opened read-only`);
  }
}

/** A run of a virtual disk stored at `host` in the image file, or (no host) reading as zeroes. */
export interface HostRun {
  pos: number;
  length: number;
  host?: number;
}

/**
 * Fill `buf` (virtual offset `offset`) from runs covering it in order; bytes past the end of
 * the file read as zeroes, as QEMU's file layer returns them (parallels, bochs).
 */
export async function readHostRuns(source: ByteSource, buf: Uint8Array, offset: number, runs: Iterable<HostRun> | AsyncIterable<HostRun>): Promise<void> {
  for await (const r of runs) {
    const part = buf.subarray(r.pos - offset, r.pos - offset + r.length);
    if (r.host === undefined) { part.fill(0); continue; }
    const got = await source.read(part, r.host);
    if (got < part.length) part.fill(0, got);
  }
}
