/**
 * Partition tables (MBR and GPT) and partitions as block devices: `readPartitionTable`
 * says what is on a disk, `openPartition` gives one partition as a BlockDevice window.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { readGpt, hasGptSignature } from './gpt.js';
import { looksLikeMbr, isProtectiveMbr, readMbr, MBR_SECTOR } from './mbr.js';
import type { Partition, PartitionTable } from './model.js';
import { WindowDevice, type WindowOptions } from './window.js';

export type { Partition, PartitionTable, GptDetails } from './model.js';
export { WindowDevice, remapExtents, type WindowOptions } from './window.js';
export { formatGuid } from './guid.js';
export { MBR_TYPE_NAMES, GPT_TYPE_NAMES } from './types.js';
export { MAX_LOGICAL_PARTITIONS } from './mbr.js';
export { MAX_GPT_ENTRIES, MAX_GPT_ENTRY_SIZE, MAX_GPT_ARRAY_BYTES } from './gpt.js';

/**
 * The partition table of a disk, or null when it has none (a bare filesystem, an empty
 * disk). A protective MBR leads to the GPT (512-byte sectors, then 4096-byte sectors); when
 * sector 0 is no MBR at all, a GPT is still looked for (and reported with a warning). Throws
 * ECORRUPT when a GPT exists but neither header is usable.
 */
export async function readPartitionTable(dev: BlockDevice): Promise<PartitionTable | null> {
  if (dev.size < 2 * MBR_SECTOR) return null;
  const sector0 = new Uint8Array(MBR_SECTOR);
  await dev.read(sector0, 0);
  const protective = isProtectiveMbr(sector0);
  const mbr = looksLikeMbr(sector0);
  if (protective || !mbr) {
    // A GPT with 512-byte sectors keeps its header at byte 512; with 4 KiB sectors at 4096.
    for (const sectorSize of [512, 4096]) {
      if (dev.size < 3 * sectorSize) continue;
      const gpt = await readGpt(dev, sectorSize);
      if (gpt) {
        if (!protective) gpt.warnings.unshift('GPT found without a protective MBR');
        return gpt;
      }
    }
    if (protective) throw new DiskError('ECORRUPT', 'protective MBR found, but no GPT header (primary or backup)');
    return null;
  }
  return readMbr(dev, sector0);
}

export interface OpenPartitionOptions extends WindowOptions {
  /** A table already read (saves reading it again). */
  table?: PartitionTable | null;
}

/** Find partition `number` (Linux numbering: sda<N>, qemu-nbd --partition N). */
export function findPartition(table: PartitionTable | null, number: number): Partition {
  if (!table) throw new DiskError('EINVAL', 'the disk has no partition table');
  const p = table.partitions.find((x) => x.number === number);
  if (!p) {
    const have = table.partitions.map((x) => x.number).join(', ') || 'none';
    throw new DiskError('EINVAL', `partition ${number} does not exist (${table.type} table; partitions: ${have})`);
  }
  if (p.beyondDisk) throw new DiskError('ECORRUPT', `partition ${number} extends past the end of the disk`);
  return p;
}

/** Partition `number` of `dev` as a block device of its own (an offset window over `dev`). */
export async function openPartition(dev: BlockDevice, number: number, options: OpenPartitionOptions = {}): Promise<WindowDevice> {
  if (!Number.isSafeInteger(number) || number < 1) throw new DiskError('EINVAL', `invalid partition number ${number}`);
  const table = options.table !== undefined ? options.table : await readPartitionTable(dev);
  const p = findPartition(table, number);
  return new WindowDevice(dev, p.start, p.size, { name: `partition ${number}`, ...options });
}
