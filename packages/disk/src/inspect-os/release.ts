/**
 * Which Linux distribution and version a root filesystem holds, decided as libguestfs's
 * inspection does: /etc/os-release (or /usr/lib/os-release) first, then the distribution's
 * own release files (/etc/debian_version, /etc/redhat-release and its relatives,
 * /etc/alpine-release, /etc/arch-release, /etc/SuSE-release). Distro names are libguestfs's
 * (`guestfs_inspect_get_distro`), so scripts written for virt-inspector keep working.
 */
import type { OsTree } from './tree.js';

export interface Release {
  distro: string;
  productName: string | null;
  major: number;
  minor: number;
}

/** os-release ID → libguestfs's distro name. */
const DISTRO_OF_ID: Record<string, string> = {
  alpine: 'alpinelinux', almalinux: 'alma', altlinux: 'altlinux', arch: 'archlinux', centos: 'centos',
  circle: 'circle', coreos: 'coreos', debian: 'debian', fedora: 'fedora', frugalware: 'frugalware',
  gentoo: 'gentoo', kali: 'kalilinux', kylin: 'kylin', mageia: 'mageia', neokylin: 'neokylin',
  opencloudos: 'opencloudos', 'opensuse': 'opensuse', 'opensuse-leap': 'opensuse', 'opensuse-tumbleweed': 'opensuse',
  ol: 'oraclelinux', pardus: 'pardus', pldlinux: 'pldlinux', rhel: 'rhel', rocky: 'rocky', sles: 'sles',
  sled: 'sles', slackware: 'slackware', tencentos: 'tencentos', ubuntu: 'ubuntu', voidlinux: 'voidlinux',
  linuxmint: 'linuxmint', mandriva: 'mandriva',
};

/** Parse os-release(5): KEY=value lines, values optionally quoted with shell quoting. */
export function parseOsRelease(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    out.set(m[1]!, unquote(m[2]!.trim()));
  }
  return out;
}

/** A shell word as os-release and /etc/default/grub write them: "double", 'single' or bare, with backslash escapes in double quotes. */
export function unquote(v: string): string {
  if (v.length >= 2 && v[0] === '"' && v.endsWith('"')) return v.slice(1, -1).replace(/\\([\\"$`])/g, '$1');
  if (v.length >= 2 && v[0] === "'" && v.endsWith("'")) return v.slice(1, -1);
  return v;
}

/** "12", "22.04", "3.19.1", "9.3" → major and minor (0 when absent). */
export function parseVersion(v: string | undefined): { major: number; minor: number } | null {
  const m = /^(\d+)(?:\.(\d+))?/.exec(v ?? '');
  if (!m) return null;
  return { major: Number(m[1]), minor: m[2] === undefined ? 0 : Number(m[2]) };
}

/** The release of the Linux system in `tree`, or null when nothing says which it is. */
export async function detectRelease(tree: OsTree): Promise<Release | null> {
  const osRelease = (await tree.text('/etc/os-release', 1 << 16)) ?? (await tree.text('/usr/lib/os-release', 1 << 16));
  if (osRelease !== null) {
    const kv = parseOsRelease(osRelease);
    const id = kv.get('ID')?.toLowerCase();
    if (id) {
      const distro = DISTRO_OF_ID[id] ?? id;
      const version = parseVersion(kv.get('VERSION_ID')) ?? { major: 0, minor: 0 };
      const rel: Release = { distro, productName: kv.get('PRETTY_NAME') ?? kv.get('NAME') ?? null, ...version };
      // Debian's and CentOS's os-release carry the major version only: libguestfs then takes the
      // release file instead (inspect_fs_unix.ml parse_os_release), its first line as the product
      // name ("12.5", as virt-inspector prints it) and its version when it has one.
      if (rel.minor === 0 && (distro === 'debian' || distro === 'centos')) {
        const file = distro === 'debian' ? '/etc/debian_version' : (await tree.exists('/etc/centos-release')) ? '/etc/centos-release' : '/etc/redhat-release';
        const line = (await tree.text(file, 4096))?.split('\n')[0]!.trim();
        if (line) {
          rel.productName = line;
          const v = parseVersion(distro === 'debian' ? line : /release (\d+(?:\.\d+)?)/.exec(line)?.[1]);
          if (v) Object.assign(rel, v);
        }
      }
      return rel;
    }
  }
  const redhat = await tree.text('/etc/redhat-release', 4096);
  if (redhat !== null) {
    const line = redhat.split('\n')[0]!.trim();
    const distro = /^Fedora/.test(line) ? 'fedora'
      : /^Red Hat Enterprise Linux/.test(line) ? 'rhel'
        : /^CentOS/.test(line) ? 'centos'
          : /^Rocky/.test(line) ? 'rocky'
            : /^AlmaLinux/.test(line) ? 'alma'
              : /^Oracle/.test(line) ? 'oraclelinux' : 'redhat-based';
    const v = parseVersion(/release (\d+(?:\.\d+)?)/.exec(line)?.[1]) ?? { major: 0, minor: 0 };
    return { distro, productName: line, ...v };
  }
  const debian = await tree.text('/etc/debian_version', 4096);
  if (debian !== null) {
    const line = debian.trim();
    return { distro: 'debian', productName: line, ...(parseVersion(line) ?? { major: 0, minor: 0 }) };
  }
  const alpine = await tree.text('/etc/alpine-release', 4096);
  if (alpine !== null) return { distro: 'alpinelinux', productName: alpine.trim(), ...(parseVersion(alpine.trim()) ?? { major: 0, minor: 0 }) };
  if (await tree.exists('/etc/arch-release')) return { distro: 'archlinux', productName: 'Arch Linux', major: 0, minor: 0 };
  const suse = await tree.text('/etc/SuSE-release', 4096);
  if (suse !== null) {
    const line = suse.split('\n')[0]!.trim();
    return { distro: /openSUSE/i.test(line) ? 'opensuse' : 'sles', productName: line, ...(parseVersion(/(\d+(?:\.\d+)?)/.exec(line)?.[1]) ?? { major: 0, minor: 0 }) };
  }
  return null;
}
