/** `diskhub img compare`: qemu-img compare (exit 0 identical, 1 different, 2 error). */
import { closeChain, compareImages, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, checkCacheMode, openCliImage, out, Progress } from './common.js';
import { printHelp } from './help.js';

export async function compareCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:F:T:pqsU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'object', hasArg: 1, val: 'object' },
    { name: 'image-opts', hasArg: 0, val: 'image-opts' },
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let fmt1: string | undefined;
  let fmt2: string | undefined;
  let progress = false;
  let quiet = false;
  let strict = false;
  for (const o of options) {
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': fmt1 = o.arg; break;
      case 'F': fmt2 = o.arg; break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 's': strict = true; break;
      case 'T': checkCacheMode(o.arg, true, 2); break;
      case 'image-opts': throw new UsageError('--image-opts is not supported', false);
    }
  }
  if (positional.length !== 2) throw new UsageError('Expecting two image file names');
  const [file1, file2] = positional as [string, string];
  const say = (s: string) => { if (!quiet) out(s); };
  let a: Image | undefined;
  let b: Image | undefined;
  try {
    a = await openCliImage(file1, { format: fmt1 });
    b = await openCliImage(file2, { format: fmt2 });
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
