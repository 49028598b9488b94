/**
 * An ISO 9660 writer for small images built in memory (config drives, seed images): a
 * primary volume with Rock Ridge (RRIP 1.09: PX, NM, TF, and the ER that announces it from a
 * continuation area) and a Joliet supplementary volume (UCS-2 level 3) over the same file
 * data, encoded with the tables of layout.ts — the ones the reader parses with.
 *
 * Image layout (ECMA-119 §6): 16 sectors of system area, the primary and Joliet volume
 * descriptors and the terminator (§8), the four path tables (§9.4: L and M for each volume),
 * the Rock Ridge ER continuation sector, the primary directories, the Joliet directories,
 * then each file's data in one extent. Directory records never cross a sector (§6.8.1.1).
 * Files are read-only for everyone and owned by root, as `genisoimage -r` makes them.
 */
import { DiskError } from '../errors.js';
import {
  DIRECTORY_RECORD, FLAG_DIRECTORY, ID_PARENT, ID_SELF, JOLIET_VOLUME_DESCRIPTOR, PATH_TABLE_RECORD_L, PATH_TABLE_RECORD_M,
  PRIMARY_VOLUME_DESCRIPTOR, RRIP_NM, RRIP_PX, RRIP_RR, RRIP_TF, SECTOR_SIZE, SP_CHECK, STANDARD_ID, SUSP_CE, SUSP_ER,
  SUSP_SP, SYSTEM_AREA_SECTORS, TF_ACCESS, TF_ATTRIBUTES, TF_MODIFY, VD_PRIMARY, VD_SUPPLEMENTARY, VD_TERMINATOR,
  VOLUME_DESCRIPTOR_HEADER, directoryRecordLength, encodeUcs2, identifierOffset, recordingDate, systemUseOffset,
} from './layout.js';

export interface IsoFile {
  /** Slash-separated path inside the image ("openstack/latest/meta_data.json"); directories are implied. */
  path: string;
  data: Uint8Array;
}

export interface IsoWriteOptions {
  /** The volume label (primary and Joliet volume identifiers), e.g. "config-2" or "cidata". */
  volumeId: string;
  publisherId?: string;
  applicationId?: string;
  systemId?: string;
  /** Seconds since the epoch for every time stamp (default: now). */
  time?: number;
}

/** Largest image this in-memory writer builds. */
export const MAX_ISO_BYTES = 512 << 20;
/** Joliet allows 64 UCS-2 characters per name (Joliet spec §3.1). */
const JOLIET_MAX_NAME = 64;
const DIR_MODE = 0o40555;
const FILE_MODE = 0o100444;
/** RRIP 1.09 "RR" flags: which entries follow. */
const RR_PX = 0x01;
const RR_NM = 0x08;
const RR_TF = 0x80;
const ER_ID = 'RRIP_1991A';
const ER_DESCRIPTOR = 'THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS';
const ER_SOURCE = 'PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.';

interface Node {
  name: string;
  parent: Node | null;
  children: Map<string, Node>;
  data?: Uint8Array;
  /** 8.3 identifier of the primary volume (with ";1" for files), and the Joliet one. */
  isoId: Uint8Array;
  jolietId: Uint8Array;
  /** Path table number (directories; root = 1). */
  number: number;
  extent: number;
  jolietExtent: number;
  dirSectors: number;
  /** Subdirectories (a directory's link count is 2 + this). */
  subdirs: number;
  jolietSectors: number;
}

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const utf8 = (s: string) => new TextEncoder().encode(s);
const sectorsFor = (bytes: number) => Math.ceil(bytes / SECTOR_SIZE);

/** Build the image. Throws DiskError EINVAL for names or sizes it cannot record. */
export function writeIso9660(files: IsoFile[], options: IsoWriteOptions): Uint8Array {
  const time = Math.floor(options.time ?? Date.now() / 1000);
  const root = buildTree(files);
  const dirs = directoriesInPathTableOrder(root);
  dirs.forEach((d, i) => { d.number = i + 1; });
  for (const d of dirs) assignIdentifiers(d);

  // Sizes first (they do not depend on where things go), then places.
  const pathTables = { l: pathTable(dirs, 'iso', 'l'), jl: pathTable(dirs, 'joliet', 'l') };
  const pathTableSize = pathTables.l.length;
  const jolietPathTableSize = pathTables.jl.length;
  const er = erEntry();
  let next = SYSTEM_AREA_SECTORS + 3; // primary, Joliet, terminator
  const tableAt = { l: next, m: 0, jl: 0, jm: 0 };
  next += sectorsFor(pathTableSize); tableAt.m = next;
  next += sectorsFor(pathTableSize); tableAt.jl = next;
  next += sectorsFor(jolietPathTableSize); tableAt.jm = next;
  next += sectorsFor(jolietPathTableSize);
  const erSector = next++;
  for (const d of dirs) { d.dirSectors = sectorsFor(packRecords(directoryRecords(d, 'iso', time, erSector, er.length, true)).bytes); d.extent = next; next += d.dirSectors; }
  for (const d of dirs) { d.jolietSectors = sectorsFor(packRecords(directoryRecords(d, 'joliet', time, 0, 0, true)).bytes); d.jolietExtent = next; next += d.jolietSectors; }
  const fileNodes = dirs.flatMap((d) => [...d.children.values()].filter((c) => c.data));
  for (const f of fileNodes) {
    f.extent = f.data!.length === 0 ? 0 : next;
    next += sectorsFor(f.data!.length);
  }
  const totalSectors = next;
  if (totalSectors * SECTOR_SIZE > MAX_ISO_BYTES) throw new DiskError('EINVAL', `the ISO image would be ${totalSectors * SECTOR_SIZE} bytes, more than this writer builds (${MAX_ISO_BYTES})`);

  const image = new Uint8Array(totalSectors * SECTOR_SIZE);
  const at = (sector: number) => sector * SECTOR_SIZE;
  // §8.4 / §8.5 volume descriptors, §8.3 terminator.
  const common = {
    standardId: STANDARD_ID, version: 1, volumeSpaceSize: totalSectors, volumeSetSize: 1, volumeSequenceNumber: 1,
    logicalBlockSize: SECTOR_SIZE, volumeSetId: '', publisherId: options.publisherId ?? '', dataPreparerId: '',
    applicationId: options.applicationId ?? '', copyrightFileId: '', abstractFileId: '', bibliographicFileId: '',
    creationDate: time, modificationDate: time, expirationDate: null, effectiveDate: null, fileStructureVersion: 1,
    systemId: options.systemId ?? 'LINUX', volumeId: options.volumeId,
  };
  PRIMARY_VOLUME_DESCRIPTOR.encode({
    ...common, type: VD_PRIMARY, volumeFlags: 0, escapeSequences: new Uint8Array(0), pathTableSize,
    typeLPathTable: tableAt.l, optionalTypeLPathTable: 0, typeMPathTable: tableAt.m, optionalTypeMPathTable: 0,
    rootDirectoryRecord: rootRecord(root, 'iso', time),
  }, image, at(SYSTEM_AREA_SECTORS));
  JOLIET_VOLUME_DESCRIPTOR.encode({
    ...common, type: VD_SUPPLEMENTARY, volumeFlags: 0, escapeSequences: ascii('%/E'), pathTableSize: jolietPathTableSize,
    typeLPathTable: tableAt.jl, optionalTypeLPathTable: 0, typeMPathTable: tableAt.jm, optionalTypeMPathTable: 0,
    rootDirectoryRecord: rootRecord(root, 'joliet', time),
  }, image, at(SYSTEM_AREA_SECTORS + 1));
  VOLUME_DESCRIPTOR_HEADER.encode({ type: VD_TERMINATOR, standardId: STANDARD_ID, version: 1 }, image, at(SYSTEM_AREA_SECTORS + 2));

  image.set(pathTable(dirs, 'iso', 'l'), at(tableAt.l));
  image.set(pathTable(dirs, 'iso', 'm'), at(tableAt.m));
  image.set(pathTable(dirs, 'joliet', 'l'), at(tableAt.jl));
  image.set(pathTable(dirs, 'joliet', 'm'), at(tableAt.jm));
  image.set(er, at(erSector));
  for (const d of dirs) {
    image.set(packRecords(directoryRecords(d, 'iso', time, erSector, er.length, false)).image, at(d.extent));
    image.set(packRecords(directoryRecords(d, 'joliet', time, 0, 0, false)).image, at(d.jolietExtent));
  }
  for (const f of fileNodes) if (f.data!.length > 0) image.set(f.data!, at(f.extent));
  return image;
}

function newNode(name: string, parent: Node | null, data?: Uint8Array): Node {
  return { name, parent, children: new Map(), ...(data ? { data } : {}), isoId: new Uint8Array(0), jolietId: new Uint8Array(0), number: 0, extent: 0, jolietExtent: 0, dirSectors: 0, jolietSectors: 0, subdirs: 0 };
}

function buildTree(files: IsoFile[]): Node {
  const root = newNode('', null);
  for (const f of files) {
    const parts = f.path.split('/').filter((p) => p !== '');
    if (parts.length === 0 || parts.some((p) => p === '.' || p === '..')) throw new DiskError('EINVAL', `'${f.path}' is not a file path`);
    let dir = root;
    for (const [i, part] of parts.entries()) {
      if (part.length > JOLIET_MAX_NAME) throw new DiskError('EINVAL', `'${part}' is longer than the ${JOLIET_MAX_NAME} characters Joliet records`);
      const last = i === parts.length - 1;
      const existing = dir.children.get(part);
      if (last) {
        if (existing) throw new DiskError('EINVAL', `'${f.path}' is given twice, or is also a directory`);
        dir.children.set(part, newNode(part, dir, f.data));
      } else {
        if (existing?.data) throw new DiskError('EINVAL', `'${parts.slice(0, i + 1).join('/')}' is a file and a directory`);
        if (!existing) dir.subdirs++;
        dir = existing ?? dir.children.set(part, newNode(part, dir)).get(part)!;
      }
    }
  }
  return root;
}

/** §9.4.3: directories by depth, then by their parent's number, then by identifier. */
function directoriesInPathTableOrder(root: Node): Node[] {
  const out: Node[] = [root];
  for (let i = 0; i < out.length; i++) {
    const subdirs = [...out[i]!.children.values()].filter((c) => !c.data).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    out.push(...subdirs);
  }
  return out;
}

/**
 * Level 1 identifiers for the primary volume (§7.5, §7.6: d-characters, 8.3, ";1" on files),
 * made unique within the directory by a numeric tail; Rock Ridge NM and Joliet carry the real
 * names.
 */
function assignIdentifiers(dir: Node): void {
  const used = new Set<string>();
  const nextTail = new Map<string, number>();
  // Names as given cannot collide; only those changed for Joliet are checked against the rest.
  const usedJoliet = new Set([...dir.children.keys()].filter((name) => !/[*/:;?\\]/.test(name)));
  for (const child of [...dir.children.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const clean = (s: string) => s.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
    const dot = child.data ? child.name.lastIndexOf('.') : -1;
    const stem = clean(dot > 0 ? child.name.slice(0, dot) : child.name) || '_';
    const ext = dot > 0 ? clean(child.name.slice(dot + 1)).slice(0, 3) : '';
    // Numbering resumes where the last name of the same stem stopped: linear in the names.
    const key = `${stem.slice(0, 8)}.${ext}`;
    let id = '';
    let n = nextTail.get(key) ?? 0;
    for (; ; n++) {
      const tail = n === 0 ? '' : String(n);
      const base = stem.slice(0, 8 - tail.length) + tail;
      id = child.data ? `${base}.${ext};1` : base;
      if (!used.has(id)) break;
    }
    nextTail.set(key, n + 1);
    used.add(id);
    child.isoId = ascii(id);
    // Joliet forbids * / : ; ? and \ in names (Joliet spec §3.1): "_" stands in, as genisoimage
    // does, with a number added should that make two names one.
    const wanted = child.name.replace(/[*/:;?\\]/g, '_');
    let joliet = wanted;
    for (let n = 1; joliet !== child.name && usedJoliet.has(joliet); n++) joliet = `${wanted.slice(0, JOLIET_MAX_NAME - String(n).length - 1)}_${n}`;
    usedJoliet.add(joliet);
    child.jolietId = encodeUcs2(child.data ? `${joliet};1` : joliet);
  }
}

/** The 34-byte root record in a volume descriptor (§8.4.18): no system use area. */
function rootRecord(root: Node, volume: 'iso' | 'joliet', time: number): Uint8Array {
  return record({ extent: volume === 'iso' ? root.extent : root.jolietExtent, length: (volume === 'iso' ? root.dirSectors : root.jolietSectors) * SECTOR_SIZE, directory: true, id: Uint8Array.of(ID_SELF), su: new Uint8Array(0), time });
}

/** One directory record (§9.1) with identifier and system use area. */
function record(r: { extent: number; length: number; directory: boolean; id: Uint8Array; su: Uint8Array; time: number }): Uint8Array {
  const size = directoryRecordLength(r.id.length, r.su.length);
  if (size > 255) throw new DiskError('EINVAL', `a directory record of ${size} bytes (a name too long for Rock Ridge without continuation areas)`);
  const out = DIRECTORY_RECORD.encode({
    length: size, extendedAttributeLength: 0, extent: r.extent, dataLength: r.length, recorded: r.time,
    flags: r.directory ? FLAG_DIRECTORY : 0, fileUnitSize: 0, interleaveGap: 0, volumeSequenceNumber: 1, identifierLength: r.id.length,
  }, new Uint8Array(size));
  out.set(r.id, identifierOffset);
  out.set(r.su, systemUseOffset(r.id.length));
  return out;
}

/**
 * A directory's records: ".", "..", then its children by identifier (§9.3). On the primary
 * volume each carries Rock Ridge entries; the root's "." also SP and a CE to the ER sector.
 * `sizing`: extents may not be known yet (only lengths matter).
 */
function directoryRecords(dir: Node, volume: 'iso' | 'joliet', time: number, erSector: number, erLength: number, sizing: boolean): Uint8Array[] {
  const iso = volume === 'iso';
  const extentOf = (n: Node) => (sizing ? 0 : iso || n.data ? n.extent : n.jolietExtent); // file data is shared
  const lengthOf = (n: Node) => (n.data ? n.data.length : (iso ? n.dirSectors : n.jolietSectors) * SECTOR_SIZE);
  const links = (n: Node) => (n.data ? 1 : 2 + n.subdirs);
  const su = (n: Node, name: string | null, extra: Uint8Array[] = []) => (iso ? concat([...extra, ...rockRidge(n.data ? FILE_MODE : DIR_MODE, links(n), name, time)]) : new Uint8Array(0));
  const parent = dir.parent ?? dir;
  const rootExtras = dir.parent === null
    ? [SUSP_SP.encode({ signature: 'SP', length: SUSP_SP.size, version: 1, check: Uint8Array.from(SP_CHECK), bytesSkipped: 0 }),
       SUSP_CE.encode({ signature: 'CE', length: SUSP_CE.size, version: 1, block: erSector, offset: 0, continuationLength: erLength })]
    : [];
  const out = [
    record({ extent: extentOf(dir), length: lengthOf(dir), directory: true, id: Uint8Array.of(ID_SELF), su: su(dir, null, rootExtras), time }),
    record({ extent: extentOf(parent), length: lengthOf(parent), directory: true, id: Uint8Array.of(ID_PARENT), su: su(parent, null), time }),
  ];
  const children = [...dir.children.values()].sort((a, b) => compareBytes(iso ? a.isoId : a.jolietId, iso ? b.isoId : b.jolietId));
  for (const c of children) {
    out.push(record({ extent: extentOf(c), length: lengthOf(c), directory: !c.data, id: iso ? c.isoId : c.jolietId, su: su(c, c.name), time }));
  }
  return out;
}

/** RR (1.09), PX, TF (modify, access, attribute change) and NM when the record has a name. */
function rockRidge(mode: number, links: number, name: string | null, time: number): Uint8Array[] {
  const entries = [
    RRIP_RR.encode({ signature: 'RR', length: RRIP_RR.size, version: 1, flags: RR_PX | RR_TF | (name ? RR_NM : 0) }),
    RRIP_PX.encode({ signature: 'PX', length: RRIP_PX.size, version: 1, mode, links, uid: 0, gid: 0 }),
  ];
  const tf = new Uint8Array(RRIP_TF.size + 3 * recordingDate.size);
  RRIP_TF.encode({ signature: 'TF', length: tf.length, version: 1, flags: TF_MODIFY | TF_ACCESS | TF_ATTRIBUTES }, tf);
  for (let i = 0; i < 3; i++) recordingDate.write(tf, RRIP_TF.size + i * recordingDate.size, time);
  entries.push(tf);
  if (name !== null) {
    const bytes = utf8(name);
    const nm = new Uint8Array(RRIP_NM.size + bytes.length);
    RRIP_NM.encode({ signature: 'NM', length: nm.length, version: 1, flags: 0 }, nm);
    nm.set(bytes, RRIP_NM.size);
    entries.push(nm);
  }
  return entries;
}

/** SUSP §5.5 ER for RRIP 1.09, placed in the continuation area the root's CE points to. */
function erEntry(): Uint8Array {
  const [id, desc, src] = [ascii(ER_ID), ascii(ER_DESCRIPTOR), ascii(ER_SOURCE)];
  const er = new Uint8Array(SUSP_ER.size + id.length + desc.length + src.length);
  SUSP_ER.encode({ signature: 'ER', length: er.length, version: 1, identifierLength: id.length, descriptorLength: desc.length, sourceLength: src.length, extensionVersion: 1 }, er);
  er.set(id, SUSP_ER.size);
  er.set(desc, SUSP_ER.size + id.length);
  er.set(src, SUSP_ER.size + id.length + desc.length);
  return er;
}

/** Records into sectors, none crossing a sector boundary (§6.8.1.1). */
function packRecords(records: Uint8Array[]): { bytes: number; image: Uint8Array } {
  let pos = 0;
  const places: number[] = [];
  for (const r of records) {
    if (Math.floor(pos / SECTOR_SIZE) !== Math.floor((pos + r.length - 1) / SECTOR_SIZE)) pos = Math.ceil(pos / SECTOR_SIZE) * SECTOR_SIZE;
    places.push(pos);
    pos += r.length;
  }
  const image = new Uint8Array(sectorsFor(pos) * SECTOR_SIZE);
  records.forEach((r, i) => image.set(r, places[i]!));
  return { bytes: pos, image };
}

/** §9.4: one volume's path table, little-endian (L) or big-endian (M). */
function pathTable(dirs: Node[], volume: 'iso' | 'joliet', order: 'l' | 'm'): Uint8Array {
  const table = order === 'l' ? PATH_TABLE_RECORD_L : PATH_TABLE_RECORD_M;
  const parts: Uint8Array[] = [];
  for (const d of dirs) {
    const id = d.parent === null ? Uint8Array.of(0) : volume === 'iso' ? d.isoId : d.jolietId;
    const rec = new Uint8Array(table.size + id.length + (id.length % 2));
    table.encode({ identifierLength: id.length, extendedAttributeLength: 0, extent: volume === 'iso' ? d.extent : d.jolietExtent, parentDirectoryNumber: (d.parent ?? d).number }, rec);
    rec.set(id, table.size);
    parts.push(rec);
  }
  return concat(parts);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
