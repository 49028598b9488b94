/**
 * Installed packages from the package manager's own database, read as files: dpkg's status
 * file (deb), apk's installed database (apk) and rpm's sqlite database (rpmdb.sqlite); rpm's
 * older Berkeley DB and ndb databases are detected but not read.
 */
import { isDiskError } from '../errors.js';
import type { OsTree } from './tree.js';
import { readRpmSqlite } from './rpm.js';

export interface InstalledPackage {
  name: string;
  /** As the package manager prints it (dpkg: [epoch:]upstream[-revision], what `dpkg-query -W` shows). */
  version: string;
  arch: string | null;
}

/**
 * A package version in virt-inspector's three parts (guestfs_application2: epoch, version,
 * release): the epoch before a ':' (0 without one), the release after the last '-' (empty
 * without one), the version between. dpkg and rpm both put the revision/release after the
 * last hyphen (Debian Policy §5.6.12: the upstream version may itself contain hyphens; rpm
 * forbids them in VERSION). libguestfs splits a dpkg version at the *first* hyphen instead
 * (lib/inspect-apps.c), so for the few upstream versions with a hyphen it reports part of the
 * upstream version as the release — on Debian 12, isc-dhcp-client 4.4.3-P1-2 is virt-inspector's
 * version 4.4.3 release P1-2, and libedit2 3.1-20221030-2 its 3.1 and 20221030-2, where dpkg's
 * own fields are 4.4.3-P1 / 2 and 3.1-20221030 / 2 (dpkg-query -f '${source:Upstream-Version}').
 * Ours follows dpkg; version + '-' + release is the same string either way.
 */
export function splitPackageVersion(full: string): { epoch: number; version: string; release: string } {
  const colon = /^(\d+):/.exec(full);
  const rest = colon ? full.slice(colon[0].length) : full;
  const dash = rest.lastIndexOf('-');
  return { epoch: colon ? Number(colon[1]) : 0, version: dash < 0 ? rest : rest.slice(0, dash), release: dash < 0 ? '' : rest.slice(dash + 1) };
}

/**
 * dpkg's status file (deb-control(5) stanzas). A package is installed when the third word of
 * its Status field (the package state) is "installed" — what `dpkg-query -W -f '${db:Status-Status}'`
 * reports, whatever the selection (install, hold) says.
 */
export function parseDpkgStatus(text: string): InstalledPackage[] {
  const out: InstalledPackage[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
    }
    const name = fields.get('package');
    const status = fields.get('status')?.split(/\s+/);
    if (!name || !status || status[2] !== 'installed') continue;
    out.push({ name, version: fields.get('version') ?? '', arch: fields.get('architecture') ?? null });
  }
  return out;
}

/** apk's /lib/apk/db/installed: blank-line-separated records, "P:" name, "V:" version, "A:" arch. */
export function parseApkInstalled(text: string): InstalledPackage[] {
  const out: InstalledPackage[] = [];
  for (const rec of text.split(/\n\s*\n/)) {
    let name = '';
    let version = '';
    let arch: string | null = null;
    for (const line of rec.split('\n')) {
      if (line.startsWith('P:')) name = line.slice(2);
      else if (line.startsWith('V:')) version = line.slice(2);
      else if (line.startsWith('A:')) arch = line.slice(2);
    }
    if (name) out.push({ name, version, arch });
  }
  return out;
}

export interface PackageInfo {
  /** deb, rpm, apk, pacman, or null. */
  format: string | null;
  /** apt, dnf, yum, zypper, apk, pacman, or null. */
  management: string | null;
  /** Null when the database is not read (rpm) or absent. */
  packages: InstalledPackage[] | null;
  notes: string[];
}

export async function detectPackages(tree: OsTree, distro: string, major: number): Promise<PackageInfo> {
  const notes: string[] = [];
  const dpkg = await tree.text('/var/lib/dpkg/status');
  if (dpkg !== null) return { format: 'deb', management: 'apt', packages: parseDpkgStatus(dpkg), notes };
  const apk = await tree.text('/lib/apk/db/installed');
  if (apk !== null) return { format: 'apk', management: 'apk', packages: parseApkInstalled(apk), notes };
  for (const db of ['/var/lib/rpm/rpmdb.sqlite', '/usr/lib/sysimage/rpm/rpmdb.sqlite', '/var/lib/rpm/Packages', '/usr/lib/sysimage/rpm/Packages', '/var/lib/rpm/Packages.db', '/usr/lib/sysimage/rpm/Packages.db']) {
    if (!(await tree.exists(db))) continue;
    const management = distro === 'opensuse' || distro === 'sles' ? 'zypper' : (distro === 'fedora' || major >= 8) ? 'dnf' : 'yum';
    let packages: InstalledPackage[] | null = null;
    if (db.endsWith('.sqlite')) {
      const file = await tree.open(db);
      if ((await tree.head(`${db}-wal`, 1))?.length) notes.push(`${db}-wal is not empty: changes not yet checkpointed into the database are not read`);
      try {
        packages = file === null ? null : await readRpmSqlite(file.read, file.size);
      } catch (e) {
        if (!isDiskError(e)) throw e;
        notes.push(`${db}: ${e.message}`);
      }
    } else notes.push(`the rpm database ${db} (Berkeley DB or ndb) is not read: the package list is not available`);
    return { format: 'rpm', management, packages, notes };
  }
  if (await tree.exists('/var/lib/pacman/local')) {
    notes.push('the pacman database is not read: the package list is not available');
    return { format: 'pacman', management: 'pacman', packages: null, notes };
  }
  return { format: null, management: null, packages: null, notes };
}
