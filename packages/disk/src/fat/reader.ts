/**
 * A read-only FAT12/16/32 filesystem over a BlockDevice, shown as Linux's vfat shows it with
 * default mount options (what EFI system partitions are mounted with):
 *
 * - VFAT long names (§7) when their ordinals and checksum agree with the short entry that
 *   follows; otherwise the long-name entries are orphans and ignored, as fat_parse_long does.
 * - Short 8.3 names as stored (shortname=mixed), shown in lower case where the NT case bits
 *   say so; bytes above 0x7f through code page 437 (vfat's default codepage).
 * - uid and gid 0 and fmask/dmask 022 (a root mount's umask): files and directories 0755,
 *   read-only files 0555 (fat_make_mode; a directory's read-only bit is ignored without rodir).
 * - Times read as UTC (Linux's default tz): mtime from the write time, atime from the access
 *   date, ctime = mtime, birthtime from the creation time; the root has the epoch, as in Linux.
 * - A directory's link count is 2 plus its subdirectories and its size its clusters' bytes.
 * - Lookups ignore ASCII case and also find the short-name alias, as vfat's do.
 *
 * The FAT32 FSInfo sector is ignored (its free counts are hints). Hostile images are bounded:
 * chains that loop, leave the FAT's range or end early are DiskErrors; directories stop at the
 * FAT limit of 65536 entries; a directory that contains its ancestor is ELOOP on lookup.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { DirEntry, FileStat, Filesystem, FsNode } from '../filesystem.js';
import { FAT12_MAX_CLUSTERS, parseBpb, probeFat } from '../fsid/fat.js';
import { ProbeContext } from '../fsid/model.js';
import { RecentDirectories } from '../fscache.js';
import {
  ATTR_DIRECTORY, ATTR_LONG_NAME, ATTR_READ_ONLY, ATTR_VOLUME_ID, BAD_CLUSTER, DIR_ENTRY, ENTRY_END, ENTRY_FREE,
  ENTRY_KANJI_E5, EOC, FAT32_MASK, FIRST_CLUSTER, LAST_LONG_ENTRY, LFN_ENTRY, MAX_DIR_ENTRIES, MAX_LFN_ENTRIES,
  NT_LOWER_BASE, NT_LOWER_EXT, fatTime, shortNameChecksum,
} from './layout.js';

/** Linux's fmask/dmask from a root mount's umask: everything 0777 & ~022. */
const DEFAULT_MASK = 0o022;
/** Bytes of the FAT cached at a time, and how many such windows. */
const FAT_WINDOW = 64 << 10;
const FAT_WINDOWS = 64;
/** Linux vfat: MSDOS_ROOT_INO. */
const ROOT_INO = 1n;

/** Code page 437, bytes 0x80-0xff (vfat's default codepage=437). */
const CP437_HIGH = 'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';
if (CP437_HIGH.length !== 128) throw new Error('code page 437 table is not 128 characters');

type FatBits = 12 | 16 | 32;

export interface FatNode extends FsNode {
  readonly stat: FileStat;
  /** First cluster (0: none; the FAT12/16 root: none, it has a fixed region). */
  readonly cluster: number;
  /** Directories: the first clusters of this one and those above it (the root is 0). */
  readonly path?: readonly number[];
  /** Contiguous runs of the file's clusters, built on first read. */
  runs?: { cluster: number; count: number }[];
}

interface ParsedEntry {
  /** The long name, else the short one as shown. */
  name: string;
  /** The 8.3 alias as shown (lookups match it too). */
  shortName: string;
  /** Both names with ASCII folded to lower case, as lookups compare them. */
  folded: string;
  foldedShort: string;
  pos: number;
  entry: ReturnType<typeof DIR_ENTRY.decode>;
}

const corrupt = (m: string) => new DiskError('ECORRUPT', `vfat: ${m}`);

export class Fat implements Filesystem {
  readonly type = 'vfat';
  readonly warnings: string[] = [];
  private readonly fatCache = new Map<number, Uint8Array>();
  private readonly recent = new RecentDirectories<string, ParsedEntry[]>();

  private constructor(
    readonly device: BlockDevice,
    readonly bits: FatBits,
    private readonly sectorSize: number,
    readonly clusterSize: number,
    /** Byte offset of the first FAT. */
    private readonly fatStart: number,
    private readonly fatBytes: number,
    /** Byte offset and entries of the FAT12/16 root region. */
    private readonly rootStart: number,
    private readonly rootEntries: number,
    private readonly dataStart: number,
    /** Highest valid cluster number. */
    private readonly maxCluster: number,
    private readonly rootCluster: number,
  ) {}

  static async open(device: BlockDevice): Promise<Fat> {
    if (device.size < 512) throw new DiskError('EFORMAT', 'vfat: device too small for a boot sector');
    const bs = new Uint8Array(512);
    await device.read(bs, 0);
    const b = bs[510] === 0x55 && bs[511] === 0xaa ? parseBpb(bs) : null;
    if (!b) throw new DiskError('EFORMAT', 'vfat: no FAT boot sector');
    const rootSectors = Math.ceil((b.rootEntries * 32) / b.sectorSize);
    const firstData = b.reserved + b.fats * b.fatSectors + rootSectors;
    const dataSectors = b.totalSectors - firstData;
    if (dataSectors <= 0) throw corrupt('no data region');
    let clusters = Math.floor(dataSectors / b.sectorsPerCluster);
    // Linux's rule: FAT32 when the 16-bit FAT size is 0, else by the cluster count (§3.5).
    const bits: FatBits = b.fat32 ? 32 : clusters <= FAT12_MAX_CLUSTERS ? 12 : 16;
    const fatBytes = b.fatSectors * b.sectorSize;
    // As Linux does, no more clusters than the FAT has entries for.
    clusters = Math.min(clusters, Math.floor((fatBytes * 8) / bits) - FIRST_CLUSTER);
    if (clusters <= 0) throw corrupt('the FAT has no room for any cluster');
    if (b.fat32 && (b.rootCluster < FIRST_CLUSTER || b.rootCluster > clusters + 1)) throw corrupt(`root cluster ${b.rootCluster} is out of range`);
    const fat = new Fat(
      device, bits, b.sectorSize, b.sectorSize * b.sectorsPerCluster, b.reserved * b.sectorSize, fatBytes,
      (b.reserved + b.fats * b.fatSectors) * b.sectorSize, bits === 32 ? 0 : b.rootEntries, firstData * b.sectorSize,
      clusters + 1, b.fat32 ? b.rootCluster : 0,
    );
    return fat;
  }

  /** The volume label (the root's volume-label entry, else the boot sector's), as blkid reports it. */
  async label(): Promise<string | undefined> {
    const head = new Uint8Array(Math.min(this.device.size, 4096));
    await this.device.read(head, 0);
    return (await probeFat(new ProbeContext(this.device, head)))?.label;
  }

  async root(): Promise<FatNode> {
    const root: FatNode = {
      stat: { ino: ROOT_INO, kind: 'directory', perm: 0o777 & ~DEFAULT_MASK, uid: 0, gid: 0, size: 0, nlink: 2, atime: 0, mtime: 0, ctime: 0 },
      cluster: this.rootCluster,
      path: [this.rootCluster],
    };
    return this.withDirectoryCounts(root);
  }

  async *readdir(dir: FsNode): AsyncIterable<DirEntry> {
    for (const e of await this.entries(asFat(dir))) {
      yield { name: e.name, ino: BigInt(e.pos), kind: e.entry.attr & ATTR_DIRECTORY ? 'directory' : 'file' };
    }
  }

  async lookup(dir: FsNode, name: string): Promise<FatNode | null> {
    const d = asFat(dir);
    const want = foldAscii(name);
    for (const e of await this.entries(d)) {
      if (e.folded !== want && e.foldedShort !== want) continue;
      const node = this.nodeOf(e, d.path!);
      if (node.path) {
        if (d.path!.includes(node.cluster)) throw new DiskError('ELOOP', `vfat: directory '${name}' (cluster ${node.cluster}) contains itself`);
        return this.withDirectoryCounts(node);
      }
      return node;
    }
    return null;
  }

  async read(file: FsNode, buf: Uint8Array, offset: number): Promise<number> {
    const f = asFat(file);
    if (f.stat.kind !== 'file') throw new DiskError('EINVAL', 'vfat: not a regular file');
    const length = Math.max(0, Math.min(buf.length, f.stat.size - offset));
    if (length === 0) return 0;
    f.runs ??= await this.runs(f.cluster, Math.ceil(f.stat.size / this.clusterSize), `file at cluster ${f.cluster}`);
    let done = 0;
    let runStart = 0;
    for (const run of f.runs) {
      const runBytes = run.count * this.clusterSize;
      const at = offset + done - runStart;
      if (at < runBytes) {
        const n = Math.min(runBytes - at, length - done);
        await this.device.read(buf.subarray(done, done + n), this.clusterPos(run.cluster) + at);
        done += n;
        if (done === length) break;
      }
      runStart += runBytes;
    }
    return done;
  }

  async readlink(): Promise<string> {
    throw new DiskError('EINVAL', 'vfat: not a symbolic link (FAT has none)');
  }

  private clusterPos(cluster: number): number {
    return this.dataStart + (cluster - FIRST_CLUSTER) * this.clusterSize;
  }

  /** The FAT entry of a cluster (the first FAT; the others are copies). */
  private async next(cluster: number): Promise<number> {
    const byte = this.bits === 12 ? cluster + (cluster >> 1) : cluster * (this.bits / 8);
    const windowNo = Math.floor(byte / FAT_WINDOW);
    let w = this.fatCache.get(windowNo);
    if (!w) {
      // One byte more than the window, so a FAT12 entry straddling two windows is whole.
      const start = windowNo * FAT_WINDOW;
      w = new Uint8Array(Math.min(FAT_WINDOW + 1, this.fatBytes - start));
      if (this.fatStart + start + w.length > this.device.size) throw corrupt('the FAT lies past the end of the device');
      await this.device.read(w, this.fatStart + start);
      if (this.fatCache.size >= FAT_WINDOWS) this.fatCache.delete(this.fatCache.keys().next().value!);
      this.fatCache.set(windowNo, w);
    }
    const i = byte - windowNo * FAT_WINDOW;
    if (this.bits === 12) {
      const v = w[i]! | (w[i + 1]! << 8);
      return cluster & 1 ? v >> 4 : v & 0xfff;
    }
    if (this.bits === 16) return w[i]! | (w[i + 1]! << 8);
    return (w[i]! | (w[i + 1]! << 8) | (w[i + 2]! << 16) | (w[i + 3]! << 24)) & FAT32_MASK;
  }

  /**
   * The chain from `first` as runs of consecutive clusters: exactly `want` clusters when given
   * (a file's size decides), else to its end (a directory), at most `limit`. A chain that loops
   * is ELOOP; one that leaves the valid range, meets a free or bad cluster, or is shorter than
   * wanted is ECORRUPT.
   */
  private async runs(first: number, want: number | undefined, what: string, limit = this.maxCluster): Promise<{ cluster: number; count: number }[]> {
    const runs: { cluster: number; count: number }[] = [];
    // One bit a cluster: a chain that comes back to a cluster it passed loops.
    const seen = new Uint8Array((this.maxCluster >> 3) + 1);
    let count = 0;
    for (let c = first; ; ) {
      if (c < FIRST_CLUSTER || c > this.maxCluster) throw corrupt(`${what}: cluster ${c} is outside the FAT (2-${this.maxCluster})`);
      if (this.clusterPos(c) + this.clusterSize > this.device.size) throw corrupt(`${what}: cluster ${c} lies past the end of the device`);
      if (seen[c >> 3]! & (1 << (c & 7))) throw new DiskError('ELOOP', `vfat: ${what}: the cluster chain comes back to cluster ${c}`);
      seen[c >> 3] |= 1 << (c & 7);
      const last = runs[runs.length - 1];
      if (last && last.cluster + last.count === c) last.count++;
      else runs.push({ cluster: c, count: 1 });
      count++;
      if (count === want) return runs;
      if (count >= limit) throw new DiskError('ELIMIT', `vfat: ${what}: the cluster chain is longer than ${limit} clusters`);
      const n = await this.next(c);
      if (n >= EOC[this.bits]) {
        if (want !== undefined) throw corrupt(`${what}: the cluster chain ends after ${count} of ${want} clusters`);
        return runs;
      }
      if (n === BAD_CLUSTER[this.bits] || n === 0) throw corrupt(`${what}: cluster ${c} chains to ${n === 0 ? 'a free' : 'a bad'} cluster`);
      c = n;
    }
  }

  /** A directory's raw entries: the FAT12/16 root region, or a cluster chain. */
  private async *directoryBlocks(dir: FatNode): AsyncIterable<{ pos: number; data: Uint8Array }> {
    if (dir.cluster === 0) {
      if (dir.stat.ino !== ROOT_INO) return; // an entry without clusters: an empty directory
      const bytes = this.rootEntries * 32;
      if (this.rootStart + bytes > this.device.size) throw corrupt('the root directory lies past the end of the device');
      for (let at = 0; at < bytes; at += FAT_WINDOW) {
        const data = new Uint8Array(Math.min(FAT_WINDOW, bytes - at));
        await this.device.read(data, this.rootStart + at);
        yield { pos: this.rootStart + at, data };
      }
      return;
    }
    const maxClusters = Math.ceil((MAX_DIR_ENTRIES * 32) / this.clusterSize);
    for (const run of await this.runs(dir.cluster, undefined, `directory at cluster ${dir.cluster}`, maxClusters)) {
      // A run of clusters is one read.
      const data = new Uint8Array(run.count * this.clusterSize);
      const pos = this.clusterPos(run.cluster);
      await this.device.read(data, pos);
      yield { pos, data };
    }
  }

  /** A directory's entries (at most MAX_DIR_ENTRIES), parsed once while it is among the recent ones. */
  private async entries(dir: FatNode): Promise<ParsedEntry[]> {
    if (dir.stat.kind !== 'directory' || !dir.path) throw new DiskError('EINVAL', 'vfat: not a directory');
    const key = `${dir.stat.ino}:${dir.cluster}`;
    let list = this.recent.get(key);
    if (!list) {
      list = [];
      for await (const e of this.parseDirectory(dir)) list.push(e);
      this.recent.set(key, list);
    }
    return list;
  }

  /** A directory's entries as shown: long names joined and checked, '.', '..', labels and free entries left out. */
  private async *parseDirectory(dir: FatNode): AsyncIterable<ParsedEntry> {
    let lfn: { parts: string[]; expect: number; checksum: number } | undefined;
    for await (const { pos, data } of this.directoryBlocks(dir)) {
      for (let at = 0; at + 32 <= data.length; at += 32) {
        const first = data[at]!;
        if (first === ENTRY_END) return;
        if (first === ENTRY_FREE) { lfn = undefined; continue; }
        const attr = data[at + 11]!;
        if ((attr & 0x3f) === ATTR_LONG_NAME) {
          const l = LFN_ENTRY.decode(data, at);
          const ord = l.ord & ~LAST_LONG_ENTRY;
          if (l.ord & LAST_LONG_ENTRY) {
            // A new long name starts; whatever came before was an orphan.
            lfn = ord >= 1 && ord <= MAX_LFN_ENTRIES ? { parts: [], expect: ord, checksum: l.checksum } : undefined;
          } else if (!lfn || ord !== lfn.expect || l.checksum !== lfn.checksum) {
            lfn = undefined;
            continue;
          }
          if (!lfn) continue;
          lfn.parts.unshift(lfnChars(l.name1, l.name2, l.name3));
          lfn.expect--;
          continue;
        }
        const e = DIR_ENTRY.decode(data, at);
        const long = lfn && lfn.expect === 0 && lfn.checksum === shortNameChecksum(e.name) ? lfn.parts.join('') : undefined;
        lfn = undefined;
        if (attr & ATTR_VOLUME_ID) continue;
        const shortName = shortNameOf(e.name, e.ntRes);
        if (shortName === '.' || shortName === '..') continue;
        const name = long || shortName;
        yield { name, shortName, folded: foldAscii(name), foldedShort: foldAscii(shortName), pos: pos + at, entry: e };
      }
    }
  }

  private nodeOf(e: ParsedEntry, parentPath: readonly number[]): FatNode {
    const d = e.entry;
    const isDir = (d.attr & ATTR_DIRECTORY) !== 0;
    const cluster = this.bits === 32 ? ((d.firstClusterHigh << 16) | d.firstClusterLow) >>> 0 : d.firstClusterLow;
    const mtime = fatTime(d.writeDate, d.writeTime);
    const stat: FileStat = {
      ino: BigInt(e.pos),
      kind: isDir ? 'directory' : 'file',
      perm: (0o777 & ~(!isDir && d.attr & ATTR_READ_ONLY ? 0o222 : 0)) & ~DEFAULT_MASK,
      uid: 0,
      gid: 0,
      size: isDir ? 0 : d.fileSize,
      nlink: isDir ? 2 : 1,
      atime: fatTime(d.accessDate, 0),
      mtime,
      ctime: mtime,
      birthtime: fatTime(d.createDate, d.createTime, d.createTimeTenth),
    };
    return { stat, cluster, ...(isDir ? { path: [...parentPath, cluster] } : {}) };
  }

  /** A directory's size (its clusters) and link count (2 + subdirectories), as Linux computes them on reading the inode. */
  private async withDirectoryCounts(dir: FatNode): Promise<FatNode> {
    let subdirs = 0;
    for (const e of await this.entries(dir)) if (e.entry.attr & ATTR_DIRECTORY) subdirs++;
    let size = 0;
    if (dir.cluster === 0) size = dir.stat.ino === ROOT_INO ? this.rootEntries * 32 : 0;
    else for (const r of await this.runs(dir.cluster, undefined, `directory at cluster ${dir.cluster}`, Math.ceil((MAX_DIR_ENTRIES * 32) / this.clusterSize))) size += r.count * this.clusterSize;
    return { ...dir, stat: { ...dir.stat, size, nlink: 2 + subdirs } };
  }
}

/** 13 UCS-2 characters of a long-name entry, up to the first NUL (§7: padded with 0xFFFF after it). */
function lfnChars(...pieces: Uint8Array[]): string {
  let s = '';
  for (const p of pieces) {
    for (let i = 0; i + 1 < p.length; i += 2) {
      const c = p[i]! | (p[i + 1]! << 8);
      if (c === 0) return s;
      s += String.fromCharCode(c);
    }
  }
  return s;
}

/** An 8.3 name as vfat shows it: "BASE.EXT", each part lower-cased if its NT case bit is set; code page 437 above 0x7f. */
export function shortNameOf(name: Uint8Array, ntRes: number): string {
  const part = (from: number, to: number, lower: boolean) => {
    while (to > from && name[to - 1] === 0x20) to--;
    let s = '';
    for (let i = from; i < to; i++) {
      let c = i === 0 && name[0] === ENTRY_KANJI_E5 ? 0xe5 : name[i]!;
      if (lower && c >= 0x41 && c <= 0x5a) c |= 0x20;
      s += c < 0x80 ? String.fromCharCode(c) : CP437_HIGH[c - 0x80]!;
    }
    return s;
  };
  const base = part(0, 8, (ntRes & NT_LOWER_BASE) !== 0);
  const ext = part(8, 11, (ntRes & NT_LOWER_EXT) !== 0);
  return ext ? `${base}.${ext}` : base;
}

const foldAscii = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());

function asFat(n: FsNode): FatNode {
  if (!('cluster' in n)) throw new DiskError('EINVAL', 'vfat: a node from another filesystem');
  return n as FatNode;
}

export const openFat = (device: BlockDevice): Promise<Fat> => Fat.open(device);
