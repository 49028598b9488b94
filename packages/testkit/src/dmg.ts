/**
 * A small UDIF (.dmg) writer for tests: nothing on Debian writes dmg files, so the tests
 * craft them. It follows the published layout independently of diskhub's reader: a data
 * fork of chunk payloads, mish block tables (one per partition) in an XML plist's
 * blkx `<data>` elements or in a classic resource fork, and the 512-byte koly trailer.
 */
import { execFileSync } from 'node:child_process';
import zlib from 'node:zlib';

export type DmgChunkKind = 'raw' | 'zlib' | 'bzip2' | 'zero' | 'ignore' | 'comment' | 'lzfse' | 'adc';

export interface DmgChunkSpec {
  kind: DmgChunkKind;
  /** Sectors the chunk covers. */
  sectors: number;
  /** Its contents (sectors * 512 bytes) for raw / zlib / bzip2; zeroes when absent. */
  data?: Uint8Array;
  /** bzip2 block size level (1-9, default 9). */
  level?: number;
  /** Store these bytes instead of encoding `data` (for damaged chunks). */
  stored?: Uint8Array;
  /** Override the entry's fields (sector relative to the partition, stored offset / length). */
  sector?: bigint;
  sectorCount?: bigint;
  offset?: bigint;
  length?: bigint;
  /** Raw type number, for unknown types. */
  type?: number;
}

export interface DmgSpec {
  /** Partitions (blkx entries), each a list of chunks laid out back to back from its first sector. */
  partitions: DmgChunkSpec[][];
  /** Where the tables go (default: the XML plist). */
  tables?: 'plist' | 'resource-fork';
  /** Bytes before the data fork (the koly DataForkOffset then points past them). */
  leadingBytes?: number;
  /** Koly SectorCount (default: the sum of the partitions' sectors). */
  sectorCount?: bigint;
  /** Extra bytes after the trailer, or a trailer not at a sector boundary of the file. */
  trailingBytes?: number;
  /**
   * Give odd partitions a non-zero mish DataOffset (chunk offsets then count from it, as QEMU
   * reads them). Apple's tools write 0 and absolute data fork offsets, and dmg2img assumes so.
   */
  partitionDataOffsets?: boolean;
}

const TYPE: Record<DmgChunkKind, number> = {
  zero: 0, raw: 1, ignore: 2, adc: 0x80000004, zlib: 0x80000005, bzip2: 0x80000006, lzfse: 0x80000007, comment: 0x7ffffffe,
};

/** Debian's bzip2 command; level 1 makes 100 kB blocks, 9 (the default) 900 kB. */
export function bzip2Compress(data: Uint8Array, level = 9): Uint8Array {
  return new Uint8Array(execFileSync('bzip2', ['-c', `-${level}`], { input: data, maxBuffer: 256 << 20 }));
}

function encode(c: DmgChunkSpec): Uint8Array {
  if (c.stored) return c.stored;
  const data = c.data ?? new Uint8Array(c.sectors * 512);
  switch (c.kind) {
    case 'raw': return data;
    case 'zlib': return new Uint8Array(zlib.deflateSync(data));
    case 'bzip2': return bzip2Compress(data, c.level);
    case 'lzfse': case 'adc': return new Uint8Array(16); // never decoded
    default: return new Uint8Array(0);
  }
}

/** One mish table: header, chunk entries, the terminator entry. */
function mishTable(firstSector: number, sectors: number, dataOffset: number, entries: Buffer[]): Buffer {
  const all = [...entries, entry(0xffffffff, BigInt(sectors), 0n, 0n, 0n)];
  const b = Buffer.alloc(204 + 40 * all.length);
  b.write('mish', 0, 'latin1');
  b.writeUInt32BE(1, 4);
  b.writeBigUInt64BE(BigInt(firstSector), 8);
  b.writeBigUInt64BE(BigInt(sectors), 0x10);
  b.writeBigUInt64BE(BigInt(dataOffset), 0x18);
  b.writeUInt32BE(all.length, 0xc8);
  all.forEach((e, i) => e.copy(b, 204 + 40 * i));
  return b;
}

function entry(type: number, sector: bigint, count: bigint, offset: bigint, length: bigint): Buffer {
  const e = Buffer.alloc(40);
  e.writeUInt32BE(type, 0);
  e.writeBigUInt64BE(sector, 8);
  e.writeBigUInt64BE(count, 0x10);
  e.writeBigUInt64BE(offset, 0x18);
  e.writeBigUInt64BE(length, 0x20);
  return e;
}

function plist(tables: Buffer[]): Buffer {
  const blkx = tables.map((t, i) => [
    '\t\t\t<dict>',
    '\t\t\t\t<key>Attributes</key>', '\t\t\t\t<string>0x0050</string>',
    '\t\t\t\t<key>CFName</key>', `\t\t\t\t<string>partition ${i} (Apple_HFS : ${i + 1})</string>`,
    '\t\t\t\t<key>Data</key>', '\t\t\t\t<data>',
    // Apple wraps the base64 at 52 characters, indented with tabs.
    ...(t.toString('base64').match(/.{1,52}/g) ?? []).map((l) => `\t\t\t\t${l}`),
    '\t\t\t\t</data>',
    '\t\t\t\t<key>ID</key>', `\t\t\t\t<string>${i}</string>`,
    '\t\t\t\t<key>Name</key>', `\t\t\t\t<string>partition ${i}</string>`,
    '\t\t\t</dict>',
  ].join('\n'));
  return Buffer.from([
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">', '<dict>', '\t<key>resource-fork</key>', '\t<dict>', '\t\t<key>blkx</key>', '\t\t<array>',
    ...blkx,
    '\t\t</array>',
    // A plst resource is data too, but not a block table: readers must skip it.
    '\t\t<key>plst</key>', '\t\t<array>', '\t\t\t<dict>', '\t\t\t\t<key>Data</key>', '\t\t\t\t<data>',
    `\t\t\t\t${Buffer.alloc(60, 0x41).toString('base64')}`, '\t\t\t\t</data>', '\t\t\t</dict>', '\t\t</array>',
    '\t</dict>', '</dict>', '</plist>', '',
  ].join('\n'), 'utf8');
}

/** A resource fork: header (data offset, map offset, data length, map length), length-prefixed resources, a stub map. */
function resourceFork(tables: Buffer[]): Buffer {
  const other = Buffer.alloc(300, 0x55); // a resource that is not a mish table
  const resources = Buffer.concat([other, ...tables].flatMap((t) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(t.length);
    return [len, t];
  }));
  const head = Buffer.alloc(256);
  head.writeUInt32BE(256, 0);
  head.writeUInt32BE(256 + resources.length, 4);
  head.writeUInt32BE(resources.length, 8);
  head.writeUInt32BE(30, 12);
  return Buffer.concat([head, resources, Buffer.alloc(30)]);
}

export interface BuiltDmg {
  bytes: Uint8Array;
  /** The virtual disk's contents as planted. */
  expected: Uint8Array;
}

/** Lay out the image: [leading bytes][data fork][tables][koly]. */
export function buildDmg(spec: DmgSpec): BuiltDmg {
  const lead = spec.leadingBytes ?? 0;
  const payloads: Buffer[] = [];
  let forkPos = 0;
  let firstSector = 0;
  const tables: Buffer[] = [];
  const contents: Uint8Array[] = [];
  for (const [p, chunks] of spec.partitions.entries()) {
    // Each partition's offsets are relative to its table's data offset.
    const shifted = spec.partitionDataOffsets && p % 2 === 1;
    if (shifted) { payloads.push(Buffer.from('pad')); forkPos += 3; }
    const dataOffset = shifted ? forkPos : 0;
    const entries: Buffer[] = [];
    let sector = 0;
    for (const c of chunks) {
      const stored = encode(c);
      const type = c.type ?? TYPE[c.kind];
      entries.push(entry(type, c.sector ?? BigInt(sector), c.sectorCount ?? BigInt(c.sectors),
        c.offset ?? BigInt(forkPos - dataOffset), c.length ?? BigInt(stored.length)));
      payloads.push(Buffer.from(stored));
      forkPos += stored.length;
      if (c.kind !== 'comment') {
        contents.push(c.kind === 'zero' || c.kind === 'ignore' ? new Uint8Array(c.sectors * 512) : c.data ?? new Uint8Array(c.sectors * 512));
        sector += c.sectors;
      }
    }
    tables.push(mishTable(firstSector, sector, dataOffset, entries));
    firstSector += sector;
  }
  const dataFork = Buffer.concat(payloads);
  const tableBytes = spec.tables === 'resource-fork' ? resourceFork(tables) : plist(tables);
  const tablesAt = lead + dataFork.length;
  const koly = Buffer.alloc(512);
  koly.write('koly', 0, 'latin1');
  koly.writeUInt32BE(4, 4);
  koly.writeUInt32BE(512, 8);
  koly.writeUInt32BE(1, 12);
  koly.writeBigUInt64BE(BigInt(lead), 0x18);
  koly.writeBigUInt64BE(BigInt(dataFork.length), 0x20);
  if (spec.tables === 'resource-fork') {
    koly.writeBigUInt64BE(BigInt(tablesAt), 0x28);
    koly.writeBigUInt64BE(BigInt(tableBytes.length), 0x30);
  } else {
    koly.writeBigUInt64BE(BigInt(tablesAt), 0xd8);
    koly.writeBigUInt64BE(BigInt(tableBytes.length), 0xe0);
  }
  koly.writeUInt32BE(1, 0x38); // segment number
  koly.writeUInt32BE(1, 0x3c); // segment count
  koly.writeUInt32BE(1, 0x1e8); // image variant: device image
  koly.writeBigUInt64BE(spec.sectorCount ?? BigInt(firstSector), 0x1ec);
  const bytes = Buffer.concat([Buffer.alloc(lead, 0xee), dataFork, tableBytes, koly, Buffer.alloc(spec.trailingBytes ?? 0)]);
  const expected = Buffer.concat(contents);
  return { bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), expected: new Uint8Array(expected.buffer, expected.byteOffset, expected.length) };
}

/** Contents that show misplaced bytes: every 4-byte word holds its own offset, salted. */
export function dmgPattern(length: number, salt: number): Uint8Array {
  const b = Buffer.alloc(length);
  for (let i = 0; i + 4 <= length; i += 4) b.writeUInt32LE((i * 2654435761 + salt) >>> 0, i);
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}
