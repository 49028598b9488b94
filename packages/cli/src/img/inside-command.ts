/**
 * What the commands that look inside an image's operating system share (`inspect`, `lint`):
 * `[-f fmt] [--output=human|json] [--object ...] [--image-opts] IMAGE`, the image opened
 * read-only and closed, and exit status 2 for every error (a bad option, an image that cannot
 * be opened or read), so that 0 and 1 keep the command's own meaning for scripts.
 */
import { closeChain, isDiskError, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, FILESYSTEM_BLOCKING_READ_MAX, errorMessage, err, openCliImage, out, parseOutputFormat, type OutputFormat } from './common.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';

/** Parse the options, open IMAGE, run `body` on it; `body` returns the exit status. */
export async function insideCommand(name: string, help: string, argv: string[], body: (image: Image, output: OutputFormat) => Promise<number>): Promise<number> {
  try {
    const { options, positional } = getopt(argv, ':f:h', [
      { name: 'help', hasArg: 0, val: 'h' },
      { name: 'format', hasArg: 1, val: 'f' },
      { name: 'output', hasArg: 1, val: 'output' },
      ...SECRET_LONG_OPTIONS,
    ]);
    const secrets = new Secrets();
    let format: string | undefined;
    let output: OutputFormat = 'human';
    for (const o of options) {
      if (secrets.option(o)) continue;
      if (o.opt === 'h') { out(help); return 0; }
      if (o.opt === 'f') format = o.arg;
      else if (o.opt === 'output') output = parseOutputFormat(o.arg);
    }
    if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'Expecting one image file name' : `Invalid parameter '${positional[1]}'`);
    const arg = secrets.image(positional[0]!, format);
    const image = await openCliImage(arg.path, { ...openOptionsOf(arg), blockingReadMax: FILESYSTEM_BLOCKING_READ_MAX }, arg.display);
    try {
      return await body(image, output);
    } catch (e) {
      if (isDiskError(e)) throw new CliError(`${arg.display}: ${e.message}`);
      throw e;
    } finally {
      await closeChain(image);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`diskhub img ${name}: ${e.message}\n`);
      if (e.tryHelp) err(`Try 'diskhub img ${name} --help' for more information.\n`);
      return 2;
    }
    if (e instanceof CliError || isDiskError(e)) {
      err(`diskhub img ${name}: ${errorMessage(e)}\n`);
      return 2;
    }
    throw e;
  }
}
