/**
 * `diskhub nbd`: serve an image (or one partition or LVM volume of it) over NBD, with
 * qemu-nbd's options. Differences on purpose: it binds to 127.0.0.1 unless told otherwise
 * (qemu-nbd binds to every interface), and `--lv VG/LV` selects a logical volume.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, rmSync, writeFileSync, writeSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { closeChain, createImage, openImage, openInside, type Image } from '@diskhub/disk';
import { NbdServer } from '@diskhub/nbd';
import { getopt, UsageError } from '../img/getopt.js';

const USAGE = `usage: diskhub nbd [OPTIONS] FILE
Serve FILE (any image format diskhub reads) over the NBD protocol, like qemu-nbd.

  -p, --port=PORT          port to listen on (default 10809)
  -b, --bind=IFACE         address to bind to (default 127.0.0.1)
  -k, --socket=PATH        listen on a unix socket instead of TCP
  -x, --export-name=NAME   the export's name (default: the empty name)
  -D, --description=TEXT   a description clients can read (NBD_INFO_DESCRIPTION)
  -e, --shared=NUM         serve up to NUM clients at once (default 1)
  -t, --persistent         keep serving after the last client disconnects
  -r, --read-only          refuse writes
  -f, --format=FORMAT      the image format (probed when absent)
  -l, --load-snapshot=NAME serve an internal snapshot (read-only)
  -P, --partition=NUM      serve partition NUM (MBR/GPT, Linux numbering)
      --lv=VG/LV           serve an LVM logical volume of the image
  -s, --snapshot           serve a temporary overlay: writes never reach FILE
      --discard=MODE       ignore (default) or unmap: what TRIM does
      --detect-zeroes=MODE off (default), on or unmap: turn all-zero writes into zero writes
  -A, --allocation-depth   also offer the qemu:allocation-depth metadata context
      --pid-file=PATH      write the process id to PATH once listening
      --fork               run the server in the background; return (exit 0) once it listens
  -v, --verbose            say where the server listens (on stderr, once listening)
  -h, --help               this help
`;

const errorMessageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

function fail(message: string): number {
  process.stderr.write(`diskhub nbd: ${message}\n`);
  return 1;
}

export async function nbdMain(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = getopt(['nbd', ...argv], ':p:b:k:x:D:e:trf:l:P:Avhs', [
      { name: 'port', hasArg: 1, val: 'p' }, { name: 'bind', hasArg: 1, val: 'b' }, { name: 'socket', hasArg: 1, val: 'k' },
      { name: 'export-name', hasArg: 1, val: 'x' }, { name: 'description', hasArg: 1, val: 'D' }, { name: 'shared', hasArg: 1, val: 'e' },
      { name: 'persistent', hasArg: 0, val: 't' }, { name: 'read-only', hasArg: 0, val: 'r' }, { name: 'format', hasArg: 1, val: 'f' },
      { name: 'load-snapshot', hasArg: 1, val: 'l' }, { name: 'partition', hasArg: 1, val: 'P' }, { name: 'lv', hasArg: 1, val: 'lv' },
      { name: 'allocation-depth', hasArg: 0, val: 'A' }, { name: 'pid-file', hasArg: 1, val: 'pid-file' },
      { name: 'verbose', hasArg: 0, val: 'v' }, { name: 'help', hasArg: 0, val: 'h' }, { name: 'fork', hasArg: 0, val: 'fork' },
      { name: 'snapshot', hasArg: 0, val: 's' }, { name: 'discard', hasArg: 1, val: 'discard' }, { name: 'detect-zeroes', hasArg: 1, val: 'detect-zeroes' },
    ]);
  } catch (e) {
    if (e instanceof UsageError) return fail(e.message);
    throw e;
  }
  let port = 10809, host = '127.0.0.1', socketPath: string | undefined, name = '', description: string | undefined;
  let shared = 1, persistent = false, readOnly = false, format: string | undefined, snapshot: string | undefined;
  let partition: number | undefined, lv: string | undefined, allocationDepth = false, pidFile: string | undefined, verbose = false;
  let fork = false;
  let overlay = false, discard: 'ignore' | 'unmap' = 'ignore', detectZeroes: 'off' | 'on' | 'unmap' = 'off';
  for (const o of parsed.options) {
    switch (o.opt) {
      case 'h': process.stdout.write(USAGE); return 0;
      case 'p': port = Number(o.arg); if (!Number.isInteger(port) || port < 0 || port > 65535) return fail(`Invalid port '${o.arg}'`); break;
      case 'b': host = o.arg!; break;
      case 'k': socketPath = o.arg; break;
      case 'x': name = o.arg!; break;
      case 'D': description = o.arg; break;
      case 'e': shared = Number(o.arg); if (!Number.isInteger(shared) || shared < 1) return fail(`Invalid shared device number '${o.arg}'`); break;
      case 't': persistent = true; break;
      case 'r': readOnly = true; break;
      case 'f': format = o.arg; break;
      case 'l': snapshot = o.arg!.replace(/^snapshot\.(?:name|id)=/, ''); readOnly = true; break;
      case 'P': partition = Number(o.arg); if (!Number.isInteger(partition) || partition < 1) return fail(`Invalid partition '${o.arg}'`); break;
      case 'lv': lv = o.arg; break;
      case 'A': allocationDepth = true; break;
      case 'pid-file': pidFile = o.arg; break;
      case 'v': verbose = true; break;
      case 'fork': fork = true; break;
      case 's': overlay = true; break;
      case 'discard':
        if (o.arg !== 'ignore' && o.arg !== 'unmap' && o.arg !== 'off' && o.arg !== 'on') return fail(`Invalid discard option '${o.arg}'`);
        discard = o.arg === 'unmap' || o.arg === 'on' ? 'unmap' : 'ignore';
        break;
      case 'detect-zeroes':
        if (o.arg !== 'off' && o.arg !== 'on' && o.arg !== 'unmap') return fail(`Invalid detect-zeroes option '${o.arg}'`);
        detectZeroes = o.arg;
        break;
    }
  }
  if (parsed.positional.length !== 1) return fail('Expecting one image file name');
  if (fork) return forkServer(argv);
  const filename = parsed.positional[0]!;
  let image: Image;
  let tempDir: string | undefined;
  try {
    if (overlay && !readOnly) {
      // --snapshot: a temporary qcow2 on top of FILE takes the writes; FILE is only read.
      const base = await openImage(filename, { format, backing: false });
      const baseFormat = base.format;
      const size = base.size;
      await closeChain(base);
      tempDir = mkdtempSync(join(tmpdir(), 'diskhub-nbd-'));
      const top = join(tempDir, 'overlay.qcow2');
      await createImage(top, 'qcow2', { size, options: {}, backingFile: resolve(filename), backingFormat: baseFormat });
      image = await openImage(top, { writable: true });
    } else {
      image = await openImage(filename, { format, writable: !readOnly, ...(snapshot !== undefined ? { snapshot } : {}) });
    }
  } catch (e) {
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
    return fail(`Failed to blk_new_open '${filename}': ${errorMessageOf(e)}`);
  }
  let device;
  try {
    device = (await openInside(image, { ...(partition !== undefined ? { partition } : {}), ...(lv !== undefined ? { lv } : {}) })).device;
  } catch (e) {
    await closeChain(image);
    return fail(`Could not select ${partition !== undefined ? `partition ${partition}` : `logical volume ${lv}`}: ${errorMessageOf(e)}`);
  }
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= (async () => {
    await server.close();
    await image.flush?.().catch(() => {});
    await closeChain(image);
    if (pidFile) { try { unlinkSync(pidFile); } catch { /* gone */ } }
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  })());
  const server = new NbdServer({
    exports: [{ name, device, readOnly, ...(description ? { description } : {}), allocationDepth, discard, detectZeroes }],
    maxConnections: shared,
    onIdle: () => { if (!persistent) void stop().then(() => process.exit(0)); },
    onError: (m) => { if (verbose) process.stderr.write(`${m}\n`); },
  });
  try {
    const where = await server.listen(socketPath ? { path: socketPath } : { port, host });
    if (verbose) {
      const url = typeof where === 'string' ? `nbd+unix:///${name}?socket=${where}` : `nbd://${where.address}:${where.port}/${name}`;
      process.stderr.write(`serving '${filename}' at ${url}\n`);
    }
  } catch (e) {
    await closeChain(image);
    return fail(`Failed to listen: ${errorMessageOf(e)}`);
  }
  if (pidFile) writeFileSync(pidFile, `${process.pid}\n`);
  signalReady();
  await new Promise<void>((resolve) => {
    const onSignal = () => { void stop().then(resolve); };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  });
  return 0;
}

/** The file descriptor a forked server reports readiness on (set by forkServer in the child's environment). */
const READY_FD_ENV = 'DISKHUB_NBD_READY_FD';

/** In a server started by --fork: tell the parent it listens, and let the parent go. */
function signalReady(): void {
  const fd = Number(process.env[READY_FD_ENV]);
  if (!Number.isInteger(fd) || fd < 3) return;
  delete process.env[READY_FD_ENV];
  // The parent stops relaying our stderr once we are ready: later messages have nowhere to go.
  process.stderr.on('error', () => {});
  try { writeSync(fd, 'ready\n'); closeSync(fd); } catch { /* the parent is gone: keep serving */ }
}

/**
 * --fork, as qemu-nbd: the server runs in a detached child; this process relays the child's
 * messages until it listens (exit 0; the pid file, if asked for, already names the child) or
 * fails (exit 1). The child holds none of our stdio afterwards, so a script (or a test runner
 * waiting for our output to end) can go on as soon as the command returns.
 */
function forkServer(argv: string[]): Promise<number> {
  const args = argv.filter((a) => a !== '--fork');
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, 'nbd', ...args], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, [READY_FD_ENV]: '3' },
  });
  return new Promise<number>((resolve) => {
    let said = '';
    const messages = child.stderr!;
    messages.on('data', (d: Buffer) => process.stderr.write(d));
    const ready = child.stdio[3] as NodeJS.ReadableStream;
    ready.on('data', (d: Buffer) => {
      said += d.toString();
      if (said.includes('ready')) {
        ready.removeAllListeners();
        (ready as unknown as { destroy(): void }).destroy();
        messages.removeAllListeners('data');
        messages.destroy();
        child.removeAllListeners('exit');
        child.unref();
        resolve(0);
      }
    });
    ready.on('error', () => {});
    child.on('exit', (code) => resolve(code === 0 ? 1 : code ?? 1));
  });
}
