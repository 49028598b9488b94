/**
 * A small seSparse writer for tests: qemu-img cannot create seSparse (ESXi snapshot) extents,
 * so tests craft them and use QEMU as the oracle for what they read as. Written from the
 * field list QEMU's reader checks, independently of the driver's parser (its own offsets), so
 * a misreading of the format on our side cannot cancel out here.
 *
 * Layout (sectors): const header 0, volatile header 1, journal header 2, journal 8..15, grain
 * directory from 16, then the grain tables, free bitmap and backmap (all zero: QEMU reads
 * none of them), then the grains. Grain tables get indexes in reverse order of their directory
 * slots and grains in the order listed (or as given), so that an index is never its position.
 */
import { open } from 'node:fs/promises';

export type SeSparseGrainKind = 'data' | 'zero' | 'unmapped';

export interface SeSparseGrain {
  /** Virtual grain number (4 KiB each). */
  grain: number;
  kind: SeSparseGrainKind;
  /** 4096 bytes for 'data'. */
  data?: Uint8Array;
  /** The grain's index in the grain area (default: the next free one). */
  index?: number;
}

export interface SeSparseSpec {
  /** Virtual size in sectors. */
  capacity: number;
  grains: SeSparseGrain[];
  /** Grain directory size in sectors (default: enough for the capacity). */
  gdSectors?: number;
  /** Overwrite fields of the const header (byte offset → u64) or volatile header (512 + offset). */
  patch?: Record<number, bigint>;
  /** Raw grain directory entries to set (slot → u64), after the writer's own. */
  gdEntries?: Record<number, bigint>;
  /** Raw grain table entries to set (grain → u64), after the writer's own. */
  gtEntries?: Record<number, bigint>;
}

export interface Piece { offset: number; bytes: Uint8Array }
export interface SeSparseFile { size: number; pieces: Piece[] }

const SECTOR = 512;
const GRAIN = 4096;
const GT_ENTRIES = 4096;
const GT_BYTES = GT_ENTRIES * 8;

/** The 64-bit grain table entry of an allocated grain: type 3, index bits 0..11 at 48..59, the rest at 0..47. */
export function allocatedEntry(index: number): bigint {
  const i = BigInt(index);
  return (3n << 60n) | ((i & 0xfffn) << 48n) | (i >> 12n);
}

export function buildSeSparse(spec: SeSparseSpec): SeSparseFile {
  const gdNeeded = Math.ceil(spec.capacity / (GT_ENTRIES * 8));
  const gdSectors = spec.gdSectors ?? Math.max(1, Math.ceil((gdNeeded * 8) / SECTOR));
  const gdStart = 16;
  const tablesStart = Math.ceil((gdStart + gdSectors) / 8) * 8;
  const slots = [...new Set(spec.grains.map((g) => Math.floor(g.grain / GT_ENTRIES)))].sort((a, b) => a - b);
  const tableIndex = new Map(slots.map((slot, i) => [slot, slots.length - 1 - i]));
  const tablesSectors = Math.max(1, slots.length) * (GT_BYTES / SECTOR);
  const bitmapStart = tablesStart + tablesSectors;
  const backmapStart = bitmapStart + 8;
  const grainsStart = backmapStart + 8;

  const header = new Uint8Array(2 * SECTOR);
  const h = new DataView(header.buffer);
  const set = (at: number, v: bigint | number) => h.setBigUint64(at, BigInt(v), true);
  set(0, 0xcafebaben);
  set(8, 0x0000000200000001n);
  set(16, spec.capacity);
  set(24, 8);
  set(32, 64);
  set(80, 1); set(88, 1);             // volatile header
  set(96, 2); set(104, 1);            // journal header
  set(112, 8); set(120, 8);           // journal
  set(128, gdStart); set(136, gdSectors);
  set(144, tablesStart); set(152, tablesSectors);
  set(160, bitmapStart); set(168, 8);
  set(176, backmapStart); set(184, 8);
  set(192, grainsStart); set(200, spec.capacity);
  set(512, 0xcafecafen);

  const gd = new Uint8Array(gdSectors * SECTOR);
  const gdView = new DataView(gd.buffer);
  for (const [slot, index] of tableIndex) gdView.setBigUint64(slot * 8, 0x1000000000000000n | BigInt(index), true);
  for (const [slot, v] of Object.entries(spec.gdEntries ?? {})) gdView.setBigUint64(Number(slot) * 8, v, true);

  const tables = new Uint8Array(tablesSectors * SECTOR);
  const tv = new DataView(tables.buffer);
  const entryAt = (grain: number) => tableIndex.get(Math.floor(grain / GT_ENTRIES))! * GT_BYTES + (grain % GT_ENTRIES) * 8;
  const pieces: Piece[] = [];
  let nextIndex = 0;
  let end = grainsStart * SECTOR;
  for (const g of spec.grains) {
    let entry: bigint;
    if (g.kind === 'data') {
      const index = g.index ?? nextIndex++;
      entry = allocatedEntry(index);
      const at = grainsStart * SECTOR + index * GRAIN;
      pieces.push({ offset: at, bytes: g.data! });
      end = Math.max(end, at + GRAIN);
    } else if (g.kind === 'zero') {
      entry = 2n << 60n;
    } else {
      // An unmapped grain keeps the bits of the grain it used to map: readers must ignore them.
      entry = (1n << 60n) | (allocatedEntry(7) & 0x0fffffffffffffffn);
    }
    tv.setBigUint64(entryAt(g.grain), entry, true);
  }
  for (const [grain, v] of Object.entries(spec.gtEntries ?? {})) tv.setBigUint64(entryAt(Number(grain)), v, true);
  for (const [at, v] of Object.entries(spec.patch ?? {})) set(Number(at), v);

  pieces.unshift({ offset: 0, bytes: header }, { offset: gdStart * SECTOR, bytes: gd }, { offset: tablesStart * SECTOR, bytes: tables });
  // The file ends with the grain area's last grain, or with the (empty) backmap.
  return { size: Math.max(end, grainsStart * SECTOR), pieces };
}

/** The bytes of a (small) seSparse file, holes included. */
export function seSparseBytes(file: SeSparseFile): Uint8Array {
  const out = new Uint8Array(file.size);
  for (const p of file.pieces) out.set(p.bytes, p.offset);
  return out;
}

/** Write a seSparse file sparsely (holes stay holes). */
export async function writeSeSparse(path: string, file: SeSparseFile): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (const p of file.pieces) await fh.write(p.bytes, 0, p.bytes.length, p.offset);
    await fh.truncate(file.size);
  } finally {
    await fh.close();
  }
}

/** The text descriptor of an seSparse disk (createType "seSparse", one SESPARSE extent). */
export function seSparseDescriptor(o: { extent: string; sectors: number; cid?: string; parentCid?: string; parentHint?: string }): string {
  return [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    `CID=${o.cid ?? '2b7a3c51'}`,
    `parentCID=${o.parentCid ?? 'ffffffff'}`,
    'createType="seSparse"',
    ...(o.parentHint ? [`parentFileNameHint="${o.parentHint}"`] : []),
    '',
    '# Extent description',
    `RW ${o.sectors} SESPARSE "${o.extent}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    'ddb.adapterType = "lsilogic"',
    'ddb.virtualHWVersion = "14"',
    '',
  ].join('\n');
}
