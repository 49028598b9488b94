/** `diskhub img check`: qemu-img check (exit 0 clean, 1 check failed, 2 corruptions, 3 leaks, 63 unsupported). */
import { FileSource, checkSource, getFormat, probeFormat, readHead, isDiskError, CheckNotSupported, type CheckResult } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, checkCacheMode, errorMessage, parseOutputFormat, out, err, type OutputFormat } from './common.js';
import { qemuJson } from './output.js';
import { printHelp } from './help.js';

export const EXIT_CHECK_UNSUPPORTED = 63;

export async function checkCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:r:T:qU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'format', hasArg: 1, val: 'f' },
    { name: 'repair', hasArg: 1, val: 'r' },
    { name: 'output', hasArg: 1, val: 'output' },
    { name: 'object', hasArg: 1, val: 'object' },
    { name: 'image-opts', hasArg: 0, val: 'image-opts' },
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let format: string | undefined;
  let output: OutputFormat = 'human';
  let repair: 'leaks' | 'all' | undefined;
  let quiet = false;
  for (const o of options) {
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg; break;
      case 'r':
        if (o.arg !== 'leaks' && o.arg !== 'all') throw new UsageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${o.arg}`);
        repair = o.arg;
        break;
      case 'output': output = parseOutputFormat(o.arg); break;
      case 'q': quiet = true; break;
      case 'T': checkCacheMode(o.arg, true); break;
      case 'image-opts': throw new UsageError('--image-opts is not supported', false);
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const filename = positional[0]!;
  let source: FileSource;
  try {
    if (format !== undefined) getFormat(format);
    source = await FileSource.open(filename, { readOnly: !repair });
  } catch (e) {
    throw new CliError(`Could not open '${filename}': ${errorMessage(e)}`);
  }
  if (repair && format === undefined && probeFormat(await readHead(source), filename).name === 'raw') {
    // Opening a probed raw image for writing: qemu-img warns (and so we stay output-compatible).
    err(`WARNING: Image format was not specified for '${filename}' and probing guessed raw.\n` +
      '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
      "         Specify the 'raw' format explicitly to remove the restrictions.\n");
  }
  let result: CheckResult;
  try {
    result = await checkSource(source, { format, repair });
  } catch (e) {
    if (e instanceof CheckNotSupported) {
      err(`qemu-img: ${e.message}\n`);
      return EXIT_CHECK_UNSUPPORTED;
    }
    // Headers too broken to open the image are open errors in qemu-img, not check results.
    if (isDiskError(e) && ['EFORMAT', 'ETRUNCATED', 'ELIMIT', 'EUNSUPPORTED', 'EUNSAFE', 'ENOENT'].includes(e.code)) {
      throw new CliError(`Could not open '${filename}': ${e.message}`);
    }
    throw new CliError(`Check failed: ${errorMessage(e)}`);
  } finally {
    await source.close();
  }
  for (const m of result.messages) err(m.endsWith('\n') ? m : m + '\n');
  if (!quiet) out(output === 'json' ? qemuJson(checkJson(result, filename)) + '\n' : humanCheck(result));
  if (result['check-errors']) return 1;
  if (result.corruptions) return 2;
  if (result.leaks) return 3;
  return 0;
}

/** The JSON object qemu-img prints: counters that are zero are left out. */
export function checkJson(r: CheckResult, filename: string): Record<string, unknown> {
  const nz = (v: number | undefined) => (v ? v : undefined);
  return {
    filename,
    format: r.format,
    'check-errors': r['check-errors'],
    'image-end-offset': nz(r['image-end-offset']),
    corruptions: nz(r.corruptions),
    leaks: nz(r.leaks),
    'corruptions-fixed': nz(r['corruptions-fixed']),
    'leaks-fixed': nz(r['leaks-fixed']),
    'total-clusters': nz(r['total-clusters']),
    'allocated-clusters': nz(r['allocated-clusters']),
    'fragmented-clusters': nz(r['fragmented-clusters']),
    'compressed-clusters': nz(r['compressed-clusters']),
  };
}

const pct = (a: number, b: number) => (b ? (a * 100) / b : 0).toFixed(2);

export function humanCheck(r: CheckResult): string {
  let s = '';
  const leaksFixed = r['leaks-fixed'] ?? 0;
  const corruptionsFixed = r['corruptions-fixed'] ?? 0;
  if (leaksFixed || corruptionsFixed) {
    s += 'The following inconsistencies were found and repaired:\n\n';
    s += `    ${leaksFixed} leaked clusters\n    ${corruptionsFixed} corruptions\n\n`;
    s += 'Double checking the fixed image now...\n';
  }
  const corruptions = r.corruptions ?? 0;
  const leaks = r.leaks ?? 0;
  const checkErrors = r['check-errors'] ?? 0;
  if (!corruptions && !leaks && !checkErrors) s += 'No errors were found on the image.\n';
  else {
    if (corruptions) s += `\n${corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    if (leaks) s += `\n${leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    if (checkErrors) s += `\n${checkErrors} internal errors have occurred during the check.\n`;
  }
  const total = r['total-clusters'] ?? 0;
  const allocated = r['allocated-clusters'] ?? 0;
  if (total && allocated) {
    s += `${allocated}/${total} = ${pct(allocated, total)}% allocated, ${pct(r['fragmented-clusters'] ?? 0, allocated)}% fragmented, ${pct(r['compressed-clusters'] ?? 0, allocated)}% compressed clusters\n`;
  }
  if (r['image-end-offset']) s += `Image end offset: ${r['image-end-offset']}\n`;
  return s;
}
