/**
 * What a Linux root filesystem says about its system, beyond the release: hostname,
 * architecture, kernels and initramfs images, boot loader and kernel command line,
 * cloud-init, and the users who can log in.
 */
import { elfArchitecture } from './elf.js';
import { unquote } from './release.js';
import type { OsTree } from './tree.js';

/** libguestfs's hostname sources, in its order (inspect_fs_unix.ml check_hostname_linux): /etc/HOSTNAME, /etc/hostname, then /etc/sysconfig/network. */
export async function detectHostname(tree: OsTree): Promise<string | null> {
  for (const file of ['/etc/HOSTNAME', '/etc/hostname']) {
    const text = await tree.text(file, 4096);
    const first = text?.split('\n').map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('#'));
    if (first) return first;
  }
  const network = await tree.text('/etc/sysconfig/network', 1 << 16);
  const m = network !== null ? /^\s*HOSTNAME=(.*)$/m.exec(network) : null;
  return m ? unquote(m[1]!.trim()) || null : null;
}

/** Programs whose ELF header gives the architecture (libguestfs tries these in order). */
const ARCH_PROBES = ['/bin/bash', '/bin/sh', '/bin/ls', '/usr/bin/bash', '/usr/bin/ls', '/bin/busybox', '/sbin/init', '/usr/lib/systemd/systemd'];

export async function detectArchitecture(tree: OsTree): Promise<{ arch: string; from: string } | null> {
  for (const path of ARCH_PROBES) {
    const head = await tree.head(path, 64);
    const arch = head ? elfArchitecture(head) : null;
    if (arch) return { arch, from: path };
  }
  return null;
}

export interface Kernel {
  version: string;
  /** /boot/vmlinuz-VERSION */
  path: string;
  /** The initramfs for it (Debian initrd.img-V, RHEL initramfs-V.img, SUSE initrd-V), or null. */
  initramfs: string | null;
}

export async function detectKernels(tree: OsTree): Promise<Kernel[]> {
  const names = (await tree.list('/boot')) ?? [];
  const out: Kernel[] = [];
  for (const n of names) {
    const m = /^(?:vmlinuz|vmlinux|Image|zImage)-(.+)$/.exec(n);
    if (!m) continue;
    const v = m[1]!;
    const initramfs = [`initrd.img-${v}`, `initramfs-${v}.img`, `initrd-${v}`, `initramfs-${v}`].find((i) => names.includes(i));
    out.push({ version: v, path: `/boot/${n}`, initramfs: initramfs ? `/boot/${initramfs}` : null });
  }
  return out;
}

export interface BootEntry {
  /** The menu entry's title, or the BLS entry's file. */
  title: string | null;
  kernel: string;
  cmdline: string;
}

export interface BootLoader {
  /** grub2, grub (legacy), syslinux/extlinux, or null when none was found. */
  type: string | null;
  config: string | null;
  /** GRUB_CMDLINE_LINUX, GRUB_CMDLINE_LINUX_DEFAULT, ... from /etc/default/grub. */
  defaults: Record<string, string>;
  /** The kernels the configuration boots, with their command lines. */
  entries: BootEntry[];
}

/** Shell assignments of /etc/default/grub (KEY="value"), the GRUB_CMDLINE_* ones. */
export function parseGrubDefaults(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(GRUB_CMDLINE_[A-Z_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = unquote(m[2]!.trim());
  }
  return out;
}

/** `linux`/`linuxefi`/`linux16` lines of a grub.cfg, each with the title of the menuentry around it. */
export function parseGrubCfg(text: string): BootEntry[] {
  const out: BootEntry[] = [];
  let title: string | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const me = /^menuentry\s+(?:'([^']*)'|"([^"]*)"|(\S+))/.exec(line);
    if (me) { title = me[1] ?? me[2] ?? me[3] ?? null; continue; }
    const lk = /^(?:linux|linuxefi|linux16|kernel)\s+(\S+)\s*(.*)$/.exec(line);
    if (lk) out.push({ title, kernel: lk[1]!, cmdline: lk[2]!.trim() });
  }
  return out;
}

export async function detectBootLoader(tree: OsTree): Promise<BootLoader> {
  const defaultsText = await tree.text('/etc/default/grub', 1 << 20);
  const defaults = defaultsText !== null ? parseGrubDefaults(defaultsText) : {};
  for (const [type, config] of [['grub2', '/boot/grub/grub.cfg'], ['grub2', '/boot/grub2/grub.cfg'], ['grub', '/boot/grub/menu.lst'], ['grub', '/boot/grub/grub.conf'], ['extlinux', '/boot/extlinux/extlinux.conf'], ['syslinux', '/boot/syslinux/syslinux.cfg']] as const) {
    const text = await tree.text(config, 4 << 20);
    if (text === null) continue;
    let entries = type === 'grub2' || type === 'grub' ? parseGrubCfg(text) : parseSyslinux(text);
    // RHEL 8+ and Fedora keep the entries in Boot Loader Specification files, not in grub.cfg.
    if (entries.length === 0) entries = await blsEntries(tree);
    return { type, config, defaults, entries };
  }
  const bls = await blsEntries(tree);
  return { type: bls.length > 0 ? 'grub2' : null, config: null, defaults, entries: bls };
}

/** /boot/loader/entries/*.conf (the Boot Loader Specification): `title`, `linux`, `options`. */
async function blsEntries(tree: OsTree): Promise<BootEntry[]> {
  const out: BootEntry[] = [];
  for (const n of (await tree.list('/boot/loader/entries')) ?? []) {
    if (!n.endsWith('.conf')) continue;
    const text = await tree.text(`/boot/loader/entries/${n}`, 1 << 16);
    if (text === null) continue;
    const get = (k: string) => new RegExp(`^${k}\\s+(.*)$`, 'm').exec(text)?.[1]?.trim();
    const kernel = get('linux');
    if (kernel) out.push({ title: get('title') ?? n, kernel, cmdline: get('options') ?? '' });
  }
  return out;
}

function parseSyslinux(text: string): BootEntry[] {
  const out: BootEntry[] = [];
  let title: string | null = null;
  let kernel: string | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!.toLowerCase();
    if (key === 'label') title = m[2]!;
    else if (key === 'kernel' || key === 'linux') kernel = m[2]!;
    else if ((key === 'append') && kernel) out.push({ title, kernel, cmdline: m[2]! });
  }
  return out;
}

export interface CloudInit {
  /** The configuration files read, in the order cloud-init merges them. */
  configFiles: string[];
  /** The effective datasource_list (the last file that sets it wins), or null when none sets it. */
  datasourceList: string[] | null;
  /** Where datasource_list was set. */
  datasourceListFrom: string | null;
}

/** A top-level `datasource_list:` of a cloud-init YAML file: flow form `[ A, B ]` or block form `- A` lines. */
export function parseDatasourceList(yaml: string): string[] | null {
  const lines = yaml.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^datasource_list\s*:\s*(.*)$/.exec(lines[i]!);
    if (!m) continue;
    let rest = m[1]!.replace(/\s+#.*$/, '').trim();
    if (rest.startsWith('[')) {
      // A flow sequence may span lines.
      while (!rest.includes(']') && i + 1 < lines.length) rest += ` ${lines[++i]!.trim()}`;
      const inner = rest.slice(1, rest.indexOf(']') < 0 ? undefined : rest.indexOf(']'));
      return inner.split(',').map((s) => unquote(s.trim())).filter((s) => s !== '');
    }
    if (rest !== '') return [unquote(rest)];
    const items: string[] = [];
    while (i + 1 < lines.length) {
      const item = /^\s*-\s*(.*?)\s*(?:#.*)?$/.exec(lines[i + 1]!);
      if (!item) {
        if (/^\s*(#.*)?$/.test(lines[i + 1]!)) { i++; continue; }
        break;
      }
      items.push(unquote(item[1]!));
      i++;
    }
    return items;
  }
  return null;
}

export async function detectCloudInit(tree: OsTree): Promise<CloudInit | null> {
  const files: string[] = [];
  if (await tree.exists('/etc/cloud/cloud.cfg')) files.push('/etc/cloud/cloud.cfg');
  for (const n of (await tree.list('/etc/cloud/cloud.cfg.d')) ?? []) if (n.endsWith('.cfg')) files.push(`/etc/cloud/cloud.cfg.d/${n}`);
  const installed = files.length > 0 || (await tree.exists('/usr/bin/cloud-init'));
  if (!installed) return null;
  let list: string[] | null = null;
  let from: string | null = null;
  for (const f of files) {
    const text = await tree.text(f, 1 << 20);
    const l = text === null ? null : parseDatasourceList(text);
    if (l !== null) { list = l; from = f; }
  }
  return { configFiles: files, datasourceList: list, datasourceListFrom: from };
}

export interface User {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
  /**
   * From /etc/shadow: "set" (a password hash), "locked" ("!" or "*" first: no password login),
   * "empty" (no password needed at all), or "unknown" (no shadow entry).
   */
  password: 'set' | 'locked' | 'empty' | 'unknown';
}

/** Shells that do not give a login. */
const NO_LOGIN = /\/(nologin|false|sync|shutdown|halt)$/;

export async function detectUsers(tree: OsTree): Promise<User[]> {
  const passwd = await tree.text('/etc/passwd', 16 << 20);
  if (passwd === null) return [];
  const shadow = new Map<string, string>();
  for (const line of ((await tree.text('/etc/shadow', 16 << 20)) ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length >= 2 && f[0]) shadow.set(f[0], f[1]!);
  }
  const out: User[] = [];
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || !f[0] || f[0].startsWith('+') || f[0].startsWith('-')) continue;
    const shell = f[6]!.trim();
    if (shell === '' || NO_LOGIN.test(shell)) continue;
    // passwd's own field counts when it holds the hash itself (no "x" pointing to shadow).
    const hash = f[1] === 'x' ? shadow.get(f[0]) : f[1];
    const password = hash === undefined ? 'unknown' : hash === '' ? 'empty' : hash.startsWith('!') || hash.startsWith('*') ? 'locked' : 'set';
    out.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5]!, shell, password });
  }
  return out;
}
