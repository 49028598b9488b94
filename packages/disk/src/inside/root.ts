/**
 * Which filesystem of a disk to read files from when the user names none: the operating
 * system's root, found as libguestfs inspection finds it — among every partition, whole disk
 * and LVM logical volume holding a filesystem we can read, the one with the files a root
 * filesystem has (/etc/fstab, os-release, or a Windows system directory). With a single
 * readable filesystem that one is taken, root or not.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError, isDiskError } from '../errors.js';
import type { Filesystem } from '../filesystem.js';
import { openFilesystem, readableFilesystemTypes, resolvePath } from '../filesystems.js';
import { readPartitionTable, type PartitionTable } from '../partition/index.js';
import type { KnownFilesystem } from '../inspect-os/fstab.js';
import { mountFstab } from './mounts.js';
import { openLogicalVolume } from '../lvm/index.js';
import type { FilesystemInfo } from '../fsid/index.js';
import { contentDevices, filesystemOf, openInside, scanDevicesLvm, type InsideSelection } from './index.js';

/** Files whose presence makes a filesystem an operating system's root (libguestfs inspection's tests, in short). */
const ROOT_MARKERS = ['/etc/fstab', '/etc/os-release', '/usr/lib/os-release', '/Windows/System32', '/WINDOWS/system32'];

export interface CandidateFilesystem {
  /** "partition 2", "LV vg/root", "whole disk". */
  name: string;
  device: BlockDevice;
  info: FilesystemInfo;
}

/**
 * Every filesystem of a disk that a reader exists for: partitions (or the whole disk), then LVM
 * logical volumes. `unread`, when given, receives the filesystems found that no reader opens (ntfs, ...).
 */
export async function readableFilesystems(disk: BlockDevice, unread?: CandidateFilesystem[]): Promise<CandidateFilesystem[]> {
  const readable = new Set(readableFilesystemTypes());
  const { devices } = await contentDevices(disk, await readPartitionTable(disk));
  const identified = new Map<(typeof devices)[number], FilesystemInfo | null>();
  const out: CandidateFilesystem[] = [];
  for (const d of devices) {
    const info = await filesystemOf(d.device);
    identified.set(d, info);
    if (info && readable.has(info.type)) out.push({ name: d.name, device: d.device, info });
    else if (info && unread && info.usage === 'filesystem') unread.push({ name: d.name, device: d.device, info });
  }
  const scan = await scanDevicesLvm(devices, identified);
  for (const g of scan.vgs) {
    for (const lv of g.vg.lvs) {
      if (lv.unsupported || !lv.visible) continue;
      let device: BlockDevice;
      try { device = openLogicalVolume(scan, `${g.vg.name}/${lv.name}`); } catch (e) {
        if (isDiskError(e)) continue;
        throw e;
      }
      const info = await filesystemOf(device);
      if (info && readable.has(info.type)) out.push({ name: `LV ${g.vg.name}/${lv.name}`, device, info });
      else if (info && unread && info.usage === 'filesystem') unread.push({ name: `LV ${g.vg.name}/${lv.name}`, device, info });
    }
  }
  return out;
}

/** Whether a filesystem holds an operating system's root (one of ROOT_MARKERS). */
export async function isRoot(fs: Filesystem): Promise<boolean> {
  for (const marker of ROOT_MARKERS) {
    try {
      await resolvePath(fs, marker);
      return true;
    } catch (e) {
      if (!isDiskError(e)) throw e;
    }
  }
  return false;
}

/**
 * The operating system root in `fs`: itself, or else one of its subvolumes that is one (btrfs:
 * libguestfs inspects every subvolume; Fedora installs its root in subvolume "root"). Null when none is.
 */
export async function osRoot(fs: Filesystem): Promise<Filesystem | null> {
  if (await isRoot(fs)) return fs;
  for (const view of (await fs.subvolumeViews?.()) ?? []) if (await isRoot(view)) return view;
  return null;
}

/** libguestfs's device name of a filesystem found at `where` ("partition 2" is /dev/sda2, "LV vg/root" /dev/vg/root, the whole disk /dev/sda). */
export function deviceName(where: string): { device: string; partition?: number; lv?: { vg: string; name: string }; wholeDisk?: boolean } {
  const p = /^partition (\d+)$/.exec(where);
  if (p) return { device: `/dev/sda${p[1]}`, partition: Number(p[1]) };
  const lv = /^LV ([^/]+)\/(.+)$/.exec(where);
  if (lv) return { device: `/dev/${lv[1]}/${lv[2]}`, lv: { vg: lv[1]!, name: lv[2]! } };
  return { device: '/dev/sda', wholeDisk: true };
}

/** What an fstab spec can name a found filesystem by: device name, UUID, LABEL, and its partition's PARTUUID and PARTLABEL. */
export function knownFilesystem(c: CandidateFilesystem, table: PartitionTable | null): KnownFilesystem {
  const name = deviceName(c.name);
  const part = name.partition !== undefined ? table?.partitions.find((p) => p.number === name.partition) : undefined;
  return {
    ...name,
    ...(c.info.uuid !== undefined ? { uuid: c.info.uuid } : {}),
    ...(c.info.label !== undefined ? { label: c.info.label } : {}),
    ...(part?.uuid !== undefined ? { partuuid: part.uuid } : {}),
    ...(part?.name !== undefined ? { partlabel: part.name } : {}),
  };
}

export interface OpenedFilesystem {
  fs: Filesystem;
  /** Where it was found ("partition 1", "LV vg/root", "whole disk"). */
  where: string;
  /** fstab entries of the root that could not be mounted under it. */
  notes?: string[];
}

/**
 * The filesystem to read files from: the selected partition or logical volume, or else the
 * root filesystem found by inspection. EINVAL (with what was found) when it is ambiguous.
 */
export async function openSelectedFilesystem(disk: BlockDevice, selection: InsideSelection): Promise<OpenedFilesystem> {
  if (selection.partition !== undefined || selection.lv !== undefined) {
    const { device } = await openInside(disk, selection);
    const where = selection.partition !== undefined ? `partition ${selection.partition}` : `LV ${selection.lv}`;
    return { fs: await openFilesystem(device), where };
  }
  const candidates = await readableFilesystems(disk);
  if (candidates.length === 0) throw new DiskError('EFORMAT', 'no filesystem that can be read was found in the image');
  if (candidates.length === 1) {
    const fs = await openFilesystem(candidates[0]!.device, candidates[0]!.info.type);
    // With subvolumes, the one holding the operating system (the default one may be only their parent).
    return { fs: fs.subvolumeViews ? (await osRoot(fs)) ?? fs : fs, where: candidates[0]!.name };
  }
  const opened = new Map<CandidateFilesystem, Filesystem>();
  const roots: { fs: Filesystem; candidate: CandidateFilesystem }[] = [];
  for (const c of candidates) {
    let fs: Filesystem;
    try { fs = await openFilesystem(c.device, c.info.type); } catch (e) {
      if (isDiskError(e)) continue;
      throw e;
    }
    opened.set(c, fs);
    const root = await osRoot(fs);
    if (root) roots.push({ fs: root, candidate: c });
  }
  const list = candidates.map((c) => `${c.name} (${c.info.type})`).join(', ');
  if (roots.length === 0) throw new DiskError('EINVAL', `no operating system root filesystem found among ${list}: choose one with --partition or --lv`);
  if (roots.length > 1) throw new DiskError('EINVAL', `several operating system root filesystems found (${roots.map((r) => r.candidate.name).join(', ')}): choose one with --partition or --lv`);
  // The root's /etc/fstab mounts the disk's other filesystems under it, as libguestfs's inspection does before virt-ls and virt-cat.
  const { fs: root, candidate } = roots[0]!;
  const table = await readPartitionTable(disk);
  const known = candidates.map((c) => ({ ...knownFilesystem(c, table), candidate: c }));
  const mounted = await mountFstab(root, deviceName(candidate.name).device, known, async (device) => {
    const k = known.find((x) => x.device === device);
    return k ? opened.get(k.candidate) : undefined;
  });
  return { fs: mounted.mounts > 0 ? mounted.fs : root, where: candidate.name, notes: mounted.notes };
}
