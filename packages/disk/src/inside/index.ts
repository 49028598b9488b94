/**
 * What a disk holds, in one place: the devices where filesystems or LVM physical volumes
 * may sit (its partitions, or the whole disk when it has no table), the LVM volume groups
 * on them, and opening one partition or logical volume by name — what `diskhub img
 * partitions`, `--partition` / `--lv`, and `diskhub nbd --partition` build on.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { readPartitionTable, openPartition, type Partition, type PartitionTable } from '../partition/index.js';
import { scanLvm, openLogicalVolume, type LvmScan, type NamedDevice } from '../lvm/index.js';
import { identifyFilesystem, type FilesystemInfo } from '../fsid/index.js';

/**
 * Partitions we look into (filesystem, LVM label). Linux gives a disk at most 256 partitions;
 * a table listing thousands is hostile, and probing each would read gigabytes.
 */
export const MAX_PROBED_PARTITIONS = 256;

export interface ContentDevices {
  devices: NamedDevice[];
  /** Which partition each device is (absent for the whole disk). */
  partitions: Map<NamedDevice, Partition>;
  /** Partitions past MAX_PROBED_PARTITIONS, left out. */
  skipped: number;
}

/** The devices of a disk where filesystems or PVs may sit: its partitions (not extended ones), or the whole disk when it has no table. */
export async function contentDevices(disk: BlockDevice, table: PartitionTable | null): Promise<ContentDevices> {
  const partitions = new Map<NamedDevice, Partition>();
  if (!table) return { devices: [{ name: 'whole disk', device: disk }], partitions, skipped: 0 };
  const devices: NamedDevice[] = [];
  let skipped = 0;
  for (const p of table.partitions) {
    if (p.kind === 'extended' || p.beyondDisk) continue;
    if (devices.length >= MAX_PROBED_PARTITIONS) { skipped++; continue; }
    const d = { name: `partition ${p.number}`, device: await openPartition(disk, p.number, { table }) };
    devices.push(d);
    partitions.set(d, p);
  }
  return { devices, partitions, skipped };
}

/** Identify a filesystem, with unreadable content (a DiskError) counted as "nothing recognised". */
export async function filesystemOf(device: BlockDevice): Promise<FilesystemInfo | null> {
  try {
    return await identifyFilesystem(device);
  } catch (e) {
    if (e instanceof DiskError) return null;
    throw e;
  }
}

/** LVM on these devices (`identified`: filesystems already found, to save probing twice). */
export async function scanDevicesLvm(devices: NamedDevice[], identified?: Map<NamedDevice, FilesystemInfo | null>): Promise<LvmScan> {
  const pvs: NamedDevice[] = [];
  for (const d of devices) {
    const fs = identified ? identified.get(d) : await filesystemOf(d.device);
    if (fs?.type === 'LVM2_member') pvs.push(d);
  }
  return scanLvm(pvs);
}

/** LVM on a disk's partitions (or on the whole disk). */
export async function scanDiskLvm(disk: BlockDevice, table?: PartitionTable | null): Promise<LvmScan> {
  const t = table === undefined ? await readPartitionTable(disk) : table;
  return scanDevicesLvm((await contentDevices(disk, t)).devices);
}

export interface InsideSelection {
  /** A partition number (Linux numbering). */
  partition?: number;
  /** A logical volume, "VG/LV". */
  lv?: string;
}

export interface OpenedInside {
  device: BlockDevice;
  partition?: Partition;
  table?: PartitionTable;
  lv?: { vg: string; name: string; uuid: string; segmentType: string };
}

/** Open a partition or logical volume of a disk (the disk itself when nothing is selected). */
export async function openInside(disk: BlockDevice, selection: InsideSelection): Promise<OpenedInside> {
  if (selection.partition !== undefined && selection.lv !== undefined) throw new DiskError('EINVAL', 'select a partition or a logical volume, not both');
  if (selection.partition === undefined && selection.lv === undefined) return { device: disk };
  const table = await readPartitionTable(disk);
  if (selection.partition !== undefined) {
    const device = await openPartition(disk, selection.partition, { table });
    return { device, partition: table!.partitions.find((p) => p.number === selection.partition)!, table: table! };
  }
  const device = openLogicalVolume(await scanDiskLvm(disk, table), selection.lv!);
  return { device, lv: { vg: device.vg.name, name: device.lv.name, uuid: device.lv.uuid, segmentType: device.lv.segmentType } };
}
