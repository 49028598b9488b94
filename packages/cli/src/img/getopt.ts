/**
 * Command-line parsing the way qemu-img does it (glibc getopt_long with a leading ':' in the
 * option string, argument permutation, unique-prefix long options), so that the same
 * arguments are accepted and the same mistakes get the same messages.
 */

export interface LongOption {
  name: string;
  /** 0: no argument, 1: required argument, 2: optional argument (only as --name=value, as getopt_long's optional_argument). */
  hasArg: 0 | 1 | 2;
  /** The value reported for this option (a short letter or a symbolic name). */
  val: string;
}

export interface ParsedOption { opt: string; arg?: string }

/** A usage error: qemu-img prints the message and "Try 'qemu-img --help'..." and exits 1. */
export class UsageError extends Error {
  constructor(message: string, readonly tryHelp = true) { super(message); }
}

/**
 * Parse `argv` (argv[0] is the command name, as qemu-img sees it) against a getopt short
 * option string (like "f:hU") and long options. Returns options in order and the
 * positional arguments.
 */
export function getopt(argv: string[], shortOpts: string, longOpts: LongOption[]): { options: ParsedOption[]; positional: string[] } {
  const short = new Map<string, boolean>();
  for (let i = 0; i < shortOpts.length; i++) {
    const c = shortOpts[i]!;
    if (c === ':') continue;
    short.set(c, shortOpts[i + 1] === ':');
  }
  const options: ParsedOption[] = [];
  const positional: string[] = [];
  // getopt reports argv[optind-1]; after its permutation that is the last non-option seen so
  // far, or else the element before the current one.
  const previous = (i: number): string => positional.length > 0 ? positional[positional.length - 1]! : argv[i - 1]!;
  let i = 1;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') { i++; break; }
    if (!a.startsWith('-') || a === '-') { positional.push(a); continue; }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const exact = longOpts.find((o) => o.name === name);
      let match = exact;
      if (!match) {
        const cands = longOpts.filter((o) => o.name.startsWith(name));
        const distinct = new Set(cands.map((o) => `${o.hasArg}:${o.val}`));
        if (cands.length > 0 && distinct.size === 1) match = cands[0];
      }
      if (!match) throw new UsageError(`unrecognized option '${a}'`);
      if (match.hasArg === 2) {
        options.push({ opt: match.val, ...(eq >= 0 ? { arg: a.slice(eq + 1) } : {}) });
      } else if (match.hasArg) {
        if (eq >= 0) options.push({ opt: match.val, arg: a.slice(eq + 1) });
        else if (i + 1 < argv.length) options.push({ opt: match.val, arg: argv[++i] });
        else throw new UsageError(`missing argument for option '${a}'`);
      } else {
        if (eq >= 0) throw new UsageError(`unrecognized option '${a}'`);
        options.push({ opt: match.val });
      }
      continue;
    }
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      const last = j === a.length - 1;
      const takes = short.get(c);
      if (takes === undefined) throw new UsageError(`unrecognized option '${last ? a : previous(i)}'`);
      if (!takes) { options.push({ opt: c }); continue; }
      if (!last) { options.push({ opt: c, arg: a.slice(j + 1) }); break; }
      if (i + 1 < argv.length) { options.push({ opt: c, arg: argv[++i] }); break; }
      throw new UsageError(`missing argument for option '${a}'`);
    }
  }
  for (; i < argv.length; i++) positional.push(argv[i]!);
  return { options, positional };
}
