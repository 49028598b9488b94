/**
 * Operating system inspection: virt-inspector's job without an appliance. Every filesystem of
 * a disk (partitions, the whole disk, LVM logical volumes) is identified; those we can read
 * and that hold an operating system's root are inspected with the rest of the disk's
 * filesystems mounted where the root's /etc/fstab puts them. What is reported and how it is
 * decided follows libguestfs's inspection (daemon/inspect_fs*.ml): os-release first, then the
 * distributions' release files; the architecture from a program's ELF header; fstab specs
 * resolved by UUID, LABEL, PARTUUID and device name.
 *
 * Not the image-format safety inspector (`inspect/`): this one looks at the files inside.
 */
import type { BlockDevice } from '../blockdev.js';
import { isDiskError } from '../errors.js';
import type { Filesystem } from '../filesystem.js';
import { openFilesystem } from '../filesystems.js';
import { readPartitionTable } from '../partition/index.js';
import { readableFilesystems, osRoot, deviceName, knownFilesystem, type CandidateFilesystem } from '../inside/root.js';
import { mountFstab, type FstabMountpoint } from '../inside/mounts.js';
import { OsTree } from './tree.js';
import { detectRelease } from './release.js';
import type { KnownFilesystem } from './fstab.js';
import { detectArchitecture, detectBootLoader, detectCloudInit, detectHostname, detectKernels, detectUsers, type BootLoader, type CloudInit, type Kernel, type User } from './linux.js';
import { detectPackages, type InstalledPackage } from './packages.js';

export { parseDpkgStatus, parseApkInstalled, splitPackageVersion, type InstalledPackage } from './packages.js';
export { readRpmSqlite, parseRpmHeader } from './rpm.js';
export { parseFstab, resolveSpec, type FstabEntry, type KnownFilesystem } from './fstab.js';
export { elfArchitecture } from './elf.js';
export { OsTree } from './tree.js';
export { inspectedOsJson, inspectionJson } from './json.js';
export { parseOsRelease } from './release.js';
export { parseDatasourceList, parseGrubCfg, parseGrubDefaults, type BootEntry, type BootLoader, type CloudInit, type Kernel, type User } from './linux.js';

export interface InspectedFilesystem extends KnownFilesystem {
  /** Where it is: "partition 1", "LV vg/root", "whole disk". */
  where: string;
  type: string;
  /** A reader exists for it (ntfs, swap, ... are identified but not read). */
  readable: boolean;
}

export type OsMountpoint = FstabMountpoint;

export interface InspectedOs {
  /** The root filesystem's device (/dev/sda2, /dev/vg/root). */
  root: string;
  where: string;
  /** libguestfs's type: linux, windows. */
  type: 'linux' | 'windows';
  distro: string | null;
  productName: string | null;
  majorVersion: number;
  minorVersion: number;
  hostname: string | null;
  arch: string | null;
  packageFormat: string | null;
  packageManagement: string | null;
  mountpoints: OsMountpoint[];
  kernels: Kernel[];
  bootLoader: BootLoader | null;
  cloudInit: CloudInit | null;
  users: User[];
  /** Null when the package database is not read. */
  packages: InstalledPackage[] | null;
  /** What was not read or could not be decided. */
  notes: string[];
}

export interface OsInspection {
  filesystems: InspectedFilesystem[];
  operatingSystems: InspectedOs[];
}

/** Windows's system directory (libguestfs looks for it in any case). */
const WINDOWS_MARKERS = ['/Windows/System32', '/WINDOWS/system32', '/windows/system32', '/WINNT/system32'];

/** Inspect every operating system on a disk. */
export async function inspectOperatingSystems(disk: BlockDevice): Promise<OsInspection> {
  return (await inspectWithTrees(disk)).inspection;
}

/**
 * The inspection with each Linux system's file tree (its fstab mounts joined), for checks that
 * read more files than inspection reports (`lint/`). Keyed by the system's root device.
 */
export async function inspectWithTrees(disk: BlockDevice): Promise<{ inspection: OsInspection; trees: Map<string, OsTree> }> {
  const trees = new Map<string, OsTree>();
  const table = await readPartitionTable(disk);
  const unread: CandidateFilesystem[] = [];
  const readable = await readableFilesystems(disk, unread);
  const describe = (c: CandidateFilesystem, isReadable: boolean): InspectedFilesystem => ({ ...knownFilesystem(c, table), where: c.name, type: c.info.type, readable: isReadable });
  const filesystems = [...readable.map((c) => describe(c, true)), ...unread.map((c) => describe(c, false))];
  filesystems.sort((a, b) => a.device.localeCompare(b.device, 'en', { numeric: true }));

  // Each readable filesystem opened once; one that fails to open is left out of inspection.
  const opened = new Map<string, Filesystem>();
  const openErrors: string[] = [];
  for (const c of readable) {
    try { opened.set(deviceName(c.name).device, await openFilesystem(c.device, c.info.type)); } catch (e) {
      if (!isDiskError(e)) throw e;
      openErrors.push(`${deviceName(c.name).device}: ${e.message}`);
    }
  }

  const operatingSystems: InspectedOs[] = [];
  for (const f of filesystems) {
    const candidate = opened.get(f.device);
    const fs = candidate && (await osRoot(candidate));
    if (!fs) continue;
    let windows = false;
    for (const m of WINDOWS_MARKERS) if (await new OsTree(fs).exists(m)) windows = true;
    if (windows) { operatingSystems.push(inspectWindows(f)); continue; }
    const mounted = await mountFstab(fs, f.device, filesystems, async (device) => opened.get(device));
    const tree = new OsTree(mounted.fs);
    operatingSystems.push(await inspectLinux(f, tree, mounted.mountpoints, mounted.notes));
    trees.set(f.device, tree);
  }
  if (openErrors.length > 0) for (const os of operatingSystems) os.notes.push(...openErrors.map((m) => `not read: ${m}`));
  return { inspection: { filesystems, operatingSystems }, trees };
}

function inspectWindows(f: InspectedFilesystem): InspectedOs {
  return {
    root: f.device, where: f.where, type: 'windows', distro: null, productName: null, majorVersion: 0, minorVersion: 0,
    hostname: null, arch: null, packageFormat: null, packageManagement: null, mountpoints: [{ mountpoint: 'C:', spec: f.device, fstype: f.type, device: f.device }],
    kernels: [], bootLoader: null, cloudInit: null, users: [], packages: null,
    notes: ['the Windows registry is not read: version, product name, hostname and installed programs are not reported'],
  };
}

async function inspectLinux(root: InspectedFilesystem, tree: OsTree, fstabMounts: OsMountpoint[], mountNotes: string[]): Promise<InspectedOs> {
  const notes = [...mountNotes];
  const mountpoints = [...fstabMounts];
  if (!mountpoints.some((m) => m.mountpoint === '/')) mountpoints.unshift({ mountpoint: '/', spec: root.device, fstype: root.type, device: root.device });

  const release = await detectRelease(tree);
  if (!release) notes.push('no os-release or distribution release file: the distribution is unknown');
  const arch = await detectArchitecture(tree);
  if (!arch) notes.push('no ELF program found to tell the architecture');
  const pk = await detectPackages(tree, release?.distro ?? '', release?.major ?? 0);
  notes.push(...pk.notes);
  const os: InspectedOs = {
    root: root.device, where: root.where, type: 'linux',
    distro: release?.distro ?? null, productName: release?.productName ?? null,
    majorVersion: release?.major ?? 0, minorVersion: release?.minor ?? 0,
    hostname: await detectHostname(tree), arch: arch?.arch ?? null,
    packageFormat: pk.format, packageManagement: pk.management,
    mountpoints: mountpoints.sort((a, b) => a.mountpoint.length - b.mountpoint.length || a.mountpoint.localeCompare(b.mountpoint)),
    kernels: await detectKernels(tree), bootLoader: await detectBootLoader(tree), cloudInit: await detectCloudInit(tree),
    users: await detectUsers(tree), packages: pk.packages, notes,
  };
  notes.push(...tree.problems);
  return os;
}
