/**
 * The libosinfo short ID virt-inspector prints as <osinfo> (libguestfs's
 * guestfs_inspect_get_osinfo, lib/inspect-osinfo.c): the name virt-install and
 * virt-v2v look an operating system up by. Windows needs the registry's version, which is not
 * read, so it is "unknown" as libguestfs says when it cannot tell.
 */
export function osinfoOf(type: 'linux' | 'windows', distro: string | null, major: number, minor: number): string {
  if (type !== 'linux' || distro === null) return 'unknown';
  switch (distro) {
    case 'centos':
      if (major >= 8) return `centos${major}`;
      if (major === 7) return 'centos7.0';
      if (major === 6) return `centos6.${minor}`;
      break;
    case 'rocky':
      if (major >= 8) return `rocky${major}`;
      break;
    case 'debian':
      if (major >= 4) return `debian${major}`;
      break;
    case 'fedora':
    case 'mageia':
      return `${distro}${major}`;
    case 'sles':
      return minor === 0 ? `sles${major}` : `sles${major}sp${minor}`;
    case 'ubuntu':
      return `ubuntu${major}.${String(minor).padStart(2, '0')}`;
    case 'archlinux':
    case 'gentoo':
    case 'voidlinux':
      return distro;
    case 'altlinux':
      return major >= 8 ? `alt${major}.${minor}` : `altlinux${major}.${minor}`;
  }
  return major > 0 || minor > 0 ? `${distro}${major}.${minor}` : 'unknown';
}
