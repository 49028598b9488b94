/**
 * The OpenStack cloud-image checklist, checked in the image's files without booting it: each
 * item passes, fails or does not apply, with the evidence (a file and line, or the file that
 * is missing). Builds on `inspect-os/` (its release, boot loader, cloud-init and package
 * findings, and its tree of files with the fstab mounts joined).
 *
 * Items and how each is decided are listed in the README ("diskhub img lint"); the choices
 * that are ours (not the checklist's wording) are commented where they are made.
 */
import type { BlockDevice } from '../blockdev.js';
import { inspectWithTrees, type InspectedOs, type OsInspection } from '../inspect-os/index.js';
import type { OsTree } from '../inspect-os/tree.js';
import { listInitramfs } from './initramfs.js';

export { listInitramfs, type InitramfsListing } from './initramfs.js';

export type LintResult = 'pass' | 'fail' | 'n/a';

export interface LintCheck {
  /** Stable identifier (JSON key, CI filters). */
  id: string;
  /** What the item asks, in words. */
  title: string;
  result: LintResult;
  /** Files and lines that decided it: "path:line: text", "path", "missing: path". */
  evidence: string[];
}

/** The most files reported for one item (logs can be thousands): the rest are counted. */
const MAX_EVIDENCE = 20;
/** The most entries visited under one directory tree (/var/log). */
const MAX_WALK = 20000;

const SYSTEMD_WANTS = ['multi-user.target.wants', 'sockets.target.wants', 'sysinit.target.wants', 'basic.target.wants', 'network-online.target.wants', 'cloud-init.target.wants'];
const SYSV_RUNLEVELS = ['/etc/rc2.d', '/etc/rc3.d', '/etc/rc.d/rc3.d', '/etc/rc.d/rc2.d'];
const RHEL_FAMILY = new Set(['rhel', 'centos', 'rocky', 'almalinux', 'fedora', 'ol', 'oraclelinux', 'scientificlinux', 'redhat-based', 'amzn', 'cloudlinux', 'eurolinux', 'circle']);

/** Lines of a text that match, as "path:line: text" (1-based lines, comments skipped). */
function matching(path: string, text: string, re: RegExp): string[] {
  const out: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (/^\s*#/.test(line)) return;
    if (re.test(line)) out.push(`${path}:${i + 1}: ${line.trim()}`);
  });
  return out;
}

function capped(list: string[]): string[] {
  return list.length <= MAX_EVIDENCE ? list : [...list.slice(0, MAX_EVIDENCE), `... and ${list.length - MAX_EVIDENCE} more`];
}

/** Links that enable units at boot: `/etc/systemd/system/<target>.wants/<unit>` and sysvinit `S??name` links. */
async function enabledUnits(tree: OsTree, units: RegExp, sysv: RegExp): Promise<string[]> {
  const found: string[] = [];
  for (const w of SYSTEMD_WANTS) {
    // Listed, not resolved: an enabling link's target lives under /lib/systemd/system, and a
    // link is what `systemctl enable` makes whatever it points to.
    for (const n of (await tree.list(`/etc/systemd/system/${w}`)) ?? []) if (units.test(n)) found.push(`/etc/systemd/system/${w}/${n}`);
  }
  for (const d of SYSV_RUNLEVELS) for (const n of (await tree.list(d)) ?? []) if (/^S\d\d/.test(n) && sysv.test(n.slice(3))) found.push(`${d}/${n}`);
  return found;
}

async function isSystemd(tree: OsTree): Promise<boolean> {
  return (await tree.exists('/lib/systemd/systemd')) || (await tree.exists('/usr/lib/systemd/systemd')) || (await tree.exists('/etc/systemd/system'));
}

function installed(os: InspectedOs, ...names: string[]): string | null {
  const p = os.packages?.find((x) => names.includes(x.name));
  return p ? `package ${p.name} ${p.version}` : null;
}

async function firstExisting(tree: OsTree, paths: string[]): Promise<string | null> {
  for (const p of paths) if (await tree.exists(p)) return p;
  return null;
}

export interface LintedOs {
  os: InspectedOs;
  checks: LintCheck[];
}

/** Inspect a disk and check every Linux system found on it (Windows systems are inspected, not checked). */
export async function lintDisk(disk: BlockDevice): Promise<{ inspection: OsInspection; linted: LintedOs[] }> {
  const { inspection, trees } = await inspectWithTrees(disk);
  const linted: LintedOs[] = [];
  for (const os of inspection.operatingSystems) {
    const tree = trees.get(os.root);
    if (os.type === 'linux' && tree) linted.push({ os, checks: await lintLinux(os, tree) });
  }
  return { inspection, linted };
}

export function lintCounts(checks: LintCheck[]): { pass: number; fail: number; na: number } {
  return { pass: checks.filter((c) => c.result === 'pass').length, fail: checks.filter((c) => c.result === 'fail').length, na: checks.filter((c) => c.result === 'n/a').length };
}

/** One system's items and their counts as JSON (`img lint --output=json` and x-diskhub/inside). */
export function lintChecksJson(checks: LintCheck[]) {
  return { checks: checks.map((c) => ({ id: c.id, title: c.title, result: c.result, evidence: c.evidence })), summary: lintCounts(checks) };
}

/** Every item of the checklist for one Linux system. */
export async function lintLinux(os: InspectedOs, tree: OsTree): Promise<LintCheck[]> {
  const checks: LintCheck[] = [];
  const add = (id: string, title: string, result: LintResult, evidence: string[]) => checks.push({ id, title, result, evidence: capped(evidence) });
  const systemd = await isSystemd(tree);

  // SSH server enabled at boot: a unit link (ssh.service Debian, sshd.service RHEL, or socket activation) or an rc S link.
  const ssh = await enabledUnits(tree, /^(ssh|sshd)\.(service|socket)$/, /^(ssh|sshd)$/);
  add('ssh-server-enabled', 'SSH server enabled at boot', ssh.length > 0 ? 'pass' : 'fail',
    ssh.length > 0 ? ssh : [`missing: /etc/systemd/system/multi-user.target.wants/${os.packageFormat === 'rpm' ? 'sshd' : 'ssh'}.service${systemd ? '' : ' (and no /etc/rc2.d/S??ssh link)'}`]);

  // Firewall off. ufw's own unit is enabled by its package and applies rules only when
  // ufw.conf says ENABLED=yes, so for ufw that line decides, not the link.
  const fw = await enabledUnits(tree, /^(firewalld|iptables|ip6tables|nftables|netfilter-persistent)\.service$/, /^(firewalld|iptables|ip6tables|nftables|netfilter-persistent)$/);
  const ufwConf = await tree.text('/etc/ufw/ufw.conf', 1 << 16);
  if (ufwConf !== null) fw.push(...matching('/etc/ufw/ufw.conf', ufwConf, /^\s*ENABLED\s*=\s*"?yes"?\s*$/i));
  add('firewall-disabled', 'no firewall enabled (security groups do the filtering)', fw.length > 0 ? 'fail' : 'pass',
    fw.length > 0 ? fw : ['no firewalld, iptables, nftables or netfilter-persistent unit enabled', ufwConf !== null ? '/etc/ufw/ufw.conf: ENABLED is not yes' : 'missing: /etc/ufw/ufw.conf'].filter((s) => s !== ''));

  // cloud-init installed and enabled.
  const ci = os.cloudInit;
  const cmdlines = os.bootLoader?.entries.map((e) => e.cmdline) ?? [];
  if (ci === null) {
    add('cloud-init-enabled', 'cloud-init installed and enabled at boot', 'fail', ['missing: /etc/cloud/cloud.cfg and /usr/bin/cloud-init']);
  } else {
    const disabled = await tree.exists('/etc/cloud/cloud-init.disabled');
    const links = systemd ? await enabledUnits(tree, /^cloud-(init|init-local|config|final)\.(service|target)$/, /^cloud-init$/) : [];
    const offByCmdline = cmdlines.some((c) => /(^|\s)cloud-init=disabled(\s|$)/.test(c));
    if (disabled) add('cloud-init-enabled', 'cloud-init installed and enabled at boot', 'fail', ['/etc/cloud/cloud-init.disabled exists']);
    else if (offByCmdline) add('cloud-init-enabled', 'cloud-init installed and enabled at boot', 'fail', [`${os.bootLoader?.config ?? 'boot loader'}: cloud-init=disabled on the kernel command line`]);
    else if (systemd && links.length === 0) add('cloud-init-enabled', 'cloud-init installed and enabled at boot', 'fail', [ci.configFiles[0] ?? '/usr/bin/cloud-init', 'missing: /etc/systemd/system/{multi-user,cloud-init}.target.wants/cloud-init.service']);
    else add('cloud-init-enabled', 'cloud-init installed and enabled at boot', 'pass', [...ci.configFiles.slice(0, 1), ...links]);
  }

  // Datasources: OpenStack's metadata service or its config drive must be probed.
  if (ci === null) add('cloud-init-datasource', 'cloud-init datasource_list includes OpenStack or ConfigDrive', 'n/a', ['cloud-init is not installed']);
  else if (ci.datasourceList === null) add('cloud-init-datasource', 'cloud-init datasource_list includes OpenStack or ConfigDrive', 'pass', ['no datasource_list set: cloud-init probes every datasource']);
  else {
    const from = ci.datasourceListFrom!;
    const at = matching(from, (await tree.text(from, 1 << 20)) ?? '', /^datasource_list\s*:/);
    const ok = ci.datasourceList.some((d) => d === 'OpenStack' || d === 'ConfigDrive');
    add('cloud-init-datasource', 'cloud-init datasource_list includes OpenStack or ConfigDrive', ok ? 'pass' : 'fail', [`${at[0] ?? from} [${ci.datasourceList.join(', ')}]`]);
  }

  // Root partition grows on first boot: cloud-init's growpart module with the growpart tool,
  // or growroot in the initramfs (initramfs-tools' or dracut's module).
  const growEvidence: string[] = [];
  const growpartTool = installed(os, 'cloud-guest-utils', 'cloud-utils-growpart') ?? (await firstExisting(tree, ['/usr/bin/growpart', '/usr/sbin/growpart', '/bin/growpart']));
  let growModule: string[] = [];
  if (ci !== null) for (const f of ci.configFiles) growModule.push(...matching(f, (await tree.text(f, 1 << 20)) ?? '', /^\s*-\s*\[?\s*['"]?(growpart|growroot)\b/));
  growModule = growModule.slice(0, 1);
  const growroot = await firstExisting(tree, ['/usr/share/initramfs-tools/scripts/local-bottom/growroot', '/usr/lib/dracut/modules.d/50growroot', '/usr/share/dracut/modules.d/50growroot']);
  let growOk = false;
  if (growroot !== null) { growOk = true; growEvidence.push(growroot); }
  if (growModule.length > 0 && growpartTool !== null) { growOk = true; growEvidence.push(...growModule, growpartTool); }
  if (!growOk) {
    growEvidence.push(ci === null ? 'cloud-init is not installed' : growModule.length > 0 ? growModule[0]! : 'no growpart in cloud_init_modules', growpartTool ?? 'missing: /usr/bin/growpart (cloud-guest-utils)', 'missing: growroot in the initramfs');
  }
  add('growpart', 'root partition grows on first boot (growpart/growroot)', growOk ? 'pass' : 'fail', growEvidence);

  // No hard-coded MAC address.
  const mac: string[] = [];
  const persistent = await tree.text('/etc/udev/rules.d/70-persistent-net.rules', 1 << 20);
  if (persistent !== null) mac.push(...matching('/etc/udev/rules.d/70-persistent-net.rules', persistent, /ATTRS?\{address\}\s*==/));
  for (const n of (await tree.list('/etc/sysconfig/network-scripts')) ?? []) {
    if (!n.startsWith('ifcfg-') || n === 'ifcfg-lo') continue;
    const p = `/etc/sysconfig/network-scripts/${n}`;
    mac.push(...matching(p, (await tree.text(p, 1 << 16)) ?? '', /^\s*(HWADDR|MACADDR)\s*=\s*"?[0-9A-Fa-f]/));
  }
  for (const n of (await tree.list('/etc/netplan')) ?? []) {
    if (!/\.ya?ml$/.test(n)) continue;
    const p = `/etc/netplan/${n}`;
    mac.push(...matching(p, (await tree.text(p, 1 << 20)) ?? '', /^\s*macaddress\s*:/));
  }
  add('no-hardcoded-mac', 'no hard-coded MAC address', mac.length > 0 ? 'fail' : 'pass', mac.length > 0 ? mac : ['no ATTR{address} udev rule, ifcfg HWADDR or netplan macaddress']);

  // Serial console: every place that sets the command line has console=ttyS0 — the grub.cfg
  // (or BLS entries) that boot now and /etc/default/grub that the next update-grub uses.
  const serial = /(^|[\s"'])console=ttyS\d/;
  const defaults = await tree.text('/etc/default/grub', 1 << 20);
  const consoleOk: string[] = [];
  const consoleBad: string[] = [];
  if (defaults !== null) {
    const lines = matching('/etc/default/grub', defaults, /^\s*GRUB_CMDLINE_LINUX(_DEFAULT)?\s*=/);
    const good = lines.filter((l) => serial.test(l.slice(l.indexOf('=') + 1)));
    if (good.length > 0) consoleOk.push(...good); else consoleBad.push(...(lines.length > 0 ? lines : ['/etc/default/grub: no GRUB_CMDLINE_LINUX']));
  }
  const cfg = os.bootLoader?.config ?? null;
  if (cfg !== null && os.bootLoader!.entries.length > 0) {
    const text = (await tree.text(cfg, 4 << 20)) ?? '';
    // memtest86+'s entries (`linux16 /boot/memtest86+x64.bin`) boot no Linux kernel.
    const lines = matching(cfg, text, /^\s*(linux|linuxefi|linux16|kernel|append)\s/i).filter((l) => !/memtest/i.test(l));
    if (lines.length > 0) {
      const bad = lines.filter((l) => !serial.test(l));
      if (bad.length > 0) consoleBad.push(...bad); else consoleOk.push(...lines);
    } else {
      // BLS entries (the options lines are in /boot/loader/entries).
      const bad = os.bootLoader!.entries.filter((e) => !serial.test(e.cmdline));
      if (bad.length > 0) consoleBad.push(...bad.map((e) => `/boot/loader/entries (${e.title ?? e.kernel}): options ${e.cmdline}`));
      else consoleOk.push(...os.bootLoader!.entries.map((e) => `/boot/loader/entries (${e.title ?? e.kernel}): options ${e.cmdline}`));
    }
  }
  if (consoleOk.length === 0 && consoleBad.length === 0) add('serial-console', 'console=ttyS0 on the kernel command line', 'n/a', ['no /etc/default/grub and no boot loader configuration']);
  else add('serial-console', 'console=ttyS0 on the kernel command line', consoleBad.length > 0 ? 'fail' : 'pass', consoleBad.length > 0 ? consoleBad : consoleOk);

  // Power button: Nova's soft shutdown sends an ACPI power event. acpid handles it, and so does
  // systemd-logind by default (HandlePowerKey=poweroff), so either passes unless logind.conf ignores it.
  const acpid = installed(os, 'acpid') ?? (await firstExisting(tree, ['/usr/sbin/acpid', '/sbin/acpid']));
  const logind = await firstExisting(tree, ['/lib/systemd/systemd-logind', '/usr/lib/systemd/systemd-logind']);
  const logindConf = await tree.text('/etc/systemd/logind.conf', 1 << 16);
  const ignored = logindConf !== null ? matching('/etc/systemd/logind.conf', logindConf, /^\s*HandlePowerKey\s*=\s*(ignore|lock)\s*$/) : [];
  if (acpid !== null) add('acpi-power-key', 'ACPI power key handled (acpid or systemd-logind)', 'pass', [acpid]);
  else if (logind !== null && ignored.length === 0) add('acpi-power-key', 'ACPI power key handled (acpid or systemd-logind)', 'pass', [logind]);
  else add('acpi-power-key', 'ACPI power key handled (acpid or systemd-logind)', 'fail', ignored.length > 0 ? ignored : ['missing: /usr/sbin/acpid and systemd-logind']);

  // Zeroconf route (169.254.0.0/16 added by RHEL's network scripts) hides the metadata service's route.
  if (!RHEL_FAMILY.has(os.distro ?? '')) add('no-zeroconf', 'NOZEROCONF=yes (RHEL network scripts)', 'n/a', [`not a RHEL-family system (${os.distro ?? 'unknown distribution'})`]);
  else {
    const net = await tree.text('/etc/sysconfig/network', 1 << 16);
    const yes = net === null ? [] : matching('/etc/sysconfig/network', net, /^\s*NOZEROCONF\s*=\s*"?(yes|true|1)"?\s*$/i);
    add('no-zeroconf', 'NOZEROCONF=yes (RHEL network scripts)', yes.length > 0 ? 'pass' : 'fail', yes.length > 0 ? yes : [net === null ? 'missing: /etc/sysconfig/network' : '/etc/sysconfig/network: no NOZEROCONF=yes']);
  }

  checks.push(await dhcpCheck(os, tree));
  checks.push(await virtioCheck(os, tree));

  // What a sysprepped image must not keep.
  const machineId = await tree.text('/etc/machine-id', 4096);
  const id = machineId?.split('\n')[0]?.trim() ?? '';
  add('machine-id-empty', '/etc/machine-id empty (regenerated per instance)', id !== '' && id !== 'uninitialized' ? 'fail' : 'pass',
    [machineId === null ? 'missing: /etc/machine-id' : id === '' ? '/etc/machine-id: empty' : `/etc/machine-id:1: ${id}`]);

  const hostKeys = ((await tree.list('/etc/ssh')) ?? []).filter((n) => /^ssh_host_.*_key(\.pub)?$/.test(n)).map((n) => `/etc/ssh/${n}`);
  add('no-ssh-host-keys', 'no SSH host keys', hostKeys.length > 0 ? 'fail' : 'pass', hostKeys.length > 0 ? hostKeys : ['no /etc/ssh/ssh_host_*_key']);

  const homes = new Set(['/root', ...os.users.map((u) => u.home).filter((h) => h.startsWith('/') && h !== '/')]);
  const histories: string[] = [];
  for (const h of [...homes].sort()) {
    for (const n of ['.bash_history', '.zsh_history', '.ash_history', '.sh_history', '.history', '.python_history', '.mysql_history', '.psql_history', '.lesshst', '.viminfo']) {
      const f = await tree.open(`${h}/${n}`);
      if (f !== null && f.size > 0) histories.push(`${h}/${n} (${f.size} bytes)`);
    }
  }
  add('no-shell-history', 'no shell history', histories.length > 0 ? 'fail' : 'pass', histories.length > 0 ? histories : [`no history file in ${[...homes].sort().join(', ')}`]);

  const logs = await nonEmptyFiles(tree, '/var/log');
  add('no-logs', 'no logs (empty files under /var/log)', logs.length > 0 ? 'fail' : 'pass', logs.length > 0 ? logs : ['no non-empty file under /var/log']);

  const leases: string[] = [];
  for (const [d, re] of [['/var/lib/dhcp', /\.leases?$/], ['/var/lib/dhclient', /\.leases?$/], ['/var/lib/NetworkManager', /\.lease$/], ['/var/lib/systemd/network', /./], ['/var/lib/wicked', /^lease-/]] as const) {
    for (const n of (await tree.list(d)) ?? []) {
      if (!re.test(n)) continue;
      const f = await tree.open(`${d}/${n}`);
      if (f !== null && f.size > 0) leases.push(`${d}/${n} (${f.size} bytes)`);
    }
  }
  add('no-dhcp-leases', 'no DHCP leases', leases.length > 0 ? 'fail' : 'pass', leases.length > 0 ? leases : ['no lease file under /var/lib/dhcp, /var/lib/dhclient, /var/lib/NetworkManager']);

  const instances = ((await tree.list('/var/lib/cloud/instances')) ?? []).map((n) => `/var/lib/cloud/instances/${n}`);
  add('no-cloud-init-state', 'no cloud-init instance state', instances.length > 0 ? 'fail' : 'pass', instances.length > 0 ? instances : ['no /var/lib/cloud/instances/*']);

  return checks;
}

/** The first NIC: eth0, or a predictable name of the first PCI slot virtio-net gets (ens3, enp0s3, enp1s0). */
const FIRST_NIC = /^(eth0|ens3|ens4|enp0s3|enp1s0)$/;

async function dhcpCheck(os: InspectedOs, tree: OsTree): Promise<LintCheck> {
  const title = 'DHCP on the first NIC';
  const dhcp: string[] = [];
  const statics: string[] = [];
  for (const p of ['/etc/network/interfaces', ...(((await tree.list('/etc/network/interfaces.d')) ?? []).map((n) => `/etc/network/interfaces.d/${n}`))]) {
    const text = await tree.text(p, 1 << 20);
    if (text === null) continue;
    for (const l of matching(p, text, /^\s*iface\s+\S+\s+inet6?\s+\S+/)) {
      const m = /iface\s+(\S+)\s+inet6?\s+(\S+)/.exec(l)!;
      if (!FIRST_NIC.test(m[1]!)) continue;
      (m[2] === 'dhcp' ? dhcp : m[2] === 'static' || m[2] === 'manual' ? statics : []).push(l);
    }
  }
  for (const n of (await tree.list('/etc/netplan')) ?? []) {
    if (!/\.ya?ml$/.test(n)) continue;
    const p = `/etc/netplan/${n}`;
    dhcp.push(...matching(p, (await tree.text(p, 1 << 20)) ?? '', /^\s*dhcp4\s*:\s*(true|yes|on)\s*$/));
  }
  for (const n of ((await tree.list('/etc/sysconfig/network-scripts')) ?? []).filter((x) => FIRST_NIC.test(x.replace(/^ifcfg-/, '')) && x.startsWith('ifcfg-'))) {
    const p = `/etc/sysconfig/network-scripts/${n}`;
    const text = (await tree.text(p, 1 << 16)) ?? '';
    dhcp.push(...matching(p, text, /^\s*BOOTPROTO\s*=\s*"?dhcp"?\s*$/i));
    statics.push(...matching(p, text, /^\s*BOOTPROTO\s*=\s*"?(static|none)"?\s*$/i));
  }
  if (dhcp.length > 0) return { id: 'dhcp-first-nic', title, result: 'pass', evidence: capped(dhcp) };
  if (statics.length > 0) return { id: 'dhcp-first-nic', title, result: 'fail', evidence: capped(statics) };
  // No explicit configuration: cloud-init writes one from the metadata (DHCP on the first NIC
  // by its fallback) unless its network configuration is disabled.
  if (os.cloudInit !== null) {
    const off: string[] = [];
    for (const f of os.cloudInit.configFiles) off.push(...matching(f, (await tree.text(f, 1 << 20)) ?? '', /config\s*:\s*disabled/));
    if (off.length === 0) return { id: 'dhcp-first-nic', title, result: 'pass', evidence: ['no static configuration: cloud-init configures the network'] };
    return { id: 'dhcp-first-nic', title, result: 'fail', evidence: [...off, 'and no DHCP configuration of eth0/ens3'] };
  }
  return { id: 'dhcp-first-nic', title, result: 'fail', evidence: ['no DHCP configuration of eth0/ens3 in /etc/network/interfaces, /etc/netplan or ifcfg files, and no cloud-init'] };
}

/** The most bytes of an initramfs read (compressed). */
const MAX_INITRAMFS = 256 << 20;

/**
 * virtio_blk and virtio_net for every installed kernel: built in (modules.builtin) or a module
 * (modules.dep lists every module file). virtio_blk as a module must also be in the kernel's
 * initramfs, or the root disk cannot be found: gzip initramfs are read; zstd, xz and lz4 ones
 * are said not read, and then the module in modules.dep passes.
 */
async function virtioCheck(os: InspectedOs, tree: OsTree): Promise<LintCheck> {
  const title = 'kernel has virtio_blk and virtio_net';
  const base = (await tree.list('/lib/modules')) !== null ? '/lib/modules' : '/usr/lib/modules';
  const versions = (await tree.list(base)) ?? [];
  if (versions.length === 0) return { id: 'virtio-drivers', title, result: 'fail', evidence: ['missing: /lib/modules/<version> (no kernel modules installed)'] };
  const good: string[] = [];
  const bad: string[] = [];
  for (const v of versions) {
    for (const mod of ['virtio_blk', 'virtio_net']) {
      const re = new RegExp(`(^|/)${mod}\\.ko(\\.(xz|gz|zst))?:?(\\s|$)`);
      let found: 'builtin' | 'module' | null = null;
      for (const list of ['modules.builtin', 'modules.dep'] as const) {
        const p = `${base}/${v}/${list}`;
        const text = await tree.text(p, 16 << 20);
        const l = text === null ? undefined : matching(p, text, re)[0];
        if (l === undefined) continue;
        found = list === 'modules.builtin' ? 'builtin' : 'module';
        good.push(`${l.split(': ')[0]}: ${mod} ${found === 'builtin' ? 'built in' : 'module'}`);
        break;
      }
      if (found === null) bad.push(`${base}/${v}: no ${mod} in modules.builtin or modules.dep`);
      if (found === 'module' && mod === 'virtio_blk') {
        const initramfs = os.kernels.find((k) => k.version === v)?.initramfs ?? null;
        if (initramfs === null) { bad.push(`${base}/${v}: virtio_blk is a module and the kernel has no initramfs`); continue; }
        const data = await tree.read(initramfs, MAX_INITRAMFS);
        if (data === null) { good.push(`${initramfs}: not read`); continue; }
        const listing = listInitramfs(data);
        if (listing.names.some((n) => re.test(n))) good.push(`${initramfs}: virtio_blk in the initramfs`);
        else if (listing.notRead.length > 0) good.push(`${initramfs}: ${listing.notRead.join(', ')}-compressed part not read`);
        else bad.push(`${initramfs}: virtio_blk is a module and not in the initramfs`);
      }
    }
  }
  return { id: 'virtio-drivers', title, result: bad.length === 0 ? 'pass' : 'fail', evidence: capped(bad.length === 0 ? good : bad) };
}

/** Non-empty regular files under a directory (bounded walk; symlinks are not followed out). */
async function nonEmptyFiles(tree: OsTree, dir: string): Promise<string[]> {
  const out: string[] = [];
  const stack = [dir];
  let visited = 0;
  while (stack.length > 0 && visited < MAX_WALK) {
    const d = stack.pop()!;
    const names = await tree.list(d);
    if (names === null) continue;
    for (const n of names) {
      if (++visited > MAX_WALK) break;
      const p = `${d}/${n}`;
      // A symlink is not a log kept (Debian's /var/log/README points into /usr/share/doc), and
      // a symlinked directory leads out of /var/log.
      if ((await tree.kind(p)) === 'symlink') continue;
      const f = await tree.open(p);
      if (f !== null) { if (f.size > 0) out.push(`${p} (${f.size} bytes)`); continue; }
      stack.push(p);
    }
  }
  return out.sort();
}
