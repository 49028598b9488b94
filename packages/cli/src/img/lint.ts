/**
 * `diskhub img lint`: the OpenStack cloud-image checklist checked in the image's files, without
 * booting it. One line per item (PASS / FAIL / N/A, the item, its evidence) or `--output=json`.
 *
 * Exit codes for CI: 0 no item failed, 1 an item failed, 2 an error — a bad option, an image
 * that cannot be opened or read, or no Linux system on it (nothing to check is not a pass).
 */
import { closeChain, inspectWithTrees, isDiskError, lintLinux, type InspectedOs, type LintCheck } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, errorMessage, err, openCliImage, out, parseOutputFormat, type OutputFormat } from './common.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';

export const LINT_HELP = `usage: diskhub img lint [-f fmt] [--output=human|json] [--object ...] [--image-opts] IMAGE
Check a disk image against the OpenStack cloud-image checklist without booting it: SSH server
enabled, no firewall, cloud-init and its datasources, growpart, no hard-coded MAC address,
serial console, ACPI power key, no zeroconf route, DHCP on the first NIC, virtio drivers; and
what a sysprepped image must not keep (machine-id, SSH host keys, shell history, logs, DHCP
leases, cloud-init instance state). Each item is PASS, FAIL or N/A with its evidence.
Exit status: 0 no failure, 1 at least one FAIL, 2 error (or no Linux system found).
`;

interface LintedOs {
  os: InspectedOs;
  checks: LintCheck[];
}

export async function lintCommand(argv: string[]): Promise<number> {
  try {
    const { options, positional } = getopt(argv, ':f:h', [
      { name: 'help', hasArg: 0, val: 'h' },
      { name: 'format', hasArg: 1, val: 'f' },
      { name: 'output', hasArg: 1, val: 'output' },
      ...SECRET_LONG_OPTIONS,
    ]);
    const secrets = new Secrets();
    let format: string | undefined;
    let output: OutputFormat = 'human';
    for (const o of options) {
      if (secrets.option(o)) continue;
      if (o.opt === 'h') { out(LINT_HELP); return 0; }
      if (o.opt === 'f') format = o.arg;
      else if (o.opt === 'output') output = parseOutputFormat(o.arg);
    }
    if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'Expecting one image file name' : `Invalid parameter '${positional[1]}'`);
    const arg = secrets.image(positional[0]!, format);
    const image = await openCliImage(arg.path, openOptionsOf(arg), arg.display);
    const linted: LintedOs[] = [];
    try {
      const { inspection, trees } = await inspectWithTrees(image);
      for (const os of inspection.operatingSystems) {
        const tree = trees.get(os.root);
        if (os.type === 'linux' && tree) linted.push({ os, checks: await lintLinux(os, tree) });
      }
      if (linted.length === 0) {
        const found = inspection.operatingSystems.map((o) => `${o.type} on ${o.root}`);
        const unread = inspection.filesystems.filter((f) => !f.readable).map((f) => `${f.type} on ${f.device}`);
        throw new CliError(`no Linux operating system was found on the disk${found.length > 0 ? ` (found: ${found.join(', ')}; only Linux is checked)` : ''}${unread.length > 0 ? ` (not read: ${unread.join(', ')})` : ''}`);
      }
    } catch (e) {
      if (isDiskError(e)) throw new CliError(`${arg.display}: ${e.message}`);
      throw e;
    } finally {
      await closeChain(image);
    }
    if (output === 'json') out(`${JSON.stringify(lintJson(linted), null, 2)}\n`);
    else out(humanText(linted));
    return linted.some((l) => l.checks.some((c) => c.result === 'fail')) ? 1 : 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`diskhub img lint: ${e.message}\n`);
      if (e.tryHelp) err("Try 'diskhub img lint --help' for more information.\n");
      return 2;
    }
    if (e instanceof CliError || isDiskError(e)) {
      err(`diskhub img lint: ${errorMessage(e)}\n`);
      return 2;
    }
    throw e;
  }
}

function counts(checks: LintCheck[]): { pass: number; fail: number; na: number } {
  return { pass: checks.filter((c) => c.result === 'pass').length, fail: checks.filter((c) => c.result === 'fail').length, na: checks.filter((c) => c.result === 'n/a').length };
}

/** The JSON document (documented in the README). */
export function lintJson(linted: LintedOs[]): unknown {
  return {
    operatingsystems: linted.map(({ os, checks }) => ({
      root: os.root,
      distro: os.distro,
      major_version: os.majorVersion,
      minor_version: os.minorVersion,
      checks: checks.map((c) => ({ id: c.id, title: c.title, result: c.result, evidence: c.evidence })),
      summary: counts(checks),
      notes: os.notes,
    })),
  };
}

function humanText(linted: LintedOs[]): string {
  const lines: string[] = [];
  for (const { os, checks } of linted) {
    if (lines.length > 0) lines.push('');
    lines.push(`${os.root}: ${os.productName ?? os.distro ?? 'unknown Linux'}`);
    for (const c of checks) lines.push(`${{ pass: 'PASS', fail: 'FAIL', 'n/a': 'N/A' }[c.result].padEnd(6)}${c.id.padEnd(22)}${c.evidence.join('; ')}`);
    const n = counts(checks);
    lines.push(`${n.pass} passed, ${n.fail} failed, ${n.na} not applicable`);
    for (const note of os.notes) lines.push(`note: ${note}`);
  }
  return `${lines.join('\n')}\n`;
}
