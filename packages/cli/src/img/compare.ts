/** `diskhub img compare`: qemu-img compare (exit 0 identical, 1 different, 2 error). */
import { closeChain, compareImages, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, checkCacheMode, openCliImage, out, Progress } from './common.js';
import { printHelp } from './help.js';

export async function compareCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:F:T:pqsU', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let fmt1: string | undefined;
  let fmt2: string | undefined;
  let progress = false;
  let quiet = false;
  let strict = false;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': fmt1 = o.arg; break;
      case 'F': fmt2 = o.arg; break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 's': strict = true; break;
      case 'T': checkCacheMode(o.arg, true, 2); break;
    }
  }
  if (positional.length !== 2) throw new UsageError('Expecting two image file names');
  const [file1, file2] = positional as [string, string];
  const say = (s: string) => { if (!quiet) out(s); };
  let a: Image | undefined;
  let b: Image | undefined;
  try {
    const arg1 = secrets.image(file1, fmt1), arg2 = secrets.image(file2, fmt2);
    a = await openCliImage(arg1.path, openOptionsOf(arg1), arg1.display);
    b = await openCliImage(arg2.path, openOptionsOf(arg2), arg2.display);
    const bar = new Progress(progress && !quiet);
    const result = await compareImages(a, b, { strict, onProgress: (d, t) => bar.update(d, t) });
    bar.finish();
    const common = Math.min(a.size, b.size);
    if (!result.identical && result.reason === 'size') { say('Strict mode: Image size mismatch!\n'); return 1; }
    if (!result.identical && result.reason === 'allocation') { say(`Strict mode: Offset ${result.offset} block status mismatch!\n`); return 1; }
    if (result.sizeMismatch && (result.identical || result.offset >= common)) say('Warning: Image size mismatch!\n');
    if (!result.identical) { say(`Content mismatch at offset ${result.offset}!\n`); return 1; }
    say('Images are identical.\n');
    return 0;
  } catch (e) {
    throw e instanceof CliError ? new CliError(e.message, 2) : new CliError(e instanceof Error ? e.message : String(e), 2);
  } finally {
    await closeChain(b);
    await closeChain(a);
  }
}
