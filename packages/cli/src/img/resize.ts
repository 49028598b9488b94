/**
 * `diskhub img resize [--shrink] [--preallocation=mode] [-f fmt] [-q] IMAGE [+|-]SIZE`: qemu-img
 * 7.2's img_resize. The size is taken off the end of argv before the options are parsed, so
 * "-1G" is a size and not an option, as in qemu-img.
 */
import type { Preallocation } from '@diskhub/disk';
import { isDiskError } from '@diskhub/disk/errors';
import { closeChain } from '@diskhub/disk/open';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, errorMessage, openCliImage, out, err, warnProbedRaw } from './common.js';
import { baselineOnly } from './optimise.js';
import { INT64_MAX, parseSize } from './output.js';
import { printHelp } from './help.js';

const PREALLOCATION_MODES: readonly Preallocation[] = ['off', 'metadata', 'falloc', 'full'];

/** QemuOpts' message for a size option it cannot parse. */
export const SIZE_OPTION_HELP = "Parameter 'size' expects a non-negative number below 2^64\n" +
  'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.';

export async function resizeCommand(argv: string[]): Promise<number> {
  baselineOnly();
  if (argv.length < 3) throw new UsageError('Not enough arguments');
  let size = argv[argv.length - 1]!;
  const { options, positional } = getopt(argv.slice(0, -1), ':f:hqU', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'preallocation', hasArg: 1, val: 'preallocation' },
    { name: 'shrink', hasArg: 0, val: 'shrink' },
  ]);
  let format: string | undefined;
  let quiet = false;
  let shrink = false;
  let preallocation: Preallocation = 'off';
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg; break;
      case 'q': quiet = true; break;
      case 'shrink': shrink = true; break;
      case 'preallocation':
        if (!PREALLOCATION_MODES.includes(o.arg as Preallocation)) throw new CliError(`Invalid preallocation mode '${o.arg}'`);
        preallocation = o.arg as Preallocation;
        break;
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting image file name and size');
  let relative = 0n;
  if (size.startsWith('+')) { relative = 1n; size = size.slice(1); }
  else if (size.startsWith('-')) { relative = -1n; size = size.slice(1); }
  const n = size.startsWith('+') ? null : parseSize(size);
  if (n === null || n >= 1n << 64n) throw new CliError(SIZE_OPTION_HELP);

  const arg = secrets.image(positional[0]!, format);
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), writable: true }, arg.display);
  try {
    if (arg.format === undefined && image.format === 'raw') warnProbedRaw(arg.path);
    const current = BigInt(image.size);
    // qemu-img computes in int64: a size of 2^63 or more comes out negative.
    let total = relative === 0n ? n : current + n * relative;
    if (total > INT64_MAX) total -= 1n << 64n;
    if (total <= 0n) throw new CliError('New image size must be positive');
    if (total <= current && preallocation !== 'off') throw new CliError('Preallocation can only be used for growing images');
    if (total < current && !shrink) {
      err('qemu-img: Use the --shrink option to perform a shrink operation.\n');
      err("qemu-img: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.\n");
      return 1;
    }
    if (!image.resize) throw new CliError('Image format driver does not support resize');
    if (total > BigInt(Number.MAX_SAFE_INTEGER)) throw new CliError(`Failed to resize: ${total} bytes is larger than this tool supports (${Number.MAX_SAFE_INTEGER})`);
    try {
      await image.resize(Number(total), { preallocation });
    } catch (e) {
      throw new CliError(isDiskError(e) ? e.message : errorMessage(e));
    }
  } finally {
    await closeChain(image);
  }
  if (!quiet) out('Image resized.\n');
  return 0;
}
