/**
 * A read-only ISO 9660 filesystem (ECMA-119 with Rock Ridge and Joliet) over a BlockDevice,
 * shown as Linux's isofs shows it with default mount options:
 *
 * - Rock Ridge (SUSP "SP" in the root's "." record) wins over Joliet: POSIX names (NM), modes,
 *   owners and link counts (PX), device numbers (PN), symlinks (SL), time stamps (TF), and deep
 *   directories relocated by CL/PL/RE put back where they belong (the RE copy is hidden).
 * - Else Joliet (a supplementary descriptor with UCS-2 escape sequences): its tree and names,
 *   ";1" and trailing dots dropped.
 * - Else plain ISO names as isofs's map=normal: lower case, ";1" (and a lone "." before it)
 *   dropped; everything r-x for all, owned by root, one link (isofs_read_inode's defaults).
 *
 * Associated files are hidden and hidden files shown, as isofs does by default. Multi-extent
 * files (§6.5.1: consecutive records of one name) read as one file. Interleaved files are
 * refused, as isofs refuses them.
 *
 * A hostile image is bounded: records that break the sector rules, extents outside the
 * device, CE chains longer than isofs allows, directories that contain their ancestors (a
 * lookup of one is ELOOP) all give a DiskError.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { DirEntry, FileKind, FileStat, Filesystem, FsNode } from '../filesystem.js';
import { RecentDirectories } from '../fscache.js';
import { S_IFMT, decodeDev, kindOfMode } from '../fsmode.js';
import {
  DIRECTORY_RECORD, FLAG_ASSOCIATED, FLAG_DIRECTORY, FLAG_MULTI_EXTENT, ID_PARENT, ID_SELF, JOLIET_VOLUME_DESCRIPTOR,
  NM_CONTINUE, NM_CURRENT, NM_PARENT, PRIMARY_VOLUME_DESCRIPTOR, RRIP_CL, RRIP_NM, RRIP_PN, RRIP_PX, RRIP_PX_SERIAL, RRIP_SL,
  RRIP_TF, SECTOR_SIZE, SL_COMPONENT, SL_COMPONENT_CONTINUE, SL_COMPONENT_CURRENT, SL_COMPONENT_PARENT, SL_COMPONENT_ROOT,
  SL_CONTINUE, SP_CHECK, STANDARD_ID, SUSP_CE, SUSP_ENTRY_HEADER, SUSP_SP, SYSTEM_AREA_SECTORS, TF_ACCESS, TF_ATTRIBUTES,
  TF_CREATION, TF_LONG_FORM, TF_MODIFY, VD_PRIMARY, VD_SUPPLEMENTARY, VD_TERMINATOR, VOLUME_DESCRIPTOR_HEADER,
  decDatetime, decodeUcs2, jolietLevel, recordingDate, systemUseOffset,
} from './layout.js';

/** Volume descriptors read before giving up on a terminator. */
const MAX_DESCRIPTORS = 64;
/** isofs's RR_MAX_CE_ENTRIES: continuation areas followed for one record. */
const MAX_CE = 32;
/** Extents of one multi-extent file (a hostile directory could repeat one name millions of times). */
const MAX_EXTENTS = 1 << 16;
/** Bytes of a directory read at once. */
const DIR_CHUNK = 64 << 10;
/** A symlink target or Rock Ridge name longer than this is refused (PATH_MAX). */
const MAX_RR_TEXT = 4096;
/** Directories up to this size are resolved once and kept among the recent ones. */
const CACHED_DIRECTORY_BYTES = 4 << 20;

type Tree = 'rockridge' | 'joliet' | 'iso';

interface Extent { pos: number; length: number }
interface ListedDirectory { entries: { name: string; node: IsoNode }[]; byName: Map<string, IsoNode> }

export interface IsoNode extends FsNode {
  readonly stat: FileStat;
  /** Where the data lies: bytes on the device (one extent, several for a multi-extent file). */
  readonly extents: readonly Extent[];
  /** A symlink's target. */
  readonly target?: string;
  /** Directories: the extents of this one and every directory above it (a lookup that finds one again is a loop). */
  readonly path?: readonly number[];
}

/** One directory record as stored. */
interface RawRecord {
  pos: number;
  rec: ReturnType<typeof DIRECTORY_RECORD.decode>;
  id: Uint8Array;
  systemUse: Uint8Array;
}

/** What Rock Ridge says about one record. */
interface RockRidge {
  name?: string;
  mode?: number;
  links?: number;
  uid?: number;
  gid?: number;
  rdev?: { major: number; minor: number };
  target?: string;
  times: { birth?: number; mtime?: number; atime?: number; ctime?: number };
  /** CL: the directory relocated to this block. */
  child?: number;
  /** RE: this is the relocated copy, hidden. */
  relocated: boolean;
}

const corrupt = (m: string) => new DiskError('ECORRUPT', `iso9660: ${m}`);

export class Iso9660 implements Filesystem {
  readonly type = 'iso9660';
  readonly warnings: string[] = [];
  private readonly recent = new RecentDirectories<string, ListedDirectory>();

  private constructor(
    readonly device: BlockDevice,
    readonly blockSize: number,
    readonly tree: Tree,
    private readonly rootRecord: RawRecord,
    /** SUSP SP's bytes to skip at the start of every system use area. */
    private readonly suspSkip: number,
  ) {}

  static async open(device: BlockDevice): Promise<Iso9660> {
    let primary: ReturnType<typeof PRIMARY_VOLUME_DESCRIPTOR.decode> | undefined;
    let primaryPos = 0;
    let jolietPos: number | undefined;
    const sector = new Uint8Array(SECTOR_SIZE);
    for (let i = 0; i < MAX_DESCRIPTORS; i++) {
      const pos = (SYSTEM_AREA_SECTORS + i) * SECTOR_SIZE;
      if (pos + SECTOR_SIZE > device.size) break;
      await device.read(sector, pos);
      const h = VOLUME_DESCRIPTOR_HEADER.decode(sector);
      if (h.standardId !== STANDARD_ID) break;
      if (h.type === VD_TERMINATOR) break;
      if (h.type === VD_PRIMARY && !primary) {
        primary = PRIMARY_VOLUME_DESCRIPTOR.decode(sector);
        primaryPos = pos;
      } else if (h.type === VD_SUPPLEMENTARY && jolietPos === undefined && jolietLevel(JOLIET_VOLUME_DESCRIPTOR.get(sector, 'escapeSequences')) > 0) {
        jolietPos = pos;
      }
    }
    if (!primary) throw new DiskError('EFORMAT', 'iso9660: no primary volume descriptor');
    const blockSize = primary.logicalBlockSize;
    // isofs accepts 512, 1024 and 2048-byte logical blocks.
    if (blockSize !== 512 && blockSize !== 1024 && blockSize !== 2048) throw corrupt(`logical block size ${blockSize}`);
    const descriptorRoot = async (pos: number): Promise<RawRecord> => {
      const b = new Uint8Array(34);
      await device.read(b, pos + 156);
      const r = parseRecord(b, 0, pos + 156);
      if (!r || !(r.rec.flags & FLAG_DIRECTORY)) throw corrupt('the root directory record is not a directory');
      return r;
    };
    const primaryRoot = await descriptorRoot(primaryPos);
    const probe = new Iso9660(device, blockSize, 'iso', primaryRoot, 0);
    // SUSP §5.3: an SP entry at the start of the root's "." record turns SUSP (here: Rock Ridge) on.
    const dot = await probe.firstRecord(probe.dataOf(primaryRoot));
    const sp = dot && dot.systemUse.length >= SUSP_SP.size ? SUSP_SP.decode(dot.systemUse) : undefined;
    if (sp && sp.signature === 'SP' && sp.check[0] === SP_CHECK[0] && sp.check[1] === SP_CHECK[1]) {
      return new Iso9660(device, blockSize, 'rockridge', primaryRoot, sp.bytesSkipped);
    }
    if (jolietPos !== undefined) return new Iso9660(device, blockSize, 'joliet', await descriptorRoot(jolietPos), 0);
    return probe;
  }

  async root(): Promise<IsoNode> {
    // The root's attributes (Rock Ridge's among them) are those of its "." record.
    const dot = (await this.firstRecord(this.dataOf(this.rootRecord))) ?? this.rootRecord;
    return this.nodeOf(dot, [dot], []);
  }

  async *readdir(dir: FsNode): AsyncIterable<DirEntry> {
    const d = asIso(dir);
    const listed = await this.listed(d);
    for await (const { name, node } of listed?.entries ?? this.children(d)) yield { name, ino: node.stat.ino, kind: node.stat.kind };
  }

  async lookup(dir: FsNode, name: string): Promise<IsoNode | null> {
    const d = asIso(dir);
    const listed = await this.listed(d);
    let node: IsoNode | undefined;
    if (listed) node = listed.byName.get(name);
    else for await (const e of this.children(d)) if (e.name === name) { node = e.node; break; }
    if (!node) return null;
    const path = node.path;
    if (path && path.slice(0, -1).includes(path[path.length - 1]!)) {
      throw new DiskError('ELOOP', `iso9660: directory '${name}' (block ${path[path.length - 1]! / this.blockSize}) contains itself`);
    }
    return node;
  }

  /** A directory of bounded size, its entries resolved once while it is among the recent ones (ls -l looks up every name it lists). */
  private async listed(d: IsoNode): Promise<ListedDirectory | undefined> {
    if (d.stat.kind !== 'directory' || !d.path || d.extents[0]!.length > CACHED_DIRECTORY_BYTES) return undefined;
    // Keyed by the path of directory extents (a node's path is part of what lookup returns).
    const key = d.path.join('/');
    let listed = this.recent.get(key);
    if (!listed) {
      const entries: { name: string; node: IsoNode }[] = [];
      for await (const e of this.children(d)) entries.push(e);
      listed = { entries, byName: new Map(entries.map((e) => [e.name, e.node])) };
      this.recent.set(key, listed);
    }
    return listed;
  }

  async read(file: FsNode, buf: Uint8Array, offset: number): Promise<number> {
    const f = asIso(file);
    if (f.stat.kind !== 'file') throw new DiskError('EINVAL', 'iso9660: not a regular file');
    let done = 0;
    let base = 0;
    for (const e of f.extents) {
      if (done === buf.length) break;
      const at = offset + done - base;
      if (at < e.length) {
        const n = Math.min(e.length - at, buf.length - done);
        this.checkInside(e.pos + at, n, 'file data');
        await this.device.read(buf.subarray(done, done + n), e.pos + at);
        done += n;
      }
      base += e.length;
    }
    return done;
  }

  async readlink(link: FsNode): Promise<string> {
    const l = asIso(link);
    if (l.stat.kind !== 'symlink' || l.target === undefined) throw new DiskError('EINVAL', 'iso9660: not a symbolic link');
    return l.target;
  }

  /** Where a record's data lies (§9.1.3: after its extended attribute record, if any). */
  private dataOf(r: RawRecord): Extent {
    return { pos: (r.rec.extent + r.rec.extendedAttributeLength) * this.blockSize, length: r.rec.dataLength };
  }

  private checkInside(pos: number, length: number, what: string): void {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + length > this.device.size) {
      throw corrupt(`${what} at byte ${pos} (${length} bytes) lies outside the image (${this.device.size} bytes)`);
    }
  }

  /** A directory's records in order, "." and ".." included; sector rules checked (§6.8.1.1). */
  private async *records(dir: Extent): AsyncIterable<RawRecord> {
    const { pos: start, length } = dir;
    this.checkInside(start, length, 'directory');
    const chunk = new Uint8Array(Math.min(DIR_CHUNK, length));
    for (let off = 0; off < length; off += chunk.length) {
      const b = chunk.subarray(0, Math.min(chunk.length, length - off));
      await this.device.read(b, start + off);
      for (let at = 0; at < b.length; ) {
        const len = b[at]!;
        if (len === 0) {
          // §6.8.1.1: records do not cross a sector; the rest of this one is unused.
          at = (Math.floor(at / SECTOR_SIZE) + 1) * SECTOR_SIZE;
          continue;
        }
        const r = parseRecord(b, at, start + off + at);
        if (!r || Math.floor(at / SECTOR_SIZE) !== Math.floor((at + len - 1) / SECTOR_SIZE)) {
          throw corrupt(`bad directory record at byte ${start + off + at}`);
        }
        yield r;
        at += len;
      }
    }
  }

  private async firstRecord(dir: Extent): Promise<RawRecord | undefined> {
    for await (const r of this.records(dir)) return r;
    return undefined;
  }

  /** The entries of a directory as shown (multi-extent files joined, RE copies and associated files left out). */
  private async *children(dir: IsoNode): AsyncIterable<{ name: string; node: IsoNode }> {
    if (dir.stat.kind !== 'directory' || !dir.path) throw new DiskError('EINVAL', 'iso9660: not a directory');
    let parts: RawRecord[] = [];
    for await (const r of this.records(dir.extents[0]!)) {
      if (r.id.length === 1 && (r.id[0] === ID_SELF || r.id[0] === ID_PARENT)) continue;
      parts.push(r);
      if (parts.length > MAX_EXTENTS) throw new DiskError('ELIMIT', `iso9660: a file has more than ${MAX_EXTENTS} extents`);
      if (r.rec.flags & FLAG_MULTI_EXTENT) continue;
      const group = parts;
      parts = [];
      if (group[0]!.rec.flags & FLAG_ASSOCIATED) continue;
      const rr = this.tree === 'rockridge' ? await this.rockRidge(group[0]!) : undefined;
      if (rr?.relocated) continue;
      const name = rr?.name ?? (this.tree === 'joliet' ? jolietName(group[0]!.id) : isoName(group[0]!.id));
      yield { name, node: await this.nodeOf(group[0]!, group, dir.path, rr) };
    }
  }

  /** The node a record (or a multi-extent group) stands for. */
  private async nodeOf(first: RawRecord, group: RawRecord[], parentPath: readonly number[], rrGiven?: RockRidge): Promise<IsoNode> {
    let rr = rrGiven ?? (this.tree === 'rockridge' ? await this.rockRidge(first) : undefined);
    let record = first;
    if (rr?.child !== undefined) {
      // RRIP §4.1.5.1: the directory lives at the CL block; its "." record has its attributes.
      const dot = await this.firstRecord({ pos: rr.child * this.blockSize, length: this.blockSize });
      if (!dot || !(dot.rec.flags & FLAG_DIRECTORY) || dot.rec.extent !== rr.child) throw corrupt(`CL at byte ${first.pos} points to block ${rr.child}, not a directory`);
      const name = rr.name;
      rr = await this.rockRidge(dot);
      rr.name = name;
      record = dot;
      group = [dot];
    }
    const rec = record.rec;
    if (rec.fileUnitSize !== 0 || rec.interleaveGap !== 0) throw new DiskError('EUNSUPPORTED', 'iso9660: interleaved files are not supported');
    const isDir = (rec.flags & FLAG_DIRECTORY) !== 0;
    let kind: FileKind = isDir ? 'directory' : 'file';
    let perm = 0o555;
    if (rr?.mode !== undefined) {
      const k = kindOfMode(rr.mode);
      if (!k) throw corrupt(`PX mode ${(rr.mode & S_IFMT).toString(8)} at byte ${first.pos} is no file type`);
      kind = k;
      perm = rr.mode & 0o7777;
      // RRIP §4.1.3: a symbolic link's target is in its SL entries; a PX saying "symlink" without them is damage.
      if (kind === 'symlink' && rr.target === undefined) throw corrupt(`PX at byte ${first.pos} says symbolic link, but the record has no SL entry`);
    }
    const extents = group.map((r) => this.dataOf(r));
    const recorded = rec.recorded;
    const stat: FileStat = {
      // Directories are known by their extent (so two records of one directory agree); others by their record.
      ino: BigInt(isDir ? extents[0]!.pos : first.pos),
      kind,
      perm,
      uid: rr?.uid ?? 0,
      gid: rr?.gid ?? 0,
      size: kind === 'symlink' ? rr!.target!.length : extents.reduce((s, e) => s + e.length, 0),
      nlink: rr?.links ?? 1,
      atime: rr?.times.atime ?? recorded,
      mtime: rr?.times.mtime ?? recorded,
      ctime: rr?.times.ctime ?? recorded,
      ...(rr?.times.birth !== undefined ? { birthtime: rr.times.birth } : {}),
      ...((kind === 'char' || kind === 'block') && rr?.rdev ? { rdev: rr.rdev } : {}),
    };
    if (kind === 'symlink' && rr?.target === undefined) throw corrupt(`symlink at byte ${first.pos} has no SL entry`);
    return {
      stat,
      extents,
      ...(kind === 'symlink' ? { target: rr!.target } : {}),
      ...(isDir ? { path: [...parentPath, extents[0]!.pos] } : {}),
    };
  }

  /** Rock Ridge entries of a record, its CE continuations followed (SUSP §5.1), at most MAX_CE of them. */
  private async rockRidge(r: RawRecord): Promise<RockRidge> {
    const out: RockRidge = { times: {}, relocated: false };
    let name: string | undefined;
    let nameDone = false;
    let target: string[] | undefined;
    let targetDone = false;
    let linkPart = '';
    let area = r.systemUse.subarray(Math.min(this.suspSkip, r.systemUse.length));
    for (let ce = 0; ; ce++) {
      let next: { pos: number; length: number } | undefined;
      for (let at = 0; at + SUSP_ENTRY_HEADER.size <= area.length; ) {
        const h = SUSP_ENTRY_HEADER.decode(area, at);
        // isofs stops at an entry too short to be one; so do we (SUSP §4.1).
        if (h.length < SUSP_ENTRY_HEADER.size || at + h.length > area.length) break;
        const e = area.subarray(at, at + h.length);
        at += h.length;
        switch (h.signature) {
          case 'CE': {
            if (e.length < SUSP_CE.size) break;
            const c = SUSP_CE.decode(e);
            next = { pos: c.block * this.blockSize + c.offset, length: c.continuationLength };
            break;
          }
          case 'ST':
            at = area.length;
            break;
          case 'NM': {
            if (e.length < RRIP_NM.size || nameDone) break;
            const flags = RRIP_NM.get(e, 'flags');
            if (flags & (NM_CURRENT | NM_PARENT)) break;
            name = (name ?? '') + utf8(e.subarray(RRIP_NM.size));
            if (name.length > MAX_RR_TEXT) throw corrupt(`Rock Ridge name at byte ${r.pos} is too long`);
            if (!(flags & NM_CONTINUE)) nameDone = true;
            break;
          }
          case 'PX': {
            if (e.length < RRIP_PX.size) break;
            const px = e.length >= RRIP_PX_SERIAL.size ? RRIP_PX_SERIAL.decode(e) : RRIP_PX.decode(e);
            out.mode = px.mode;
            out.links = px.links;
            out.uid = px.uid;
            out.gid = px.gid;
            break;
          }
          case 'PN': {
            if (e.length < RRIP_PN.size) break;
            const pn = RRIP_PN.decode(e);
            // isofs: a high word of 0 with a low word wider than a byte is an old 16-bit dev_t.
            out.rdev = pn.high === 0 && (pn.low & ~0xff) !== 0 ? decodeDev(pn.low) : { major: pn.high, minor: pn.low };
            break;
          }
          case 'SL': {
            if (e.length < RRIP_SL.size || targetDone) break;
            target ??= [];
            for (let c = RRIP_SL.size; c + SL_COMPONENT.size <= e.length; ) {
              const comp = SL_COMPONENT.decode(e, c);
              const content = e.subarray(c + SL_COMPONENT.size, c + SL_COMPONENT.size + comp.length);
              c += SL_COMPONENT.size + comp.length;
              if (comp.flags & SL_COMPONENT_ROOT) linkPart = '/';
              else if (comp.flags & SL_COMPONENT_PARENT) linkPart += '..';
              else if (comp.flags & SL_COMPONENT_CURRENT) linkPart += '.';
              else linkPart += utf8(content);
              if (comp.flags & SL_COMPONENT_CONTINUE) continue;
              target.push(linkPart);
              linkPart = '';
            }
            if (!(RRIP_SL.get(e, 'flags') & SL_CONTINUE)) targetDone = true;
            break;
          }
          case 'TF':
            if (e.length >= RRIP_TF.size) out.times = { ...out.times, ...timeStamps(e) };
            break;
          case 'CL':
            if (e.length >= RRIP_CL.size) out.child = RRIP_CL.decode(e).child;
            break;
          case 'RE':
            out.relocated = true;
            break;
        }
      }
      if (!next) break;
      if (ce >= MAX_CE) throw new DiskError('ELOOP', `iso9660: more than ${MAX_CE} continuation areas for the record at byte ${r.pos}`);
      if (next.length > this.blockSize) throw corrupt(`continuation area of ${next.length} bytes at byte ${next.pos}`);
      this.checkInside(next.pos, next.length, 'continuation area');
      area = new Uint8Array(next.length);
      await this.device.read(area, next.pos);
    }
    if (name !== undefined) out.name = name;
    if (target) {
      if (linkPart) target.push(linkPart);
      // RRIP §4.1.3.1: components are joined by "/"; a root component is the leading "/" itself.
      let t = '';
      for (const [i, part] of target.entries()) t += i > 0 && target[i - 1] !== '/' ? `/${part}` : part;
      if (t.length > MAX_RR_TEXT) throw corrupt(`symlink target at byte ${r.pos} is too long`);
      out.target = t;
    }
    return out;
  }
}

/** The directory record at `at` of `b`, or null if it cannot be one (§9.1). */
function parseRecord(b: Uint8Array, at: number, pos: number): RawRecord | null {
  const len = b[at]!;
  if (len < DIRECTORY_RECORD.size + 1 || at + len > b.length) return null;
  const rec = DIRECTORY_RECORD.decode(b, at);
  const idEnd = DIRECTORY_RECORD.size + rec.identifierLength;
  if (rec.identifierLength === 0 || idEnd > len) return null;
  const su = Math.min(systemUseOffset(rec.identifierLength), len);
  return { pos, rec, id: b.subarray(at + DIRECTORY_RECORD.size, at + idEnd), systemUse: b.subarray(at + su, at + len) };
}

/** RRIP §4.1.6: the stamps present, in flag order; 7-byte (§9.1.5) or, with LONG_FORM, 17-byte (§8.4.26.1). */
function timeStamps(e: Uint8Array): RockRidge['times'] {
  const flags = RRIP_TF.get(e, 'flags');
  const field = flags & TF_LONG_FORM ? decDatetime : recordingDate;
  const out: RockRidge['times'] = {};
  let at = RRIP_TF.size;
  for (let bit = 1; bit < TF_LONG_FORM; bit <<= 1) {
    if (!(flags & bit)) continue;
    if (at + field.size > e.length) break;
    const t = field.read(e, at) ?? undefined;
    at += field.size;
    if (t === undefined) continue;
    if (bit === TF_CREATION) out.birth = t;
    else if (bit === TF_MODIFY) out.mtime = t;
    else if (bit === TF_ACCESS) out.atime = t;
    else if (bit === TF_ATTRIBUTES) out.ctime = t;
  }
  return out;
}

const utf8 = (b: Uint8Array) => new TextDecoder().decode(b);

/** isofs_name_translate (map=normal): lower case, a trailing ";1" or ".;1" dropped, other ';' made '.'. */
export function isoName(id: Uint8Array): string {
  let s = '';
  const len = id.length;
  for (let i = 0; i < len; i++) {
    let c = id[i]!;
    if (c === 0) break;
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c === 0x2e && i === len - 3 && id[i + 1] === 0x3b && id[i + 2] === 0x31) break;
    if (c === 0x3b && i === len - 2 && id[i + 1] === 0x31) break;
    if (c === 0x3b || c === 0x2f) c = 0x2e;
    s += String.fromCharCode(c);
  }
  return s;
}

/** isofs's get_joliet_filename: UCS-2, a trailing ";1" dropped, then trailing dots. */
export function jolietName(id: Uint8Array): string {
  let s = decodeUcs2(id);
  if (s.length > 2 && s.endsWith(';1')) s = s.slice(0, -2);
  while (s.length >= 2 && s.endsWith('.')) s = s.slice(0, -1);
  return s;
}

function asIso(n: FsNode): IsoNode {
  if (!('extents' in n)) throw new DiskError('EINVAL', 'iso9660: a node from another filesystem');
  return n as IsoNode;
}

export const openIso9660 = (device: BlockDevice): Promise<Iso9660> => Iso9660.open(device);
