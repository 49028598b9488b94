/**
 * `diskhub img amend [-p] [-q] [-f fmt] [-t cache] [--force] -o options IMAGE`: qemu-img 7.2's
 * img_amend. Options are checked against the format's amend options: a create-only option
 * gets qemu-img's "only supported for image creation" message.
 */
import { closeChain, getFormat, isDiskError, type FormatDriver } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, Progress, checkCacheMode, errorMessage, openCliImage, out } from './common.js';
import { helpLines, parseOptionString } from './createopts.js';
import { parseSize } from './output.js';
import { printHelp } from './help.js';
import { SIZE_OPTION_HELP } from './resize.js';

function amendHelp(driver: FormatDriver): number {
  if (!driver.amendOptions) throw new CliError(`Format driver '${driver.name}' does not support option amendment`);
  out(`Amend options for '${driver.name}':\n${helpLines(driver.amendOptions)}`);
  return 0;
}

/** qemu_opts' boolean spellings. */
const BOOL: Record<string, string> = { on: 'on', yes: 'on', true: 'on', y: 'on', off: 'off', no: 'off', false: 'off', n: 'off' };

export async function amendCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':ho:f:t:pq', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force', hasArg: 0, val: 'force' },
  ]);
  let format: string | undefined;
  let optionText: string | undefined;
  let progress = false;
  let quiet = false;
  let force = false;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'o':
        if (o.arg === '' || /^,|[^,],$|^=/.test(o.arg!)) throw new CliError(`Invalid option list: ${o.arg}`);
        optionText = optionText === undefined ? o.arg! : `${optionText},${o.arg}`;
        break;
      case 'f': format = o.arg; break;
      case 't': checkCacheMode(o.arg, false); break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 'force': force = true; break;
    }
  }
  if (optionText === undefined) throw new UsageError('Must specify options (-o)');
  const parsed = parseOptionString(optionText);
  if (format !== undefined && parsed.help) {
    try {
      return amendHelp(getFormat(format));
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError(`Unknown file format '${format}'`);
    }
  }
  // qemu-img's error_report here, without the --help hint.
  if (positional.length !== 1) throw new UsageError('Expecting one image file name', false);
  const arg = secrets.image(positional[0]!, format);
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), writable: true }, arg.display);
  try {
    const driver = getFormat(image.format);
    if (parsed.help) return amendHelp(driver);
    if (!driver.amendOptions || !image.amend) throw new CliError(`Format driver '${image.format}' does not support option amendment`);
    const values = new Map<string, string>();
    for (const [key, value] of parsed.options) {
      const desc = driver.amendOptions.find((o) => o.name === key);
      if (!desc) {
        const createOnly = driver.createOptions?.some((o) => o.name === key);
        throw new CliError(`Invalid parameter '${key}'${createOnly ? '\nThis option is only supported for image creation' : ''}`);
      }
      if (desc.type === 'size') {
        const v = parseSize(value);
        if (v === null || v >= 1n << 64n) throw new CliError(SIZE_OPTION_HELP.replace("'size'", `'${key}'`));
        values.set(key, String(v));
      } else if (desc.type === 'bool') {
        if (!BOOL[value]) throw new CliError(`Parameter '${key}' expects 'on' or 'off'`);
        values.set(key, BOOL[value]!);
      } else if (desc.type === 'number') {
        if (!/^\d+$/.test(value)) throw new CliError(`Parameter '${key}' expects a number`);
        values.set(key, value);
      } else values.set(key, value);
    }
    const bar = new Progress(progress && !quiet);
    bar.update(0, 1);
    let changed: boolean;
    try {
      changed = await image.amend(values, { secret: (id) => secrets.passphrase(id), force });
    } catch (e) {
      throw new CliError(isDiskError(e) ? e.message : errorMessage(e));
    }
    if (changed) bar.update(1, 1);
    bar.finish();
  } finally {
    await closeChain(image);
  }
  return 0;
}
