/**
 * `diskhub img inspect`: virt-inspector without an appliance — for every operating system on
 * the disk: type, distribution, version, product name, hostname, architecture, root and
 * fstab mount points, kernels, boot loader and kernel command line, package format and
 * installed packages, cloud-init, users who can log in. Human text or `--output=json`.
 *
 * Exit codes: 0 an operating system was inspected, 1 none was found (as virt-inspector), 2 an
 * error (the image cannot be opened, a bad option), so scripts can tell "no OS" from failure.
 */
import { inspectOperatingSystems, inspectionJson, type OsInspection } from '@diskhub/disk';
import { err, out } from './common.js';
import { insideCommand } from './inside-command.js';

export const INSPECT_HELP = `usage: diskhub img inspect [-f fmt] [--output=human|json] [--object ...] [--image-opts] IMAGE
Inspect the operating systems of a disk image, as virt-inspector does, without booting an
appliance: distribution, version, hostname, architecture, mount points, kernels, boot loader
and kernel command line, packages, cloud-init and users.
Exit status: 0 inspected, 1 no operating system found, 2 error.
`;

export async function inspectCommand(argv: string[]): Promise<number> {
  return insideCommand('inspect', INSPECT_HELP, argv, async (image, output) => {
    const result = await inspectOperatingSystems(image);
    if (output === 'json') out(`${JSON.stringify(inspectionJson(result), null, 2)}\n`);
    else if (result.operatingSystems.length > 0) out(humanText(result));
    if (result.operatingSystems.length === 0) {
      const unread = result.filesystems.filter((f) => !f.readable).map((f) => `${f.type} on ${f.device}`);
      err(`diskhub img inspect: no operating system was found on the disk${unread.length > 0 ? ` (not read: ${unread.join(', ')})` : ''}\n`);
      return 1;
    }
    return 0;
  });
}

function humanText(r: OsInspection): string {
  const lines: string[] = [];
  for (const os of r.operatingSystems) {
    if (lines.length > 0) lines.push('');
    const field = (k: string, v: string | number | null) => lines.push(`${`${k}:`.padEnd(20)}${v ?? '(unknown)'}`);
    field('root', `${os.root} (${os.where})`);
    field('type', os.type);
    field('distro', os.distro);
    field('version', os.type === 'linux' && os.distro !== null ? `${os.majorVersion}.${os.minorVersion}` : null);
    field('product name', os.productName);
    field('hostname', os.hostname);
    field('architecture', os.arch);
    field('package format', os.packageFormat);
    field('package management', os.packageManagement);
    lines.push('mount points:');
    for (const m of os.mountpoints) lines.push(`  ${m.mountpoint.padEnd(18)}${m.device ?? '(not found)'}  ${m.spec} ${m.fstype}`);
    if (os.kernels.length > 0) {
      lines.push('kernels:');
      for (const k of os.kernels) lines.push(`  ${k.version}  ${k.path}${k.initramfs ? `  ${k.initramfs}` : '  (no initramfs)'}`);
    }
    if (os.bootLoader) {
      field('boot loader', os.bootLoader.type === null ? null : `${os.bootLoader.type}${os.bootLoader.config ? ` (${os.bootLoader.config})` : ''}`);
      for (const [k, v] of Object.entries(os.bootLoader.defaults)) lines.push(`  ${k}="${v}"`);
      for (const e of os.bootLoader.entries) lines.push(`  ${e.kernel} ${e.cmdline}`.trimEnd());
    }
    field('cloud-init', os.cloudInit ? `installed, datasource_list: ${os.cloudInit.datasourceList ? `[${os.cloudInit.datasourceList.join(', ')}] (${os.cloudInit.datasourceListFrom})` : '(not set)'}` : 'not installed');
    lines.push('users with a login shell:');
    for (const u of os.users) lines.push(`  ${u.name.padEnd(16)}uid ${String(u.uid).padEnd(6)}${u.shell.padEnd(16)}password ${u.password}`);
    if (os.packages) {
      lines.push(`applications (${os.packages.length}):`);
      for (const p of os.packages) lines.push(`  ${p.name} ${p.version}${p.arch ? ` ${p.arch}` : ''}`);
    }
    for (const n of os.notes) lines.push(`note: ${n}`);
  }
  return `${lines.join('\n')}\n`;
}
