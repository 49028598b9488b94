/**
 * Loader for the hostio native addon (native/hostio.c, built by build.mjs at install/build
 * time). `hostio` is null when the addon could not be built or loaded; callers then fall
 * back to portable behaviour (report everything as data, write zeroes instead of punching).
 */
import { fileURLToPath } from 'node:url';

export interface HostIo {
  /**
   * lseek(SEEK_DATA) (`whence` 0) or lseek(SEEK_HOLE) (`whence` 1) from `offset`.
   * Returns -1 when no data follows `offset` (ENXIO). Throws an Error with an errno `code`.
   */
  seek(fd: number, offset: number, whence: 0 | 1): number;
  /** fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeroes and frees its blocks. */
  punchHole(fd: number, offset: number, length: number): void;
  /** fallocate(ZERO_RANGE): the range reads as zeroes, blocks stay allocated. */
  zeroRange(fd: number, offset: number, length: number): void;
  /** fallocate(0): allocate blocks (extends the file when the range passes its end). */
  allocate(fd: number, offset: number, length: number): void;
  /**
   * fallocate(KEEP_SIZE) on a libuv I/O thread: reserve the blocks of a range about to be
   * written (the file's size is left to the write). Rejects with an errno `code`.
   * Optional: an addon built before it existed lacks it.
   */
  reserve?(fd: number, offset: number, length: number): Promise<void>;
  /**
   * pread(2) into `view` at `offset` on a libuv I/O thread, repeated until the view is full or
   * the file ends; resolves with the bytes read. Rejects with an errno `code` and strerror's
   * message. Much cheaper on the main thread than fs/promises' FileHandle.read. Optional, as
   * reserve is.
   */
  read?(fd: number, view: Uint8Array, offset: number): Promise<number>;
  /**
   * copy_file_range(2) of `length` bytes from `fdIn` at `offsetIn` to `fdOut` at `offsetOut`, on
   * a libuv I/O thread, until all are copied (qemu-img convert -C). Rejects with an errno
   * `code`: ENOSPC when the kernel copies nothing (the source ended), ENOTSUP without the
   * system call, EXDEV and the like where the kernel refuses the pair. Optional, as reserve is.
   */
  copyRange?(fdIn: number, offsetIn: number, fdOut: number, offsetOut: number, length: number): Promise<void>;
  /**
   * fcntl(F_SETLK, F_WRLCK) on the whole file, without waiting: true when taken, false when
   * another process holds it (the record lock oslo.concurrency's external locks use). Released
   * when the fd closes. Optional, as reserve is.
   */
  tryLock?(fd: number): boolean;
  /**
   * On a libuv I/O thread, free the file's cached pages (posix_fadvise DONTNEED) when cachestat
   * (Linux 6.5) says none is dirty or under writeback; otherwise (or without cachestat) do
   * nothing. The content is untouched. Rejects with an errno `code` (EBADF). Optional, as
   * reserve is.
   */
  dropCleanCache?(fd: number): Promise<void>;
  /**
   * renameat2(RENAME_EXCHANGE): the two names swap their files at once. Throws with an errno
   * `code` (EINVAL / EOPNOTSUPP where the filesystem cannot, ENOSYS on old kernels, ENOENT).
   * Optional, as reserve is.
   */
  exchange?(pathA: string, pathB: string): void;
  /** Where the view's first byte lies within its memory page (address modulo 4096). */
  pageOffset(view: Uint8Array): number;
  /**
   * Where the first all-zero block of `view` starts, of the blocks [from + k * blockSize,
   * from + (k + 1) * blockSize) (the last cut at the view's end); the view's length when none
   * is. Optional, as reserve is.
   */
  zeroBlock?(view: Uint8Array, from: number, blockSize: number): number;
  /**
   * A serial writer for `fd`: a thread of its own makes the writes queued to it one at a time,
   * in queue order (as qemu-img convert writes its target). Optional, as reserve is.
   */
  openWriter?(fd: number): Writer;
  /**
   * Queue one pwritev of `views` at `offset`, with `reserve` first reserving its range as
   * reserve() does (a file that refuses stops being asked). Resolves once written; rejects
   * with an errno `code` and strerror's message. The views must not change until then.
   */
  writerWrite?(writer: Writer, views: Uint8Array[], offset: number, reserve: boolean): Promise<void>;
  /** Settles once every queued write has been made and the writer's thread has ended. */
  closeWriter?(writer: Writer): Promise<void>;
  /**
   * Inflate raw deflate streams on a libuv worker thread. `views` alternates inputs and
   * outputs ([in0, out0, in1, out1, ...]); each input fills its output until its stream ends or
   * the output is full, and bytes after a stream's end are ignored. Result i: the bytes written
   * into output i, or zlib's message when input i is not valid deflate data. The views must not
   * change until the promise settles. Optional, as reserve is.
   */
  inflateRaw?(views: Uint8Array[]): Promise<(number | string)[]>;
  /**
   * AES-XTS over the 512-byte sectors of `data`, in place, on a libuv worker thread (Node's own
   * OpenSSL). Sector i's IV is firstSector + i, little-endian (`ivBits` 32: modulo 2^32, LUKS's
   * "plain"; 64: "plain64"). `key` holds both XTS keys (32 or 64 bytes). `data` must not change
   * until the promise settles. Absent when the addon is older or Node does not export OpenSSL.
   */
  xtsSectors?(key: Uint8Array, data: Uint8Array, firstSector: number, ivBits: 32 | 64, encrypt: boolean): Promise<void>;
  /**
   * A message digest of a stream (Node's own OpenSSL), its updates on a libuv worker thread:
   * `digestUpdate` resolves once the views are hashed, in order (they must not change until
   * then; the array is read at the call), and throws
   * EBUSY while the handle's previous update runs; `digestFinal` gives the digest once.
   * Absent when the addon is older or Node does not export OpenSSL.
   */
  digestOpen?(algorithm: 'md5' | 'sha512'): Digest;
  digestUpdate?(digest: Digest, views: Uint8Array[]): Promise<void>;
  digestFinal?(digest: Digest): Uint8Array;
}

/** An opaque digest handle. */
export type Digest = { readonly __hostioDigest: unique symbol };

/** An opaque serial-writer handle. */
export type Writer = { readonly __hostioWriter: unique symbol };

function load(): { hostio: HostIo | null; loadError?: string } {
  if (process.platform !== 'linux') return { hostio: null, loadError: `not supported on ${process.platform}` };
  try {
    // dist/src/index.js → ../../build/hostio.node (the CLI's bundle defines import.meta.url as
    // this file's place, see packages/cli/build.mjs). process.dlopen: require() would first set
    // up the CommonJS loader, a few milliseconds of every command's start-up.
    const addon = { exports: {} as HostIo };
    process.dlopen(addon, fileURLToPath(new URL('../../build/hostio.node', import.meta.url)));
    return { hostio: addon.exports };
  } catch (e) {
    return { hostio: null, loadError: (e as Error).message };
  }
}

const loaded = load();
export const hostio: HostIo | null = loaded.hostio;
/** Why the addon is unavailable (for diagnostics and for tests that require it). */
export const hostioLoadError: string | undefined = loaded.loadError;

/**
 * A zero-filled buffer of `size` bytes whose first byte starts a memory page, as qemu-img's
 * I/O buffers do: the kernel copies page-cache data into (and out of) page-aligned user memory
 * several times faster on some CPUs (AMD EPYC here: 2 GiB of 2 MiB preads took 0.9 s of system
 * time into Node's default allocation, 0.2 s into an aligned one). Without the addon, a plain
 * buffer. `shared`: backed by a SharedArrayBuffer, for worker threads to read.
 */
export function pageAlignedBytes(size: number, options: { shared?: boolean } = {}): Uint8Array {
  const Backing = options.shared ? SharedArrayBuffer : ArrayBuffer;
  if (!hostio?.pageOffset) return new Uint8Array(new Backing(size)); // (an addon built before pageOffset existed)
  const backing = new Backing(size + 4096);
  const skip = (4096 - hostio.pageOffset(new Uint8Array(backing, 0, 1))) % 4096;
  return new Uint8Array(backing, skip, size);
}
