/**
 * Image data stores. The local file store keeps each image's data in one file under
 * <data dir>/images/; an upload is written to a temporary name in the same directory and
 * renamed into place only once it is complete and verified, so a reader (or a restart after
 * a crash) never sees partial data under an image's name.
 */
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import { pageAlignedBytes } from '@diskhub/disk';

export interface StagedWrite {
  /** The key the data will have once committed. */
  readonly tempKey: string;
  readonly path: string;
  /**
   * Append chunks (the caller keeps at most one write in flight). Whole zero blocks are not
   * written (the file store leaves holes), so a call should end on a block boundary (1 MiB
   * batches do); a block a call leaves unfinished is written as it is.
   */
  write(chunks: Buffer[]): Promise<void>;
  /** Make the data visible under `key`. */
  commit(key: string): Promise<string>;
  /** Throw the partial data away. */
  discard(): Promise<void>;
}

export interface Store {
  readonly id: string;
  /** A fresh name for an upload's temporary data (recorded in the database before it exists). */
  newTempKey(imageId: string): string;
  /** Start writing the temporary data named `tempKey` (from newTempKey). */
  begin(tempKey: string): Promise<StagedWrite>;
  /** Write the data (or bytes start..end, inclusive) to `out`, and end it. */
  send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void>;
  size(location: string): Promise<number>;
  /** Local path of committed data, for inspection by the disk engine. */
  pathOf(location: string): string;
  delete(location: string): Promise<void>;
  /** Remove temporary files whose name is not in `live` (left by a crash). */
  sweep(live: Set<string>): Promise<string[]>;
}

const TEMP_PREFIX = '.partial-';

export class FileStore implements Store {
  readonly id = 'file';
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  pathOf(location: string): string {
    // Locations are bare file names inside the store's directory; anything else is refused.
    if (!/^[A-Za-z0-9._-]+$/.test(location) || location.startsWith('.')) throw new Error(`bad store location '${location}'`);
    return join(this.dir, location);
  }

  newTempKey(imageId: string): string {
    return `${TEMP_PREFIX}${imageId}-${randomBytes(6).toString('hex')}`;
  }

  async begin(tempKey: string): Promise<StagedWrite> {
    if (!tempKey.startsWith(TEMP_PREFIX) || !/^[A-Za-z0-9._-]+$/.test(tempKey)) throw new Error(`bad temporary key '${tempKey}'`);
    const path = join(this.dir, tempKey);
    const fh = await open(path, 'wx', 0o644);
    let done = false;
    let closed = false;
    /** Bytes received so far: the file's size once committed (zero blocks at its end were skipped). */
    let length = 0;
    const close = async () => { if (!closed) { closed = true; await fh.close(); } };
    return {
      tempKey, path,
      write: async (chunks: Buffer[]) => {
        for (const run of dataRuns(chunks, length)) {
          let pending = run.chunks;
          let at = run.offset;
          while (pending.length) {
            const { bytesWritten } = await fh.writev(pending, at);
            pending = dropBytes(pending, bytesWritten);
            at += bytesWritten;
          }
        }
        for (const c of chunks) length += c.length;
      },
      commit: async (key: string) => {
        done = true;
        // Sets the size when the data ended in skipped zero blocks (a no-op otherwise).
        await fh.truncate(length);
        await close();
        await rename(path, this.pathOf(key));
        return key;
      },
      discard: async () => {
        if (done) return;
        done = true;
        await close().catch(() => {});
        await rm(path, { force: true });
      },
    };
  }

  /**
   * A download: 1 MiB reads into four reused page-aligned buffers, the next read in flight
   * while the socket sends the last, each buffer reused once the socket has taken its bytes.
   * Piping fs.createReadStream allocates a new buffer per read instead, and the garbage
   * collector then ran most of the time on the service's heap (perf: 1 GiB download at
   * ~900 MiB/s with about half the CPU in V8's mark-compact; see BENCHMARKS.md).
   */
  async send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void> {
    const fh = await open(this.pathOf(location), 'r');
    try {
      const end = range ? range.end + 1 : (await fh.stat()).size;
      const free: Uint8Array[] = [];
      let buffers = 0;
      let wake: (() => void) | null = null;
      const give = (buf: Uint8Array) => { free.push(buf); wake?.(); wake = null; };
      const take = async (): Promise<Uint8Array | null> => {
        while (free.length === 0 && buffers >= SEND_BUFFERS && !out.destroyed) await new Promise<void>((r) => { wake = r; });
        if (out.destroyed) return null;
        if (free.length) return free.pop()!;
        buffers++;
        return pageAlignedBytes(SEND_CHUNK);
      };
      const read = async (pos: number) => {
        const buf = await take();
        if (!buf) return null;
        const { bytesRead } = await fh.read(buf, 0, Math.min(SEND_CHUNK, end - pos), pos);
        return { buf, bytesRead };
      };
      let pos = range?.start ?? 0;
      let next = pos < end ? read(pos) : null;
      while (next) {
        const got = await next;
        // The client left, or the file is shorter than recorded.
        if (!got || got.bytesRead === 0 || out.destroyed) { if (got) give(got.buf); break; }
        pos += got.bytesRead;
        next = pos < end ? read(pos) : null;
        const { buf, bytesRead } = got;
        if (!out.write(buf.subarray(0, bytesRead), () => give(buf))) await drained(out);
      }
      if (!out.destroyed) out.end();
    } finally {
      await fh.close();
    }
  }

  async size(location: string): Promise<number> {
    return (await stat(this.pathOf(location))).size;
  }

  async delete(location: string): Promise<void> {
    await rm(this.pathOf(location), { force: true });
  }

  async sweep(live: Set<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.dir)) {
      if (name.startsWith(TEMP_PREFIX) && !live.has(name)) {
        await rm(join(this.dir, name), { force: true });
        removed.push(name);
      }
    }
    return removed;
  }
}

/**
 * Upload data is written sparsely: whole ZERO_BLOCK-aligned blocks of zeroes are skipped and
 * stay holes of the new file (it is created empty, so a hole reads as zeroes), as qemu-img
 * convert leaves a raw target's zero runs unwritten. A mostly empty raw image then costs its
 * network transfer, not gigabytes of page-cache copies and disk writes. 64 KiB: small enough to
 * catch the free space of a file system image, large enough that the comparison (memcmp, which
 * stops at the first byte that differs, so dense data costs nearly nothing) stays cheap.
 */
const ZERO_BLOCK = 64 * 1024;
const ZEROES = Buffer.alloc(ZERO_BLOCK);

/**
 * The data of `chunks` (which start at file offset `offset`) as runs to write, zero blocks left
 * out. A block may span chunks; one that the call does not complete (at its end) is written,
 * zeroes or not, so callers write whole blocks per call (UploadHasher's batches are 1 MiB).
 */
function dataRuns(chunks: Buffer[], offset: number): { offset: number; chunks: Buffer[] }[] {
  const runs: { offset: number; chunks: Buffer[] }[] = [];
  let run: { offset: number; chunks: Buffer[] } | null = null;
  let pos = offset;
  let block: Buffer[] = [];
  let blockBytes = 0;
  const endBlock = () => {
    const zero = blockBytes === ZERO_BLOCK && block.every((p) => p.equals(ZEROES.subarray(0, p.length)));
    if (zero) run = null;
    else if (run) run.chunks.push(...block);
    else runs.push(run = { offset: pos - blockBytes, chunks: [...block] });
    block = [];
    blockBytes = 0;
  };
  for (const chunk of chunks) {
    for (let at = 0; at < chunk.length;) {
      const n = Math.min(chunk.length - at, ZERO_BLOCK - (pos % ZERO_BLOCK));
      block.push(chunk.subarray(at, at + n));
      blockBytes += n;
      pos += n;
      at += n;
      if (pos % ZERO_BLOCK === 0) endBlock();
    }
  }
  if (blockBytes) endBlock();
  // Adjacent pieces of one chunk become one view again, so a run is a few writev entries.
  for (const r of runs) {
    const merged: Buffer[] = [];
    for (const p of r.chunks) {
      const last = merged[merged.length - 1];
      if (last && last.buffer === p.buffer && last.byteOffset + last.length === p.byteOffset) merged[merged.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + p.length);
      else merged.push(p);
    }
    r.chunks = merged;
  }
  return runs;
}

/** The chunks left after the first `n` bytes were written (a short writev). */
function dropBytes(chunks: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < chunks.length && n >= chunks[i]!.length) { n -= chunks[i]!.length; i++; }
  const rest = chunks.slice(i);
  if (n > 0 && rest.length) rest[0] = rest[0]!.subarray(n);
  return rest;
}

const SEND_CHUNK = 1 << 20;
const SEND_BUFFERS = 4;

/** Resolves when `out` wants more data, or is closed. */
export function drained(out: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (out.destroyed) { resolve(); return; }
    const done = () => { out.off('drain', done); out.off('close', done); resolve(); };
    out.on('drain', done);
    out.on('close', done);
  });
}
