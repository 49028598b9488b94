/**
 * `diskhub img dd`: qemu-img dd. Creates the output image (of `-O` format, raw by default)
 * with the size of what is copied, then writes every byte of the input from `skip` blocks on,
 * `count` blocks at most, as qemu-img does (zeroes included: the output is fully written).
 * The copy itself runs through convert's pipeline in large pieces rather than one `bs` at a
 * time; the result is the same.
 */
import {
  closeChain, convertImage, createImage, getFormat, openImage, WindowDevice, type FormatDriver, type Image,
} from '@diskhub/disk';
import { getopt } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, errorMessage, openCliImage, err } from './common.js';
import { cvtnum, INT64_MAX } from './output.js';
import { printHelp } from './help.js';

const INT_MAX = 2 ** 31 - 1;


export async function ddCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:O:U', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let fmt: string | undefined;
  let outFormat = 'raw';
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': fmt = o.arg; break;
      case 'O': outFormat = o.arg!; break;
    }
  }
  let bs = 512n, count: bigint | undefined, skip: bigint | undefined;
  let input: string | undefined, output: string | undefined;
  for (const operand of positional) {
    const eq = operand.indexOf('=');
    const key = eq < 0 ? undefined : operand.slice(0, eq);
    const value = operand.slice(eq + 1);
    switch (key) {
      case 'bs': bs = cvtnum('bs', value, 1n, BigInt(INT_MAX)); break;
      case 'count': count = cvtnum('count', value); break;
      case 'skip': skip = cvtnum('skip', value); break;
      case 'if': input = value; break;
      case 'of': output = value; break;
      // qemu-img names the whole operand without '=', else the part before it.
      default: throw new CliError(`unrecognized operand ${key ?? operand}`);
    }
  }
  if (input === undefined || output === undefined) throw new CliError('Must specify both input and output files');

  const arg = secrets.image(input, fmt);
  const src = await openCliImage(arg.path, openOptionsOf(arg), arg.display);
  let dst: Image | undefined;
  try {
    let driver: FormatDriver;
    try { driver = getFormat(outFormat); } catch { throw new CliError('Unknown file format'); }
    if (!driver.create) throw new CliError(`Format driver '${driver.name}' does not support image creation`);
    let size = BigInt(src.size);
    if (count !== undefined && count <= INT64_MAX / bs && count * bs < size) size = count * bs;
    // A skip past the end makes an empty image, with a complaint (like dd(1)).
    const pastEnd = skip !== undefined && (skip > INT64_MAX / bs || size < skip * bs);
    const start = pastEnd ? size : (skip ?? 0n) * bs;
    try {
      await createImage(output, driver, { size: Number(size - start), options: {} });
    } catch (e) {
      throw new CliError(`${output}: error while creating output image: ${errorMessage(e).replace(/^Could not open '/, "Could not create '")}`);
    }
    try {
      dst = await openImage(output, { format: driver.name, writable: true, backing: false });
    } catch (e) {
      throw new CliError(`Could not open '${output}': ${errorMessage(e)}`);
    }
    if (pastEnd) err(`qemu-img: ${input}: cannot skip to specified offset\n`);
    const window = new WindowDevice(src, Number(start), Number(size - start), { readOnly: true, name: input });
    try {
      // -S 0: every byte is written, zeroes too, as qemu-img dd writes them.
      await convertImage(window, dst, { sparseSize: 0, targetIsZero: false });
    } catch (e) {
      const message = errorMessage(e);
      throw new CliError(message.startsWith('error while writing')
        ? `error while writing to output image file: ${message.replace(/^error while writing at byte \d+: /, '')}`
        : `error while reading from input image file: ${message.replace(/^error while reading at byte \d+: /, '')}`);
    }
    return 0;
  } finally {
    await closeChain(dst).catch(() => undefined);
    await closeChain(src).catch(() => undefined);
  }
}
