/**
 * `diskhub img rebase`: qemu-img rebase. Safe mode (the default) first writes into the overlay
 * every range that would read differently through the new backing file (ops/rebase.ts), then
 * rewrites the header; `-u` only rewrites the header; `-b ""` removes the backing file after
 * copying in all the data the old chain provided. The new backing name is resolved against the
 * overlay's directory, as qemu-img resolves it, and stored as given.
 */
import { stat } from 'node:fs/promises';
import {
  chainOf, closeChain, getFormat, openImage, rebaseImage, resolveBackingPath, isDiskError, type Image,
} from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, checkCacheMode, errorMessage, openCliImage, Progress } from './common.js';
import { optimiseLess } from './optimise.js';
import { printHelp } from './help.js';

export async function rebaseCommand(argv: string[]): Promise<number> {
  optimiseLess();
  const { options, positional } = getopt(argv, ':hf:F:b:upt:T:qU', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let fmt: string | undefined;
  let newFormat: string | undefined;
  let newName: string | undefined;
  let unsafe = false;
  let progress = false;
  let quiet = false;
  let cache = 'writeback';
  let srcCache = 'writeback';
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': fmt = o.arg; break;
      case 'F': newFormat = o.arg; break;
      case 'b': newName = o.arg; break;
      case 'u': unsafe = true; break;
      case 'p': progress = true; break;
      case 't': cache = o.arg!; break;
      case 'T': srcCache = o.arg!; break;
      case 'q': quiet = true; break;
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  if (!unsafe && newName === undefined) throw new UsageError('Must specify backing file (-b) or use unsafe mode (-u)');
  const filename = positional[0]!;
  const bar = new Progress(progress && !quiet);
  bar.update(0, 100);
  checkCacheMode(cache, false);
  checkCacheMode(srcCache, true);

  const arg = secrets.image(filename, fmt);
  // Unsafe mode does not open the old backing file: it may be the one that moved.
  const overlay = await openCliImage(arg.path, { ...openOptionsOf(arg), writable: true, noFlush: cache === 'unsafe', reserveWrites: true, serialWrites: true, ...(unsafe ? { backing: false } : {}) }, arg.display);
  let newBacking: Image | undefined;
  let ownNewBacking = false;
  try {
    if (newFormat !== undefined) {
      try { getFormat(newFormat); } catch { throw new CliError(`Invalid format name: '${newFormat}'`); }
    }
    if (!overlay.changeBackingFile) throw new CliError(`Could not change the backing file to '${newName ?? ''}': Operation not supported`);
    if (!unsafe) {
      let newDepth: number | undefined;
      if (newName) {
        const path = resolveBackingPath(overlay.source.name, newName);
        // Rebasing onto an image further down the chain: ranges above it need no comparison.
        newDepth = await depthInChain(overlay, path);
        if (newDepth !== undefined) newBacking = chainOf(overlay)[newDepth];
        else {
          try {
            newBacking = await openImage(path, { ...(newFormat !== undefined ? { format: newFormat } : {}) });
            ownNewBacking = true;
          } catch (e) {
            throw new CliError(`Could not open new backing file '${newName}': ${errorMessage(e)}`);
          }
          // The overlay under itself would make a loop: qemu-img's image lock refuses it, at
          // the level of the new chain where the overlay appears.
          const loop = await depthOf(newBacking, overlay.source.name, 0);
          if (loop !== undefined) {
            const name = loop === 0 ? newName : chainOf(newBacking)[loop]!.source.name;
            throw new CliError(`Could not open new backing file '${newName}': ${'Could not open backing file: '.repeat(loop)}Failed to get shared "write" lock\nIs another process using the image [${name}]?`);
          }
        }
      }
      try {
        await rebaseImage(overlay, {
          ...(newBacking ? { newBacking } : {}),
          ...(newDepth !== undefined ? { newBackingDepth: newDepth } : {}),
          onProgress: (d, t) => bar.update(d, t),
        });
      } catch (e) {
        throw new CliError(errorMessage(e));
      }
    }
    const target = newName ? newName : undefined;
    try {
      // qemu-img requires the format with a new backing file (bdrv_change_backing_file's `require`).
      if (target !== undefined && newFormat === undefined) throw new CliError(`Could not change the backing file to '${target}': backing format must be specified`);
      await overlay.changeBackingFile(target, target !== undefined ? newFormat : undefined);
    } catch (e) {
      if (e instanceof CliError) throw e;
      if (isDiskError(e, 'ENOSPC')) throw new CliError(`Could not change the backing file to '${newName ?? ''}': No space left in the file header`);
      throw new CliError(`Could not change the backing file to '${newName ?? ''}': ${errorMessage(e)}`);
    }
    bar.finish();
    return 0;
  } finally {
    if (ownNewBacking) await closeChain(newBacking).catch(() => undefined);
    await closeChain(overlay).catch(() => undefined);
  }
}

/** Depth (1 = the backing file) of the image at `path` in `top`'s chain, by file identity. */
export async function depthInChain(top: Image, path: string): Promise<number | undefined> {
  return depthOf(top, path, 1);
}

/** Depth of the file at `path` in `top`'s chain (0 = top itself), looking from depth `from` on. */
async function depthOf(top: Image, path: string, from: number): Promise<number | undefined> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return undefined;
  const chain = chainOf(top);
  for (let d = from; d < chain.length; d++) {
    const other = await stat(chain[d]!.source.name).catch(() => undefined);
    if (other && other.dev === st.dev && other.ino === st.ino) return d;
  }
  return undefined;
}
