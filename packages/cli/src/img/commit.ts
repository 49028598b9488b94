/**
 * `diskhub img commit`: qemu-img commit. The data the overlay allocates (and, with `-b BASE`
 * further down the chain, the intermediate images' data) is written into the base image
 * (ops/commit.ts); then, unless `-d` or `-b`, the overlay is emptied, so that it reads through
 * to the base. The base is flushed before the overlay is emptied: a crash loses nothing.
 */
import { closeChain, commitImage, openImage, resolveBackingPath, chainOf, isDiskError, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, checkCacheMode, errorMessage, openCliImage, out, Progress } from './common.js';
import { optimiseLess } from './optimise.js';
import { cvtnum } from './output.js';
import { depthInChain } from './rebase.js';
import { printHelp } from './help.js';

export async function commitCommand(argv: string[]): Promise<number> {
  optimiseLess();
  const { options, positional } = getopt(argv, ':f:ht:b:dpqr:', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
  ]);
  let fmt: string | undefined;
  let cache = 'writeback';
  let baseName: string | undefined;
  let drop = false;
  let progress = false;
  let quiet = false;
  let rateLimit = 0;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': fmt = o.arg; break;
      case 't': cache = o.arg!; break;
      // -b implies -d: the overlay is left as it is.
      case 'b': baseName = o.arg; drop = true; break;
      case 'd': drop = true; break;
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 'r': rateLimit = Number(cvtnum('rate limit', o.arg!)); break;
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const filename = positional[0]!;
  checkCacheMode(cache, false);
  const arg = secrets.image(filename, fmt);
  const noFlush = cache === 'unsafe';
  const top = await openCliImage(arg.path, { ...openOptionsOf(arg), writable: !drop, noFlush }, arg.display);
  const bar = new Progress(progress && !quiet);
  bar.update(0, 100);
  try {
    let depth: number | undefined;
    if (baseName !== undefined) {
      depth = await findBacking(top, baseName);
      if (depth === undefined) throw new CliError(`Did not find '${baseName}' in the backing chain of '${filename}'`);
    } else {
      if (!top.backing) throw new CliError('Image does not have a backing file');
      depth = 1;
    }
    // The base is written: reopen it (and what lies below it) writable in place of the read-only one.
    const chain = chainOf(top);
    const above = chain[depth - 1]!, readOnlyBase = chain[depth]!;
    let base: Image;
    try {
      base = await openImage(readOnlyBase.source.name, { format: readOnlyBase.format, writable: true, noFlush, reserveWrites: true, serialWrites: true });
    } catch (e) {
      throw new CliError(errorMessage(e));
    }
    above.backing = base;
    await closeChain(readOnlyBase);
    try {
      await commitImage(top, base, { flush: !noFlush, ...(rateLimit ? { rateLimit } : {}), onProgress: (d, t) => bar.update(d, t) });
    } catch (e) {
      throw new CliError(isDiskError(e) && e.code === 'EUNSUPPORTED' ? e.message : errorMessage(e));
    }
    // Emptying the overlay is optional in qemu-img too (ENOTSUP is ignored): the content stays right.
    if (!drop && top.makeEmpty) {
      await top.makeEmpty();
      if (!noFlush) await top.flush?.();
    }
  } finally {
    bar.finish();
    await closeChain(top).catch(() => undefined);
  }
  if (!quiet) out('Image committed.\n');
  return 0;
}

/**
 * qemu's bdrv_find_backing_image: the image of the chain that `name` designates, either as the
 * name an image stores for its backing file, or as the same file once resolved against the
 * directory of the image above it.
 */
async function findBacking(top: Image, name: string): Promise<number | undefined> {
  const chain = chainOf(top);
  for (let d = 1; d < chain.length; d++) if (chain[d - 1]!.backingRef?.filename === name) return d;
  for (let d = 1; d < chain.length; d++) {
    const found = await depthInChain(chain[d - 1]!, resolveBackingPath(chain[d - 1]!.source.name, name));
    if (found === 1) return d;
  }
  return undefined;
}
