/** What every `diskhub img` command shares: errors and exit codes, opening images, --output. */
// The engine's modules by name rather than its index (which loads every filesystem reader,
// the inspectors and the linters): what `info` loads is its start-up (BENCHMARKS.md, issue 22).
import type { Image, OpenImageOptions } from '@diskhub/disk';
import { isDiskError } from '@diskhub/disk/errors';
import { SNAPSHOT_NOT_FOUND } from '@diskhub/disk/format';
import { openImage } from '@diskhub/disk/open';
import { writeSync } from 'node:fs';
import { UsageError } from './getopt.js';

/** A failure with qemu-img's message (printed after "qemu-img: ") and exit code. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) { super(message); }
}

export type OutputFormat = 'human' | 'json';

export function parseOutputFormat(arg: string | undefined): OutputFormat {
  if (arg === 'human' || arg === 'json') return arg;
  throw new UsageError('--output must be used with human or json as argument.', false);
}

/** Open an image (and its chain) the way the command line names it; errors read like qemu-img's. */
export async function openCliImage(path: string, options: OpenImageOptions = {}, display = path): Promise<Image> {
  try {
    // A qcow2 external data file is another file the image makes us read: only on request.
    return await openImage(path, { allowExternalData: process.env.DISKHUB_ALLOW_EXTERNAL_DATA === '1', ...options });
  } catch (e) {
    if (isDiskError(e, 'EUNSAFE')) throw new CliError(`Could not open '${display}': ${e.message}; set DISKHUB_ALLOW_EXTERNAL_DATA=1 to allow it`);
    // qemu-img loads -l snapshots after opening, so a missing one is not an open failure.
    if (options.snapshot !== undefined && isDiskError(e, 'ENOENT') && e.message === SNAPSHOT_NOT_FOUND) {
      throw new CliError(`Failed to load snapshot: ${SNAPSHOT_NOT_FOUND}`);
    }
    throw new CliError(`Could not open '${display}': ${errorMessage(e)}`);
  }
}

/**
 * Reads up to this size are made on the main thread by the commands that walk a filesystem
 * inside an image (ls, copy-out, inspect, lint; not cat, whose data reads read ahead on the
 * I/O threads): their metadata reads are small and each depends on the last, so a trip to the
 * I/O threads per read cost more than the read.
 */
export const FILESYSTEM_BLOCKING_READ_MAX = 64 * 1024;

export function errorMessage(e: unknown): string {
  if (isDiskError(e) || e instanceof Error) return e.message;
  return String(e);
}

/**
 * Text to standard output or error with plain write(2) calls. Creating Node's process.stdout
 * stream loads its stream machinery (9 M instructions of `img info`'s start-up under callgrind,
 * 15 M when stdout is a pipe) for what is, for most commands, one short report. Once a
 * command takes the stream itself (stdoutStream: long listings that wait for a slow reader),
 * or a write would block (a non-blocking descriptor), the text goes through the stream, so
 * that nothing overtakes what it still holds.
 */
function writeText(fd: 1 | 2, s: string): void {
  if (streams[fd]) { streams[fd]!.write(s); return; }
  const bytes = Buffer.from(s);
  for (let done = 0; done < bytes.length;) {
    try {
      done += writeSync(fd, bytes, done);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') { takeStream(fd).write(bytes.subarray(done)); return; }
      if (code === 'EPIPE') {
        if (fd === 1) exitOnClosedStdout(e as NodeJS.ErrnoException);
        return; // nobody is reading the messages
      }
      throw e;
    }
  }
}

const streams: { 1?: NodeJS.WriteStream; 2?: NodeJS.WriteStream } = {};

/** A reader that went away (`diskhub img map ... | head`): stop quietly, as qemu-img dies of SIGPIPE. */
function exitOnClosedStdout(e: NodeJS.ErrnoException): void {
  if (e.code === 'EPIPE') process.exit(128 + 13);
  throw e;
}

function takeStream(fd: 1 | 2): NodeJS.WriteStream {
  if (fd === 1 && !streams[1]) process.stdout.on('error', exitOnClosedStdout);
  return (streams[fd] ??= fd === 1 ? process.stdout : process.stderr);
}

/** process.stdout, for a command that writes a lot and waits for 'drain'; out() then writes through it too. */
export const stdoutStream = (): NodeJS.WriteStream => takeStream(1);

export const out = (s: string): void => writeText(1, s);

/**
 * Batched stdout for long listings (map of a fragmented image): text is written in blocks of
 * about 64 KiB and waits for a slow reader, so memory stays bounded whatever the output size.
 */
export class OutputBuffer {
  private parts: string[] = [];
  private size = 0;
  async add(s: string): Promise<void> {
    this.parts.push(s);
    this.size += s.length;
    if (this.size >= 64 * 1024) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const text = this.parts.join('');
    this.parts = [];
    this.size = 0;
    const stdout = stdoutStream();
    if (!stdout.write(text)) await new Promise<void>((resolve) => stdout.once('drain', resolve));
  }
}
export const err = (s: string): void => writeText(2, s);
/** qemu-img's warn_report: "qemu-img: warning: ..." on stderr. */
export const warn = (message: string): void => err(`qemu-img: warning: ${message}\n`);

/**
 * What qemu-img prints when it opens a probed raw image for writing (its block 0 guard), so
 * that commands writing an image stay output-compatible.
 */
export function warnProbedRaw(filename: string): void {
  err(`WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
    '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
    "         Specify the 'raw' format explicitly to remove the restrictions.\n");
}

/** Print an error as qemu-img does and return its exit code. */
export function report(e: unknown, defaultCode = 1): number {
  if (e instanceof UsageError) {
    err(`qemu-img: ${e.message}\n`);
    if (e.tryHelp) err(`Try 'qemu-img --help' for more information\n`);
    return 1;
  }
  if (e instanceof CliError) {
    err(`qemu-img: ${e.message}\n`);
    return e.exitCode;
  }
  err(`qemu-img: ${errorMessage(e)}\n`);
  return defaultCode;
}

/** qemu-img's progress display: "    (12.34/100%)\r", redrawn when it moves by 1% or more. */
export class Progress {
  private last = -1;
  constructor(private readonly enabled: boolean) {}
  update(done: number, total: number): void {
    if (!this.enabled) return;
    const pct = total > 0 ? (done / total) * 100 : 100;
    if (this.last >= 0 && pct < 100 && pct - this.last < 1) return;
    this.last = pct;
    out(`    (${pct.toFixed(2)}/100%)\r`);
  }
  finish(): void {
    if (!this.enabled) return;
    out('    (100.00/100%)\r\n');
  }
}

export const CACHE_MODES = ['none', 'writeback', 'unsafe', 'directsync', 'writethrough'];

/** `-t` / `-T` cache modes: accepted and validated like qemu-img's (we always use the page cache). */
export function checkCacheMode(mode: string | undefined, source: boolean, exitCode = 1): void {
  if (mode === undefined || CACHE_MODES.includes(mode)) return;
  throw new CliError(`Invalid ${source ? 'source ' : ''}cache option: ${mode}`, exitCode);
}
