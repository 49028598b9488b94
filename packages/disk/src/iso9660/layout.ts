/**
 * ISO 9660 on-disk structures as data (struct.ts tables), for the reader and the writer alike.
 *
 * Sources: ECMA-119 4th edition (= ISO 9660:1988) — "§" below; the Joliet specification
 * (Microsoft, 1995) for supplementary descriptors with UCS-2 names; IEEE P1281 System Use
 * Sharing Protocol 1.12 ("SUSP") and IEEE P1282 Rock Ridge Interchange Protocol 1.12
 * ("RRIP") for the POSIX attributes carried in directory records' system use areas.
 *
 * Offsets are 0-based (the standard counts byte positions from 1). Numbers stored "both-byte
 * order" (§7.2.3, §7.3.3) are read from their little-endian half, as Linux's isonum_723/733
 * do, and written in both halves.
 */
import { DiskError } from '../errors.js';
import { type Field, bytes, defineStruct, text, u16be, u16le, u32be, u32le, u8 } from '../struct.js';

/** §6.1.2: the logical sector; volume descriptors start at sector 16, after the system area (§6.2.1). */
export const SECTOR_SIZE = 2048;
export const SYSTEM_AREA_SECTORS = 16;
export const STANDARD_ID = 'CD001';

/** §7.2.3: 16-bit both-byte order (little-endian, then big-endian). */
export const u16both: Field<number> = {
  size: 4,
  read: (b, at) => u16le.read(b, at),
  write: (b, at, v) => { u16le.write(b, at, v); u16be.write(b, at + 2, v); },
};

/** §7.3.3: 32-bit both-byte order. */
export const u32both: Field<number> = {
  size: 8,
  read: (b, at) => u32le.read(b, at),
  write: (b, at, v) => { u32le.write(b, at, v); u32be.write(b, at + 4, v); },
};

/** The GMT offset byte of both date forms: signed, in 15-minute intervals, -48..+52 (§8.4.26.1, §9.1.5). */
function gmtOffsetSeconds(b: number): number {
  const q = b & 0x80 ? b - 0x100 : b;
  // Linux (isofs/util.c iso_date) ignores offsets outside the range rather than failing.
  return q >= -52 && q <= 52 ? q * 15 * 60 : 0;
}

/**
 * §9.1.5 "Recording Date and Time" (7 bytes: years since 1900, month, day, hour, minute,
 * second, GMT offset) as seconds since the epoch. Encoded in UTC (offset 0).
 */
export const recordingDate: Field<number> = {
  size: 7,
  read: (b, at) => Date.UTC(1900 + b[at]!, b[at + 1]! - 1, b[at + 2]!, b[at + 3]!, b[at + 4]!, b[at + 5]!) / 1000 - gmtOffsetSeconds(b[at + 6]!),
  write: (b, at, seconds) => {
    const d = new Date(Math.floor(seconds) * 1000);
    const year = d.getUTCFullYear() - 1900;
    if (year < 0 || year > 255) throw new DiskError('EINVAL', `${d.toISOString()} cannot be recorded in an ISO 9660 directory record (1900-2155)`);
    b.set([year, d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), 0], at);
  },
};

/**
 * §8.4.26.1 date and time (17 bytes: "YYYYMMDDHHMMSScc" digits and a GMT offset) as seconds
 * since the epoch with hundredths; null when "not specified" (all digits zero, §8.4.26.1).
 */
export const decDatetime: Field<number | null> = {
  size: 17,
  read: (b, at) => {
    let digits = '';
    for (let i = 0; i < 16; i++) digits += String.fromCharCode(b[at + i]!);
    if (!/^\d{16}$/.test(digits) || /^0{16}$/.test(digits)) return null;
    const n = (from: number, len: number) => Number(digits.slice(from, from + len));
    return Date.UTC(n(0, 4), n(4, 2) - 1, n(6, 2), n(8, 2), n(10, 2), n(12, 2)) / 1000 + n(14, 2) / 100 - gmtOffsetSeconds(b[at + 16]!);
  },
  write: (b, at, seconds) => {
    if (seconds === null) {
      b.fill(0x30, at, at + 16);
      b[at + 16] = 0;
      return;
    }
    const d = new Date(Math.floor(seconds * 1000));
    const p = (v: number, w: number) => String(v).padStart(w, '0');
    const s = p(d.getUTCFullYear(), 4) + p(d.getUTCMonth() + 1, 2) + p(d.getUTCDate(), 2) + p(d.getUTCHours(), 2)
      + p(d.getUTCMinutes(), 2) + p(d.getUTCSeconds(), 2) + p(Math.floor(d.getUTCMilliseconds() / 10), 2);
    for (let i = 0; i < 16; i++) b[at + i] = s.charCodeAt(i);
    b[at + 16] = 0;
  },
};

/** Joliet: identifiers in UCS-2 big-endian, padded with UCS-2 spaces (Joliet spec §5). */
export function ucs2(length: number): Field<string> {
  return {
    size: length,
    read: (b, at) => decodeUcs2(b.subarray(at, at + length)).replace(/[ \0]+$/, ''),
    write: (b, at, value) => {
      const enc = encodeUcs2(value);
      if (enc.length > length) throw new DiskError('EINVAL', `'${value}' does not fit ${length} bytes of UCS-2`);
      b.set(enc, at);
      for (let i = at + enc.length; i + 1 < at + length; i += 2) { b[i] = 0; b[i + 1] = 0x20; }
    },
  };
}

/** UCS-2 big-endian bytes as a string (an odd trailing byte is dropped). */
export function decodeUcs2(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i + 1 < b.length; i += 2) s += String.fromCharCode((b[i]! << 8) | b[i + 1]!);
  return s;
}

export function encodeUcs2(s: string): Uint8Array {
  const out = new Uint8Array(s.length * 2);
  for (let i = 0; i < s.length; i++) { out[2 * i] = s.charCodeAt(i) >> 8; out[2 * i + 1] = s.charCodeAt(i) & 0xff; }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Volume descriptors (§8)

/** §8.1 volume descriptor types. */
export const VD_BOOT_RECORD = 0;
export const VD_PRIMARY = 1;
export const VD_SUPPLEMENTARY = 2;
export const VD_PARTITION = 3;
export const VD_TERMINATOR = 255;

/** §8.1: the header every volume descriptor starts with (a terminator, §8.3, is only this). */
export const VOLUME_DESCRIPTOR_HEADER = defineStruct('volume descriptor header', 7, {
  type: [0, u8],
  standardId: [1, text(5)],
  version: [6, u8],
});

/** §8.2 boot record (El Torito puts its catalog pointer in bootSystemUse). */
export const BOOT_RECORD = defineStruct('boot record', SECTOR_SIZE, {
  type: [0, u8],
  standardId: [1, text(5)],
  version: [6, u8],
  bootSystemId: [7, text(32, 0)],
  bootId: [39, text(32, 0)],
  bootSystemUse: [71, bytes(1977)],
});

/**
 * §8.4 primary and §8.5 supplementary volume descriptors share one layout; the supplementary
 * adds volume flags (byte 7) and escape sequences (bytes 88-119, which name the character set:
 * Joliet's "%/@", "%/C", "%/E" are UCS-2 levels 1-3). `id` is how identifiers are encoded.
 */
function volumeDescriptor(name: string, id: (length: number) => Field<string>) {
  return defineStruct(name, SECTOR_SIZE, {
    type: [0, u8],
    standardId: [1, text(5)],
    version: [6, u8],
    volumeFlags: [7, u8],
    systemId: [8, id(32)],
    volumeId: [40, id(32)],
    volumeSpaceSize: [80, u32both],
    escapeSequences: [88, bytes(32)],
    volumeSetSize: [120, u16both],
    volumeSequenceNumber: [124, u16both],
    logicalBlockSize: [128, u16both],
    pathTableSize: [132, u32both],
    typeLPathTable: [140, u32le],
    optionalTypeLPathTable: [144, u32le],
    typeMPathTable: [148, u32be],
    optionalTypeMPathTable: [152, u32be],
    /** §8.4.18: the root directory's record (34 bytes: DIRECTORY_RECORD with a 1-byte identifier). */
    rootDirectoryRecord: [156, bytes(34)],
    volumeSetId: [190, id(128)],
    publisherId: [318, id(128)],
    dataPreparerId: [446, id(128)],
    applicationId: [574, id(128)],
    copyrightFileId: [702, id(37)],
    abstractFileId: [739, id(37)],
    bibliographicFileId: [776, id(37)],
    creationDate: [813, decDatetime],
    modificationDate: [830, decDatetime],
    expirationDate: [847, decDatetime],
    effectiveDate: [864, decDatetime],
    fileStructureVersion: [881, u8],
    applicationUse: [883, bytes(512)],
  });
}

export const PRIMARY_VOLUME_DESCRIPTOR = volumeDescriptor('primary volume descriptor', (n) => text(n));
/** A supplementary descriptor with Joliet escape sequences: identifiers in UCS-2 (37-byte fields hold 18 characters and a pad byte). */
export const JOLIET_VOLUME_DESCRIPTOR = volumeDescriptor('Joliet volume descriptor', ucs2);

/** Joliet escape sequences (UCS-2 levels 1, 2, 3) in escapeSequences' first three bytes. */
export const JOLIET_ESCAPES = ['%/@', '%/C', '%/E'] as const;

export function jolietLevel(escapes: Uint8Array): 1 | 2 | 3 | 0 {
  const s = String.fromCharCode(escapes[0]!, escapes[1]!, escapes[2]!);
  return (JOLIET_ESCAPES.indexOf(s as (typeof JOLIET_ESCAPES)[number]) + 1) as 0 | 1 | 2 | 3;
}

// ---------------------------------------------------------------------------------------------
// Directory records (§9.1) and path tables (§9.4)

/** §9.1: the fixed part of a directory record; the file identifier follows at byte 33, a pad byte if its length is even, then the system use area (SUSP). */
export const DIRECTORY_RECORD = defineStruct('directory record', 33, {
  length: [0, u8],
  extendedAttributeLength: [1, u8],
  extent: [2, u32both],
  dataLength: [10, u32both],
  recorded: [18, recordingDate],
  flags: [25, u8],
  fileUnitSize: [26, u8],
  interleaveGap: [27, u8],
  volumeSequenceNumber: [28, u16both],
  identifierLength: [32, u8],
});

/** §9.1.6 file flags. */
export const FLAG_HIDDEN = 0x01;
export const FLAG_DIRECTORY = 0x02;
export const FLAG_ASSOCIATED = 0x04;
export const FLAG_RECORD = 0x08;
export const FLAG_PROTECTION = 0x10;
export const FLAG_MULTI_EXTENT = 0x80;

/** §9.1.11: the identifiers of a directory's first two records, itself and its parent. */
export const ID_SELF = 0x00;
export const ID_PARENT = 0x01;

/** Where a record's identifier and system use area begin (§9.1.12: a pad byte keeps the SUA even-aligned). */
export const identifierOffset = DIRECTORY_RECORD.size;
export const systemUseOffset = (identifierLength: number) => DIRECTORY_RECORD.size + identifierLength + (identifierLength % 2 === 0 ? 1 : 0);

/** A record's total length for an identifier and system use area of these sizes; at most 255 (§9.1.1). */
export function directoryRecordLength(identifierLength: number, systemUseLength: number): number {
  const n = systemUseOffset(identifierLength) + systemUseLength;
  return n + (n % 2);
}

/** §9.4: a path table record, little-endian in the type L table, big-endian in type M; the directory identifier follows at byte 8, padded to even length. */
function pathTableRecord(name: string, u32: Field<number>, u16: Field<number>) {
  return defineStruct(name, 8, { identifierLength: [0, u8], extendedAttributeLength: [1, u8], extent: [2, u32], parentDirectoryNumber: [6, u16] });
}
export const PATH_TABLE_RECORD_L = pathTableRecord('path table record (L)', u32le, u16le);
export const PATH_TABLE_RECORD_M = pathTableRecord('path table record (M)', u32be, u16be);

// ---------------------------------------------------------------------------------------------
// SUSP entries (SUSP §4.1: signature, length, version, data) and the Rock Ridge ones (RRIP §4.1)

const suspHeader = { signature: [0, text(2)], length: [2, u8], version: [3, u8] } as const;

export const SUSP_ENTRY_HEADER = defineStruct('SUSP entry', 4, suspHeader);

/** SUSP §5.1 CE: the system use area continues in `length` bytes at `block`·blocksize + `offset`. */
export const SUSP_CE = defineStruct('SUSP CE', 28, { ...suspHeader, block: [4, u32both], offset: [12, u32both], continuationLength: [20, u32both] });
/** SUSP §5.3 SP: in the root's "." record only; SUSP is in use, and `bytesSkipped` precede the entries of every other record. */
export const SUSP_SP = defineStruct('SUSP SP', 7, { ...suspHeader, check: [4, bytes(2)], bytesSkipped: [6, u8] });
export const SP_CHECK = [0xbe, 0xef] as const;
/** SUSP §5.4 ST: no entries follow in this area. */
export const SUSP_ST = defineStruct('SUSP ST', 4, suspHeader);
/** SUSP §5.5 ER: an extension in use; identifier, descriptor and source text follow at byte 8. */
export const SUSP_ER = defineStruct('SUSP ER', 8, { ...suspHeader, identifierLength: [4, u8], descriptorLength: [5, u8], sourceLength: [6, u8], extensionVersion: [7, u8] });
/** The identifiers Rock Ridge registers in ER (RRIP 1.09 and 1.12, and the IEEE 1282 name). */
export const RRIP_IDS = ['RRIP_1991A', 'IEEE_P1282', 'IEEE_1282'] as const;

/** RRIP 1.09 RR: which Rock Ridge entries this record has (informational; 1.12 dropped it). */
export const RRIP_RR = defineStruct('RRIP RR', 5, { ...suspHeader, flags: [4, u8] });
/** RRIP §4.1.1 PX: POSIX mode, links, uid, gid (36 bytes in 1.09); 1.12 adds the file serial number (44 bytes). */
export const RRIP_PX = defineStruct('RRIP PX', 36, { ...suspHeader, mode: [4, u32both], links: [12, u32both], uid: [20, u32both], gid: [28, u32both] });
export const RRIP_PX_SERIAL = defineStruct('RRIP PX (1.12)', 44, { ...RRIP_PX.fields, serial: [36, u32both] });
/** RRIP §4.1.2 PN: device number of a character or block special file. */
export const RRIP_PN = defineStruct('RRIP PN', 20, { ...suspHeader, high: [4, u32both], low: [12, u32both] });
/** RRIP §4.1.3 SL: symbolic link; components (SL_COMPONENT + content) follow at byte 5. */
export const RRIP_SL = defineStruct('RRIP SL', 5, { ...suspHeader, flags: [4, u8] });
export const SL_COMPONENT = defineStruct('RRIP SL component', 2, { flags: [0, u8], length: [1, u8] });
/** RRIP §4.1.4 NM: alternate (POSIX) name; the name's bytes follow at byte 5. */
export const RRIP_NM = defineStruct('RRIP NM', 5, { ...suspHeader, flags: [4, u8] });
/** RRIP §4.1.5.1 CL: this (file) record stands for a directory relocated to `child`. */
export const RRIP_CL = defineStruct('RRIP CL', 12, { ...suspHeader, child: [4, u32both] });
/** RRIP §4.1.5.2 PL: in a relocated directory's ".." record: the original parent. */
export const RRIP_PL = defineStruct('RRIP PL', 12, { ...suspHeader, parent: [4, u32both] });
/** RRIP §4.1.5.3 RE: this is the relocated directory's record in its new place (hidden from listings). */
export const RRIP_RE = defineStruct('RRIP RE', 4, suspHeader);
/** RRIP §4.1.6 TF: time stamps follow at byte 5, 7 bytes each (§9.1.5) or 17 with LONG_FORM (§8.4.26.1), in flag order. */
export const RRIP_TF = defineStruct('RRIP TF', 5, { ...suspHeader, flags: [4, u8] });

/** NM flags (RRIP §4.1.4). */
export const NM_CONTINUE = 0x01;
export const NM_CURRENT = 0x02;
export const NM_PARENT = 0x04;
/** SL entry flag (the link continues in the next SL entry) and component flags (RRIP §4.1.3.1). */
export const SL_CONTINUE = 0x01;
export const SL_COMPONENT_CONTINUE = 0x01;
export const SL_COMPONENT_CURRENT = 0x02;
export const SL_COMPONENT_PARENT = 0x04;
export const SL_COMPONENT_ROOT = 0x08;
/** TF flags (RRIP §4.1.6), in the order the time stamps are stored. */
export const TF_CREATION = 0x01;
export const TF_MODIFY = 0x02;
export const TF_ACCESS = 0x04;
export const TF_ATTRIBUTES = 0x08;
export const TF_BACKUP = 0x10;
export const TF_EXPIRATION = 0x20;
export const TF_EFFECTIVE = 0x40;
export const TF_LONG_FORM = 0x80;
