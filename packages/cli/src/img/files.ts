/**
 * What `img ls`, `img cat` and `img copy-out` share (virt-ls, virt-cat, virt-copy-out without
 * an appliance): opening an image as the other commands do (-f, --object, --image-opts), then
 * the filesystem to read — `--partition N` / `--lv VG/LV`, or the root filesystem found by
 * inspection — and errors printed as "diskhub img CMD: message" with exit code 1.
 */
import { closeChain, openSelectedFilesystem, isDiskError, type Filesystem, type Image, type InsideSelection } from '@diskhub/disk';
import { UsageError, type LongOption, type ParsedOption } from './getopt.js';
import { CliError, FILESYSTEM_BLOCKING_READ_MAX, errorMessage, err, openCliImage } from './common.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { INSIDE_OPTIONS, insideOption } from './inside.js';

/** -f/--format, the secret options and --partition/--lv. */
export const FILE_LONG_OPTIONS: LongOption[] = [
  { name: 'format', hasArg: 1, val: 'f' },
  ...SECRET_LONG_OPTIONS,
  ...INSIDE_OPTIONS,
];

export class ImageFileOptions {
  format: string | undefined;
  readonly secrets = new Secrets();
  readonly inside: InsideSelection = {};

  /** Take an option this class knows; false for others. */
  option(o: ParsedOption): boolean {
    if (this.secrets.option(o)) return true;
    if (o.opt === 'f') { this.format = o.arg; return true; }
    return insideOption(o.opt, o.arg, this.inside);
  }
}

export interface OpenedImageFiles {
  image: Image;
  fs: Filesystem;
}

/**
 * Run `body` with the image's filesystem open; the image is closed on every path. `walk`: the
 * command reads metadata more than data (ls, copy-out), so small reads stay on the main thread
 * (FILESYSTEM_BLOCKING_READ_MAX); cat's data reads keep the I/O threads, reading ahead.
 */
export async function withImageFiles<T>(filename: string, opts: ImageFileOptions, body: (o: OpenedImageFiles) => Promise<T>, walk = true): Promise<T> {
  const arg = opts.secrets.image(filename, opts.format);
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), ...(walk ? { blockingReadMax: FILESYSTEM_BLOCKING_READ_MAX } : {}) }, arg.display);
  try {
    let fs: Filesystem;
    let notes: string[] | undefined;
    try {
      ({ fs, notes } = await openSelectedFilesystem(image, opts.inside));
    } catch (e) {
      if (isDiskError(e)) throw new CliError(`${arg.display}: ${e.message}`);
      throw e;
    }
    for (const w of [...fs.warnings, ...(notes ?? [])]) err(`warning: ${arg.display}: ${w}\n`);
    return await body({ image, fs });
  } finally {
    await closeChain(image);
  }
}

/** Run a file command, printing failures as "diskhub img NAME: message" (exit 1), as virt-ls prints "virt-ls: error: ...". */
export async function runFileCommand(name: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    if (e instanceof UsageError) {
      err(`diskhub img ${name}: ${e.message}\n`);
      if (e.tryHelp) err(`Try 'diskhub img ${name} --help' for more information.\n`);
      return 1;
    }
    if (e instanceof CliError || isDiskError(e)) {
      err(`diskhub img ${name}: ${errorMessage(e)}\n`);
      return 1;
    }
    throw e;
  }
}
