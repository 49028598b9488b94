/**
 * `diskhub img probe`: what a file (or stdin, `-`) really is and whether it is safe to open
 * on a server — the safety inspector the image service runs on uploads. qemu-img has no such
 * command. It never follows a backing file, extent or data file it finds.
 *   exit 0: safe (and, with --format, of the declared format); 2: unsafe; 1: error.
 */
import { checkDeclaredFormat, inspectFile, StreamInspector, type InspectionReport } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, errorMessage, out, parseOutputFormat, type OutputFormat } from './common.js';
import { printHelp } from './help.js';

async function inspectStdin(): Promise<InspectionReport> {
  const insp = new StreamInspector('stdin');
  for await (const chunk of process.stdin) await insp.write(chunk as Uint8Array);
  return insp.end();
}

function human(name: string, r: InspectionReport): string {
  const lines = [
    `image: ${name}`,
    `format: ${r.format}${r.subformat ? ` (${r.subformat})` : ''}`,
    `virtual size: ${r.virtualSize ?? 'unknown'}${r.virtualSize !== null ? ' bytes' : ''}`,
    `file size: ${r.actualSize} bytes`,
  ];
  if (r.detected.length > 1) lines.push(`signatures: ${r.detected.join(', ')}`);
  for (const [k, v] of Object.entries(r.details)) if (v !== undefined && typeof v !== 'object') lines.push(`${k}: ${v}`);
  lines.push(r.safe ? 'safe: yes' : 'safe: no');
  for (const i of r.issues) lines.push(`  ${i.code}: ${i.message}`);
  return lines.join('\n') + '\n';
}

export async function probeCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'output', hasArg: 1, val: 'output' },
    { name: 'format', hasArg: 1, val: 'f' },
  ]);
  let output: OutputFormat = 'human';
  let declared: string | undefined;
  for (const o of options) {
    if (o.opt === 'h') return printHelp();
    if (o.opt === 'output') output = parseOutputFormat(o.arg);
    if (o.opt === 'f') declared = o.arg;
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name (or - for standard input)');
  const name = positional[0]!;
  let report: InspectionReport;
  try {
    report = name === '-' ? await inspectStdin() : await inspectFile(name);
  } catch (e) {
    throw new CliError(`Could not inspect '${name}': ${errorMessage(e)}`);
  }
  if (declared) report = checkDeclaredFormat(report, declared);
  if (output === 'json') {
    // Key spelling as qemu-img's JSON (virtual-size, actual-size).
    const { format, virtualSize, actualSize, ...rest } = report;
    out(JSON.stringify({ filename: name, format, 'virtual-size': virtualSize, 'actual-size': actualSize, ...rest }, null, 4) + '\n');
  } else {
    out(human(name, report));
  }
  return report.safe ? 0 : 2;
}
