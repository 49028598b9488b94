/**
 * Filesystem identification, like `blkid -p`: which filesystem (or swap area, LVM PV,
 * LUKS container, ISO image) a block device holds, with its label, UUID and size. Probers
 * run in a fixed order and the first that recognises the content wins; each checks enough
 * of its superblock that stray magic bytes do not fool it.
 */
import type { BlockDevice } from '../blockdev.js';
import { parsePvLabel } from '../lvm/label.js';
import { ProbeContext, type FilesystemInfo, type Prober } from './model.js';
import { probeExt } from './ext.js';
import { probeXfs } from './xfs.js';
import { probeBtrfs } from './btrfs.js';
import { probeFat } from './fat.js';
import { probeNtfs } from './ntfs.js';
import { probeSwap } from './swap.js';
import { probeLuks } from './luks.js';
import { probeIso9660 } from './iso9660.js';

export type { FilesystemInfo } from './model.js';

/** Everything the probers look at without extra reads: up to the end of btrfs's superblock. */
const HEAD_BYTES = 0x10000 + 4096;

const probeLvmPv: Prober = (ctx) => {
  const label = parsePvLabel(ctx.head.subarray(0, Math.min(ctx.head.length, 2048)));
  if (!label) return null;
  return { type: 'LVM2_member', usage: 'raid', uuid: label.uuid, version: 'LVM2 001', size: label.deviceSize };
};

/** Containers first (they may hold anything after their header), then filesystems, then swap. */
const PROBERS: Prober[] = [probeLuks, probeLvmPv, probeXfs, probeExt, probeBtrfs, probeNtfs, probeFat, probeIso9660, probeSwap];

/** What `dev` holds, or null when nothing is recognised. */
export async function identifyFilesystem(dev: BlockDevice): Promise<FilesystemInfo | null> {
  const head = new Uint8Array(Math.min(dev.size, HEAD_BYTES));
  if (head.length > 0) await dev.read(head, 0);
  const ctx = new ProbeContext(dev, head);
  for (const probe of PROBERS) {
    const found = await probe(ctx);
    if (found) return found;
  }
  return null;
}

/** The fields as `blkid -p -o export` names them (values unescaped), for comparing and for scripts. */
export function blkidFields(info: FilesystemInfo): Record<string, string> {
  const out: Record<string, string> = {};
  if (info.label !== undefined) out.LABEL = info.label;
  if (info.uuid !== undefined) out.UUID = info.uuid;
  if (info.uuidSub !== undefined) out.UUID_SUB = info.uuidSub;
  if (info.logUuid !== undefined) out.LOGUUID = info.logUuid;
  if (info.externalJournal !== undefined) out.EXT_JOURNAL = info.externalJournal;
  if (info.secType !== undefined) out.SEC_TYPE = info.secType;
  if (info.version !== undefined) out.VERSION = info.version;
  if (info.blockSize !== undefined) out.BLOCK_SIZE = String(info.blockSize);
  if (info.subsystem !== undefined) out.SUBSYSTEM = info.subsystem;
  out.TYPE = info.type;
  out.USAGE = info.usage;
  return out;
}
