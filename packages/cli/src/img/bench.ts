/**
 * `diskhub img bench`: qemu-img bench. `count` requests of `-s` bytes (reads, or with `-w`
 * writes of the `--pattern` byte), `-d` of them in flight, at offsets advancing by `-S` from
 * `-o` and wrapping at the end of the image; with `--flush-interval` a flush every so many
 * requests (after draining the queue unless `--no-drain`). Prints what qemu-img prints. The
 * cache (`-t`) and AIO (`-n`, `-i`) modes are validated as qemu-img validates them; diskhub
 * always goes through the page cache with its own I/O threads.
 */
import { closeChain, isDiskError, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CACHE_MODES, CliError, openCliImage, out } from './common.js';
import { cvtnum } from './output.js';
import { printHelp } from './help.js';

const INT_MAX = 2 ** 31 - 1;
const AIO_MODES = ['native', 'threads', 'io_uring'];

/** qemu_strtoul with base 0 (0x hexadecimal, leading 0 octal), then a range check. */
function parseUnsigned(text: string, max: number, message: string): number {
  const m = /^\s*(?:(0[xX][0-9a-fA-F]+)|(0[0-7]*)|([1-9]\d*))$/.exec(text);
  const v = m ? (m[1] ? Number(m[1]) : m[2] ? parseInt(m[2], 8) : Number(m[3])) : NaN;
  if (!(v <= max)) throw new CliError(message);
  return v;
}

export async function benchCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hc:d:f:ni:o:qs:S:t:wU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'flush-interval', hasArg: 1, val: 'flush-interval' },
    { name: 'image-opts', hasArg: 0, val: 'image-opts' },
    { name: 'pattern', hasArg: 1, val: 'pattern' },
    { name: 'no-drain', hasArg: 0, val: 'no-drain' },
    { name: 'force-share', hasArg: 0, val: 'U' },
    ...SECRET_LONG_OPTIONS.filter((o) => o.name !== 'image-opts'),
  ]);
  let count = 75000, depth = 64, offset = 0, bufsize = 4096, step = 0, pattern = 0, flushInterval = 0;
  let fmt: string | undefined;
  let write = false, drain = true;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'c': count = parseUnsigned(o.arg!, INT_MAX, 'Invalid request count specified'); break;
      case 'd': depth = parseUnsigned(o.arg!, INT_MAX, 'Invalid queue depth specified'); break;
      case 'f': fmt = o.arg; break;
      case 'n': break; // native AIO: diskhub's I/O threads do the work either way
      case 'i': if (!AIO_MODES.includes(o.arg!)) throw new CliError(`Invalid aio option: ${o.arg}`); break;
      case 'o': offset = Number(cvtnum('offset', o.arg!)); break;
      case 'q': break; // qemu-img bench prints its lines with -q too
      case 's': bufsize = Number(cvtnum('buffer size', o.arg!, 0n, BigInt(INT_MAX))); break;
      case 'S': step = Number(cvtnum('step_size', o.arg!, 0n, BigInt(INT_MAX))); break;
      case 't': if (!CACHE_MODES.includes(o.arg!)) throw new CliError('Invalid cache mode'); break;
      case 'w': write = true; break;
      case 'pattern': pattern = parseUnsigned(o.arg!, 0xff, 'Invalid pattern byte specified'); break;
      case 'flush-interval': flushInterval = parseUnsigned(o.arg!, INT_MAX, 'Invalid flush interval specified'); break;
      case 'no-drain': drain = false; break;
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  if (!write && flushInterval) throw new CliError('--flush-interval is only available in write tests');
  if (flushInterval && flushInterval < depth) throw new CliError("Flush interval can't be smaller than depth");
  const arg = secrets.image(positional[0]!, fmt);
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), writable: write }, arg.display);
  try {
    step ||= bufsize;
    out(`Sending ${count} ${write ? 'write' : 'read'} requests, ${bufsize} bytes each, ${depth} in parallel (starting at offset ${offset}, step size ${step})\n`);
    if (flushInterval) out(`Sending flush every ${flushInterval} requests\n`);
    const started = process.hrtime.bigint();
    await runRequests(image, { count, depth, offset, bufsize, step, pattern, write, flushInterval, drain });
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    out(`Run completed in ${seconds.toFixed(3)} seconds.\n`);
    return 0;
  } finally {
    await closeChain(image).catch(() => undefined);
  }
}

interface BenchPlan {
  count: number; depth: number; offset: number; bufsize: number; step: number; pattern: number;
  write: boolean; flushInterval: number; drain: boolean;
}

/** qemu-img's bench_cb loop: keep `depth` requests in flight until `count` have completed. */
async function runRequests(image: Image, p: BenchPlan): Promise<void> {
  const buf = new Uint8Array(p.bufsize).fill(p.pattern);
  let next = p.offset;
  let remaining = p.count;
  let inFlight = 0;
  const size = image.size;
  // qemu-img reports a failed request with strerror() and exits at once.
  const failed = (e: unknown) => new CliError(`Failed request: ${isDiskError(e, 'ENOSPC') ? 'No space left on device' : 'Input/output error'}`);
  const request = async (at: number): Promise<void> => {
    try {
      await (p.write ? image.write!(buf, at) : image.read(new Uint8Array(p.bufsize), at));
    } catch (e) {
      throw failed(e);
    }
  };
  await new Promise<void>((resolve, reject) => {
    // After a failure nothing more is sent; the promise settles once what was sent has landed
    // (the image is closed next).
    let failure: unknown;
    const settleIfIdle = () => {
      if (inFlight > 0) return;
      if (failure !== undefined) reject(failure);
      else if (remaining === 0) resolve();
    };
    const fail = (e: unknown) => { failure ??= e; settleIfIdle(); };
    const fill = () => {
      while (failure === undefined && remaining > inFlight && inFlight < p.depth) {
        const at = next;
        // A request outside the image fails before it is sent, and nothing after it is sent.
        if (at + p.bufsize > size) { fail(failed(new Error('outside the image'))); return; }
        inFlight++;
        // qemu-img 7.2 wraps at the image size (a request may then reach past the end and fail).
        next = size > 0 ? (next + p.step) % size : 0;
        request(at).then(completed, (e: unknown) => { inFlight--; fail(e); });
      }
      settleIfIdle();
    };
    const completed = () => {
      const left = remaining - inFlight;
      remaining--;
      inFlight--;
      if (failure !== undefined) { settleIfIdle(); return; }
      if (p.flushInterval && left % p.flushInterval === 0) {
        if (!p.drain) image.flush?.().catch(fail);
        else if (inFlight === 0) { (image.flush?.() ?? Promise.resolve()).then(fill, fail); return; }
        else return; // the last request of the batch to complete starts the flush
      }
      fill();
    };
    fill();
  });
}
