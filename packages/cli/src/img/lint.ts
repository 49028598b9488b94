/**
 * `diskhub img lint`: the OpenStack cloud-image checklist checked in the image's files, without
 * booting it. One line per item (PASS / FAIL / N/A, the item, its evidence) or `--output=json`.
 *
 * Exit codes for CI: 0 no item failed, 1 an item failed, 2 an error — a bad option, an image
 * that cannot be opened or read, or no Linux system on it (nothing to check is not a pass).
 */
import { lintChecksJson, lintCounts, lintDisk, type LintedOs } from '@diskhub/disk';
import { CliError, out } from './common.js';
import { insideCommand } from './inside-command.js';

export const LINT_HELP = `usage: diskhub img lint [-f fmt] [--output=human|json] [--object ...] [--image-opts] IMAGE
Check a disk image against the OpenStack cloud-image checklist without booting it: SSH server
enabled, no firewall, cloud-init and its datasources, growpart, no hard-coded MAC address,
serial console, ACPI power key, no zeroconf route, DHCP on the first NIC, virtio drivers; and
what a sysprepped image must not keep (machine-id, SSH host keys, shell history, logs, DHCP
leases, cloud-init instance state). Each item is PASS, FAIL or N/A with its evidence.
Exit status: 0 no failure, 1 at least one FAIL, 2 error (or no Linux system found).
`;

export async function lintCommand(argv: string[]): Promise<number> {
  return insideCommand('lint', LINT_HELP, argv, async (image, output) => {
    const { inspection, linted } = await lintDisk(image);
    if (linted.length === 0) {
      const found = inspection.operatingSystems.map((o) => `${o.type} on ${o.root}`);
      const unread = inspection.filesystems.filter((f) => !f.readable).map((f) => `${f.type} on ${f.device}`);
      throw new CliError(`no Linux operating system was found on the disk${found.length > 0 ? ` (found: ${found.join(', ')}; only Linux is checked)` : ''}${unread.length > 0 ? ` (not read: ${unread.join(', ')})` : ''}`);
    }
    if (output === 'json') out(`${JSON.stringify(lintJson(linted), null, 2)}\n`);
    else out(humanText(linted));
    return linted.some((l) => l.checks.some((c) => c.result === 'fail')) ? 1 : 0;
  });
}

/** The JSON document (documented in the README). */
export function lintJson(linted: LintedOs[]): unknown {
  return {
    operatingsystems: linted.map(({ os, checks }) => ({
      root: os.root,
      distro: os.distro,
      major_version: os.majorVersion,
      minor_version: os.minorVersion,
      ...lintChecksJson(checks),
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
    const n = lintCounts(checks);
    lines.push(`${n.pass} passed, ${n.fail} failed, ${n.na} not applicable`);
    for (const note of os.notes) lines.push(`note: ${note}`);
  }
  return `${lines.join('\n')}\n`;
}
