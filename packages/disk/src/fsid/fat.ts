/**
 * FAT12/16/32 ("vfat"): the BIOS parameter block in the boot sector (Microsoft's FAT
 * specification, "BPB"). The FAT type follows from the cluster count, as the specification
 * says; the label is the volume-label entry of the root directory when there is one (what
 * mlabel and Windows change), else the boot sector's copy.
 */
import { type Prober, type ProbeContext, view, ascii, isPowerOfTwo } from './model.js';

/** Microsoft FAT specification §3.5: fewer clusters than 4085 make FAT12. */
export const FAT12_MAX_CLUSTERS = 4084;
const ATTR_VOLUME_ID = 0x08;
const ATTR_LONG_NAME = 0x0f;
const NO_NAME = 'NO NAME    ';
/** Root-directory bytes we read on FAT32 (following its cluster chain) before giving up on finding a label. */
const MAX_ROOT_BYTES = 4 << 20;

export interface Bpb {
  sectorSize: number;
  sectorsPerCluster: number;
  reserved: number;
  fats: number;
  rootEntries: number;
  totalSectors: number;
  fatSectors: number;
  fat32: boolean;
  rootCluster: number;
}

export function parseBpb(bs: Uint8Array): Bpb | null {
  const v = view(bs);
  const jump = bs[0] === 0xeb || bs[0] === 0xe9;
  const sectorSize = v.getUint16(11, true);
  const sectorsPerCluster = bs[13]!;
  const reserved = v.getUint16(14, true);
  const fats = bs[16]!;
  const media = bs[21]!;
  if (!jump || !isPowerOfTwo(sectorSize) || sectorSize < 512 || sectorSize > 4096) return null;
  if (!isPowerOfTwo(sectorsPerCluster) || reserved === 0 || fats === 0 || fats > 4) return null;
  if (media !== 0xf0 && media < 0xf8) return null;
  const fat16Sectors = v.getUint16(22, true);
  const fat32 = fat16Sectors === 0;
  const fatSectors = fat32 ? v.getUint32(36, true) : fat16Sectors;
  const total16 = v.getUint16(19, true);
  const totalSectors = total16 !== 0 ? total16 : v.getUint32(32, true);
  if (fatSectors === 0 || totalSectors === 0) return null;
  return { sectorSize, sectorsPerCluster, reserved, fats, rootEntries: v.getUint16(17, true), totalSectors, fatSectors, fat32, rootCluster: fat32 ? v.getUint32(44, true) : 0 };
}

/** The 11-character label of the first volume-label entry in a directory block, if any. */
function labelInDirectory(dir: Uint8Array): { label?: string; end: boolean } {
  for (let at = 0; at + 32 <= dir.length; at += 32) {
    const first = dir[at]!;
    if (first === 0x00) return { end: true };
    if (first === 0xe5) continue;
    const attr = dir[at + 11]!;
    if ((attr & ATTR_LONG_NAME) === ATTR_LONG_NAME || (attr & ATTR_VOLUME_ID) === 0) continue;
    const name = dir.slice(at, at + 11);
    if (name[0] === 0x05) name[0] = 0xe5; // KANJI lead byte escape (FAT spec, DIR_Name)
    return { label: ascii(name), end: true };
  }
  return { end: false };
}

async function rootDirectoryLabel(ctx: ProbeContext, b: Bpb): Promise<string | undefined> {
  const firstDataSector = b.reserved + b.fats * b.fatSectors + Math.ceil((b.rootEntries * 32) / b.sectorSize);
  if (!b.fat32) {
    const bytes = Math.min(b.rootEntries * 32, 1 << 20);
    const dir = await ctx.read((b.reserved + b.fats * b.fatSectors) * b.sectorSize, bytes);
    return dir ? labelInDirectory(dir).label : undefined;
  }
  const clusterBytes = b.sectorsPerCluster * b.sectorSize;
  const seen = new Set<number>();
  const maxClusters = Math.max(1, Math.floor(MAX_ROOT_BYTES / clusterBytes));
  for (let cluster = b.rootCluster; cluster >= 2 && cluster < 0x0ffffff7 && seen.size < maxClusters; ) {
    if (seen.has(cluster)) return undefined;
    seen.add(cluster);
    const dir = await ctx.read((firstDataSector + (cluster - 2) * b.sectorsPerCluster) * b.sectorSize, clusterBytes);
    if (!dir) return undefined;
    const r = labelInDirectory(dir);
    if (r.end) return r.label;
    const entry = await ctx.read(b.reserved * b.sectorSize + cluster * 4, 4);
    if (!entry) return undefined;
    cluster = view(entry).getUint32(0, true) & 0x0fffffff;
  }
  return undefined;
}

const trimLabel = (s: string) => s.replace(/ +$/, '');

export const probeFat: Prober = async (ctx) => {
  const bs = ctx.at(0, 512);
  if (!bs || bs[510] !== 0x55 || bs[511] !== 0xaa) return null;
  const b = parseBpb(bs);
  if (!b) return null;
  const rootSectors = Math.ceil((b.rootEntries * 32) / b.sectorSize);
  const dataSectors = b.totalSectors - (b.reserved + b.fats * b.fatSectors + rootSectors);
  if (dataSectors <= 0) return null;
  const clusters = Math.floor(dataSectors / b.sectorsPerCluster);
  const version = b.fat32 ? 'FAT32' : clusters <= FAT12_MAX_CLUSTERS ? 'FAT12' : 'FAT16';
  // The extended BPB sits at 36 (FAT12/16) or 64 (FAT32): signature 0x29, serial, label.
  const ext = b.fat32 ? 64 : 36;
  const hasSerial = bs[ext + 2] === 0x29 || bs[ext + 2] === 0x28;
  const serial = bs.subarray(ext + 3, ext + 7);
  const bootLabel = bs[ext + 2] === 0x29 ? ascii(bs.subarray(ext + 7, ext + 18)) : undefined;
  const dirLabel = await rootDirectoryLabel(ctx, b);
  const label = dirLabel ?? (bootLabel !== undefined && bootLabel !== NO_NAME ? bootLabel : undefined);
  const hex = (x: number) => x.toString(16).toUpperCase().padStart(2, '0');
  return {
    type: 'vfat', usage: 'filesystem',
    ...(b.fat32 ? {} : { secType: 'msdos' }),
    ...(label !== undefined && trimLabel(label) ? { label: trimLabel(label) } : {}),
    ...(hasSerial ? { uuid: `${hex(serial[3]!)}${hex(serial[2]!)}-${hex(serial[1]!)}${hex(serial[0]!)}` } : {}),
    version,
    blockSize: b.sectorSize,
    size: b.totalSectors * b.sectorSize,
  };
};
