/**
 * Looking inside an image from the command line: `--partition N` and `--lv VG/LV` select a
 * partition or an LVM logical volume of an image for `info`, `map` and `convert` (and
 * `partitions` lists what there is to select). The syntax follows qemu-nbd's --partition.
 */
import {
  readPartitionTable, openPartition, scanLvm, openLogicalVolume, identifyFilesystem, isDiskError, DiskError,
  type BlockDevice, type Image, type NamedDevice, type Partition, type PartitionTable, type LvmScan, type FilesystemInfo,
} from '@diskhub/disk';
import { UsageError, type LongOption } from './getopt.js';
import { CliError } from './common.js';

export interface InsideSelection {
  partition?: number;
  lv?: string;
}

export const INSIDE_OPTIONS: LongOption[] = [
  { name: 'partition', hasArg: 1, val: 'partition' },
  { name: 'lv', hasArg: 1, val: 'lv' },
];

/** Take `--partition` / `--lv` into `sel`; false for any other option. */
export function insideOption(opt: string, arg: string | undefined, sel: InsideSelection): boolean {
  if (opt === 'partition') {
    if (!/^\d+$/.test(arg ?? '') || Number(arg) < 1 || !Number.isSafeInteger(Number(arg))) throw new UsageError(`Invalid partition number '${arg}'`, false);
    if (sel.lv !== undefined) throw new UsageError('--partition and --lv cannot be used together', false);
    sel.partition = Number(arg);
    return true;
  }
  if (opt === 'lv') {
    if (!/^[^/]+\/[^/]+$/.test(arg ?? '')) throw new UsageError(`Invalid logical volume '${arg}': expected VG/LV`, false);
    if (sel.partition !== undefined) throw new UsageError('--partition and --lv cannot be used together', false);
    sel.lv = arg;
    return true;
  }
  return false;
}

export const hasSelection = (sel: InsideSelection) => sel.partition !== undefined || sel.lv !== undefined;

/** What was selected, for info's report. */
export interface Selected {
  device: BlockDevice;
  partition?: Partition;
  table?: PartitionTable;
  lv?: { vg: string; name: string; uuid: string; segmentType: string };
}

/**
 * Partitions we look into (filesystem, LVM label). Linux gives a disk at most 256 partitions;
 * a table listing thousands is hostile, and probing each would read gigabytes.
 */
export const MAX_PROBED_PARTITIONS = 256;

/** The devices an image holds where PVs or filesystems may sit: its partitions, or the whole disk when it has no table. */
export async function contentDevices(image: Image, table: PartitionTable | null): Promise<{ devices: NamedDevice[]; partitions: Map<NamedDevice, Partition>; skipped: number }> {
  const partitions = new Map<NamedDevice, Partition>();
  if (!table) return { devices: [{ name: 'whole disk', device: image }], partitions, skipped: 0 };
  const devices: NamedDevice[] = [];
  let skipped = 0;
  for (const p of table.partitions) {
    if (p.kind === 'extended' || p.beyondDisk) continue;
    if (devices.length >= MAX_PROBED_PARTITIONS) { skipped++; continue; }
    const d = { name: `partition ${p.number}`, device: await openPartition(image, p.number, { table }) };
    devices.push(d);
    partitions.set(d, p);
  }
  return { devices, partitions, skipped };
}

/** Scan devices for LVM physical volumes (`identified`: filesystems already found, to save probing twice). */
export async function scanDevicesLvm(devices: NamedDevice[], identified?: Map<NamedDevice, FilesystemInfo | null>): Promise<LvmScan> {
  const pvs: NamedDevice[] = [];
  for (const d of devices) {
    const fs = identified ? identified.get(d) : await filesystemOf(d.device);
    if (fs?.type === 'LVM2_member') pvs.push(d);
  }
  return scanLvm(pvs);
}

/** Scan an image's partitions (or the whole disk) for LVM physical volumes. */
export async function scanImageLvm(image: Image, table: PartitionTable | null): Promise<LvmScan> {
  return scanDevicesLvm((await contentDevices(image, table)).devices);
}

/** Apply a selection to an opened image; errors read "Could not open 'NAME': ..." like qemu-img's. */
export async function selectInside(image: Image, filename: string, sel: InsideSelection): Promise<Selected> {
  if (!hasSelection(sel)) return { device: image };
  try {
    const table = await readPartitionTable(image);
    if (sel.partition !== undefined) {
      const device = await openPartition(image, sel.partition, { table });
      return { device, partition: table!.partitions.find((p) => p.number === sel.partition)!, table: table! };
    }
    if (sel.lv !== undefined) {
      const scan = await scanImageLvm(image, table);
      const device = openLogicalVolume(scan, sel.lv);
      return { device, lv: { vg: device.vg.name, name: device.lv.name, uuid: device.lv.uuid, segmentType: device.lv.segmentType } };
    }
    return { device: image };
  } catch (e) {
    if (isDiskError(e)) throw new CliError(`Could not open '${filename}': ${e.message}`);
    throw e;
  }
}

/** Identify the filesystem on a device, turning a failure into "unknown" rather than an error. */
export async function filesystemOf(device: BlockDevice): Promise<FilesystemInfo | null> {
  try {
    return await identifyFilesystem(device);
  } catch (e) {
    if (e instanceof DiskError) return null;
    throw e;
  }
}

/**
 * `info --partition N` / `--lv VG/LV`: the image's info with the selected part's size as the
 * virtual size (the host file's disk size no longer describes it), and what the part is.
 */
export async function selectionInfo<T extends { 'virtual-size': number; [key: string]: unknown }>(info: T, sel: Selected): Promise<{ info: T; human: string }> {
  const fs = await filesystemOf(sel.device);
  const copy: T = { ...info, 'virtual-size': sel.device.size };
  delete copy['actual-size'];
  delete copy['format-specific'];
  delete copy.snapshots;
  let human = '';
  if (sel.partition) {
    const p = sel.partition;
    (copy as Record<string, unknown>).partition = {
      number: p.number, table: sel.table!.type, offset: p.start, size: p.size, type: p.type,
      ...(p.typeName ? { 'type-name': p.typeName } : {}), ...(p.name ? { name: p.name } : {}), ...(p.uuid ? { uuid: p.uuid } : {}),
    };
    human += `partition: ${p.number} (${sel.table!.type}, offset ${p.start}, ${p.typeName ?? p.type}${p.name ? `, name ${p.name}` : ''}${p.uuid ? `, uuid ${p.uuid}` : ''})\n`;
  }
  if (sel.lv) {
    (copy as Record<string, unknown>)['logical-volume'] = { vg: sel.lv.vg, lv: sel.lv.name, uuid: sel.lv.uuid, type: sel.lv.segmentType };
    human += `logical volume: ${sel.lv.vg}/${sel.lv.name} (${sel.lv.segmentType}, uuid ${sel.lv.uuid})\n`;
  }
  if (fs) {
    (copy as Record<string, unknown>).filesystem = { ...fs };
    human += `filesystem: ${fs.type}${fs.label ? `, label ${fs.label}` : ''}${fs.uuid ? `, uuid ${fs.uuid}` : ''}\n`;
  }
  return { info: copy, human };
}
