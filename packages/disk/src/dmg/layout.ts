/**
 * Apple UDIF (.dmg) on-disk structures, as QEMU 7.2's block/dmg.c reads them:
 *
 * - the "koly" trailer, 512 big-endian bytes at (or near) the end of the file, locating the
 *   data fork, the resource fork and the XML property list, and giving the sector count;
 * - "mish" block tables (one per partition, a `blkx` resource), either base64 in the `<data>`
 *   elements of the XML plist or length-prefixed resources in the classic resource fork;
 * - 40-byte chunk entries in each table: type, sector range, and where the (compressed) bytes
 *   lie in the data fork.
 *
 * Everything here is bounded: the plist, the resource fork walk and the chunk table have
 * limits, and every 64-bit field is checked before it becomes a JavaScript number.
 */
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';

export const SECTOR = 512;
export const KOLY_MAGIC = 0x6b6f6c79; // "koly"
export const KOLY_SIZE = 512;
export const MISH_MAGIC = 0x6d697368; // "mish"

/** Koly trailer fields (byte offsets inside the 512-byte trailer). */
export const KOLY = {
  dataForkOffset: 0x18,
  rsrcForkOffset: 0x28,
  rsrcForkLength: 0x30,
  xmlOffset: 0xd8,
  xmlLength: 0xe0,
  sectorCount: 0x1ec,
} as const;

/** Mish table layout: the header, then 40-byte chunk entries from byte 204. */
export const MISH = {
  firstSector: 0x08,
  dataOffset: 0x18,
  chunksAt: 204,
  /** QEMU ignores tables shorter than this (a header and one chunk entry). */
  minLength: 244,
  entrySize: 40,
} as const;

/** Chunk entry fields. */
export const CHUNK = { type: 0x00, sector: 0x08, sectorCount: 0x10, offset: 0x18, length: 0x20 } as const;

/** Chunk types (the block entry types of a mish table). */
export const CHUNK_ZERO = 0x00000000;
export const CHUNK_RAW = 0x00000001;
export const CHUNK_IGNORE = 0x00000002;
export const CHUNK_ADC = 0x80000004;
export const CHUNK_ZLIB = 0x80000005;
export const CHUNK_BZIP2 = 0x80000006;
export const CHUNK_LZFSE = 0x80000007;
export const CHUNK_COMMENT = 0x7ffffffe;
export const CHUNK_TERMINATOR = 0xffffffff;

export function chunkTypeName(type: number): string {
  switch (type) {
    case CHUNK_ZERO: return 'zero';
    case CHUNK_RAW: return 'raw';
    case CHUNK_IGNORE: return 'ignore';
    case CHUNK_ADC: return 'ADC';
    case CHUNK_ZLIB: return 'zlib';
    case CHUNK_BZIP2: return 'bzip2';
    case CHUNK_LZFSE: return 'lzfse';
    default: return 'unknown';
  }
}

/**
 * QEMU's limits (DMG_LENGTHS_MAX, DMG_SECTORCOUNTS_MAX): a chunk stores at most 64 MiB and,
 * unless it is a zero or ignore chunk, expands to at most 64 MiB.
 */
export const MAX_CHUNK_LENGTH = 64 * 1024 * 1024;
export const MAX_CHUNK_SECTORS = MAX_CHUNK_LENGTH / SECTOR;
/** QEMU's cap on the XML plist. */
export const MAX_PLIST_LENGTH = 16 * 1024 * 1024;
/**
 * The engine's own limits, where QEMU allocates whatever the file asks for: the chunk table
 * (a million chunks is a terabyte at hdiutil's usual 1 MiB per chunk; the table then takes
 * about 40 MiB), the resources walked in a resource fork, and one mish resource's size.
 */
export const MAX_CHUNKS = 1 << 20;
export const MAX_RESOURCES = 1 << 16;
export const MAX_MISH_LENGTH = MISH.chunksAt + MAX_CHUNKS * MISH.entrySize;

/** The chunk table, sorted by first sector, non-overlapping (parallel arrays keep it compact). */
export interface ChunkTable {
  count: number;
  type: Uint32Array;
  /** First virtual sector. */
  sector: Float64Array;
  sectorCount: Float64Array;
  /** Host offset of the stored bytes. */
  offset: Float64Array;
  /** Stored length in bytes. */
  length: Float64Array;
}

export interface DmgLayout {
  kolyOffset: number;
  /** Virtual size in sectors (the koly SectorCount). */
  sectors: number;
  chunks: ChunkTable;
  /** Chunk types skipped because nothing reads them (QEMU warns and fails reads of their sectors). */
  skippedTypes: number[];
  /** Where the tables came from. */
  tables: 'resource-fork' | 'plist';
}

const corrupt = (source: { name: string }, m: string) => new DiskError('ECORRUPT', `${source.name}: ${m}`);

/** Bytes at `at`, zero-filled past the end of the file as QEMU's file layer reads them. */
async function readPadded(source: ByteSource, at: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  await source.read(b, at);
  return b;
}

/** A 64-bit field as a safe integer, or a DiskError naming it. */
function u64(v: DataView, at: number, what: string, source: { name: string }): number {
  const x = v.getBigUint64(at);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(source, `dmg ${what} ${x} is out of range`);
  return Number(x);
}

/**
 * Where the koly trailer starts. Like QEMU: the file length rounded up to whole sectors, then
 * the first "koly" in the 515 bytes that end 508 bytes before that (the last 511 bytes of the
 * second-to-last sector and the first 4 of the last), or in the first 515 bytes of a short file.
 */
export async function findKoly(source: ByteSource, fileSize: number): Promise<number> {
  if (fileSize < SECTOR) throw corrupt(source, 'dmg file must be at least 512 bytes long');
  const rounded = Math.ceil(fileSize / SECTOR) * SECTOR;
  const from = rounded > 511 + 512 ? rounded - 511 - 512 : 0;
  const window = await readPadded(source, from, Math.min(rounded, 515));
  for (let i = 0; i + 3 < window.length; i++) {
    if (window[i] === 0x6b && window[i + 1] === 0x6f && window[i + 2] === 0x6c && window[i + 3] === 0x79) return from + i;
  }
  throw corrupt(source, 'Could not locate UDIF trailer in dmg file');
}

/** The koly trailer's fields, each checked against the trailer's own place in the file. */
export interface Koly {
  dataForkOffset: number;
  rsrcOffset: number;
  rsrcLength: number;
  xmlOffset: number;
  xmlLength: number;
  /** Virtual size in sectors. */
  sectorCount: number;
}

/** Decode the koly trailer (`trailer`: its 512 bytes) found at `kolyOffset` of the file `name`. */
export function parseKoly(trailer: Uint8Array, kolyOffset: number, name: string): Koly {
  const file = { name };
  const koly = new DataView(trailer.buffer, trailer.byteOffset, KOLY_SIZE);
  const dataForkOffset = u64(koly, KOLY.dataForkOffset, 'data fork offset', file);
  if (dataForkOffset > kolyOffset) throw corrupt(file, `dmg data fork offset ${dataForkOffset} lies past the UDIF trailer at ${kolyOffset}`);
  const rsrcOffset = u64(koly, KOLY.rsrcForkOffset, 'resource fork offset', file);
  const rsrcLength = u64(koly, KOLY.rsrcForkLength, 'resource fork length', file);
  if (rsrcOffset >= kolyOffset || rsrcLength > kolyOffset - rsrcOffset) {
    throw corrupt(file, `dmg resource fork (offset ${rsrcOffset}, ${rsrcLength} bytes) does not lie before the UDIF trailer at ${kolyOffset}`);
  }
  const xmlOffset = u64(koly, KOLY.xmlOffset, 'XML plist offset', file);
  const xmlLength = u64(koly, KOLY.xmlLength, 'XML plist length', file);
  if (xmlOffset >= kolyOffset || xmlLength > kolyOffset - xmlOffset) {
    throw corrupt(file, `dmg XML plist (offset ${xmlOffset}, ${xmlLength} bytes) does not lie before the UDIF trailer at ${kolyOffset}`);
  }
  const sectorCount = koly.getBigInt64(KOLY.sectorCount);
  if (sectorCount < 0n) throw corrupt(file, `dmg sector count ${sectorCount} is negative`);
  if (sectorCount * BigInt(SECTOR) > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DiskError('ELIMIT', `${name}: dmg sector count ${sectorCount} is larger than diskhub can address`);
  }
  return { dataForkOffset, rsrcOffset, rsrcLength, xmlOffset, xmlLength, sectorCount: Number(sectorCount) };
}

/** Collects chunk entries from mish tables into growable parallel arrays. */
class ChunkCollector {
  type: number[] = [];
  sector: number[] = [];
  sectorCount: number[] = [];
  offset: number[] = [];
  length: number[] = [];
  skipped = new Set<number>();

  constructor(private readonly source: ByteSource, private readonly dataForkOffset: number) {}

  get count(): number { return this.type.length; }

  /** One mish table (tables that are not mish, or too short, are skipped as QEMU skips them). */
  addMish(b: Uint8Array): void {
    if (b.length < MISH.minLength) return;
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    if (v.getUint32(0) !== MISH_MAGIC) return;
    // Sector numbers are relative to the table's first sector; offsets to the data fork plus the table's data offset.
    const firstSector = v.getBigUint64(MISH.firstSector);
    const base = BigInt(this.dataForkOffset) + v.getBigUint64(MISH.dataOffset);
    const entries = Math.floor((b.length - MISH.chunksAt) / MISH.entrySize);
    for (let e = 0; e < entries; e++) {
      const at = MISH.chunksAt + e * MISH.entrySize;
      const type = v.getUint32(at + CHUNK.type);
      if (type === CHUNK_COMMENT || type === CHUNK_TERMINATOR) continue;
      const known = type === CHUNK_ZERO || type === CHUNK_RAW || type === CHUNK_IGNORE || type === CHUNK_ZLIB
        || type === CHUNK_BZIP2 || type === CHUNK_LZFSE || type === CHUNK_ADC;
      if (!known) { this.skipped.add(type); continue; }
      const index = this.count;
      const sectorCount = v.getBigUint64(at + CHUNK.sectorCount);
      const holeType = type === CHUNK_ZERO || type === CHUNK_IGNORE;
      // QEMU's bounds: zero and ignore chunks may span any number of sectors, the others at most 64 MiB.
      if (!holeType && sectorCount > BigInt(MAX_CHUNK_SECTORS)) {
        throw corrupt(this.source, `sector count ${sectorCount} for chunk ${index} is larger than max (${MAX_CHUNK_SECTORS})`);
      }
      const length = v.getBigUint64(at + CHUNK.length);
      if (length > BigInt(MAX_CHUNK_LENGTH)) throw corrupt(this.source, `length ${length} for chunk ${index} is larger than max (${MAX_CHUNK_LENGTH})`);
      if (sectorCount === 0n) continue; // covers nothing; QEMU never selects it either
      const sector = firstSector + v.getBigUint64(at + CHUNK.sector);
      const offset = base + v.getBigUint64(at + CHUNK.offset);
      // Stricter than QEMU (which wraps around in 64 bits): every range must be a safe integer.
      if ((sector + sectorCount) * BigInt(SECTOR) > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw corrupt(this.source, `chunk ${index} (sectors ${sector}+${sectorCount}) lies outside any disk diskhub can address`);
      }
      if (!holeType && offset + length > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw corrupt(this.source, `chunk ${index} data at offset ${offset} length ${length} is out of range`);
      }
      if (type === CHUNK_RAW && length < sectorCount * BigInt(SECTOR)) {
        // QEMU would hand out whatever its buffer held after the stored bytes.
        throw corrupt(this.source, `raw chunk ${index} stores ${length} bytes for ${sectorCount} sectors`);
      }
      if (this.count >= MAX_CHUNKS) throw new DiskError('ELIMIT', `${this.source.name}: dmg image has more than the engine's limit of ${MAX_CHUNKS} chunks`);
      this.type.push(type);
      this.sector.push(Number(sector));
      this.sectorCount.push(Number(sectorCount));
      this.offset.push(holeType ? 0 : Number(offset));
      this.length.push(Number(length));
    }
  }

  /** The table sorted by sector; overlapping chunks are refused (QEMU's binary search would pick one arbitrarily). */
  table(): ChunkTable {
    const n = this.count;
    const order = Array.from({ length: n }, (_, i) => i);
    let sorted = true;
    for (let i = 1; i < n && sorted; i++) if (this.sector[i]! < this.sector[i - 1]!) sorted = false;
    if (!sorted) order.sort((a, b) => this.sector[a]! - this.sector[b]!);
    const t: ChunkTable = {
      count: n, type: new Uint32Array(n), sector: new Float64Array(n), sectorCount: new Float64Array(n),
      offset: new Float64Array(n), length: new Float64Array(n),
    };
    order.forEach((from, to) => {
      t.type[to] = this.type[from]!;
      t.sector[to] = this.sector[from]!;
      t.sectorCount[to] = this.sectorCount[from]!;
      t.offset[to] = this.offset[from]!;
      t.length[to] = this.length[from]!;
    });
    for (let i = 1; i < n; i++) {
      const prevEnd = t.sector[i - 1]! + t.sectorCount[i - 1]!;
      if (t.sector[i]! < prevEnd) {
        throw corrupt(this.source, `dmg chunks overlap: sectors ${t.sector[i - 1]}-${prevEnd - 1} and ${t.sector[i]}-${t.sector[i]! + t.sectorCount[i]! - 1}`);
      }
    }
    return t;
  }
}

/**
 * The resource fork: a classic Mac resource fork whose header gives the offset (u32 at 0) and
 * length (u32 at 8) of its data area; the data area is a run of u32-length-prefixed resources,
 * of which the mish tables are read and the others skipped.
 */
async function readResourceFork(source: ByteSource, chunks: ChunkCollector, begin: number, length: number): Promise<void> {
  const head = new DataView((await readPadded(source, begin, 12)).buffer);
  const dataOffset = head.getUint32(0);
  const dataLength = head.getUint32(8);
  if (dataOffset > length) throw corrupt(source, `dmg resource data offset ${dataOffset} lies outside the resource fork (${length} bytes)`);
  if (dataLength === 0 || dataOffset + dataLength > length) {
    throw corrupt(source, `dmg resource data (offset ${dataOffset}, ${dataLength} bytes) does not fit the resource fork (${length} bytes)`);
  }
  const end = begin + dataOffset + dataLength;
  let resources = 0;
  for (let at = begin + dataOffset; at < end;) {
    if (++resources > MAX_RESOURCES) throw new DiskError('ELIMIT', `${source.name}: dmg resource fork has more than the engine's limit of ${MAX_RESOURCES} resources`);
    const lenMagic = new DataView((await readPadded(source, at, 8)).buffer);
    const count = lenMagic.getUint32(0);
    if (count === 0 || count > end - at) throw corrupt(source, `dmg resource at offset ${at} has an invalid length ${count}`);
    at += 4;
    // Only mish tables are read whole; anything else is skipped unread.
    if (count >= MISH.minLength && lenMagic.getUint32(4) === MISH_MAGIC) {
      if (count > MAX_MISH_LENGTH) throw new DiskError('ELIMIT', `${source.name}: dmg block table of ${count} bytes is larger than the engine's limit of ${MAX_MISH_LENGTH}`);
      chunks.addMish(await readPadded(source, at, count));
    }
    at += count;
  }
}

/** Base64 read leniently as GLib reads it: characters outside the alphabet (the plist's tabs and newlines, padding) are skipped. */
function decodeBase64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text.replace(/[^A-Za-z0-9+/]/g, ''), 'base64'));
}

/**
 * The XML plist, read as QEMU reads it: every `<data>...</data>` element is base64-decoded
 * and taken as a mish table if it is one (the `blkx` entries are; `plst` and others are not).
 * The text ends at its first NUL byte, as a C string does.
 */
async function readPlist(source: ByteSource, chunks: ChunkCollector, begin: number, length: number): Promise<void> {
  if (length === 0) throw corrupt(source, 'dmg XML plist is empty');
  if (length > MAX_PLIST_LENGTH) throw new DiskError('ELIMIT', `${source.name}: dmg XML plist of ${length} bytes is larger than the limit of ${MAX_PLIST_LENGTH} (QEMU's)`);
  const bytes = await readPadded(source, begin, length);
  const nul = bytes.indexOf(0);
  const text = new TextDecoder('latin1').decode(nul >= 0 ? bytes.subarray(0, nul) : bytes);
  for (let at = text.indexOf('<data>'); at >= 0; at = text.indexOf('<data>', at)) {
    const end = text.indexOf('</data>', at + 6);
    if (end < 0) throw corrupt(source, `dmg XML plist has a <data> element at offset ${begin + at} without </data>`);
    chunks.addMish(decodeBase64(text.slice(at + 6, end)));
    at = end + 7;
  }
}

export async function readDmgLayout(source: ByteSource): Promise<DmgLayout> {
  const fileSize = await source.size();
  const kolyOffset = await findKoly(source, fileSize);
  const { dataForkOffset, rsrcOffset, rsrcLength, xmlOffset, xmlLength, sectorCount } = parseKoly(await readPadded(source, kolyOffset, KOLY_SIZE), kolyOffset, source.name);
  const chunks = new ChunkCollector(source, dataForkOffset);
  // Like QEMU: the resource fork when there is one, else the XML plist.
  let tables: DmgLayout['tables'];
  if (rsrcLength !== 0) {
    tables = 'resource-fork';
    await readResourceFork(source, chunks, rsrcOffset, rsrcLength);
  } else if (xmlLength !== 0) {
    tables = 'plist';
    await readPlist(source, chunks, xmlOffset, xmlLength);
  } else {
    throw corrupt(source, 'dmg has neither a resource fork nor an XML plist with block tables');
  }
  return { kolyOffset, sectors: sectorCount, chunks: chunks.table(), skippedTypes: [...chunks.skipped], tables };
}
