/** `diskhub img create`: qemu-img create. */
import { createImage, getFormat, listFormats, openImage, closeChain, resolveBackingPath, type FormatDriver } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets } from './secrets.js';
import { CliError, errorMessage, out } from './common.js';
import { parseImageSize } from './output.js';
import { parseOptionString, optionHelp, validateOptions, describeOptions } from './createopts.js';
import { printHelp } from './help.js';

export async function createCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':F:b:f:ho:qu', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
  ]);
  let format = 'raw';
  let backingFile: string | undefined;
  let backingFormat: string | undefined;
  let quiet = false;
  let unsafe = false;
  const given: [string, string][] = [];
  let help = false;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg!; break;
      case 'b': backingFile = o.arg; break;
      case 'F': backingFormat = o.arg; break;
      case 'q': quiet = true; break;
      case 'u': unsafe = true; break;
      case 'o': {
        const p = parseOptionString(o.arg!);
        given.push(...p.options);
        help ||= p.help;
        break;
      }
    }
  }
  const filename = positional[0];
  let driver: FormatDriver;
  try {
    driver = getFormat(format);
  } catch {
    throw new CliError(filename ? `${filename}: Unknown file format '${format}'` : `Unknown file format '${format}'`);
  }
  // Like qemu-img, a format without create support is refused before anything else (bochs, cloop...).
  if (!driver.create) {
    const message = `Format driver '${driver.name}' does not support image creation`;
    throw new CliError(help || !filename ? message : `${filename}: ${message}`);
  }
  if (help) {
    out(optionHelp(driver, filename !== undefined));
    return 0;
  }
  if (filename === undefined) throw new UsageError('Expecting image file name');
  if (positional.length > 2) throw new UsageError(`Unexpected argument: ${positional[2]}`);
  let size: number | undefined;
  if (positional[1] !== undefined) size = parseImageSize(positional[1]);
  const at = (msg: string) => new CliError(`${filename}: ${msg}`);

  let values: Map<string, string>;
  try {
    values = validateOptions(driver, given);
  } catch (e) {
    throw at(errorMessage(e));
  }
  if (values.has('size')) {
    if (size !== undefined) throw at('The image size must be specified only once');
    size = Number(values.get('size'));
  }
  if (backingFile !== undefined) values.set('backing_file', backingFile);
  else if (values.has('backing_file')) backingFile = values.get('backing_file');
  if (backingFormat !== undefined) values.set('backing_fmt', backingFormat);
  else if (values.has('backing_fmt')) backingFormat = values.get('backing_fmt');

  if (backingFile !== undefined && !driver.createOptions?.some((o) => o.name === 'backing_file')) {
    throw at(`Backing file not supported for file format '${driver.name}'`);
  }
  if (backingFile !== undefined && !unsafe) {
    // The backing image must open; it also gives the size when none is given.
    const backingPath = resolveBackingPath(filename, backingFile);
    let backing;
    // qemu-img looks the backing format up before it touches the file.
    if (backingFormat !== undefined && !listFormats().some((d) => d.name === backingFormat)) {
      throw at(`Unknown driver '${backingFormat}'\nCould not open backing image.`);
    }
    try {
      backing = await openImage(backingPath, { format: backingFormat });
    } catch (e) {
      throw at(`${errorMessage(e)}\nCould not open backing image.`);
    }
    try {
      if (backingFormat === undefined) {
        // qemu-img 7.2 refuses to guess (and prints this without a final newline).
        process.stderr.write(`qemu-img: ${filename}: Backing file specified without backing format\nDetected format of ${backing.format}.`);
        return 1;
      }
      if (size === undefined) size = backing.size;
    } finally {
      await closeChain(backing);
    }
  }
  if (size === undefined) throw at('Image creation needs a size parameter');
  values.set('size', String(size));
  if (!quiet) out(`Formatting '${filename}', ${describeOptions(driver, values)}\n`);
  const formatOptions: Record<string, string> = {};
  for (const [k, v] of values) if (k !== 'size' && k !== 'backing_file' && k !== 'backing_fmt') formatOptions[k] = v;
  try {
    const secret = secrets.createSecret(values, driver.name === 'luks' ? 'key-secret' : 'encrypt.key-secret');
    await createImage(filename, driver, { size, options: formatOptions, backingFile, backingFormat, ...(secret ? { secret } : {}) });
  } catch (e) {
    throw at(errorMessage(e).replace(/^Could not open '/, "Could not create '"));
  }
  return 0;
}
