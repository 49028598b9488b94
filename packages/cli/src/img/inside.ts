/**
 * Looking inside an image from the command line: `--partition N` and `--lv VG/LV` select a
 * partition or an LVM logical volume of an image for `info`, `map` and `convert` (and
 * `partitions` lists what there is to select). The syntax follows qemu-nbd's --partition.
 */
import type { Image, InsideSelection, OpenedInside } from '@diskhub/disk';
import { isDiskError } from '@diskhub/disk/errors';
import { UsageError, type LongOption } from './getopt.js';
import { CliError } from './common.js';

export type { InsideSelection } from '@diskhub/disk';

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

/** Apply a selection to an opened image; errors read "Could not open 'NAME': ..." like qemu-img's. */
export async function selectInside(image: Image, filename: string, sel: InsideSelection): Promise<OpenedInside> {
  try {
    // Loaded here: the partition, LVM and filesystem readers are for a selection only.
    return await (await import('@diskhub/disk/inside/index')).openInside(image, sel);
  } catch (e) {
    if (isDiskError(e)) throw new CliError(`Could not open '${filename}': ${e.message}`);
    throw e;
  }
}

/**
 * `info --partition N` / `--lv VG/LV`: the image's info with the selected part's size as the
 * virtual size (the host file's disk size no longer describes it), and what the part is.
 */
export async function selectionInfo<T extends { 'virtual-size': number; [key: string]: unknown }>(info: T, sel: OpenedInside): Promise<{ info: T; human: string }> {
  const fs = await (await import('@diskhub/disk/inside/index')).filesystemOf(sel.device);
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
