/**
 * GUID Partition Tables (UEFI 2.10 §5.3). The header at LBA 1 and its copy at the last LBA
 * each carry a CRC32 of themselves and of the partition entry array; a header that fails
 * any check is not used, and the backup serves when the primary is bad. Every number comes
 * from the disk, so entry counts and sizes are capped before anything is allocated.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { crc32 } from '../crc32.js';
import { formatGuid, isZeroGuid } from './guid.js';
import { GPT_TYPE_NAMES } from './types.js';
import { checkOverlaps } from './mbr.js';
import type { GptDetails, Partition, PartitionTable } from './model.js';

const SIGNATURE = 'EFI PART';
/** The header fields UEFI defines end at byte 92 (§5.3.2, table 5-5). */
const MIN_HEADER_SIZE = 92;
const MIN_ENTRY_SIZE = 128;
/** Our safety limits: sgdisk makes 128 entries of 128 bytes; nothing sane needs more than this. */
export const MAX_GPT_ENTRIES = 65536;
export const MAX_GPT_ENTRY_SIZE = 4096;
export const MAX_GPT_ARRAY_BYTES = 16 << 20;

/** Header field offsets (UEFI 2.10 table 5-5). */
const H = {
  signature: 0, revision: 8, headerSize: 12, headerCrc: 16, myLba: 24, alternateLba: 32,
  firstUsableLba: 40, lastUsableLba: 48, diskGuid: 56, entriesLba: 72, entryCount: 80,
  entrySize: 84, entriesCrc: 88,
} as const;
/** Entry field offsets (UEFI 2.10 table 5-6). */
const E = { typeGuid: 0, uniqueGuid: 16, firstLba: 32, lastLba: 40, attributes: 48, name: 56, nameBytes: 72 } as const;

interface GptHeader {
  lba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entries: Uint8Array;
}

/** A 64-bit LBA as a safe number, or NaN when it cannot be a real address. */
function lba(view: DataView, at: number): number {
  const v = view.getBigUint64(at, true);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? NaN : Number(v);
}

export function hasGptSignature(sector: Uint8Array): boolean {
  return sector.length >= 8 && new TextDecoder('latin1').decode(sector.subarray(0, 8)) === SIGNATURE;
}

/** Read and verify the header at `at` (an LBA); returns it or the reason it is unusable. */
async function readHeader(dev: BlockDevice, sectorSize: number, at: number): Promise<GptHeader | string> {
  const diskSectors = Math.floor(dev.size / sectorSize);
  if (!(at >= 1 && at < diskSectors)) return `header LBA ${at} is outside the disk`;
  const sector = new Uint8Array(sectorSize);
  await dev.read(sector, at * sectorSize);
  if (!hasGptSignature(sector)) return `no GPT signature at LBA ${at}`;
  const view = new DataView(sector.buffer);
  const headerSize = view.getUint32(H.headerSize, true);
  if (headerSize < MIN_HEADER_SIZE || headerSize > sectorSize) return `header size ${headerSize} is invalid`;
  const stored = view.getUint32(H.headerCrc, true);
  const copy = sector.slice(0, headerSize);
  new DataView(copy.buffer).setUint32(H.headerCrc, 0, true);
  if (crc32(copy) !== stored) return `header CRC32 mismatch at LBA ${at}`;
  const myLba = lba(view, H.myLba);
  if (myLba !== at) return `header at LBA ${at} says it is at LBA ${myLba}`;
  const entryCount = view.getUint32(H.entryCount, true);
  const entrySize = view.getUint32(H.entrySize, true);
  if (entrySize < MIN_ENTRY_SIZE || entrySize % MIN_ENTRY_SIZE !== 0 || entrySize > MAX_GPT_ENTRY_SIZE) return `partition entry size ${entrySize} is invalid`;
  if (entryCount > MAX_GPT_ENTRIES || entryCount * entrySize > MAX_GPT_ARRAY_BYTES) {
    return `${entryCount} partition entries of ${entrySize} bytes exceed the limit (${MAX_GPT_ENTRIES} entries, ${MAX_GPT_ARRAY_BYTES} bytes)`;
  }
  const entriesLba = lba(view, H.entriesLba);
  const arrayBytes = entryCount * entrySize;
  const arraySectors = Math.ceil(arrayBytes / sectorSize);
  if (!(entriesLba >= 1 && entriesLba + arraySectors <= diskSectors)) return `partition entry array at LBA ${entriesLba} is outside the disk`;
  const firstUsableLba = lba(view, H.firstUsableLba);
  const lastUsableLba = lba(view, H.lastUsableLba);
  if (!(firstUsableLba <= lastUsableLba + 1)) return `usable range ${firstUsableLba}..${lastUsableLba} is invalid`;
  const entries = new Uint8Array(arrayBytes);
  if (arrayBytes > 0) await dev.read(entries, entriesLba * sectorSize);
  if (crc32(entries) !== view.getUint32(H.entriesCrc, true)) return `partition entry array CRC32 mismatch (header at LBA ${at})`;
  return {
    lba: at, alternateLba: lba(view, H.alternateLba), firstUsableLba, lastUsableLba,
    diskGuid: formatGuid(sector.subarray(H.diskGuid, H.diskGuid + 16)),
    entriesLba, entryCount, entrySize, entries,
  };
}

/** GPT attribute bits as sfdisk names them (UEFI 2.10 table 5-7; bits 48-63 belong to the partition type). */
function attributeNames(bits: bigint): string | undefined {
  if (bits === 0n) return undefined;
  const names: string[] = [];
  if (bits & 1n) names.push('RequiredPartition');
  if (bits & 2n) names.push('NoBlockIOProtocol');
  if (bits & 4n) names.push('LegacyBIOSBootable');
  const typeBits: number[] = [];
  for (let b = 48; b < 64; b++) if (bits & (1n << BigInt(b))) typeBits.push(b);
  if (typeBits.length) names.push(`GUID:${typeBits.join(',')}`);
  // Bits 3-47 are reserved: show them rather than hide them.
  const reserved = bits & 0x0000_ffff_ffff_fff8n;
  if (reserved) names.push(`0x${reserved.toString(16)}`);
  return names.join(' ');
}

function decodeName(bytes: Uint8Array): string {
  let end = 0;
  while (end + 1 < bytes.length && (bytes[end] !== 0 || bytes[end + 1] !== 0)) end += 2;
  return new TextDecoder('utf-16le').decode(bytes.subarray(0, end));
}

/**
 * Read the GPT of a disk with `sectorSize`-byte sectors. Returns null when neither header
 * has a GPT signature; throws ECORRUPT when there is a GPT but no header is usable.
 */
export async function readGpt(dev: BlockDevice, sectorSize: number): Promise<PartitionTable | null> {
  const warnings: string[] = [];
  const diskSectors = Math.floor(dev.size / sectorSize);
  if (diskSectors < 3) return null;
  const lastLba = diskSectors - 1;
  const primary = await readHeader(dev, sectorSize, 1);
  let used: GptHeader;
  let which: GptDetails['header'];
  if (typeof primary !== 'string') {
    used = primary;
    which = 'primary';
    // The backup should sit where the primary says; a missing or bad backup is worth saying.
    const backup = await readHeader(dev, sectorSize, primary.alternateLba);
    if (typeof backup === 'string') warnings.push(`backup GPT header is not usable: ${backup}`);
    else if (primary.alternateLba !== lastLba) warnings.push(`backup GPT header is at LBA ${primary.alternateLba}, not at the last LBA ${lastLba} (the disk was resized?)`);
  } else {
    const backup = await readHeader(dev, sectorSize, lastLba);
    if (typeof backup === 'string') {
      if (primary.startsWith('no GPT signature') && backup.startsWith('no GPT signature')) return null;
      throw new DiskError('ECORRUPT', `GPT: no usable header (primary: ${primary}; backup: ${backup})`);
    }
    used = backup;
    which = 'backup';
    warnings.push(`primary GPT header is not usable (${primary}); using the backup at LBA ${lastLba}`);
  }
  if (used.lastUsableLba >= diskSectors) warnings.push(`last usable LBA ${used.lastUsableLba} is past the end of the disk (${diskSectors} sectors)`);

  const partitions: Partition[] = [];
  const view = new DataView(used.entries.buffer);
  for (let i = 0; i < used.entryCount; i++) {
    const at = i * used.entrySize;
    const typeBytes = used.entries.subarray(at + E.typeGuid, at + E.typeGuid + 16);
    if (isZeroGuid(typeBytes)) continue;
    const number = i + 1;
    const first = lba(view, at + E.firstLba);
    const last = lba(view, at + E.lastLba);
    if (!(first <= last)) {
      warnings.push(`partition ${number}: last LBA ${last} is before first LBA ${first}; ignored`);
      continue;
    }
    const type = formatGuid(typeBytes);
    const sectors = last - first + 1;
    const p: Partition = {
      number, kind: 'gpt', type,
      startSector: first, sectors, start: first * sectorSize, size: sectors * sectorSize,
      uuid: formatGuid(used.entries.subarray(at + E.uniqueGuid, at + E.uniqueGuid + 16)),
      name: decodeName(used.entries.subarray(at + E.name, at + E.name + E.nameBytes)),
    };
    const typeName = GPT_TYPE_NAMES.get(type);
    if (typeName) p.typeName = typeName;
    const attrs = attributeNames(view.getBigUint64(at + E.attributes, true));
    if (attrs) p.attributes = attrs;
    if (last >= diskSectors || !Number.isSafeInteger(p.start + p.size)) {
      p.beyondDisk = true;
      warnings.push(`partition ${number} (sectors ${first}..${last}) extends past the end of the disk (${diskSectors} sectors)`);
    } else if (first < used.firstUsableLba || last > used.lastUsableLba) {
      warnings.push(`partition ${number} (sectors ${first}..${last}) lies outside the usable area ${used.firstUsableLba}..${used.lastUsableLba}`);
    }
    partitions.push(p);
  }
  checkOverlaps(partitions, warnings);
  return {
    type: 'gpt', sectorSize, id: used.diskGuid, partitions, warnings,
    gpt: {
      header: which, headerLba: used.lba, alternateLba: used.alternateLba,
      firstUsableLba: used.firstUsableLba, lastUsableLba: used.lastUsableLba,
      entriesLba: used.entriesLba, entryCount: used.entryCount, entrySize: used.entrySize,
    },
  };
}
