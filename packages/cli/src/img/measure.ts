/** `diskhub img measure`: qemu-img measure. */
import { closeChain, getFormat, measureImage, type FormatDriver, type Image } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, errorMessage, openCliImage, parseOutputFormat, out, err, type OutputFormat } from './common.js';
import { parseImageSize, qemuJson } from './output.js';
import { parseOptionString, validateOptions } from './createopts.js';
import { printHelp } from './help.js';

export async function measureCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:O:o:l:U', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'output', hasArg: 1, val: 'output' },
    { name: 'size', hasArg: 1, val: 'size' },
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let format: string | undefined;
  let outFormat = 'raw';
  let output: OutputFormat = 'human';
  let size: number | undefined;
  let snapshot: string | undefined;
  const given: [string, string][] = [];
  let help = false;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg; break;
      case 'O': outFormat = o.arg!; break;
      case 'o': { const p = parseOptionString(o.arg!); given.push(...p.options); help ||= p.help; break; }
      case 'l': snapshot = snapshotParam(o.arg!); break;
      case 'output': output = parseOutputFormat(o.arg); break;
      case 'size': size = parseImageSize(o.arg!); break;
    }
  }
  const filename = positional[0];
  if (positional.length > 1) throw new UsageError('Expecting one image file name');
  if (filename === undefined && (format !== undefined || snapshot !== undefined)) throw new CliError('--image-opts, -f, and -l require a filename argument.');
  if (filename !== undefined && size !== undefined) throw new CliError('--size N cannot be used together with a filename.');
  if (filename === undefined && size === undefined) throw new CliError('Either --size N or one filename must be specified.');
  let driver: FormatDriver;
  try { driver = getFormat(outFormat); } catch { throw new CliError(`Unknown file format '${outFormat}'`); }
  let values: Map<string, string>;
  try {
    // measure has no option listing: "help" is just an unknown parameter here.
    if (help) given.unshift(['help', 'on']);
    values = validateOptions(driver, given);
  } catch (e) {
    err(`qemu-img: ${errorMessage(e)}\n`);
    throw new CliError(`Invalid options for file format '${driver.name}'`);
  }
  let source: Image | undefined;
  try {
    if (filename !== undefined) {
      const arg = secrets.image(filename, format);
      source = await openCliImage(arg.path, { ...openOptionsOf(arg), ...(snapshot !== undefined ? { snapshot } : {}) }, arg.display);
    }
    const result = await measureImage(driver.name, { size, source, options: Object.fromEntries(values) });
    if (output === 'json') out(qemuJson({ required: result.required, 'fully-allocated': result['fully-allocated'], bitmaps: result.bitmaps }) + '\n');
    else {
      out(`required size: ${result.required}\nfully allocated size: ${result['fully-allocated']}\n`);
      if (result.bitmaps !== undefined) out(`bitmaps size: ${result.bitmaps}\n`);
    }
  } catch (e) {
    throw e instanceof CliError || e instanceof UsageError ? e : new CliError(errorMessage(e));
  } finally {
    await closeChain(source);
  }
  return 0;
}

/** `-l snapshot.name=X`, `-l snapshot.id=N` or `-l X`: the snapshot to read. */
export function snapshotParam(text: string): string {
  const m = /^snapshot\.(?:name|id)=(.*)$/.exec(text);
  return m ? m[1]! : text;
}
