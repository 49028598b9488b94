/** `diskhub img map`: qemu-img map (human and json). */
import type { Extent } from '@diskhub/disk';
import { closeChain } from '@diskhub/disk/open';
import { mapImage } from '@diskhub/disk/ops/map';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, OutputBuffer, openCliImage, parseOutputFormat, type OutputFormat } from './common.js';
import { cvtnum } from './output.js';
import { printHelp } from './help.js';
import { INSIDE_OPTIONS, insideOption, selectInside, type InsideSelection } from './inside.js';


function offsetArg(text: string, what: string): number {
  const v = cvtnum(what, text);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

export async function mapCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':f:s:l:hU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'format', hasArg: 1, val: 'f' },
    { name: 'output', hasArg: 1, val: 'output' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force-share', hasArg: 0, val: 'U' },
    { name: 'start-offset', hasArg: 1, val: 's' },
    { name: 'max-length', hasArg: 1, val: 'l' },
    ...INSIDE_OPTIONS,
  ]);
  const inside: InsideSelection = {};
  let format: string | undefined;
  let output: OutputFormat = 'human';
  let start = 0;
  let maxLength: number | undefined;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg; break;
      case 'output': output = parseOutputFormat(o.arg); break;
      case 's': start = offsetArg(o.arg!, 'start offset'); break;
      case 'l': maxLength = offsetArg(o.arg!, 'max length'); break;
      default: insideOption(o.opt, o.arg, inside);
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const filename = positional[0]!;
  const arg = secrets.image(filename, format);
  const image = await openCliImage(arg.path, openOptionsOf(arg), arg.display);
  const out = new OutputBuffer();
  try {
    const { device } = await selectInside(image, filename, inside);
    const length = maxLength === undefined ? device.size : Math.min(maxLength, Math.max(0, device.size - start));
    if (output === 'json') {
      let first = true;
      await out.add('[');
      for await (const e of mapImage(device, { start, length })) {
        await out.add((first ? '' : ',\n') + jsonEntry(e));
        first = false;
      }
      // qemu-img prints one empty entry when there is nothing to map.
      if (first) await out.add(`{ "start": ${start}, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}`);
      await out.add(']\n');
    } else {
      await out.add('Offset          Length          Mapped to       File\n');
      for await (const e of mapImage(device, { start, length })) {
        if (!e.data) continue;
        if (e.hostOffset === undefined) {
          await out.flush();
          throw new CliError('File contains external, encrypted or compressed clusters.');
        }
        // Data that reads as zeroes (a preallocated host hole) is not listed, as in qemu-img.
        if (e.zero) continue;
        await out.add(`${hex(e.offset)}${hex(e.length)}${hex(e.hostOffset)}${e.hostFile ?? filename}\n`);
      }
    }
    await out.flush();
  } finally {
    await closeChain(image);
  }
  return 0;
}

/** printf("%#-16"PRIx64): 0x-prefixed except for zero, left-aligned in 16 columns. */
const hex = (n: number) => (n === 0 ? '0' : '0x' + n.toString(16)).padEnd(16);

/** One entry of `map --output=json`, formatted exactly as qemu-img 7.2 writes it. */
export function jsonEntry(e: Extent): string {
  let s = `{ "start": ${e.offset}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.hostOffset !== undefined) s += `, "offset": ${e.hostOffset}`;
  return s + '}';
}
