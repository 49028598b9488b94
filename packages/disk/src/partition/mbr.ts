/**
 * MBR ("dos") partition tables: four primary entries at byte 446 of sector 0, and for an
 * extended partition a chain of extended boot records (EBRs), each holding one logical
 * partition (relative to the EBR) and a link to the next EBR (relative to the extended
 * partition's start). The chain comes from the disk, so it is followed with loop and length
 * limits. Sectors are 512 bytes (the MBR has no way to say otherwise).
 */
import type { BlockDevice } from '../blockdev.js';
import { MBR_EXTENDED_TYPES, MBR_PROTECTIVE_TYPE, MBR_TYPE_NAMES } from './types.js';
import type { Partition, PartitionTable } from './model.js';

export const MBR_SECTOR = 512;
const ENTRIES_OFFSET = 446;
const ENTRY_SIZE = 16;
/** Logical partitions we follow before calling the chain hostile (Linux handles at most a few hundred minors). */
export const MAX_LOGICAL_PARTITIONS = 256;

export interface MbrEntry {
  status: number;
  type: number;
  startLba: number;
  sectors: number;
}

export function hasBootSignature(sector: Uint8Array): boolean {
  return sector.length >= 512 && sector[510] === 0x55 && sector[511] === 0xaa;
}

export function mbrEntries(sector: Uint8Array): MbrEntry[] {
  const view = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  const entries: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const at = ENTRIES_OFFSET + i * ENTRY_SIZE;
    entries.push({
      status: sector[at]!,
      type: sector[at + 4]!,
      startLba: view.getUint32(at + 8, true),
      sectors: view.getUint32(at + 12, true),
    });
  }
  return entries;
}

const isEmpty = (e: MbrEntry) => e.type === 0 || e.sectors === 0;

/**
 * Does sector 0 look like an MBR? The 0x55AA signature alone also ends every FAT and NTFS
 * boot sector, so also require sane boot indicators (0x00 or 0x80), as libblkid does.
 */
export function looksLikeMbr(sector: Uint8Array): boolean {
  if (!hasBootSignature(sector)) return false;
  return mbrEntries(sector).every((e) => e.status === 0 || e.status === 0x80);
}

/** A filesystem boot sector (FAT/NTFS BPB) rather than a disk's MBR: jump instruction and a sane bytes-per-sector. */
export function looksLikeVolumeBootRecord(sector: Uint8Array): boolean {
  const jump = sector[0] === 0xeb ? sector[2] === 0x90 : sector[0] === 0xe9;
  const bytesPerSector = sector[11]! | (sector[12]! << 8);
  return jump && bytesPerSector >= 512 && bytesPerSector <= 4096 && (bytesPerSector & (bytesPerSector - 1)) === 0;
}

export function isProtectiveMbr(sector: Uint8Array): boolean {
  return looksLikeMbr(sector) && mbrEntries(sector).some((e) => e.type === MBR_PROTECTIVE_TYPE);
}

function typeHex(type: number): string {
  return type.toString(16); // as sfdisk prints it: "5", "83", "8e"
}

/** Read a dos table whose sector 0 is `sector` (already checked with looksLikeMbr). */
export async function readMbr(dev: BlockDevice, sector: Uint8Array): Promise<PartitionTable | null> {
  const warnings: string[] = [];
  const diskSectors = Math.floor(dev.size / MBR_SECTOR);
  const view = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  const signature = view.getUint32(440, true);
  const id = '0x' + signature.toString(16).padStart(8, '0');
  const entries = mbrEntries(sector);
  if (entries.every(isEmpty) && looksLikeVolumeBootRecord(sector)) return null;
  const partitions: Partition[] = [];
  const make = (number: number, kind: Partition['kind'], e: MbrEntry, startLba: number): Partition => {
    const p: Partition = {
      number, kind,
      startSector: startLba, sectors: e.sectors,
      start: startLba * MBR_SECTOR, size: e.sectors * MBR_SECTOR,
      type: typeHex(e.type),
      uuid: `${signature.toString(16).padStart(8, '0')}-${number.toString(16).padStart(2, '0')}`,
    };
    const name = MBR_TYPE_NAMES.get(e.type);
    if (name) p.typeName = name;
    if (e.status === 0x80) p.bootable = true;
    if (startLba + e.sectors > diskSectors) {
      p.beyondDisk = true;
      warnings.push(`partition ${number} (sectors ${startLba}..${startLba + e.sectors - 1}) extends past the end of the disk (${diskSectors} sectors)`);
    }
    return p;
  };

  let extended: Partition | undefined;
  entries.forEach((e, i) => {
    if (isEmpty(e)) return;
    const isExtended = MBR_EXTENDED_TYPES.has(e.type);
    const p = make(i + 1, isExtended ? 'extended' : 'primary', e, e.startLba);
    partitions.push(p);
    if (isExtended) {
      if (extended) warnings.push(`partition ${i + 1}: a second extended partition is ignored`);
      else extended = p;
    }
  });
  if (extended) await readLogicalChain(dev, extended, diskSectors, partitions, make, warnings);
  checkOverlaps(partitions, warnings);
  return { type: 'dos', sectorSize: MBR_SECTOR, id, partitions, warnings };
}

async function readLogicalChain(
  dev: BlockDevice, extended: Partition, diskSectors: number, partitions: Partition[],
  make: (n: number, kind: Partition['kind'], e: MbrEntry, startLba: number) => Partition, warnings: string[],
): Promise<void> {
  const extStart = extended.startSector;
  const extEnd = Math.min(extStart + extended.sectors, diskSectors);
  const visited = new Set<number>();
  const ebr = new Uint8Array(MBR_SECTOR);
  let number = 5;
  let at = extStart;
  for (;;) {
    if (visited.has(at)) { warnings.push(`extended partition: the EBR chain loops back to sector ${at}; stopped there`); return; }
    if (visited.size >= MAX_LOGICAL_PARTITIONS) { warnings.push(`extended partition: more than ${MAX_LOGICAL_PARTITIONS} EBRs; stopped there`); return; }
    if (at < extStart || at >= extEnd) { warnings.push(`extended partition: an EBR link points to sector ${at}, outside the extended partition; stopped there`); return; }
    visited.add(at);
    await dev.read(ebr, at * MBR_SECTOR);
    if (!hasBootSignature(ebr)) {
      // An extended partition with nothing in it yet (fdisk writes an empty EBR, but a zeroed one is common too).
      if (at !== extStart) warnings.push(`extended partition: EBR at sector ${at} has no 0x55AA signature; stopped there`);
      return;
    }
    let next: number | undefined;
    for (const e of mbrEntries(ebr)) {
      if (isEmpty(e)) continue;
      if (MBR_EXTENDED_TYPES.has(e.type)) {
        if (next === undefined) next = extStart + e.startLba;
        continue;
      }
      const startLba = at + e.startLba;
      const p = make(number++, 'logical', e, startLba);
      if (startLba < extStart || startLba + e.sectors > extStart + extended.sectors) {
        warnings.push(`partition ${p.number} lies outside its extended partition`);
      }
      partitions.push(p);
    }
    if (next === undefined) return;
    at = next;
  }
}

/** Warn about data partitions that share sectors (an extended partition contains its logicals by design). */
export function checkOverlaps(partitions: Partition[], warnings: string[]): void {
  const data = partitions.filter((p) => p.kind !== 'extended' && p.sectors > 0).sort((a, b) => a.startSector - b.startSector);
  let reach: Partition | undefined; // the partition reaching furthest so far
  let reported = 0;
  for (const cur of data) {
    if (reach && cur.startSector < reach.startSector + reach.sectors) {
      if (reported++ < 16) warnings.push(`partitions ${reach.number} and ${cur.number} overlap`);
    }
    if (!reach || cur.startSector + cur.sectors > reach.startSector + reach.sectors) reach = cur;
  }
  if (reported > 16) warnings.push(`... and ${reported - 16} more overlaps`);
}
