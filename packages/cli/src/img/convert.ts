/**
 * `diskhub img convert`: qemu-img convert. The target is written under a temporary name in
 * the destination directory and renamed into place only when complete; a failure, Ctrl-C or
 * SIGTERM removes the temporary file. Sources are opened read-only.
 */
import { randomBytes } from 'node:crypto';
import { lstat, open, rename, stat, unlink } from 'node:fs/promises';
import { constants, unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  chainOf, closeChain, convertImage, createImage, getFormat, openImage, ConcatDevice, DEFAULT_SPARSE_SIZE, MAX_PARALLEL,
  isDiskError, type BlockDevice, type FormatDriver, type Image, type PersistentBitmap,
} from '@diskhub/disk';
import { hostio } from '@diskhub/hostio';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, checkCacheMode, errorMessage, openCliImage, out, warn, Progress } from './common.js';
import { optimiseLess } from './optimise.js';
import { cvtnum, parseSize, SUFFIX_HELP } from './output.js';
import { parseOptionString, optionHelp, validateOptions } from './createopts.js';
import { snapshotParam } from './measure.js';
import { printHelp } from './help.js';
import { INSIDE_OPTIONS, insideOption, selectInside, type InsideSelection } from './inside.js';

const MAX_SPARSE = 16 << 20;
/** qcow2 bitmap directory flag: the bitmap was in use when its writer stopped (inconsistent). */
const BITMAP_IN_USE = 1;

export async function convertCommand(argv: string[]): Promise<number> {
  optimiseLess();
  const { options, positional } = getopt(argv, ':hf:O:B:CcF:o:l:s:S:pt:T:qnm:WUr:', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'target-image-opts', hasArg: 0, val: 'target-image-opts' },
    { name: 'salvage', hasArg: 0, val: 'salvage' },
    { name: 'target-is-zero', hasArg: 0, val: 'target-is-zero' },
    { name: 'bitmaps', hasArg: 0, val: 'bitmaps' },
    { name: 'skip-broken-bitmaps', hasArg: 0, val: 'skip-broken-bitmaps' },
    { name: 'force-share', hasArg: 0, val: 'U' },
    ...INSIDE_OPTIONS,
  ]);
  const inside: InsideSelection = {};
  let srcFormat: string | undefined;
  let outFormat = 'raw';
  let backingFile: string | undefined;
  let backingFormat: string | undefined;
  let compress = false;
  const given: [string, string][] = [];
  let help = false;
  let snapshot: string | undefined;
  let sparseSize = DEFAULT_SPARSE_SIZE;
  let progress = false;
  let quiet = false;
  let noCreate = false;
  let parallel = 8;
  let outOfOrder = false;
  let targetIsZero = false;
  let targetImageOpts = false;
  let rateLimit = 0;
  let copyOffload = false;
  let salvage = false;
  let bitmaps = false;
  let skipBrokenBitmaps = false;
  let explicitSparse = false;
  // qemu-img convert writes the target with cache=unsafe unless told otherwise: no fsync.
  let cacheMode = 'unsafe';
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': srcFormat = o.arg; break;
      case 'O': outFormat = o.arg!; break;
      case 'B': backingFile = o.arg; break;
      case 'F': backingFormat = o.arg; break;
      case 'c': compress = true; break;
      case 'o': { const p = parseOptionString(o.arg!); given.push(...p.options); help ||= p.help; break; }
      case 'l': snapshot = snapshotParam(o.arg!); break;
      case 's': snapshot = o.arg; break; // older qemu-img's -s snapshot_id
      case 'S': {
        const v = parseSize(o.arg!);
        if (v === null) throw new UsageError(`Invalid buffer size for sparse output specified. ${SUFFIX_HELP}`, false);
        if (v > BigInt(MAX_SPARSE) || v % 512n !== 0n) {
          throw new UsageError(`Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to ${MAX_SPARSE}. Select 0 to disable sparse detection (fully allocates output).`, false);
        }
        sparseSize = Number(v);
        explicitSparse = true;
        break;
      }
      case 'p': progress = true; break;
      case 'q': quiet = true; break;
      case 'n': noCreate = true; break;
      case 'm': {
        const n = /^\d+$/.test(o.arg!) ? Number(o.arg) : NaN;
        if (!(n >= 1 && n <= MAX_PARALLEL)) throw new UsageError(`Invalid number of coroutines. Allowed number of coroutines is between 1 and ${MAX_PARALLEL}`, false);
        parallel = n;
        break;
      }
      case 'W': outOfOrder = true; break;
      case 'target-is-zero': targetIsZero = true; break;
      case 't': checkCacheMode(o.arg, false); cacheMode = o.arg!; break;
      case 'T': checkCacheMode(o.arg, true); break;
      case 'r': rateLimit = Number(cvtnum('rate limit', o.arg!)); break;
      case 'target-image-opts': targetImageOpts = true; break;
      case 'C': copyOffload = true; break;
      case 'salvage': salvage = true; break;
      case 'bitmaps': bitmaps = true; break;
      case 'skip-broken-bitmaps': skipBrokenBitmaps = true; break;
      // -U (force share): diskhub takes no image locks.
      default: insideOption(o.opt, o.arg, inside); break;
    }
  }
  // qemu-img's checks, in its order.
  if (skipBrokenBitmaps && !bitmaps) throw new CliError('Use of --skip-broken-bitmaps requires --bitmaps');
  if (compress && copyOffload) throw new CliError('Cannot enable copy offloading when -c is used');
  if (explicitSparse && copyOffload) throw new CliError('Cannot enable copy offloading when -S is used');
  if (copyOffload && salvage) throw new CliError('Cannot use copy offloading in salvaging mode');
  let driver: FormatDriver;
  try { driver = getFormat(outFormat); } catch { throw new CliError(`Unknown file format '${outFormat}'`); }
  if (help) { out(optionHelp(driver, false)); return 0; }
  if (positional.length < 2) throw new CliError('Must specify image file name');
  if (targetIsZero && !noCreate) throw new CliError('--target-is-zero requires use of -n flag');
  const target = positional[positional.length - 1]!;
  const sourceNames = positional.slice(0, -1);
  if (snapshot !== undefined && sourceNames.length > 1) throw new CliError('No support for concatenating multiple snapshot');
  let values: Map<string, string>;
  try { values = validateOptions(driver, given); } catch (e) { throw new CliError(errorMessage(e)); }
  if (values.has('backing_file')) backingFile ??= values.get('backing_file');
  if (values.has('backing_fmt')) backingFormat ??= values.get('backing_fmt');
  if (backingFile !== undefined && !driver.createOptions?.some((o) => o.name === 'backing_file')) {
    throw new CliError(`Backing file not supported for file format '${driver.name}'`);
  }
  if (backingFile !== undefined && backingFormat === undefined) throw new CliError('Use of backing file requires explicit backing format');
  if (compress && (values.has('encrypt.format') || values.get('encryption') === 'on')) throw new CliError('Compression and encryption not supported at the same time');

  const sources: Image[] = [];
  let dst: Image | undefined;
  let tempPath: string | undefined;
  let droppingOldCache: Promise<void> | undefined;
  const controller = new AbortController();
  // While preparing (opening, creating: driver work we cannot interrupt), a signal ends the
  // process at once after removing the temporary file; while copying, it aborts the copy,
  // which unwinds and cleans up; while finishing (flush, rename) the image is complete and
  // we let it land.
  let phase: 'preparing' | 'copying' | 'finishing' = 'preparing';
  let interrupted: NodeJS.Signals | undefined;
  const signalExit = (sig: NodeJS.Signals) => (sig === 'SIGINT' ? 130 : 143);
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    if (phase === 'preparing') { onExit(); process.exit(signalExit(sig)); }
    if (phase === 'copying') controller.abort();
  };
  // Last resort if the process dies between signal and cleanup: the temporary file goes.
  const onExit = () => { if (tempPath) { try { unlinkSync(tempPath); } catch { /* already gone */ } } };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  try {
    for (const name of sourceNames) {
      const arg = secrets.image(name, srcFormat);
      const img = await openCliImage(arg.path, { ...openOptionsOf(arg), ...(snapshot !== undefined ? { snapshot } : {}) }, arg.display);
      sources.push(img);
      if (snapshot !== undefined && typeof img.snapshots !== 'function') {
        throw new CliError(`Failed to load snapshot: Block format '${img.format}' used by device '' does not support temporarily loading internal snapshots`);
      }
    }
    // --bitmaps: qemu-img's checks on the source, before anything is created.
    let bitmapList: PersistentBitmap[] = [];
    if (bitmaps) {
      if (sources.length > 1) throw new CliError('Copying bitmaps only possible with single source');
      if (!sources[0]!.storesBitmaps || !sources[0]!.readBitmaps) throw new CliError('Source lacks bitmap support');
      bitmapList = await sources[0]!.readBitmaps();
      // QEMU walks its bitmap list from the last one loaded.
      const broken = [...bitmapList].reverse().find((b) => b.flags & BITMAP_IN_USE);
      if (broken && !skipBrokenBitmaps) {
        throw new CliError(`Cannot copy inconsistent bitmap '${broken.name}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`);
      }
    }
    // --partition / --lv: each source contributes the selected part (its own image if none).
    const parts: BlockDevice[] = [];
    for (const [i, img] of sources.entries()) parts.push((await selectInside(img, sourceNames[i]!, inside)).device);
    const src: BlockDevice = parts.length === 1 ? parts[0]! : new ConcatDevice(parts);
    const formatOptions: Record<string, string> = {};
    for (const [k, v] of values) if (k !== 'size' && k !== 'backing_file' && k !== 'backing_fmt') formatOptions[k] = v;

    if (!noCreate) await refuseDirectory(target, driver.name);
    // Writing over an image being read (or one of its backing files) would destroy the
    // source; qemu-img's image locking refuses it, and so do we.
    if (await isInChains(target, sources)) {
      const lock = `Failed to get "write" lock\nIs another process using the image [${target}]?`;
      throw new CliError(noCreate ? `Could not open '${target}': ${lock}` : `${target}: error while converting ${driver.name}: ${lock}`);
    }
    // The target's passphrase: -o encrypt.key-secret / key-secret, or --target-image-opts.
    const targetSecret = secrets.createSecret(values, driver.name === 'luks' ? 'key-secret' : 'encrypt.key-secret');
    if (noCreate) {
      const arg = targetImageOpts ? secrets.imageFromOptions(target) : { path: target, display: target, format: outFormat };
      dst = await openCliImage(arg.path, { format: outFormat, ...openOptionsOf(arg), writable: true, noFlush: cacheMode === 'unsafe', reserveWrites: true, serialWrites: true, ...(targetSecret ? { secret: targetSecret } : {}) }, arg.display);
    } else {
      tempPath = join(dirname(target), `.${basename(target)}.${process.pid}-${randomBytes(4).toString('hex')}.diskhub-tmp`);
      // Alongside creating the new image and the copy's first writes.
      droppingOldCache = dropOldCache(target);
      try {
        await createImage(tempPath, driver, { size: src.size, options: formatOptions, backingFile, backingFormat, ...(targetSecret ? { secret: targetSecret } : {}) }, { exclusive: true });
      } catch (e) {
        throw new CliError(`${target}: error while converting ${driver.name}: ${errorMessage(e).split(tempPath).join(target).replace(/^Could not open '/, "Could not create '")}`);
      }
      try {
        // An external data file named by our own -o data_file is ours to write.
        dst = await openImage(tempPath, { format: driver.name, writable: true, noFlush: cacheMode === 'unsafe', reserveWrites: true, serialWrites: true, allowExternalData: values.has('data_file'), ...(targetSecret ? { secret: targetSecret } : {}) });
      } catch (e) {
        throw new CliError(`Could not open '${target}': ${errorMessage(e).split(tempPath).join(target)}`);
      }
    }
    if (compress && !dst.writeCompressed) throw new CliError('Compression not supported for this file format');
    if (bitmaps && !dst.storesBitmaps) throw new CliError(`Format driver '${dst.format}' does not support bitmaps`);
    const bar = new Progress(progress && !quiet);
    phase = 'copying';
    await convertImage(src, dst, {
      sparseSize, compress, parallel, outOfOrder, flush: cacheMode !== 'unsafe',
      targetIsZero: noCreate ? targetIsZero : dst.zeroInit ?? true,
      targetHasBacking: backingFile !== undefined,
      // -C: data ranges copied by the kernel (copy_file_range) where both images allow it.
      copyRange: copyOffload,
      ...(rateLimit ? { rateLimit } : {}),
      ...(salvage ? { onReadError: (offset: number, e: unknown) => warn(`error while reading offset ${offset}: Input/output error`) } : {}),
      signal: controller.signal,
      onProgress: (d, t) => bar.update(d, t),
    });
    if (bitmaps) {
      for (const b of [...bitmapList].reverse()) if (b.flags & BITMAP_IN_USE) warn(`Skipping inconsistent bitmap '${b.name}'`);
      await dst.addBitmaps!(bitmapList.filter((b) => !(b.flags & BITMAP_IN_USE)));
    }
    bar.finish();
    phase = 'finishing';
    await droppingOldCache;
    await closeChain(dst);
    dst = undefined;
    if (tempPath) {
      await moveIntoPlace(tempPath, target);
      tempPath = undefined;
    }
    return interrupted ? signalExit(interrupted) : 0;
  } catch (e) {
    if (interrupted) return signalExit(interrupted);
    if (e instanceof CliError || e instanceof UsageError) throw e;
    if (isDiskError(e, 'EABORTED')) throw new CliError('Operation cancelled');
    const message = errorMessage(e);
    throw new CliError(message.startsWith('error while') ? message : `error while converting ${driver.name}: ${message}`);
  } finally {
    await droppingOldCache;
    await closeChain(dst).catch(() => undefined);
    for (const s of sources) await closeChain(s).catch(() => undefined);
    if (tempPath) await unlink(tempPath).catch(() => undefined);
    tempPath = undefined;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
  }
}

/**
 * Put the finished image at `target`. When `target` exists, the two names are exchanged at once
 * (renameat2 RENAME_EXCHANGE) and the old image, now under the temporary name, is removed: the
 * name shows the old image or the new one, never a partial one nor none. A plain rename over
 * the old file would make ext4 (auto_da_alloc) flush the new image first — seconds for a large
 * one, and the reason a second convert onto the same destination took 2.5–4× qemu-img's time.
 * Where the filesystem cannot exchange names, the old image is moved aside, the new one renamed
 * to the free name and the old one removed (for a moment the name shows none; should the second
 * rename fail, the old image gets its name back).
 */
async function moveIntoPlace(temp: string, target: string): Promise<void> {
  if (hostio?.exchange && (await lstat(target).then((st) => !st.isDirectory(), () => false))) {
    try {
      hostio.exchange(temp, target);
      await unlink(temp).catch(() => undefined);
      return;
    } catch (e) {
      // Gone meanwhile: a plain rename below. Not exchangeable here: the two renames below.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EINVAL' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw e;
    }
  }
  const aside = `${temp}.old`;
  const moved = await rename(target, aside).then(() => true, (e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return false;
    throw e;
  });
  try {
    await rename(temp, target);
  } catch (e) {
    if (moved) await rename(aside, target).catch(() => undefined);
    throw e;
  }
  if (moved) await unlink(aside).catch(() => undefined);
}

/**
 * The image about to be replaced keeps its content (it is the one left if the convert fails) but
 * not its cached pages: qemu-img truncates the old file before writing, which frees them, and
 * the writes then fill freshly freed memory; without this, a second convert onto the same
 * destination wrote into memory the kernel had to find elsewhere (on this machine's VM, memory
 * handed back to the host: 1 GiB of writes took 1.0 s more system time; BENCHMARKS.md).
 * Skipped when some of those pages are dirty (dropping them would first write back a file that
 * is about to be deleted) and wherever the kernel or addon cannot tell.
 */
async function dropOldCache(target: string): Promise<void> {
  if (!hostio?.dropCleanCache) return;
  // (O_NONBLOCK: opening a FIFO that stands at the destination must not wait for a writer.)
  const fh = await open(target, constants.O_RDONLY | constants.O_NONBLOCK).catch(() => undefined);
  if (!fh) return;
  try {
    if ((await fh.stat()).isFile()) await hostio.dropCleanCache(fh.fd);
  } catch { /* only a hint */ } finally {
    await fh.close().catch(() => undefined);
  }
}

/** A destination that is a directory fails before any work, as qemu-img's create does. */
async function refuseDirectory(target: string, format: string): Promise<void> {
  const isDir = target.endsWith('/') || (await stat(target).then((st) => st.isDirectory(), () => false));
  if (isDir) throw new CliError(`${target}: error while converting ${format}: Could not create '${target}': Is a directory`);
}

/** Is `path` the same file as an image of one of these chains? */
async function isInChains(path: string, images: Image[]): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return false;
  for (const top of images) {
    for (const img of chainOf(top)) {
      const other = await stat(img.source.name).catch(() => undefined);
      if (other && other.dev === st.dev && other.ino === st.ino) return true;
    }
  }
  return false;
}
