/**
 * The LVM2 physical volume label (LVM2's lib/label and lib/format_text layout): one of the
 * first four 512-byte sectors starts with "LABELONE"; its pv_header lists the PV's UUID,
 * size, data areas (where extents live) and metadata areas (where the VG text is kept).
 */
import type { BlockDevice } from '../blockdev.js';
import { crcRegister } from '../crc32.js';

export const LVM_SECTOR = 512;
export const LABEL_SCAN_SECTORS = 4;
/** LVM2's checksum starting value (INITIAL_CRC in lib/misc/crc.h). */
export const LVM_INITIAL_CRC = 0xf597a6cf;
const LABEL_ID = 'LABELONE';
const LABEL_TYPE = 'LVM2 001';
const UUID_LENGTH = 32;
/** Areas listed in a pv_header that we accept before calling the header hostile. */
const MAX_AREAS = 16;

export interface DiskArea {
  /** Byte offset from the start of the PV. */
  offset: number;
  /** Bytes; 0 for a data area means "to the end of the device". */
  size: number;
}

export interface PhysicalVolumeLabel {
  /** The PV UUID with LVM's dashes (6-4-4-4-4-4-6), as pvs and blkid print it. */
  uuid: string;
  /** The sector (0-3) holding the label. */
  labelSector: number;
  /** The device size recorded when the PV was made. */
  deviceSize: number;
  dataAreas: DiskArea[];
  metadataAreas: DiskArea[];
  /** Problems that did not stop the label being read (checksum, ...). */
  warnings: string[];
}

/** "CEpT71MVZSWR7f..." → "CEpT71-MVZS-WR7f-...": LVM's display form of a 32-character id. */
export function formatLvmUuid(raw: string): string {
  const groups = [6, 4, 4, 4, 4, 4, 6];
  const out: string[] = [];
  let at = 0;
  for (const g of groups) { out.push(raw.slice(at, at + g)); at += g; }
  return out.join('-');
}

const text = (b: Uint8Array) => String.fromCharCode(...b);

/** The label of a PV, or null when none of sectors 0-3 holds an LVM2 label. */
export async function readPvLabel(dev: BlockDevice): Promise<PhysicalVolumeLabel | null> {
  const bytes = Math.min(dev.size, LABEL_SCAN_SECTORS * LVM_SECTOR);
  if (bytes < LVM_SECTOR) return null;
  const head = new Uint8Array(bytes);
  await dev.read(head, 0);
  return parsePvLabel(head);
}

/** Parse the label from the first (up to) four sectors of a device. */
export function parsePvLabel(head: Uint8Array): PhysicalVolumeLabel | null {
  for (let sector = 0; (sector + 1) * LVM_SECTOR <= head.length && sector < LABEL_SCAN_SECTORS; sector++) {
    const s = head.subarray(sector * LVM_SECTOR, (sector + 1) * LVM_SECTOR);
    if (text(s.subarray(0, 8)) !== LABEL_ID) continue;
    const v = new DataView(s.buffer, s.byteOffset, s.byteLength);
    // A label copied to another sector (a PV image inside a PV) says where it belongs.
    if (v.getBigUint64(8, true) !== BigInt(sector)) continue;
    if (text(s.subarray(24, 32)) !== LABEL_TYPE) continue;
    const warnings: string[] = [];
    if (crcRegister(s.subarray(20), LVM_INITIAL_CRC) !== v.getUint32(16, true)) warnings.push(`PV label checksum mismatch in sector ${sector}`);
    const headerAt = v.getUint32(20, true);
    if (headerAt < 32 || headerAt + UUID_LENGTH + 8 + 16 > LVM_SECTOR) continue;
    const uuid = formatLvmUuid(text(s.subarray(headerAt, headerAt + UUID_LENGTH)));
    let at = headerAt + UUID_LENGTH;
    const deviceSize = Number(v.getBigUint64(at, true));
    at += 8;
    const readList = (): DiskArea[] | null => {
      const list: DiskArea[] = [];
      for (;;) {
        if (at + 16 > LVM_SECTOR || list.length > MAX_AREAS) return null;
        const offset = v.getBigUint64(at, true);
        const size = v.getBigUint64(at + 8, true);
        at += 16;
        if (offset === 0n && size === 0n) return list;
        if (offset > BigInt(Number.MAX_SAFE_INTEGER) || size > BigInt(Number.MAX_SAFE_INTEGER)) return null;
        list.push({ offset: Number(offset), size: Number(size) });
      }
    };
    const dataAreas = readList();
    const metadataAreas = dataAreas && readList();
    if (!dataAreas || !metadataAreas) continue;
    return { uuid, labelSector: sector, deviceSize, dataAreas, metadataAreas, warnings };
  }
  return null;
}
