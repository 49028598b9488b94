/**
 * `diskhub img`: qemu-img's command line over the disk engine. One file per command; this
 * file parses the global options and dispatches. Other parts of diskhub add a command with
 * one line in COMMANDS.
 */
import { getopt, UsageError } from './getopt.js';
import { report, out } from './common.js';
import { HELP, VERSION } from './help.js';

/** A command gets argv with its own name at argv[0], as qemu-img's commands do. */
export type ImgCommand = (argv: string[]) => Promise<number>;

/**
 * Each command's module is loaded when the command runs: loading all of them (and what they
 * import: the boot test's network stack, the filesystem readers, ...) was most of the start-up
 * of a short command such as `img info` (BENCHMARKS.md, issue 22's start-up).
 */
const COMMANDS: Record<string, () => Promise<ImgCommand>> = {
  cat: async () => (await import('./cat.js')).catCommand,
  bench: async () => (await import('./bench.js')).benchCommand,
  amend: async () => (await import('./amend.js')).amendCommand,
  bitmap: async () => (await import('./bitmap.js')).bitmapCommand,
  'boot-test': async () => (await import('../boot-test/command.js')).bootTestCommand,
  check: async () => (await import('./check.js')).checkCommand,
  commit: async () => (await import('./commit.js')).commitCommand,
  compare: async () => (await import('./compare.js')).compareCommand,
  'config-drive': async () => (await import('./config-drive.js')).configDriveCommand,
  convert: async () => (await import('./convert.js')).convertCommand,
  'copy-out': async () => (await import('./copy-out.js')).copyOutCommand,
  create: async () => (await import('./create.js')).createCommand,
  dd: async () => (await import('./dd.js')).ddCommand,
  info: async () => (await import('./info.js')).infoCommand,
  inspect: async () => (await import('./inspect.js')).inspectCommand,
  lint: async () => (await import('./lint.js')).lintCommand,
  ls: async () => (await import('./ls.js')).lsCommand,
  map: async () => (await import('./map.js')).mapCommand,
  measure: async () => (await import('./measure.js')).measureCommand,
  partitions: async () => (await import('./partitions.js')).partitionsCommand,
  probe: async () => (await import('./probe.js')).probeCommand,
  rebase: async () => (await import('./rebase.js')).rebaseCommand,
  resize: async () => (await import('./resize.js')).resizeCommand,
  snapshot: async () => (await import('./snapshot.js')).snapshotCommand,
  sysprep: async () => (await import('../sysprep/command.js')).sysprepCommand,
};

export async function imgMain(argv: string[]): Promise<number> {
  try {
    // Global options stop at the first non-option (the command), as with getopt's '+'.
    let i = 0;
    for (; i < argv.length; i++) {
      const a = argv[i]!;
      if (a === '-h' || a === '--help') { out(HELP); return 0; }
      if (a === '-V' || a === '--version') { out(VERSION); return 0; }
      if (a === '-T' || a === '--trace') { i++; continue; }
      if (a.startsWith('--trace=') || (a.startsWith('-T') && a.length > 2)) continue;
      if (a === '--') { i++; break; }
      if (a.startsWith('-')) throw new UsageError(`unrecognized option '${a}'`);
      break;
    }
    const cmd = argv[i];
    if (cmd === undefined) throw new UsageError('Not enough arguments');
    const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
    if (!load) throw new UsageError(`Command not found: ${cmd}`);
    return await (await load())(argv.slice(i));
  } catch (e) {
    return report(e);
  }
}

