/**
 * `diskhub img bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
 * [-g granularity] [-f fmt] FILENAME BITMAP`: qemu-img 7.2's img_bitmap, the actions applied in
 * the order given, each failure reported as "Operation OP on bitmap NAME failed: ...".
 * With -b (and -F) --merge takes its source bitmap from another image, opened read-only.
 */
import { closeChain, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, errorMessage, openCliImage } from './common.js';
import { parseSize } from './output.js';
import { printHelp } from './help.js';

type Action = { op: 'add' | 'remove' | 'clear' | 'enable' | 'disable' } | { op: 'merge'; source: string };

export async function bitmapCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':b:f:F:g:hq', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'add', hasArg: 0, val: 'add' },
    { name: 'remove', hasArg: 0, val: 'remove' },
    { name: 'clear', hasArg: 0, val: 'clear' },
    { name: 'enable', hasArg: 0, val: 'enable' },
    { name: 'disable', hasArg: 0, val: 'disable' },
    { name: 'merge', hasArg: 1, val: 'merge' },
    { name: 'granularity', hasArg: 1, val: 'g' },
    { name: 'source-file', hasArg: 1, val: 'b' },
    { name: 'source-format', hasArg: 1, val: 'F' },
  ]);
  let format: string | undefined, sourceFile: string | undefined, sourceFormat: string | undefined;
  let granularity: number | undefined;
  const actions: Action[] = [];
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg; break;
      case 'b': sourceFile = o.arg; break;
      case 'F': sourceFormat = o.arg; break;
      case 'g': {
        const v = parseSize(o.arg!);
        if (v === null || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CliError(`Invalid granularity specified. You may use k, M, G, T, P or E suffixes for\nqemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`);
        granularity = Number(v);
        break;
      }
      case 'merge': actions.push({ op: 'merge', source: o.arg! }); break;
      case 'add': case 'remove': case 'clear': case 'enable': case 'disable': actions.push({ op: o.opt }); break;
    }
  }
  if (actions.length === 0) throw new CliError('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  if (granularity && !actions.some((a) => a.op === 'add')) throw new CliError('granularity only supported with --add');
  if (sourceFormat !== undefined && sourceFile === undefined) throw new CliError('-F only supported with -b');
  if (sourceFile !== undefined && !actions.some((a) => a.op === 'merge')) throw new CliError('Merge bitmap source file only supported with --merge');
  if (positional.length !== 2) throw new CliError('Expecting filename and bitmap name');
  const name = positional[1]!;
  const arg = secrets.image(positional[0]!, format);
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), writable: true, backing: false }, arg.display);
  let source: Image | undefined;
  try {
    if (sourceFile !== undefined) source = await openCliImage(sourceFile, { ...(sourceFormat !== undefined ? { format: sourceFormat } : {}), backing: false });
    for (const a of actions) await apply(image, a, name, granularity, source);
  } finally {
    await closeChain(source);
    await closeChain(image);
  }
  return 0;
}

async function apply(image: Image, a: Action, name: string, granularity: number | undefined, source: Image | undefined): Promise<void> {
  const op = a.op;
  try {
    const unsupported = (): never => { throw new Error(`Can't store persistent bitmaps to ${image.source.name}: Operation not supported`); };
    switch (a.op) {
      case 'add': await (image.addBitmap ?? unsupported).call(image, name, granularity); break;
      case 'remove': await (image.removeBitmap ?? notFound(name)).call(image, name); break;
      case 'clear': await (image.clearBitmap ?? notFound(name)).call(image, name); break;
      case 'enable': case 'disable': await (image.enableBitmap ?? notFound(name)).call(image, name, a.op === 'enable'); break;
      case 'merge': {
        const from = source ? await (source.readBitmap ?? notFound(a.source)).call(source, a.source) : undefined;
        await (image.mergeBitmap ?? notFound(a.source)).call(image, name, a.source, from);
        break;
      }
    }
  } catch (e) {
    throw new CliError(`Operation ${op} on bitmap ${name} failed: ${errorMessage(e)}`);
  }
}

function notFound(name: string): () => never {
  return () => { throw new Error(`Dirty bitmap '${name}' not found`); };
}
