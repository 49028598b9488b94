/** `diskhub img check`: qemu-img check (exit 0 clean, 1 check failed, 2 corruptions, 3 leaks, 63 unsupported). */
import type { CheckResult } from '@diskhub/disk';
import { CheckNotSupported, isDiskError } from '@diskhub/disk/errors';
import { getFormat, probeFormat } from '@diskhub/disk/formats';
import { closeChain } from '@diskhub/disk/open';
import { checkSource } from '@diskhub/disk/ops/dispatch';
import { isEncryptedHead } from '@diskhub/disk/qcow2/crypto';
import { FileSource, readHead } from '@diskhub/disk/source';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, checkCacheMode, errorMessage, openCliImage, parseOutputFormat, out, err, warnProbedRaw, type OutputFormat } from './common.js';
import { qemuJson } from './output.js';
import { printHelp } from './help.js';

export const EXIT_CHECK_UNSUPPORTED = 63;

export async function checkCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':hf:r:T:qU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'format', hasArg: 1, val: 'f' },
    { name: 'repair', hasArg: 1, val: 'r' },
    { name: 'output', hasArg: 1, val: 'output' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let format: string | undefined;
  let output: OutputFormat = 'human';
  let repair: 'leaks' | 'all' | undefined;
  let quiet = false;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
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
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const arg = secrets.image(positional[0]!, format);
  const filename = arg.path;
  format = arg.format;
  let source: FileSource;
  try {
    if (format !== undefined) getFormat(format);
    source = await FileSource.open(filename, { readOnly: !repair });
  } catch (e) {
    throw new CliError(`Could not open '${arg.display}': ${errorMessage(e)}`);
  }
  if (isEncryptedHead(await readHead(source, 64))) {
    // qemu-img opens the image (unlocking it) before checking; a missing or wrong secret fails here.
    try {
      await closeChain(await openCliImage(filename, { ...openOptionsOf(arg), backing: false }, arg.display));
    } catch (e) {
      await source.close();
      throw e;
    }
  }
  if (repair && format === undefined && probeFormat(await readHead(source), filename).name === 'raw') {
    // Opening a probed raw image for writing: qemu-img warns (and so we stay output-compatible).
    warnProbedRaw(filename);
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
    if (isDiskError(e) && ['EFORMAT', 'ETRUNCATED', 'ELIMIT', 'EUNSUPPORTED', 'EUNSAFE', 'ENOENT', 'EROFS'].includes(e.code)) {
      throw new CliError(`Could not open '${filename}': ${e.message}`);
    }
    throw new CliError(`Check failed: ${errorMessage(e)}`);
  } finally {
    await source.close();
  }
  for (const m of result.messages) err(m.endsWith('\n') ? m : m + '\n');
  if (!quiet) out(output === 'json' ? qemuJson(checkJson(result, arg.display)) + '\n' : humanCheck(result));
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

