/**
 * The host file system calls the engine makes, as promises over node:fs's callback functions
 * rather than node:fs/promises: loading that module (with the readline, stream and watcher
 * modules it loads) was 4.7 M instructions of every command's start-up under callgrind, a
 * tenth of what `img info` adds to Node's own start (BENCHMARKS.md, issue 22). The calls are
 * the same libuv requests on the same I/O threads, and fail with the same errors.
 */
import { close as fsClose, fdatasync as fsFdatasync, fstat as fsFstat, ftruncate as fsFtruncate, open as fsOpen, read as fsRead, stat as fsStat, unlink as fsUnlink, write as fsWrite, writev as fsWritev, type Stats } from 'node:fs';

type Callback<T> = (e: NodeJS.ErrnoException | null, value: T) => void;

function call<T>(start: (done: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => start((e, value) => (e ? reject(e) : resolve(value))));
}

export const stat = (path: string): Promise<Stats> => call((done) => fsStat(path, done));
export const unlink = (path: string): Promise<void> => call<void>((done) => fsUnlink(path, (e) => done(e, undefined)));
export const open = (path: string, flags: number, mode: number): Promise<number> => call((done) => fsOpen(path, flags, mode, done));
export const fstat = (fd: number): Promise<Stats> => call((done) => fsFstat(fd, done));
export const read = (fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> =>
  call((done) => fsRead(fd, buf, at, length, position, done));
export const write = (fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> =>
  call((done) => fsWrite(fd, buf, at, length, position, done));
export const writev = (fd: number, bufs: Uint8Array[], position: number): Promise<number> => call((done) => fsWritev(fd, bufs, position, done));
export const ftruncate = (fd: number, size: number): Promise<void> => call<void>((done) => fsFtruncate(fd, size, (e) => done(e, undefined)));
export const fdatasync = (fd: number): Promise<void> => call<void>((done) => fsFdatasync(fd, (e) => done(e, undefined)));
export const close = (fd: number): Promise<void> => call<void>((done) => fsClose(fd, (e) => done(e, undefined)));
