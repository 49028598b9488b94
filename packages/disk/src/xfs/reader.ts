/**
 * A read-only XFS (v4 and v5) filesystem over a BlockDevice. Inodes are found by their
 * number alone (AG, block, slot: "Inode Numbers"); data forks in local, extents and B-tree
 * format; directories in short-form, block, leaf, node and B-tree form (listed and searched
 * through their data blocks — the hash leaves and free index are only an accelerator);
 * symlinks local and remote; holes and unwritten extents read as zeroes.
 *
 * v5 metadata is verified: the superblock's, AG 0 headers', inodes', BMBT blocks', directory
 * blocks' and remote symlink blocks' CRC-32C, magic, and owner — a mismatch is ECORRUPT
 * naming the structure. Hostile images are bounded: inode numbers and blocks outside the
 * filesystem, extent lists past MAX_EXTENTS, B-trees deeper than XFS allows or revisiting a
 * block, malformed directory entries are DiskErrors; a directory that contains its ancestor
 * is ELOOP on lookup.
 */
import type { BlockDevice } from '../blockdev.js';
import { crc32c } from '../crc32c.js';
import { DiskError } from '../errors.js';
import type { DirEntry, FileKind, FileStat, Filesystem, FsNode } from '../filesystem.js';
import { RecentDirectories } from '../fscache.js';
import { kindOfMode } from '../fsmode.js';
import {
  AGF, AGF_CRC_OFF, AGI, AGI_CRC_OFF, BMBT_REC_SIZE, BMDR_BLOCK, BTREE_BLOCK_LONG, BTREE_LONG_CRC_OFF, BTREE_LONG_V4_SIZE,
  DIR2_BLOCK_TAIL, DIR2_DATA_ENTRY, DIR2_DATA_HDR_SIZE, DIR2_DATA_UNUSED, DIR2_LEAF_ENTRY_SIZE, DIR2_SF_ENTRY, DIR2_SF_HDR,
  DIR3_BLK_HDR, DIR3_CRC_OFF, DIR3_DATA_HDR_SIZE, DSYMLINK_HDR, INODE_CORE, INODE_CORE_V2_SIZE, INODE_CORE_V3_SIZE,
  INODE_CRC_OFF, SB_CRC_OFF, SUPERBLOCK, SYMLINK_CRC_OFF, XFS_AGF_MAGIC, XFS_AGI_MAGIC, XFS_BIGTIME_EPOCH_OFFSET,
  XFS_BMAP_CRC_MAGIC, XFS_BMAP_MAGIC, XFS_BM_MAXLEVELS, XFS_DEV_BITSMINOR, XFS_DIFLAG2_BIGTIME, XFS_DIFLAG2_NREXT64,
  XFS_DINODE_FMT_BTREE, XFS_DINODE_FMT_DEV, XFS_DINODE_FMT_EXTENTS, XFS_DINODE_FMT_LOCAL, XFS_DINODE_MAGIC,
  XFS_DIR2_BLOCK_MAGIC, XFS_DIR2_DATA_FREE_TAG, XFS_DIR2_DATA_MAGIC, XFS_DIR2_LEAF_OFFSET, XFS_DIR3_BLOCK_MAGIC,
  XFS_DIR3_DATA_MAGIC, XFS_DIR3_FT, XFS_SB_FEAT_INCOMPAT_FTYPE, XFS_SB_FEAT_INCOMPAT_KNOWN, XFS_SB_FEAT_INCOMPAT_META_UUID,
  XFS_SB_MAGIC, XFS_SB_VERSION2_FTYPE, XFS_SB_VERSION_4, XFS_SB_VERSION_5, XFS_SB_VERSION_MOREBITSBIT,
  XFS_SB_VERSION_NUMBITS, XFS_SYMLINK_MAGIC, XFS_SYMLINK_MAXLEN, decodeExtent, type XfsExtent,
} from './layout.js';

/** Extents of one file or directory held in memory (16 M extents would be ~1 GiB of records). */
export const MAX_EXTENTS = 1 << 20;
/** Directories up to this size are parsed once and kept among the recent ones. */
const CACHED_DIRECTORY_BYTES = 4 << 20;

export interface XfsNode extends FsNode {
  readonly stat: FileStat;
  readonly ino: bigint;
  readonly format: number;
  /** The data fork's bytes in the inode. */
  readonly fork: Uint8Array;
  readonly nextents: number;
  /** Directories: the inode numbers of this one and those above it. */
  readonly path?: readonly bigint[];
  extents?: XfsExtent[];
}

interface RawEntry { name: string; ino: bigint; kind: FileKind | 'unknown' }
interface ListedDirectory { entries: RawEntry[]; byName: Map<string, RawEntry> }

const corrupt = (m: string) => new DiskError('ECORRUPT', `xfs: ${m}`);
const safe = (v: bigint, what: string): number => {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} ${v} is out of range`);
  return Number(v);
};

export class Xfs implements Filesystem {
  readonly type = 'xfs';
  readonly warnings: string[] = [];
  private readonly recent = new RecentDirectories<bigint, ListedDirectory>();
  readonly dirBlockSize: number;

  private constructor(
    readonly device: BlockDevice,
    readonly sb: ReturnType<typeof SUPERBLOCK.decode>,
    readonly v5: boolean,
    private readonly hasFtype: boolean,
  ) {
    this.dirBlockSize = sb.blockSize << sb.dirBlkLog;
  }

  static async open(device: BlockDevice): Promise<Xfs> {
    if (device.size < 512) throw new DiskError('EFORMAT', 'xfs: device too small for a superblock');
    const head = new Uint8Array(512);
    await device.read(head, 0);
    if (SUPERBLOCK.get(head, 'magic') !== XFS_SB_MAGIC) throw new DiskError('EFORMAT', 'xfs: no XFS superblock');
    const first = SUPERBLOCK.decode(head);
    const sectSize = first.sectSize;
    if (!pow2(sectSize) || sectSize < 512 || sectSize > 32768 || sectSize > device.size) throw corrupt(`sector size ${sectSize}`);
    const sector = new Uint8Array(sectSize);
    await device.read(sector, 0);
    const sb = SUPERBLOCK.decode(sector);
    const version = sb.versionNum & XFS_SB_VERSION_NUMBITS;
    if (version !== XFS_SB_VERSION_4 && version !== XFS_SB_VERSION_5) throw new DiskError('EUNSUPPORTED', `xfs: superblock version ${version}`);
    const v5 = version === XFS_SB_VERSION_5;
    if (v5) verifyCrc(sector, SB_CRC_OFF, 'superblock');
    // xfs_validate_sb_common's geometry checks, as far as reading needs them.
    const bad = !pow2(sb.blockSize) || sb.blockSize < 512 || sb.blockSize > 65536 || 1 << sb.blockLog !== sb.blockSize
      || !pow2(sb.inodeSize) || sb.inodeSize < 256 || sb.inodeSize > 2048 || 1 << sb.inodeLog !== sb.inodeSize
      || sb.inodesPerBlock !== sb.blockSize / sb.inodeSize || 1 << sb.inopbLog !== sb.inodesPerBlock
      || sb.agCount === 0 || sb.agBlocks < 1 || sb.agBlkLog > 31 || 2 ** sb.agBlkLog < sb.agBlocks || 2 ** (sb.agBlkLog - 1) >= sb.agBlocks
      || sb.dirBlkLog > 16 - sb.blockLog;
    if (bad) throw corrupt('superblock geometry is inconsistent');
    if (v5 && sb.featuresIncompat & ~XFS_SB_FEAT_INCOMPAT_KNOWN) {
      throw new DiskError('EUNSUPPORTED', `xfs: incompatible features 0x${(sb.featuresIncompat & ~XFS_SB_FEAT_INCOMPAT_KNOWN).toString(16)}`);
    }
    const hasFtype = v5 ? (sb.featuresIncompat & XFS_SB_FEAT_INCOMPAT_FTYPE) !== 0
      : (sb.versionNum & XFS_SB_VERSION_MOREBITSBIT) !== 0 && (sb.features2 & XFS_SB_VERSION2_FTYPE) !== 0;
    const fs = new Xfs(device, sb, v5, hasFtype);
    await fs.checkAgHeaders();
    return fs;
  }

  /** The label (sb_fname), as blkid reports it. */
  get label(): string {
    const end = this.sb.fname.indexOf(0);
    return new TextDecoder().decode(end < 0 ? this.sb.fname : this.sb.fname.subarray(0, end));
  }

  /** The UUID metadata blocks are stamped with (sb_meta_uuid when the user's UUID was changed). */
  private get metaUuid(): Uint8Array {
    return this.sb.featuresIncompat & XFS_SB_FEAT_INCOMPAT_META_UUID ? this.sb.metaUuid : this.sb.uuid;
  }

  /** AG 0's AGF and AGI (sectors 1 and 2): magic, sequence, and on v5 CRC and UUID. */
  private async checkAgHeaders(): Promise<void> {
    const s = this.sb.sectSize;
    const b = new Uint8Array(s * 2);
    this.checkInside(s, b.length, 'AG 0 headers');
    await this.device.read(b, s);
    const agf = b.subarray(0, s);
    const agi = b.subarray(s);
    if (AGF.get(agf, 'magic') !== XFS_AGF_MAGIC || AGF.get(agf, 'seqno') !== 0) throw corrupt('AG 0 has no AGF');
    if (AGI.get(agi, 'magic') !== XFS_AGI_MAGIC || AGI.get(agi, 'seqno') !== 0) throw corrupt('AG 0 has no AGI');
    if (this.v5) {
      verifyCrc(agf, AGF_CRC_OFF, 'AGF of AG 0');
      verifyCrc(agi, AGI_CRC_OFF, 'AGI of AG 0');
      if (!sameBytes(AGF.get(agf, 'uuid'), this.metaUuid) || !sameBytes(AGI.get(agi, 'uuid'), this.metaUuid)) throw corrupt('AG 0 headers belong to another filesystem');
    }
  }

  async root(): Promise<XfsNode> {
    const root = await this.inode(this.sb.rootIno, []);
    if (root.stat.kind !== 'directory') throw corrupt(`root inode ${this.sb.rootIno} is not a directory`);
    return root;
  }

  async *readdir(dir: FsNode): AsyncIterable<DirEntry> {
    const d = asXfs(dir);
    const listed = await this.listed(d);
    if (listed) yield* listed.entries;
    else yield* this.entries(d);
  }

  async lookup(dir: FsNode, name: string): Promise<XfsNode | null> {
    const d = asXfs(dir);
    const listed = await this.listed(d);
    let found: RawEntry | undefined;
    if (listed) found = listed.byName.get(name);
    else for await (const e of this.entries(d)) if (e.name === name) { found = e; break; }
    if (!found) return null;
    if (d.path!.includes(found.ino)) throw new DiskError('ELOOP', `xfs: directory '${name}' (inode ${found.ino}) contains itself`);
    return this.inode(found.ino, d.path!);
  }

  /** A directory of bounded size, parsed once while it is among the recent ones; undefined for a larger one (streamed). */
  private async listed(d: XfsNode): Promise<ListedDirectory | undefined> {
    if (d.stat.kind === 'directory' && d.stat.size > CACHED_DIRECTORY_BYTES) return undefined;
    let listed = this.recent.get(d.ino);
    if (!listed) {
      const entries: RawEntry[] = [];
      for await (const e of this.entries(d)) entries.push(e);
      listed = { entries, byName: new Map(entries.map((e) => [e.name, e])) };
      this.recent.set(d.ino, listed);
    }
    return listed;
  }

  async read(file: FsNode, buf: Uint8Array, offset: number): Promise<number> {
    const f = asXfs(file);
    if (f.stat.kind !== 'file') throw new DiskError('EINVAL', 'xfs: not a regular file');
    const n = Math.max(0, Math.min(buf.length, f.stat.size - offset));
    if (n > 0) await this.readMapped(f, buf.subarray(0, n), offset);
    return n;
  }

  async readlink(link: FsNode): Promise<string> {
    const l = asXfs(link);
    if (l.stat.kind !== 'symlink') throw new DiskError('EINVAL', 'xfs: not a symbolic link');
    const size = l.stat.size;
    if (size <= 0 || size > XFS_SYMLINK_MAXLEN) throw corrupt(`symlink inode ${l.ino} has length ${size}`);
    if (l.format === XFS_DINODE_FMT_LOCAL) {
      if (size > l.fork.length) throw corrupt(`symlink inode ${l.ino} is longer than its fork`);
      return utf8(l.fork.subarray(0, size));
    }
    // Remote: the target in blocks; on v5 each mapped extent starts with a header ("Symbolic Links").
    const out = new Uint8Array(size);
    let done = 0;
    for (const e of await this.extents(l)) {
      if (done === size) break;
      const bytes = e.count * this.sb.blockSize;
      const b = new Uint8Array(bytes);
      await this.device.read(b, this.fsbPos(e.block, e.count, `symlink inode ${l.ino}`));
      let data = b;
      if (this.v5) {
        const h = DSYMLINK_HDR.decode(b);
        if (h.magic !== XFS_SYMLINK_MAGIC || h.owner !== l.ino || h.offset !== done) throw corrupt(`symlink block of inode ${l.ino} has a bad header`);
        verifyCrc(b, SYMLINK_CRC_OFF, `symlink block of inode ${l.ino}`);
        data = b.subarray(DSYMLINK_HDR.size);
      }
      const n = Math.min(data.length, size - done);
      out.set(data.subarray(0, n), done);
      done += n;
    }
    if (done !== size) throw corrupt(`symlink inode ${l.ino} has ${done} of ${size} bytes`);
    return utf8(out);
  }

  // -------------------------------------------------------------------------------------------

  private checkInside(pos: number, length: number, what: string): void {
    if (!Number.isSafeInteger(pos) || pos < 0 || pos + length > this.device.size) {
      throw corrupt(`${what} at byte ${pos} (${length} bytes) lies outside the device (${this.device.size} bytes)`);
    }
  }

  /** Byte position of `count` blocks from filesystem block `fsb` (AG number in the high bits, "Sharing Data Blocks"). */
  private fsbPos(fsb: number, count: number, what: string): number {
    const agno = Math.floor(fsb / 2 ** this.sb.agBlkLog);
    const agbno = fsb % 2 ** this.sb.agBlkLog;
    if (agno >= this.sb.agCount || agbno + count > this.sb.agBlocks) throw corrupt(`${what}: block ${fsb} (AG ${agno}, block ${agbno}) is outside the filesystem`);
    const pos = (agno * this.sb.agBlocks + agbno) * this.sb.blockSize;
    this.checkInside(pos, count * this.sb.blockSize, what);
    return pos;
  }

  /** Read and check an inode ("Inode Numbers": AG, block in the AG, slot in the block). */
  async inode(ino: bigint, parentPath: readonly bigint[]): Promise<XfsNode> {
    const sb = this.sb;
    const slot = Number(ino & BigInt(sb.inodesPerBlock - 1));
    const agbno = Number((ino >> BigInt(sb.inopbLog)) & BigInt(2 ** sb.agBlkLog - 1));
    const agno = ino >> BigInt(sb.inopbLog + sb.agBlkLog);
    if (agno >= BigInt(sb.agCount) || agbno >= sb.agBlocks) throw corrupt(`inode number ${ino} is outside the filesystem`);
    const pos = (Number(agno) * sb.agBlocks + agbno) * sb.blockSize + slot * sb.inodeSize;
    this.checkInside(pos, sb.inodeSize, `inode ${ino}`);
    const b = new Uint8Array(sb.inodeSize);
    await this.device.read(b, pos);
    if (INODE_CORE.get(b, 'magic') !== XFS_DINODE_MAGIC) throw corrupt(`inode ${ino} has no inode magic`);
    const version = INODE_CORE.get(b, 'version');
    if (this.v5 ? version !== 3 : version !== 1 && version !== 2) throw corrupt(`inode ${ino} has version ${version}`);
    const core = INODE_CORE.decode(b);
    if (version === 3) {
      verifyCrc(b, INODE_CRC_OFF, `inode ${ino}`);
      if (core.ino !== ino || !sameBytes(core.uuid, this.metaUuid)) throw corrupt(`inode ${ino} says it is inode ${core.ino}`);
    }
    const kind = kindOfMode(core.mode);
    if (!kind) throw corrupt(`inode ${ino} has mode ${core.mode.toString(8)}`);
    const coreSize = version === 3 ? INODE_CORE_V3_SIZE : INODE_CORE_V2_SIZE;
    const forkSize = core.forkOff ? core.forkOff * 8 : sb.inodeSize - coreSize;
    if (coreSize + forkSize > sb.inodeSize) throw corrupt(`inode ${ino} has its attribute fork at ${core.forkOff * 8}`);
    const fork = b.subarray(coreSize, coreSize + forkSize);
    const nrext64 = version === 3 && (core.flags2 & XFS_DIFLAG2_NREXT64) !== 0n;
    const nextents = nrext64 ? safe(core.bigNextents, `inode ${ino} extent count`) : core.nextents;
    const bigtime = version === 3 && (core.flags2 & XFS_DIFLAG2_BIGTIME) !== 0n;
    const time = (t: bigint) => xfsTime(t, bigtime);
    let rdev: FileStat['rdev'];
    if (kind === 'char' || kind === 'block') {
      if (core.format !== XFS_DINODE_FMT_DEV || fork.length < 4) throw corrupt(`device inode ${ino} has no device number`);
      const dev = new DataView(fork.buffer, fork.byteOffset, 4).getUint32(0, false);
      rdev = { major: dev >>> XFS_DEV_BITSMINOR, minor: dev & ((1 << XFS_DEV_BITSMINOR) - 1) };
    }
    const stat: FileStat = {
      ino,
      kind,
      perm: core.mode & 0o7777,
      uid: core.uid,
      gid: core.gid,
      size: safe(core.size, `inode ${ino} size`),
      nlink: version === 1 ? core.onlink : core.nlink,
      atime: time(core.atime),
      mtime: time(core.mtime),
      ctime: time(core.ctime),
      ...(version === 3 ? { birthtime: time(core.crtime) } : {}),
      ...(rdev ? { rdev } : {}),
    };
    return { stat, ino, format: core.format, fork, nextents, ...(kind === 'directory' ? { path: [...parentPath, ino] } : {}) };
  }

  /** The data fork's extents, sorted and checked (an inode's list, or the BMBT's leaves). */
  private async extents(node: XfsNode): Promise<XfsExtent[]> {
    if (node.extents) return node.extents;
    if (node.nextents > MAX_EXTENTS) throw new DiskError('ELIMIT', `xfs: inode ${node.ino} has ${node.nextents} extents (limit ${MAX_EXTENTS})`);
    let list: XfsExtent[];
    if (node.format === XFS_DINODE_FMT_EXTENTS) {
      if (node.nextents * BMBT_REC_SIZE > node.fork.length) throw corrupt(`inode ${node.ino}: ${node.nextents} extents do not fit its fork`);
      list = [];
      for (let i = 0; i < node.nextents; i++) list.push(decodeExtent(node.fork, i * BMBT_REC_SIZE));
    } else if (node.format === XFS_DINODE_FMT_BTREE) {
      list = await this.bmbtExtents(node);
    } else {
      throw corrupt(`inode ${node.ino} has data fork format ${node.format} where extents are needed`);
    }
    let end = 0;
    for (const e of list) {
      if (e.count === 0 || e.offset < end) throw corrupt(`inode ${node.ino}: extents overlap or are out of order at block ${e.offset}`);
      end = e.offset + e.count;
    }
    node.extents = list;
    return list;
  }

  /** The BMBT's leaf records, in key order ("B+tree Extent List"); each block once, levels strictly descending. */
  private async bmbtExtents(node: XfsNode): Promise<XfsExtent[]> {
    const root = node.fork;
    if (root.length < BMDR_BLOCK.size) throw corrupt(`inode ${node.ino}: B-tree root does not fit its fork`);
    const { level, numrecs } = BMDR_BLOCK.decode(root);
    const rootMax = Math.floor((root.length - BMDR_BLOCK.size) / 16);
    if (level === 0 || level >= XFS_BM_MAXLEVELS || numrecs === 0 || numrecs > rootMax) throw corrupt(`inode ${node.ino}: B-tree root level ${level} with ${numrecs} records`);
    const ptrAt = BMDR_BLOCK.size + rootMax * 8;
    const out: XfsExtent[] = [];
    const seen = new Set<number>();
    const bs = this.sb.blockSize;
    const hdr = this.v5 ? BTREE_BLOCK_LONG.size : BTREE_LONG_V4_SIZE;
    const magic = this.v5 ? XFS_BMAP_CRC_MAGIC : XFS_BMAP_MAGIC;
    const visit = async (fsb: number, wantLevel: number): Promise<void> => {
      if (seen.has(fsb)) throw new DiskError('ELOOP', `xfs: inode ${node.ino}: B-tree block ${fsb} is reached twice`);
      seen.add(fsb);
      const b = new Uint8Array(bs);
      await this.device.read(b, this.fsbPos(fsb, 1, `inode ${node.ino} B-tree`));
      const h = BTREE_BLOCK_LONG.decode(b);
      if (h.magic !== magic || h.level !== wantLevel) throw corrupt(`inode ${node.ino}: B-tree block ${fsb} is not a level ${wantLevel} BMBT block`);
      if (this.v5) {
        verifyCrc(b, BTREE_LONG_CRC_OFF, `B-tree block ${fsb} of inode ${node.ino}`);
        if (h.owner !== node.ino || !sameBytes(h.uuid, this.metaUuid)) throw corrupt(`B-tree block ${fsb} does not belong to inode ${node.ino}`);
      }
      if (wantLevel === 0) {
        if (h.numrecs > (bs - hdr) / BMBT_REC_SIZE) throw corrupt(`B-tree block ${fsb} claims ${h.numrecs} records`);
        if (out.length + h.numrecs > MAX_EXTENTS) throw new DiskError('ELIMIT', `xfs: inode ${node.ino} has more than ${MAX_EXTENTS} extents`);
        for (let i = 0; i < h.numrecs; i++) out.push(decodeExtent(b, hdr + i * BMBT_REC_SIZE));
        return;
      }
      const max = Math.floor((bs - hdr) / 16);
      if (h.numrecs === 0 || h.numrecs > max) throw corrupt(`B-tree block ${fsb} claims ${h.numrecs} pointers`);
      for (let i = 0; i < h.numrecs; i++) await visit(safe(bigAt(b, hdr + max * 8 + i * 8), 'B-tree pointer'), wantLevel - 1);
    };
    for (let i = 0; i < numrecs; i++) await visit(safe(bigAt(root, ptrAt + i * 8), 'B-tree pointer'), level - 1);
    return out;
  }

  /** Bytes of a file's or directory's data fork (holes and unwritten extents read as zeroes). */
  private async readMapped(node: XfsNode, buf: Uint8Array, offset: number): Promise<void> {
    const list = await this.extents(node);
    const bs = this.sb.blockSize;
    // The first extent that ends after `offset`.
    let lo = 0;
    for (let hi = list.length; lo < hi; ) {
      const mid = (lo + hi) >> 1;
      if ((list[mid]!.offset + list[mid]!.count) * bs <= offset) lo = mid + 1;
      else hi = mid;
    }
    let done = 0;
    const end = offset + buf.length;
    for (let i = lo; i < list.length && offset + done < end; i++) {
      const e = list[i]!;
      const from = e.offset * bs;
      const to = Math.min(end, (e.offset + e.count) * bs);
      if (from >= end) break;
      const cur = offset + done;
      if (from > cur) {
        buf.fill(0, done, from - offset);
        done = from - offset;
      }
      const n = to - (offset + done);
      const target = buf.subarray(done, done + n);
      if (e.unwritten) target.fill(0);
      else {
        const pos = this.fsbPos(e.block, e.count, `inode ${node.ino} data`) + (offset + done - from);
        await this.device.read(target, pos);
      }
      done += n;
    }
    buf.fill(0, done);
  }

  /** A directory's entries, without '.' and '..'. */
  private async *entries(dir: XfsNode): AsyncIterable<RawEntry> {
    if (dir.stat.kind !== 'directory') throw new DiskError('EINVAL', 'xfs: not a directory');
    if (dir.format === XFS_DINODE_FMT_LOCAL) {
      yield* this.shortFormEntries(dir);
      return;
    }
    // Block, leaf, node and B-tree directories: every data block below the leaf offset ("Directories").
    const dbs = this.dirBlockSize;
    const block = new Uint8Array(dbs);
    let next = 0;
    for (const e of await this.extents(dir)) {
      const from = Math.max(next, Math.floor((e.offset * this.sb.blockSize) / dbs) * dbs);
      const to = Math.min((e.offset + e.count) * this.sb.blockSize, XFS_DIR2_LEAF_OFFSET);
      for (let at = from; at < to; at += dbs) {
        await this.readMapped(dir, block, at);
        yield* this.dataBlockEntries(dir, block, at);
        next = at + dbs;
      }
      if (to >= XFS_DIR2_LEAF_OFFSET) break;
    }
  }

  private *shortFormEntries(dir: XfsNode): Iterable<RawEntry> {
    const f = dir.fork;
    const size = Math.min(dir.stat.size, f.length);
    if (size < DIR2_SF_HDR.size) throw corrupt(`short-form directory ${dir.ino} is too small`);
    const { count, i8count } = DIR2_SF_HDR.decode(f);
    const inoSize = i8count ? 8 : 4;
    const entryCount = count;
    let at = DIR2_SF_HDR.size + inoSize;
    for (let i = 0; i < entryCount; i++) {
      if (at + DIR2_SF_ENTRY.size > size) throw corrupt(`short-form directory ${dir.ino}: entry ${i} runs past its end`);
      const len = DIR2_SF_ENTRY.get(f, 'nameLength', at);
      const nameAt = at + DIR2_SF_ENTRY.size;
      const ftypeAt = nameAt + len;
      const inoAt = ftypeAt + (this.hasFtype ? 1 : 0);
      if (len === 0 || inoAt + inoSize > size) throw corrupt(`short-form directory ${dir.ino}: entry ${i} runs past its end`);
      const ino = inoSize === 8 ? bigAt(f, inoAt) & ((1n << 56n) - 1n) : BigInt(new DataView(f.buffer, f.byteOffset + inoAt, 4).getUint32(0, false));
      yield { name: utf8(f.subarray(nameAt, nameAt + len)), ino, kind: this.hasFtype ? fileType(f[ftypeAt]!) : 'unknown' };
      at = inoAt + inoSize;
    }
  }

  /** The entries of one directory data block (a single-block directory's, or a data block of a larger one). */
  private *dataBlockEntries(dir: XfsNode, b: Uint8Array, at: number): Iterable<RawEntry> {
    const magic = new DataView(b.buffer, b.byteOffset, 4).getUint32(0, false);
    const blockForm = this.v5 ? magic === XFS_DIR3_BLOCK_MAGIC : magic === XFS_DIR2_BLOCK_MAGIC;
    const dataForm = this.v5 ? magic === XFS_DIR3_DATA_MAGIC : magic === XFS_DIR2_DATA_MAGIC;
    // A hole in the data section would read as zeroes; XFS leaves none, so anything else is corrupt.
    if (!blockForm && !dataForm) throw corrupt(`directory ${dir.ino}: block at offset ${at} is not a directory data block`);
    if (this.v5) {
      verifyCrc(b, DIR3_CRC_OFF, `directory ${dir.ino} block at offset ${at}`);
      const h = DIR3_BLK_HDR.decode(b);
      if (h.owner !== dir.ino || !sameBytes(h.uuid, this.metaUuid)) throw corrupt(`directory block at offset ${at} does not belong to inode ${dir.ino}`);
    }
    let end = b.length;
    if (blockForm) {
      const tail = DIR2_BLOCK_TAIL.decode(b, b.length - DIR2_BLOCK_TAIL.size);
      end = b.length - DIR2_BLOCK_TAIL.size - tail.count * DIR2_LEAF_ENTRY_SIZE;
    }
    let p = this.v5 ? DIR3_DATA_HDR_SIZE : DIR2_DATA_HDR_SIZE;
    if (end < p) throw corrupt(`directory ${dir.ino}: block at offset ${at} has a leaf larger than itself`);
    while (p < end) {
      if (p + DIR2_DATA_UNUSED.size > end) throw corrupt(`directory ${dir.ino}: entry at ${at + p} runs past its block`);
      const u = DIR2_DATA_UNUSED.decode(b, p);
      if (u.freetag === XFS_DIR2_DATA_FREE_TAG) {
        if (u.length < 8 || u.length % 8 !== 0 || p + u.length > end) throw corrupt(`directory ${dir.ino}: free space at ${at + p} has length ${u.length}`);
        p += u.length;
        continue;
      }
      if (p + DIR2_DATA_ENTRY.size > end) throw corrupt(`directory ${dir.ino}: entry at ${at + p} runs past its block`);
      const e = DIR2_DATA_ENTRY.decode(b, p);
      const nameAt = p + DIR2_DATA_ENTRY.size;
      const size = Math.ceil((DIR2_DATA_ENTRY.size + e.nameLength + (this.hasFtype ? 1 : 0) + 2) / 8) * 8;
      if (e.nameLength === 0 || p + size > end) throw corrupt(`directory ${dir.ino}: entry at ${at + p} runs past its block`);
      const name = b.subarray(nameAt, nameAt + e.nameLength);
      p += size;
      if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) continue;
      yield { name: utf8(name), ino: e.ino, kind: this.hasFtype ? fileType(b[nameAt + e.nameLength]!) : 'unknown' };
    }
  }
}

function verifyCrc(b: Uint8Array, at: number, what: string): void {
  const stored = new DataView(b.buffer, b.byteOffset + at, 4).getUint32(0, true);
  const copy = b.slice();
  copy.fill(0, at, at + 4);
  const computed = crc32c(copy);
  if (stored !== computed) {
    throw new DiskError('ECORRUPT', `xfs: metadata CRC mismatch in ${what} (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
  }
}

/** Timestamps: seconds (signed 32) and nanoseconds, or with bigtime one nanosecond counter from 1901 (format.h xfs_timestamp). */
function xfsTime(t: bigint, bigtime: boolean): number {
  if (bigtime) return Number(t / 1_000_000_000n) - XFS_BIGTIME_EPOCH_OFFSET + Number(t % 1_000_000_000n) / 1e9;
  const sec = Number(BigInt.asIntN(32, t >> 32n));
  return sec + Number(t & 0xffffffffn) / 1e9;
}

const fileType = (t: number): FileKind | 'unknown' => XFS_DIR3_FT[t] ?? 'unknown';
const bigAt = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset + at, 8).getBigUint64(0, false);
const utf8 = (b: Uint8Array) => new TextDecoder().decode(b);
const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

function asXfs(n: FsNode): XfsNode {
  if (!('fork' in n)) throw new DiskError('EINVAL', 'xfs: a node from another filesystem');
  return n as XfsNode;
}

export const openXfs = (device: BlockDevice): Promise<Xfs> => Xfs.open(device);
