/**
 * Byte sources: the bottom of the block-device stack. A ByteSource is a host file (or
 * buffer, or remote object) addressed by byte offset; format drivers read their metadata
 * and data clusters from one.
 */
import { constants as fsConstants, readSync } from 'node:fs';
import { hostio, type Writer } from '@diskhub/hostio';
/** Page-aligned I/O buffers (much cheaper kernel copies on some CPUs; see hostio). */
export { pageAlignedBytes } from '@diskhub/hostio';
import { DiskError, fromNodeError } from './errors.js';
import * as hostFs from './host-fs.js';

/** A run of the host file that holds data (`data: true`) or is a hole (`data: false`). */
export interface HostExtent {
  offset: number;
  length: number;
  data: boolean;
}

export interface ByteSource {
  /** Human-readable name (a path for files); used in messages and as the base for relative backing paths. */
  readonly name: string;
  readonly readOnly: boolean;
  /** Current length of the source in bytes. */
  size(): Promise<number>;
  /** Read up to buf.length bytes at offset; returns the count (short only at end of source). */
  read(buf: Uint8Array, offset: number): Promise<number>;
  /**
   * The same as read, blocking (a pread on the calling thread); optional. For batch walks
   * over thousands of small tables (check), where a round trip to the I/O threads per table
   * costs more than the read itself. Never used on a server's request path.
   */
  readSync?(buf: Uint8Array, offset: number): number;
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** Write buffers back to back from `offset` (one pwritev for files); optional. */
  writev?(bufs: Uint8Array[], offset: number): Promise<void>;
  truncate(size: number): Promise<void>;
  /**
   * Copy `length` bytes of `from` at `fromOffset` to `offset` of this source inside the kernel
   * (copy_file_range; `qemu-img convert -C`). Optional: only a host file can, and only from
   * another host file; EUNSUPPORTED (or the kernel's refusal, as EIO) where it cannot, and the
   * caller then reads and writes instead.
   */
  copyFrom?(from: ByteSource, fromOffset: number, offset: number, length: number): Promise<void>;
  /**
   * Which parts of [offset, offset+length) hold data and which are holes (SEEK_DATA /
   * SEEK_HOLE). Sources that cannot tell report everything as data.
   */
  hostExtents(offset: number, length: number): AsyncIterable<HostExtent>;
  /** Make a range a hole if the source can (fallocate PUNCH_HOLE); otherwise write zeroes. */
  punchHole(offset: number, length: number): Promise<void>;
  /**
   * Reserve space for a range (fallocate; `preallocation=falloc`), extending the source when
   * the range passes its end. Sources that cannot reserve space just extend their size.
   */
  allocate(offset: number, length: number): Promise<void>;
  /** Bytes the source occupies on the host (st_blocks * 512 for files). */
  allocatedSize(): Promise<number>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Host-file preallocation of [offset, offset+length) (QEMU's file-level falloc / full): the
 * blocks reserved, or written with zeroes. 'off' (or metadata, which means nothing for a host
 * file) does nothing.
 */
export async function preallocateHostRange(source: ByteSource, offset: number, length: number, mode: string): Promise<void> {
  if (length <= 0) return;
  if (mode === 'falloc') await source.allocate(offset, length);
  else if (mode === 'full') {
    const zeroes = new Uint8Array(Math.min(length, 4 << 20));
    for (let at = 0; at < length; at += zeroes.length) await source.write(zeroes.subarray(0, Math.min(zeroes.length, length - at)), offset + at);
  }
}

/** Read exactly buf.length bytes or throw ETRUNCATED naming what was being read. */
export async function readExact(src: ByteSource, buf: Uint8Array, offset: number, what: string): Promise<void> {
  const n = await src.read(buf, offset);
  if (n !== buf.length) {
    throw new DiskError('ETRUNCATED', `${src.name}: ${what} at offset ${offset} (${buf.length} bytes) extends past the end of the file`);
  }
}

const ZERO_CHUNK = new Uint8Array(1 << 20);

/** Bytes handed to a driver's probe(): enough for every header we detect (ISO 9660's volume descriptor is at 32 KiB). */
export const PROBE_BYTES = 64 * 1024;

/** The first bytes of a source, for probing its format (shorter when the source is). */
export async function readHead(source: ByteSource, bytes = PROBE_BYTES): Promise<Uint8Array> {
  const head = new Uint8Array(bytes);
  const n = await source.read(head, 0);
  return head.subarray(0, n);
}

export interface FileSourceOptions {
  readOnly?: boolean;
  /** Create (or truncate) the file. */
  create?: boolean;
  /** With create: fail if the file exists. */
  exclusive?: boolean;
  /** flush() does nothing (cache=unsafe). */
  noFlush?: boolean;
  /**
   * Reserve the blocks of each large write just before making it (fallocate KEEP_SIZE, on an
   * I/O thread), for a file being filled as a convert target is: ext4 then skips its per-page
   * delayed-allocation work (a fifth less system time for 2 GiB written in 1 MiB pieces; the
   * size stays the writes' own). Stops silently where the file refuses it. BENCHMARKS.md has
   * the measurements.
   */
  reserveWrites?: boolean;
  /**
   * Make the writes one at a time, in the order they are issued, on a thread of the file's own
   * (hostio's serial writer), as qemu-img convert writes its target: concurrent writes to one
   * file only take turns on its inode lock (a tenth of a convert's CPU spent spinning there, on
   * two cores), and the next write starts without waiting for the main thread. Without the
   * addon, writes go to the I/O thread pool as usual.
   */
  serialWrites?: boolean;
  /**
   * Reads of at most this many bytes are made on the calling thread (a blocking pread) instead
   * of the I/O thread pool. A walk of a filesystem's metadata (`img ls -lR`: thousands of 4 KiB
   * directory blocks and inode table pieces, each needed before the next is known) otherwise
   * pays a round trip to the pool per read, which costs far more than a pread from the page
   * cache. For command-line tools only: a server must not block its event loop.
   */
  blockingReadMax?: number;
}

/** Writes smaller than this are not worth a reservation (one more trip to the I/O threads). */
const RESERVE_MIN = 256 << 10;

export class FileSource implements ByteSource {
  readonly name: string;
  readonly readOnly: boolean;
  /** Cleared when the filesystem refuses SEEK_DATA / PUNCH_HOLE, so we stop asking. */
  private seekWorks = true;
  private punchWorks = true;
  private readonly noFlush: boolean;
  /** reserveWrites, until the file refuses a reservation. */
  private reserving: boolean;
  /** The serial writer (serialWrites; cleared once closed), and the last write queued to it: its writes finish in order. */
  private writer?: Writer;
  private lastWrite: Promise<unknown> = Promise.resolve();
  private readonly blockingReadMax: number;
  /**
   * Calls in flight on the descriptor, and close()'s wait for them to end: as a FileHandle's
   * close does, so that the number is never closed (and perhaps reused by the next file
   * opened) under a pending read or write.
   */
  private inFlight = 0;
  private idle?: () => void;
  private closed = false;
  /**
   * Counts changes made to the file (raised when one starts and when it ends) and the count the
   * last fdatasync covered: flush() with nothing written since is no system call, as QEMU's
   * bdrv_co_flush skips a flush when no write came after the last one (a resize paid for an
   * fdatasync of nothing).
   */
  private changes = 0;
  private flushedChanges = 0;
  private constructor(private readonly descriptor: number, name: string, readOnly: boolean, options: FileSourceOptions) {
    this.name = name;
    this.readOnly = readOnly;
    this.blockingReadMax = options.blockingReadMax ?? 0;
    this.noFlush = !!options.noFlush;
    // Creating (or truncating) the file is a change a flush must cover.
    if (options.create) this.changes = 1;
    this.reserving = !!options.reserveWrites && !readOnly && !!hostio?.reserve;
    if (options.serialWrites && !readOnly && hostio?.openWriter && hostio.writerWrite && hostio.closeWriter) this.writer = hostio.openWriter(descriptor);
  }

  static async open(path: string, options: FileSourceOptions = {}): Promise<FileSource> {
    const readOnly = options.readOnly ?? !options.create;
    let flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    if (options.create) flags |= fsConstants.O_CREAT | (options.exclusive ? fsConstants.O_EXCL : fsConstants.O_TRUNC);
    try {
      const fd = await hostFs.open(path, flags, 0o644);
      const st = await hostFs.fstat(fd).catch(async (e) => { await hostFs.close(fd); throw e; });
      if (st.isDirectory()) {
        await hostFs.close(fd);
        // QEMU's wording: its 'file' protocol driver opens regular files only.
        throw new DiskError('EINVAL', `'file' driver requires '${path}' to be a regular file`);
      }
      return new FileSource(fd, path, readOnly, options);
    } catch (e) {
      throw fromNodeError(e, path);
    }
  }

  get fd(): number { return this.descriptor; }

  /**
   * One call on the descriptor, counted for close(); after close(), EBADF as a FileHandle's.
   * `changes`: the call changes the file (see `changes`).
   */
  private call<T>(start: (fd: number) => Promise<T>, changes = false): Promise<T> {
    if (this.closed) return Promise.reject(Object.assign(new Error('file closed'), { code: 'EBADF', syscall: 'read' }));
    this.inFlight++;
    if (changes) this.changes++;
    return start(this.descriptor).finally(() => {
      if (changes) this.changes++;
      if (--this.inFlight === 0) this.idle?.();
    });
  }

  async size(): Promise<number> {
    return (await this.call(hostFs.fstat)).size;
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    if (buf.length <= this.blockingReadMax) return this.readSync(buf, offset);
    if (hostio?.read && Number.isSafeInteger(offset) && offset >= 0) {
      // One pread loop on an I/O thread: a convert reads every chunk here, and fs/promises'
      // FileHandle.read costs several times the main-thread CPU (BENCHMARKS.md, issue 22).
      // (An offset past 2^53, from a damaged table, takes the general path as before.)
      const read = hostio.read;
      return this.call((fd) => read(fd, buf, offset));
    }
    let done = 0;
    // No file reaches past 2^53 bytes (node:fs refuses such positions): a read there is past the
    // end, as a damaged table's offset can ask for.
    while (done < buf.length && offset + done <= Number.MAX_SAFE_INTEGER) {
      const bytesRead = await this.call((fd) => hostFs.read(fd, buf, done, buf.length - done, offset + done));
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  readSync(buf: Uint8Array, offset: number): number {
    let done = 0;
    try {
      while (done < buf.length) {
        const n = readSync(this.descriptor, buf, done, buf.length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
    } catch (e) {
      throw fromNodeError(e, this.name);
    }
    return done;
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: opened read-only`);
    if (this.writer) return buf.length ? this.queue([buf], offset, buf.length) : undefined;
    if (this.reserving && buf.length >= RESERVE_MIN) await this.reserve(offset, buf.length);
    let done = 0;
    while (done < buf.length) {
      const bytesWritten = await this.call((fd) => hostFs.write(fd, buf, done, buf.length - done, offset + done), true);
      done += bytesWritten;
    }
  }

  /** Several buffers at consecutive offsets in one system call (pwritev), without joining them first. */
  async writev(bufs: Uint8Array[], offset: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: opened read-only`);
    let rest = bufs.filter((b) => b.length > 0);
    const length = rest.reduce((sum, b) => sum + b.length, 0);
    if (this.writer) return length ? this.queue(rest, offset, length) : undefined;
    if (this.reserving && length >= RESERVE_MIN) await this.reserve(offset, length);
    let pos = offset;
    while (rest.length) {
      const pieces = rest;
      const bytesWritten = await this.call((fd) => hostFs.writev(fd, pieces, pos), true);
      pos += bytesWritten;
      // A short write: drop what went out and continue with the remainder.
      let skip = bytesWritten;
      while (rest.length && skip >= rest[0]!.length) { skip -= rest[0]!.length; rest = rest.slice(1); }
      if (skip && rest.length) rest = [rest[0]!.subarray(skip), ...rest.slice(1)];
    }
  }

  /** One write through the serial writer (which reserves, when asked, and finishes short writes). */
  private queue(views: Uint8Array[], offset: number, length: number): Promise<void> {
    const done = hostio!.writerWrite!(this.writer!, views, offset, this.reserving && length >= RESERVE_MIN);
    this.changes++;
    this.lastWrite = done.catch(() => {}).finally(() => { this.changes++; });
    return done;
  }

  async copyFrom(from: ByteSource, fromOffset: number, offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: opened read-only`);
    if (!(from instanceof FileSource) || !hostio?.copyRange) throw new DiskError('EUNSUPPORTED', `${this.name}: copy offloading needs two host files`);
    if (length === 0) return;
    const done = hostio.copyRange(from.fd, fromOffset, this.descriptor, offset, length);
    this.changes++;
    // truncate, flush and close wait for it as for a queued write.
    this.lastWrite = Promise.all([this.lastWrite, done.catch(() => {}).finally(() => { this.changes++; })]);
    try {
      await done;
    } catch (e) {
      throw fromNodeError(e, this.name);
    }
  }

  private async reserve(offset: number, length: number): Promise<void> {
    try {
      this.changes++;
      await hostio!.reserve!(this.descriptor, offset, length);
    } catch {
      // Not supported here (a block device, some filesystems), or no space left: the write
      // itself then reports what matters.
      this.reserving = false;
    }
  }

  async truncate(size: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: opened read-only`);
    await this.lastWrite; // the writer's writes finish in order: the last one is enough
    await this.call((fd) => hostFs.ftruncate(fd, size), true);
  }

  /**
   * SEEK_DATA/SEEK_HOLE through the hostio addon: holes cost one lseek each, never a read.
   * Past the end of the file everything is a hole. Without the addon (or on a filesystem
   * that refuses SEEK_DATA) the file is reported as data up to its end.
   */
  async *hostExtents(offset: number, length: number): AsyncIterable<HostExtent> {
    const end = offset + length;
    const size = await this.size();
    let pos = offset;
    if (hostio && this.seekWorks) {
      try {
        while (pos < end && pos < size) {
          const data = hostio.seek(this.descriptor, pos, 0);
          const dataAt = data < 0 ? size : Math.min(data, size);
          if (dataAt > pos) {
            yield { offset: pos, length: Math.min(dataAt, end) - pos, data: false };
            pos = Math.min(dataAt, end);
            if (pos >= end || pos >= size) break;
          }
          const hole = Math.min(hostio.seek(this.descriptor, pos, 1), size, end);
          // A file that changes under us could report a hole at pos; never loop in place.
          const next = hole > pos ? hole : Math.min(pos + 512, end);
          yield { offset: pos, length: next - pos, data: true };
          pos = next;
        }
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code !== 'EINVAL' && code !== 'EOPNOTSUPP') throw fromNodeError(e, this.name);
        this.seekWorks = false; // e.g. a filesystem without SEEK_DATA support
      }
    }
    if (pos < size && pos < end) {
      yield { offset: pos, length: Math.min(size, end) - pos, data: true };
      pos = Math.min(size, end);
    }
    if (end > pos) yield { offset: pos, length: end - pos, data: false };
  }

  async punchHole(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: opened read-only`);
    if (length === 0) return;
    if (hostio && this.punchWorks) {
      try {
        this.changes++;
        hostio.punchHole(this.descriptor, offset, length);
        // KEEP_SIZE leaves the size alone; a range past the end must still extend the file
        // so that it reads as zeroes of the expected length.
        if ((await this.size()) < offset + length) await this.call((fd) => hostFs.ftruncate(fd, offset + length), true);
        return;
      } catch (e) {
        if ((e as { code?: string }).code !== 'EOPNOTSUPP') throw fromNodeError(e, this.name);
        this.punchWorks = false;
      }
    }
    // Without fallocate(PUNCH_HOLE) the portable fallback is writing zeroes.
    for (let done = 0; done < length; done += ZERO_CHUNK.length) {
      await this.write(ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - done)), offset + done);
    }
  }

  async allocate(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: opened read-only`);
    if (length === 0) return;
    if (hostio) {
      try {
        this.changes++;
        hostio.allocate(this.descriptor, offset, length);
        return;
      } catch (e) {
        if ((e as { code?: string }).code !== 'EOPNOTSUPP') throw fromNodeError(e, this.name);
      }
    }
    if ((await this.size()) < offset + length) await this.call((fd) => hostFs.ftruncate(fd, offset + length), true);
  }

  async allocatedSize(): Promise<number> {
    const st = await this.call(hostFs.fstat);
    return st.blocks * 512;
  }

  async flush(): Promise<void> {
    await this.lastWrite;
    if (this.readOnly || this.noFlush || this.changes === this.flushedChanges) return;
    const covered = this.changes;
    await this.call(hostFs.fdatasync);
    this.flushedChanges = covered;
  }

  async close(): Promise<void> {
    // The writer's thread is gone before the descriptor it writes to is closed.
    const writer = this.writer;
    this.writer = undefined;
    if (writer) await hostio!.closeWriter!(writer);
    if (this.closed) return;
    this.closed = true;
    if (this.inFlight > 0) await new Promise<void>((resolve) => { this.idle = resolve; });
    await hostFs.close(this.descriptor);
  }
}

/** An in-memory byte source (tests, small images, the browser-side prober). */
export class MemorySource implements ByteSource {
  readonly readOnly: boolean;
  private buf: Uint8Array;
  private len: number;
  constructor(data: Uint8Array = new Uint8Array(0), readonly name = 'memory', readOnly = false) {
    this.buf = data;
    this.len = data.length;
    this.readOnly = readOnly;
  }
  get bytes(): Uint8Array { return this.buf.subarray(0, this.len); }
  async size(): Promise<number> { return this.len; }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    return this.readSync(buf, offset);
  }
  readSync(buf: Uint8Array, offset: number): number {
    const n = Math.max(0, Math.min(buf.length, this.len - offset));
    buf.set(this.buf.subarray(offset, offset + n));
    return n;
  }
  private ensure(size: number): void {
    if (size <= this.buf.length) return;
    const next = new Uint8Array(Math.max(size, this.buf.length * 2));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new DiskError('EROFS', `${this.name}: read-only`);
    this.ensure(offset + buf.length);
    this.buf.set(buf, offset);
    this.len = Math.max(this.len, offset + buf.length);
  }
  async truncate(size: number): Promise<void> {
    if (size > this.len) { this.ensure(size); this.buf.fill(0, this.len, size); }
    this.len = size;
  }
  async *hostExtents(offset: number, length: number): AsyncIterable<HostExtent> {
    const end = Math.min(offset + length, this.len);
    if (end > offset) yield { offset, length: end - offset, data: true };
    const from = Math.max(this.len, offset);
    if (offset + length > from) yield { offset: from, length: offset + length - from, data: false };
  }
  async punchHole(offset: number, length: number): Promise<void> {
    this.buf.fill(0, offset, Math.min(this.len, offset + length));
  }
  async allocate(offset: number, length: number): Promise<void> {
    if (offset + length > this.len) await this.truncate(offset + length);
  }
  async allocatedSize(): Promise<number> { return this.len; }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
