/**
 * A read-only ext2/ext3/ext4 reader over a BlockDevice, following the kernel's
 * Documentation/filesystems/ext4/ (section numbers in layout.ts). Metadata checksums
 * (metadata_csum: crc32c; gdt_csum: crc16) are verified as the kernel does on a read-only
 * mount: a bad superblock, inode, extent block or directory block checksum is an error
 * (ECORRUPT), a bad group descriptor checksum a warning. Hostile metadata (blocks outside the
 * filesystem, extent trees that loop or share blocks, counts past the geometry) is a
 * DiskError, and every structure read is bounded by the filesystem's own size.
 */
import type { BlockDevice } from '../blockdev.js';
import { settled } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { crc32cRegister, crcTable, crcUpdate } from '../crc32c.js';
import { u32le } from '../struct.js';
import { ReplayedDevice, replayJournal } from './journal.js';
import { kindOfMode, decodeDev, S_IFMT, S_IFREG } from '../fsmode.js';
import type { DirEntry, FileStat, Filesystem, FsNode } from '../filesystem.js';
import {
  SB, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, EXT_MAGIC, STATE_VALID, STATE_ERROR, COMPAT_HAS_JOURNAL, INCOMPAT, INCOMPAT_READABLE, RO_COMPAT,
  GD, GD_SIZE_32, BG_INODE_UNINIT, INODE, GOOD_OLD_INODE_SIZE, I_BLOCK_OFFSET, I_BLOCK_SIZE, INODE_FLAG,
  DIRENT, DIRENT_NO_FILETYPE, DIRENT_HEADER, DIRENT_KIND, DIRENT_TAIL_SIZE, DIRENT_TAIL_FILETYPE, INLINE_DIR_PARENT_SIZE,
  EXTENT_MAGIC, EXTENT_HEADER, EXTENT_ENTRY_SIZE, EXTENT_LEAF, EXTENT_INDEX, EXTENT_INIT_MAX_LEN, EXTENT_MAX_DEPTH, DIRECT_BLOCKS,
  XATTR_MAGIC, XATTR_ENTRY, XATTR_ENTRY_SIZE, XATTR_INDEX_SYSTEM,
} from './layout.js';

/** The root directory's inode (§4.6 "Special inodes"). */
const ROOT_INO = 2;
/** Extents one file may have before we refuse to map it (a 4 TiB file of 4 MiB pieces has 1M). */
const MAX_EXTENTS = 1 << 20;
/** Extent tree blocks one file may have (each leaf holds up to 340 extents at 4 KiB blocks). */
const MAX_EXTENT_TREE_BLOCKS = 1 << 16;
/** Directories larger than this are refused (without largedir a directory's size is 32 bits). */
const MAX_DIRECTORY_BYTES = 2 ** 32;
/** Metadata is read in chunks of this many bytes and kept in a small LRU (inode tables and directories sit together). */
const CHUNK_BYTES = 64 * 1024;
const CHUNK_CACHE_ENTRIES = 256;
/** Directory blocks read at once from a contiguous run. */
const DIRECTORY_READ_BLOCKS = 64;
/** Group descriptor blocks kept decoded. */
const GD_CACHE_ENTRIES = 64;

let crc16Table: Uint32Array | undefined;
/** CRC-16 (poly 0x8005 reflected), started at `crc`: the gdt_csum group descriptor checksum (§4.4). */
function crc16(crc: number, data: Uint8Array): number {
  return crcUpdate(crc, data, (crc16Table ??= crcTable(0xa001))) & 0xffff;
}
const le32 = (n: number) => new Uint8Array([n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff]);

/** One contiguous piece of a file's block map: `pblk` null for a hole or an uninitialized extent (reads as zeroes). */
interface BlockRun { lblk: number; len: number; pblk: number | null }

/** A leaf extent, decoded (§4.7.2). */
interface Extent { lblk: number; len: number; pblk: number; init: boolean }

/** Bytes of a directory that hold entries: a leaf block, or a piece of inline data. */
interface DirRegion { inode: ExtInode; bytes: Uint8Array; where: number | 'inline' }

export interface ExtInode {
  ino: number;
  mode: number;
  flags: number;
  size: number;
  generation: number;
  /** The 60 bytes of i_block: extent root, block pointers, fast symlink target or inline data. */
  iBlock: Uint8Array;
  /** The whole on-disk inode (in-inode extended attributes follow the extra fields). */
  raw: Uint8Array;
  extraIsize: number;
  /** The inode's checksum seed (metadata_csum): extent and directory blocks are checksummed with it. */
  csumSeed: number;
  /** The timestamps exactly (stat's float seconds cannot hold nanoseconds); crtime where the inode has it. */
  times: { atime: Timestamp; mtime: Timestamp; ctime: Timestamp; crtime?: Timestamp };
}

export class ExtNode implements FsNode {
  /** The file's extents, loaded on first read. */
  extents?: Extent[];
  constructor(readonly inode: ExtInode, readonly stat: FileStat) {}
}

function corrupt(message: string): DiskError {
  return new DiskError('ECORRUPT', `ext: ${message}`);
}

export interface Timestamp { sec: number; nsec: number }

/** Seconds (signed 32-bit) widened by an extra field: 2 epoch bits and 30 bits of nanoseconds (§4.6.1 "Inode Timestamps"). */
function decodeTime(seconds: number, extra: number | undefined): Timestamp {
  const base = seconds | 0;
  if (extra === undefined) return { sec: base, nsec: 0 };
  return { sec: base + (extra & 3) * 2 ** 32, nsec: extra >>> 2 };
}

export class ExtFilesystem implements Filesystem {
  readonly type: string;
  readonly warnings: string[] = [];
  readonly blockSize: number;
  readonly blocksCount: number;
  readonly inodesCount: number;
  readonly inodeSize: number;
  private readonly incompat: number;
  private readonly roCompat: number;
  private readonly firstDataBlock: number;
  private readonly blocksPerGroup: number;
  private readonly inodesPerGroup: number;
  private readonly descSize: number;
  private readonly firstMetaBg: number;
  private readonly groupCount: number;
  private readonly csumSeed: number;
  private readonly uuid: Uint8Array;
  private readonly chunks = new Map<number, Promise<Uint8Array>>();
  private readonly gdBlocks = new Map<number, Promise<Uint8Array>>();
  private readonly badGroups = new Set<number>();
  private readonly checkedGroups = new Set<number>();

  private constructor(readonly device: BlockDevice, sb: Uint8Array, type: string) {
    this.type = type;
    this.blockSize = 1024 << SB.get(sb, 'logBlockSize');
    this.incompat = SB.get(sb, 'featureIncompat');
    this.roCompat = SB.get(sb, 'featureRoCompat');
    this.blocksCount = SB.get(sb, 'blocksCountLo') + (this.incompat & INCOMPAT.bit64 ? SB.get(sb, 'blocksCountHi') * 2 ** 32 : 0);
    this.inodesCount = SB.get(sb, 'inodesCount');
    this.firstDataBlock = SB.get(sb, 'firstDataBlock');
    this.blocksPerGroup = SB.get(sb, 'blocksPerGroup');
    this.inodesPerGroup = SB.get(sb, 'inodesPerGroup');
    this.inodeSize = SB.get(sb, 'revLevel') === 0 ? GOOD_OLD_INODE_SIZE : SB.get(sb, 'inodeSize');
    this.descSize = this.incompat & INCOMPAT.bit64 ? SB.get(sb, 'descSize') : GD_SIZE_32;
    this.firstMetaBg = SB.get(sb, 'firstMetaBg');
    this.groupCount = Math.ceil((this.blocksCount - this.firstDataBlock) / this.blocksPerGroup);
    this.uuid = SB.get(sb, 'uuid');
    this.csumSeed = this.incompat & INCOMPAT.csumSeed ? SB.get(sb, 'checksumSeed') : crc32cRegister(0xffffffff, this.uuid);
  }

  /** Open the filesystem on `device`; `type` is what fsid calls it (ext2, ext3, ext4). */
  static async open(device: BlockDevice, type = 'ext4', replayed = false): Promise<ExtFilesystem> {
    if (device.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) throw new DiskError('EFORMAT', 'ext: the device is too small for a superblock');
    const sb = new Uint8Array(SUPERBLOCK_SIZE);
    await device.read(sb, SUPERBLOCK_OFFSET);
    if (SB.get(sb, 'magic') !== EXT_MAGIC) throw new DiskError('EFORMAT', 'ext: bad superblock magic');
    const incompat = SB.get(sb, 'featureIncompat');
    const roCompat = SB.get(sb, 'featureRoCompat');
    if (incompat & INCOMPAT.journalDev) throw new DiskError('EFORMAT', 'ext: an external journal device, not a filesystem');
    if (roCompat & RO_COMPAT.metadataCsum) {
      if (SB.get(sb, 'checksumType') !== 1) throw corrupt(`unknown superblock checksum type ${SB.get(sb, 'checksumType')}`);
      // §4.1: crc32c of the superblock up to s_checksum, from ~0 (the kernel refuses to mount on a mismatch).
      const want = crc32cRegister(0xffffffff, sb.subarray(0, SB.fields.checksum[0]));
      if (want !== SB.get(sb, 'checksum')) throw corrupt('superblock checksum does not match (e2fsck would need a backup superblock)');
    }
    const unknown = incompat & ~INCOMPAT_READABLE;
    if (unknown) throw new DiskError('EUNSUPPORTED', `ext: unsupported incompatible features 0x${unknown.toString(16)}`);
    const logBlock = SB.get(sb, 'logBlockSize');
    if (logBlock > 6) throw corrupt(`block size 2^${10 + logBlock} is out of range`);
    const fs = new ExtFilesystem(device, sb, type);
    fs.checkGeometry();
    if (incompat & INCOMPAT.recover && !replayed && SB.get(sb, 'featureCompat') & COMPAT_HAS_JOURNAL) return fs.withJournalReplayed(sb, type);
    const state = SB.get(sb, 'state');
    if (state & STATE_ERROR) fs.warnings.push('the filesystem has errors recorded (e2fsck would check it)');
    else if (!(state & STATE_VALID) && !(incompat & INCOMPAT.recover)) fs.warnings.push('the filesystem was not cleanly unmounted (e2fsck would check it)');
    if ((SB.get(sb, 'featureCompat') & COMPAT_HAS_JOURNAL) === 0 && incompat & INCOMPAT.recover) fs.warnings.push('needs_recovery is set without a journal');
    return fs;
  }

  /**
   * A filesystem whose journal needs recovery, as the kernel would show it after replaying the
   * journal (journal.ts): reopened over the device with the committed transactions laid over
   * it in memory. The image is not written. When the journal cannot be replayed (an external
   * journal, a damaged one), this filesystem as it is, with a warning that the latest changes are not shown.
   */
  private async withJournalReplayed(sb: Uint8Array, type: string): Promise<ExtFilesystem> {
    const notShown = 'its latest changes are in the journal and are not shown';
    const inum = SB.get(sb, 'journalInum');
    if (inum === 0 || SB.get(sb, 'journalDev') !== 0) {
      this.warnings.push(`the journal needs recovery and is on another device: ${notShown}`);
      return this;
    }
    try {
      const journal = await this.node(inum);
      const bs = this.blockSize;
      const blocks = Math.floor(journal.inode.size / bs);
      const readJournal = async (n: number, buf: Uint8Array) => {
        if (n >= blocks || (await this.readBytes(journal, buf, n * bs)) !== bs) throw corrupt(`journal block ${n} is past the journal's ${blocks}`);
      };
      const replay = await replayJournal(readJournal, blocks, bs, this.blocksCount);
      const fs = await ExtFilesystem.open(new ReplayedDevice(this.device, bs, replay, readJournal), type, true);
      fs.warnings.unshift(`the journal needed recovery (the filesystem was not cleanly unmounted): ${replay.transactions} committed transaction${replay.transactions === 1 ? '' : 's'} replayed in memory, the image is unchanged`, ...replay.notes.map((n) => `journal: ${n}`));
      return fs;
    } catch (e) {
      if (!(e instanceof DiskError)) throw e;
      this.warnings.push(`the journal needs recovery and could not be replayed (${e.message}): ${notShown}`);
      return this;
    }
  }

  /** The kernel's ext4_fill_super sanity checks, as far as a reader depends on them. */
  private checkGeometry(): void {
    const bs = this.blockSize;
    if (this.blocksPerGroup === 0 || this.blocksPerGroup > 8 * bs) throw corrupt(`${this.blocksPerGroup} blocks per group`);
    if (this.inodesPerGroup === 0 || this.inodesPerGroup > 8 * bs) throw corrupt(`${this.inodesPerGroup} inodes per group`);
    const isz = this.inodeSize;
    if (isz < GOOD_OLD_INODE_SIZE || isz > bs || (isz & (isz - 1)) !== 0) throw corrupt(`inode size ${isz}`);
    if (this.descSize < GD_SIZE_32 || this.descSize > 1024 || (this.descSize & (this.descSize - 1)) !== 0 || (this.incompat & INCOMPAT.bit64 && this.descSize < 64)) {
      throw corrupt(`group descriptor size ${this.descSize}`);
    }
    if (this.firstDataBlock >= this.blocksCount || this.firstDataBlock !== (bs === 1024 ? 1 : 0) && this.firstDataBlock !== 0) throw corrupt(`first data block ${this.firstDataBlock}`);
    if (!Number.isSafeInteger(this.blocksCount * bs)) throw corrupt(`${this.blocksCount} blocks`);
    if (this.inodesCount === 0 || this.inodesCount > this.groupCount * this.inodesPerGroup) throw corrupt(`${this.inodesCount} inodes in ${this.groupCount} groups of ${this.inodesPerGroup}`);
    if (this.blocksCount * bs > this.device.size) {
      throw new DiskError('ETRUNCATED', `ext: the filesystem has ${this.blocksCount} blocks of ${bs} bytes but its device holds only ${this.device.size} bytes`);
    }
  }

  private has(roCompat: number): boolean {
    return (this.roCompat & roCompat) !== 0;
  }

  private get metadataCsum(): boolean {
    return this.has(RO_COMPAT.metadataCsum);
  }

  /** `length` bytes of metadata at block `block` + `within` (never crossing a block). */
  private async meta(block: number, within: number, length: number): Promise<Uint8Array> {
    this.checkBlocks(block, 1, 'metadata');
    const byte = block * this.blockSize + within;
    const chunkSize = Math.max(CHUNK_BYTES, this.blockSize);
    const chunkStart = Math.floor(byte / chunkSize) * chunkSize;
    let chunk = this.chunks.get(chunkStart);
    if (chunk) {
      this.chunks.delete(chunkStart);
      this.chunks.set(chunkStart, chunk);
    } else {
      const len = Math.min(chunkSize, this.device.size - chunkStart);
      chunk = (async () => {
        const b = new Uint8Array(len);
        await this.device.read(b, chunkStart);
        return b;
      })();
      chunk.catch(() => this.chunks.delete(chunkStart));
      this.chunks.set(chunkStart, chunk);
      if (this.chunks.size > CHUNK_CACHE_ENTRIES) this.chunks.delete(this.chunks.keys().next().value!);
    }
    const b = await chunk;
    return b.subarray(byte - chunkStart, byte - chunkStart + length);
  }

  private checkBlocks(block: number, count: number, what: string): void {
    if (!Number.isSafeInteger(block) || block < this.firstDataBlock && block !== 0 || block + count > this.blocksCount || count < 0) {
      throw corrupt(`${what} block ${block}${count > 1 ? ` (+${count})` : ''} is outside the filesystem (${this.blocksCount} blocks)`);
    }
  }

  // ---- Group descriptors (§4.4) ----

  private groupHasSuper(g: number): boolean {
    if (g <= 1 || !this.has(RO_COMPAT.sparseSuper)) return true;
    for (const base of [3, 5, 7]) {
      let p = base;
      while (p < g) p *= base;
      if (p === g) return true;
    }
    return false;
  }

  /** The block holding descriptor `g` (meta_bg puts later ones at the start of each meta group, §4.4 and §6.2). */
  private descriptorBlock(g: number): number {
    const perBlock = this.blockSize / this.descSize;
    const metaGroup = Math.floor(g / perBlock);
    if (!(this.incompat & INCOMPAT.metaBg) || metaGroup < this.firstMetaBg) return this.firstDataBlock + 1 + metaGroup;
    const first = metaGroup * perBlock;
    return this.firstDataBlock + first * this.blocksPerGroup + (this.groupHasSuper(first) ? 1 : 0);
  }

  private async descriptor(g: number): Promise<Uint8Array> {
    if (g >= this.groupCount) throw corrupt(`group ${g} does not exist`);
    const block = this.descriptorBlock(g);
    let p = this.gdBlocks.get(block);
    if (!p) {
      p = this.meta(block, 0, this.blockSize).then((b) => b.slice());
      p.catch(() => this.gdBlocks.delete(block));
      this.gdBlocks.set(block, p);
      if (this.gdBlocks.size > GD_CACHE_ENTRIES) this.gdBlocks.delete(this.gdBlocks.keys().next().value!);
    }
    const perBlock = this.blockSize / this.descSize;
    const at = (g % perBlock) * this.descSize;
    const gd = (await p).subarray(at, at + this.descSize);
    this.verifyDescriptor(g, gd);
    return gd;
  }

  /** A descriptor checksum mismatch is reported, not fatal: the kernel mounts such a filesystem read-only (ext4_check_descriptors). */
  private verifyDescriptor(g: number, gd: Uint8Array): void {
    if (this.checkedGroups.has(g)) return;
    this.checkedGroups.add(g);
    const csumAt = GD.fields.checksum[0];
    let want: number;
    if (this.metadataCsum) {
      let c = crc32cRegister(this.csumSeed, le32(g));
      c = crc32cRegister(c, gd.subarray(0, csumAt));
      c = crc32cRegister(c, new Uint8Array(2));
      c = crc32cRegister(c, gd.subarray(csumAt + 2));
      want = c & 0xffff;
    } else if (this.has(RO_COMPAT.gdtCsum)) {
      let c = crc16(0xffff, this.uuid);
      c = crc16(c, le32(g));
      c = crc16(c, gd.subarray(0, csumAt));
      if (gd.length > csumAt + 2) c = crc16(c, gd.subarray(csumAt + 2));
      want = c;
    } else return;
    if (want === GD.get(gd, 'checksum')) return;
    this.badGroups.add(g);
    if (this.badGroups.size <= 8) this.warnings.push(`group descriptor ${g} checksum does not match (e2fsck would repair it)`);
  }

  // ---- Inodes (§4.6) ----

  async readInode(ino: number): Promise<ExtInode> {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.inodesCount) throw corrupt(`inode ${ino} is out of range (1..${this.inodesCount})`);
    const group = Math.floor((ino - 1) / this.inodesPerGroup);
    const index = (ino - 1) % this.inodesPerGroup;
    const gd = await this.descriptor(group);
    const table = GD.get(gd, 'inodeTableLo') + (this.descSize >= 64 ? GD.get(gd, 'inodeTableHi') * 2 ** 32 : 0);
    const tableBlocks = Math.ceil((this.inodesPerGroup * this.inodeSize) / this.blockSize);
    if (table < this.firstDataBlock || table + tableBlocks > this.blocksCount) throw corrupt(`group ${group}'s inode table at block ${table} is outside the filesystem`);
    if ((this.metadataCsum || this.has(RO_COMPAT.gdtCsum)) && GD.get(gd, 'flags') & BG_INODE_UNINIT) throw corrupt(`inode ${ino} is in an uninitialised inode table (group ${group})`);
    const byte = index * this.inodeSize;
    const raw = (await this.meta(table + Math.floor(byte / this.blockSize), byte % this.blockSize, this.inodeSize)).slice();
    const extraIsize = this.inodeSize > GOOD_OLD_INODE_SIZE ? INODE.get(raw, 'extraIsize') : 0;
    if (GOOD_OLD_INODE_SIZE + extraIsize > this.inodeSize || extraIsize % 4 !== 0) throw corrupt(`inode ${ino} has a bad i_extra_isize ${extraIsize}`);
    const generation = INODE.get(raw, 'generation');
    let csumSeed = 0;
    if (this.metadataCsum) {
      csumSeed = crc32cRegister(crc32cRegister(this.csumSeed, le32(ino)), le32(generation));
      this.verifyInode(ino, raw, extraIsize, csumSeed);
    }
    const mode = INODE.get(raw, 'mode');
    if (mode === 0 || (INODE.get(raw, 'linksCount') === 0 && INODE.get(raw, 'dtime') !== 0)) throw corrupt(`inode ${ino} is not in use (a directory entry points to a deleted inode)`);
    const fits = (name: keyof typeof INODE.fields) => INODE.fields[name][0] + INODE.fields[name][1].size <= GOOD_OLD_INODE_SIZE + extraIsize;
    const extra = (name: 'atimeExtra' | 'mtimeExtra' | 'ctimeExtra' | 'crtimeExtra') => (fits(name) ? INODE.get(raw, name) : undefined);
    const isReg = (mode & S_IFMT) === S_IFREG;
    const sizeHigh = isReg || this.incompat & INCOMPAT.largedir ? INODE.get(raw, 'sizeHigh') : 0;
    const size = INODE.get(raw, 'sizeLo') + sizeHigh * 2 ** 32;
    if (!Number.isSafeInteger(size)) throw corrupt(`inode ${ino} has size ${size}`);
    const at = decodeTime(INODE.get(raw, 'atime'), extra('atimeExtra'));
    const mt = decodeTime(INODE.get(raw, 'mtime'), extra('mtimeExtra'));
    const ct = decodeTime(INODE.get(raw, 'ctime'), extra('ctimeExtra'));
    const cr = fits('crtime') ? decodeTime(INODE.get(raw, 'crtime'), extra('crtimeExtra')) : undefined;
    return {
      ino, mode, flags: INODE.get(raw, 'flags'), size, generation, raw, extraIsize, csumSeed,
      iBlock: raw.subarray(I_BLOCK_OFFSET, I_BLOCK_OFFSET + I_BLOCK_SIZE),
      times: { atime: at, mtime: mt, ctime: ct, ...(cr ? { crtime: cr } : {}) },
    } satisfies ExtInode;
  }

  /** §4.6: crc32c over the whole inode with its checksum fields zeroed, seeded by inode number and generation. */
  private verifyInode(ino: number, raw: Uint8Array, extraIsize: number, seed: number): void {
    const copy = raw.slice();
    copy[INODE.fields.checksumLo[0]] = copy[INODE.fields.checksumLo[0] + 1] = 0;
    const hasHi = extraIsize >= INODE.fields.checksumHi[0] + 2 - GOOD_OLD_INODE_SIZE;
    if (hasHi) copy[INODE.fields.checksumHi[0]] = copy[INODE.fields.checksumHi[0] + 1] = 0;
    let want = crc32cRegister(seed, copy);
    let have = INODE.get(raw, 'checksumLo');
    if (hasHi) have = (have | (INODE.get(raw, 'checksumHi') << 16)) >>> 0;
    else want &= 0xffff;
    if (want !== have) throw corrupt(`inode ${ino} checksum does not match`);
  }

  private statOf(inode: ExtInode): FileStat {
    const { raw, mode } = inode;
    const kind = kindOfMode(mode);
    if (!kind) throw corrupt(`inode ${inode.ino} has an unknown file type 0${(mode & S_IFMT).toString(8)}`);
    const t = (ts: Timestamp) => ts.sec + ts.nsec / 1e9;
    let blocks = INODE.get(raw, 'blocksLo') + (this.has(RO_COMPAT.hugeFile) ? INODE.get(raw, 'blocksHigh') * 2 ** 32 : 0);
    if (this.has(RO_COMPAT.hugeFile) && inode.flags & INODE_FLAG.hugeFile) blocks *= this.blockSize / 512;
    // As the kernel's ext4_file_getattr: a regular file with inline data reports its sectors, so tools do not take it for a hole.
    if (kind === 'file' && this.isInline(inode)) blocks += Math.ceil(inode.size / 512);
    const stat: FileStat = {
      ino: BigInt(inode.ino),
      kind,
      perm: mode & 0o7777,
      uid: INODE.get(raw, 'uidLo') + INODE.get(raw, 'uidHigh') * 65536,
      gid: INODE.get(raw, 'gidLo') + INODE.get(raw, 'gidHigh') * 65536,
      size: inode.size,
      nlink: INODE.get(raw, 'linksCount'),
      atime: t(inode.times.atime),
      mtime: t(inode.times.mtime),
      ctime: t(inode.times.ctime),
      blocks,
    };
    if (inode.times.crtime) stat.birthtime = t(inode.times.crtime);
    if (kind === 'char' || kind === 'block') {
      // §4.6 "i_block": the old 16-bit encoding in i_block[0], or the new one in i_block[1].
      const old = u32le.read(inode.iBlock, 0);
      stat.rdev = old ? { major: (old >>> 8) & 0xff, minor: old & 0xff } : decodeDev(u32le.read(inode.iBlock, 4));
    }
    return stat;
  }

  async node(ino: number): Promise<ExtNode> {
    const inode = await this.readInode(ino);
    return new ExtNode(inode, this.statOf(inode));
  }

  // ---- Block maps (§4.7) ----

  /** The runs covering logical blocks [first, first + count) of a file, holes included, in order. */
  private async runs(node: ExtNode, first: number, count: number): Promise<BlockRun[]> {
    const { inode } = node;
    if (inode.flags & INODE_FLAG.extents) return this.extentRuns(await this.extentsOf(node), first, count);
    if (this.incompat & INCOMPAT.extents && inode.flags & INODE_FLAG.inlineData) throw corrupt(`inode ${inode.ino} has inline data, not blocks`);
    return this.indirectRuns(inode, first, count);
  }

  private extentRuns(extents: Extent[], first: number, count: number): BlockRun[] {
    const out: BlockRun[] = [];
    const end = first + count;
    // The last extent starting at or before `first`.
    let lo = 0, hi = extents.length - 1, i = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (extents[mid]!.lblk <= first) { i = mid; lo = mid + 1; } else hi = mid - 1;
    }
    let at = first;
    for (; i < extents.length && at < end; i++) {
      const e = extents[i]!;
      if (e.lblk + e.len <= at) continue;
      if (e.lblk >= end) break;
      if (e.lblk > at) { out.push({ lblk: at, len: e.lblk - at, pblk: null }); at = e.lblk; }
      const stop = Math.min(end, e.lblk + e.len);
      out.push({ lblk: at, len: stop - at, pblk: e.init ? e.pblk + (at - e.lblk) : null });
      at = stop;
    }
    if (at < end) out.push({ lblk: at, len: end - at, pblk: null });
    return out;
  }

  /** Every leaf extent of a file, loaded once: the tree is checked for depth, order, loops and bounds (§4.7.1). */
  private async extentsOf(node: ExtNode): Promise<Extent[]> {
    if (node.extents) return node.extents;
    const { inode } = node;
    const extents: Extent[] = [];
    const seen = new Set<number>();
    let allocated = 0;
    const walk = async (b: Uint8Array, expectDepth: number | null, lo: number, hi: number, block: number | null): Promise<void> => {
      if (EXTENT_HEADER.get(b, 'magic') !== EXTENT_MAGIC) throw corrupt(`inode ${inode.ino}: bad extent header magic${block !== null ? ` in block ${block}` : ''}`);
      const entries = EXTENT_HEADER.get(b, 'entries');
      const max = EXTENT_HEADER.get(b, 'max');
      const depth = EXTENT_HEADER.get(b, 'depth');
      const capacity = Math.floor((b.length - 12) / EXTENT_ENTRY_SIZE);
      if (max > capacity || entries > max) throw corrupt(`inode ${inode.ino}: extent node with ${entries} of ${max} entries (room for ${capacity})`);
      if (depth > EXTENT_MAX_DEPTH || (expectDepth !== null && depth !== expectDepth)) throw corrupt(`inode ${inode.ino}: extent tree depth ${depth}${expectDepth !== null ? `, expected ${expectDepth}` : ''}`);
      let prev = -1;
      for (let k = 0; k < entries; k++) {
        const at = 12 + k * EXTENT_ENTRY_SIZE;
        const lblk = EXTENT_LEAF.get(b, 'block', at);
        if (lblk <= prev || lblk < lo || lblk >= hi) throw corrupt(`inode ${inode.ino}: extent tree entries out of order`);
        prev = lblk;
        if (depth === 0) {
          const raw = EXTENT_LEAF.get(b, 'len', at);
          const init = raw <= EXTENT_INIT_MAX_LEN;
          const len = init ? raw : raw - EXTENT_INIT_MAX_LEN;
          const pblk = EXTENT_LEAF.get(b, 'startLo', at) + EXTENT_LEAF.get(b, 'startHi', at) * 2 ** 32;
          const last = extents[extents.length - 1];
          if (len === 0 || (last && last.lblk + last.len > lblk) || lblk + len > hi) throw corrupt(`inode ${inode.ino}: overlapping or empty extents`);
          this.checkBlocks(pblk, len, `inode ${inode.ino}: extent`);
          allocated += len;
          if (allocated > this.blocksCount) throw corrupt(`inode ${inode.ino} maps more blocks than the filesystem has`);
          if (extents.length >= MAX_EXTENTS) throw new DiskError('ELIMIT', `ext: inode ${inode.ino} has more than ${MAX_EXTENTS} extents`);
          extents.push({ lblk, len, pblk, init });
        } else {
          const child = EXTENT_INDEX.get(b, 'leafLo', at) + EXTENT_INDEX.get(b, 'leafHi', at) * 2 ** 32;
          const next = k + 1 < entries ? EXTENT_INDEX.get(b, 'block', at + EXTENT_ENTRY_SIZE) : hi;
          this.checkBlocks(child, 1, `inode ${inode.ino}: extent tree`);
          if (seen.has(child)) throw new DiskError('ELOOP', `ext: inode ${inode.ino}: extent tree block ${child} is referenced twice`);
          seen.add(child);
          if (seen.size > MAX_EXTENT_TREE_BLOCKS) throw new DiskError('ELIMIT', `ext: inode ${inode.ino} has more than ${MAX_EXTENT_TREE_BLOCKS} extent tree blocks`);
          const cb = await this.meta(child, 0, this.blockSize);
          this.verifyExtentBlock(inode, child, cb);
          await walk(cb, depth - 1, lblk, next, child);
        }
      }
    };
    await walk(inode.iBlock, null, 0, 2 ** 32, null);
    node.extents = extents;
    return extents;
  }

  /** §4.7.4: the tail after eh_max entries holds crc32c of the block up to it, with the inode's seed. */
  private verifyExtentBlock(inode: ExtInode, block: number, b: Uint8Array): void {
    if (!this.metadataCsum) return;
    const tail = 12 + EXTENT_HEADER.get(b, 'max') * EXTENT_ENTRY_SIZE;
    if (tail + 4 > b.length) throw corrupt(`inode ${inode.ino}: extent block ${block} has no room for its checksum`);
    if (crc32cRegister(inode.csumSeed, b.subarray(0, tail)) !== u32le.read(b, tail)) throw corrupt(`inode ${inode.ino}: extent block ${block} checksum does not match`);
  }

  /** Runs of an indirect block map (§4.7.3): 12 direct pointers, then single, double and triple indirect blocks. */
  private async indirectRuns(inode: ExtInode, first: number, count: number): Promise<BlockRun[]> {
    const per = this.blockSize / 4;
    const out: BlockRun[] = [];
    const push = (lblk: number, len: number, pblk: number | null) => {
      const last = out[out.length - 1];
      if (last && last.lblk + last.len === lblk && (last.pblk === null ? pblk === null : pblk === last.pblk + last.len)) last.len += len;
      else out.push({ lblk, len, pblk });
    };
    const pointer = (b: Uint8Array, i: number) => u32le.read(b, i * 4);
    const end = first + count;
    let at = first;
    while (at < end) {
      if (at < DIRECT_BLOCKS) {
        const p = pointer(inode.iBlock, at);
        if (p) this.checkBlocks(p, 1, `inode ${inode.ino}: data`);
        push(at, 1, p || null);
        at++;
        continue;
      }
      // Which tree (single, double, triple) and where in it.
      let rel = at - DIRECT_BLOCKS;
      let levels = 1;
      let span = per;
      while (rel >= span) {
        rel -= span;
        levels++;
        if (levels > 3) throw corrupt(`inode ${inode.ino}: block ${at} is past the indirect map`);
        span *= per;
      }
      let ptr = pointer(inode.iBlock, DIRECT_BLOCKS + levels - 1);
      let sub = span;
      let done = false;
      for (let level = levels; level >= 1; level--) {
        sub /= per;
        if (ptr === 0) {
          // A missing indirect block: everything below it is a hole.
          const hole = Math.min(end - at, sub * per - (rel % (sub * per)));
          push(at, hole, null);
          at += hole;
          done = true;
          break;
        }
        this.checkBlocks(ptr, 1, `inode ${inode.ino}: indirect`);
        const b = await this.meta(ptr, 0, this.blockSize);
        const idx = Math.floor(rel / sub) % per;
        if (level === 1) {
          // The leaf pointer block: take every pointer of it that the request covers.
          for (let i = idx; i < per && at < end; i++, at++) {
            const p = pointer(b, i);
            if (p) this.checkBlocks(p, 1, `inode ${inode.ino}: data`);
            push(at, 1, p || null);
          }
          done = true;
          break;
        }
        ptr = pointer(b, idx);
        rel %= sub;
      }
      if (!done) throw corrupt(`inode ${inode.ino}: indirect map walk failed`);
    }
    return out;
  }

  // ---- Inline data (§4.6.1, §4.9.2) ----

  /** The system.data in-inode attribute: inline data past the 60 bytes of i_block. */
  private inlineXattr(inode: ExtInode): Uint8Array {
    const { raw } = inode;
    const start = GOOD_OLD_INODE_SIZE + inode.extraIsize;
    if (start + 4 > raw.length || u32le.read(raw, start) !== XATTR_MAGIC) return new Uint8Array(0);
    const base = start + 4;
    let at = base;
    while (at + 4 <= raw.length && u32le.read(raw, at) !== 0) {
      if (at + XATTR_ENTRY_SIZE > raw.length) throw corrupt(`inode ${inode.ino}: truncated extended attribute entry`);
      const nameLen = XATTR_ENTRY.get(raw, 'nameLen', at);
      const name = raw.subarray(at + XATTR_ENTRY_SIZE, at + XATTR_ENTRY_SIZE + nameLen);
      if (XATTR_ENTRY.get(raw, 'nameIndex', at) === XATTR_INDEX_SYSTEM && nameLen === 4 && String.fromCharCode(...name) === 'data') {
        const offs = XATTR_ENTRY.get(raw, 'valueOffs', at);
        const size = XATTR_ENTRY.get(raw, 'valueSize', at);
        if (XATTR_ENTRY.get(raw, 'valueInum', at) !== 0 || base + offs + size > raw.length) throw corrupt(`inode ${inode.ino}: inline data attribute out of bounds`);
        return raw.subarray(base + offs, base + offs + size);
      }
      at += (XATTR_ENTRY_SIZE + nameLen + 3) & ~3;
    }
    return new Uint8Array(0);
  }

  private inlineData(inode: ExtInode): Uint8Array {
    const more = this.inlineXattr(inode);
    const all = new Uint8Array(I_BLOCK_SIZE + more.length);
    all.set(inode.iBlock);
    all.set(more, I_BLOCK_SIZE);
    if (inode.size > all.length) throw corrupt(`inode ${inode.ino}: inline data of ${inode.size} bytes does not fit in the inode`);
    return all.subarray(0, inode.size);
  }

  private isInline(inode: ExtInode): boolean {
    return (this.incompat & INCOMPAT.inlineData) !== 0 && (inode.flags & INODE_FLAG.inlineData) !== 0;
  }

  // ---- Filesystem interface ----

  async root(): Promise<ExtNode> {
    const n = await this.node(ROOT_INO);
    if (n.stat.kind !== 'directory') throw corrupt('the root inode is not a directory');
    return n;
  }

  async *readdir(dir: FsNode): AsyncIterable<DirEntry> {
    const filetype = (this.incompat & INCOMPAT.filetype) !== 0;
    for await (const region of this.directoryRegions(this.asDirectory(dir))) {
      for (const e of this.rawEntries(region)) {
        const t = filetype ? DIRENT.get(region.bytes, 'fileType', e.at) : 0;
        yield { name: NAME_DECODER.decode(e.name), ino: BigInt(e.ino), kind: DIRENT_KIND[t] ?? 'unknown' };
      }
    }
  }

  /** The pieces of a directory that hold entries: its leaf blocks (checksums verified), or its inline data. */
  private async *directoryRegions(node: ExtNode): AsyncIterable<DirRegion> {
    const { inode } = node;
    if (this.isInline(inode)) {
      // §4.8.2: the parent's inode number, then entries in the rest of i_block and in system.data.
      yield { inode, bytes: inode.iBlock.subarray(INLINE_DIR_PARENT_SIZE), where: 'inline' };
      const more = this.inlineXattr(inode);
      if (more.length) yield { inode, bytes: more, where: 'inline' };
      return;
    }
    if (inode.size > MAX_DIRECTORY_BYTES) throw new DiskError('ELIMIT', `ext: directory inode ${inode.ino} is ${inode.size} bytes`);
    const bs = this.blockSize;
    const blocks = Math.ceil(inode.size / bs);
    const htree = (inode.flags & INODE_FLAG.index) !== 0;
    // Map in pieces so a huge, mostly empty directory never builds a huge run list.
    for (let first = 0; first < blocks; first += 1024) {
      for (const run of await this.runs(node, first, Math.min(1024, blocks - first))) {
        if (run.pblk === null) continue;
        this.checkBlocks(run.pblk, run.len, `directory inode ${inode.ino}`);
        // Contiguous directory blocks are read together (one read per run piece, not per block).
        let piece: Uint8Array | undefined;
        let pieceStart = 0;
        for (let i = 0; i < run.len; i++) {
          const lblk = run.lblk + i;
          if (!piece || i - pieceStart >= piece.length / bs) {
            pieceStart = i;
            piece = new Uint8Array(Math.min(run.len - i, DIRECTORY_READ_BLOCKS) * bs);
            await this.device.read(piece, (run.pblk + i) * bs);
          }
          const b = piece.subarray((i - pieceStart) * bs, (i - pieceStart + 1) * bs);
          // htree index blocks (the root in block 0, interior nodes as one empty entry) hold no names (§4.8.4).
          const dxNode = htree && (lblk === 0 || (DIRENT.get(b, 'inode') === 0 && this.recLen(b, 0) === bs));
          if (this.metadataCsum && !dxNode) this.verifyDirBlock(inode, run.pblk + i, b);
          yield { inode, bytes: b, where: run.pblk + i };
        }
      }
    }
  }

  private recLen(b: Uint8Array, at: number): number {
    const len = DIRENT.get(b, 'recLen', at);
    // §4.8.1: with 64 KiB blocks, 65535 or 0 stands for a whole block; the low two bits extend the length.
    if (this.blockSize < 65536) return len;
    if (len === 65535 || len === 0) return 65536;
    return (len & 65532) | ((len & 3) << 16);
  }

  private verifyDirBlock(inode: ExtInode, block: number, b: Uint8Array): void {
    const tail = b.length - DIRENT_TAIL_SIZE;
    if (DIRENT.get(b, 'inode', tail) !== 0 || DIRENT.get(b, 'recLen', tail) !== DIRENT_TAIL_SIZE || DIRENT.get(b, 'nameLen', tail) !== 0 || DIRENT.get(b, 'fileType', tail) !== DIRENT_TAIL_FILETYPE) {
      throw corrupt(`directory inode ${inode.ino}: block ${block} has no checksum tail`);
    }
    if (crc32cRegister(inode.csumSeed, b.subarray(0, tail)) !== u32le.read(b, tail + 8)) throw corrupt(`directory inode ${inode.ino}: block ${block} checksum does not match`);
  }

  /** The live entries of a region, '.' and '..' left out, each checked against its block (§4.8.1). */
  private *rawEntries(region: DirRegion): Iterable<{ at: number; ino: number; name: Uint8Array }> {
    const { inode, bytes: b, where } = region;
    const filetype = (this.incompat & INCOMPAT.filetype) !== 0;
    let at = 0;
    while (at + DIRENT_HEADER <= b.length) {
      const ino = DIRENT.get(b, 'inode', at);
      const recLen = this.recLen(b, at);
      const nameLen = filetype ? DIRENT.get(b, 'nameLen', at) : DIRENT_NO_FILETYPE.get(b, 'nameLen', at);
      if (recLen < DIRENT_HEADER || recLen % 4 !== 0 || at + recLen > b.length || DIRENT_HEADER + nameLen > recLen) {
        throw corrupt(`directory inode ${inode.ino}: bad entry at offset ${at} of ${where === 'inline' ? 'its inline data' : `block ${where}`}`);
      }
      if (ino !== 0) {
        if (ino > this.inodesCount || nameLen === 0) throw corrupt(`directory inode ${inode.ino}: entry at offset ${at} names inode ${ino}`);
        const name = b.subarray(at + DIRENT_HEADER, at + DIRENT_HEADER + nameLen);
        const isDot = nameLen <= 2 && name[0] === 0x2e && (nameLen === 1 || name[1] === 0x2e);
        if (!isDot) yield { at, ino, name };
      }
      at += recLen;
    }
  }

  private asDirectory(dir: FsNode): ExtNode {
    if (!(dir instanceof ExtNode)) throw new DiskError('EINVAL', 'ext: not a node of this filesystem');
    if (dir.stat.kind !== 'directory') throw new DiskError('EINVAL', `ext: inode ${dir.inode.ino} is not a directory`);
    return dir;
  }

  /** A linear scan comparing bytes (htree lookup would read fewer blocks; the leaves are read in order instead). */
  async lookup(dir: FsNode, name: string): Promise<ExtNode | null> {
    const want = NAME_ENCODER.encode(name);
    for await (const region of this.directoryRegions(this.asDirectory(dir))) {
      for (const e of this.rawEntries(region)) {
        if (e.name.length === want.length && e.name.every((c, i) => c === want[i])) return this.node(e.ino);
      }
    }
    return null;
  }

  async open(_dir: FsNode, entry: DirEntry): Promise<ExtNode> {
    return this.node(Number(entry.ino));
  }

  async read(file: FsNode, buf: Uint8Array, offset: number): Promise<number> {
    if (!(file instanceof ExtNode)) throw new DiskError('EINVAL', 'ext: not a node of this filesystem');
    if (file.stat.kind !== 'file') throw new DiskError('EINVAL', `ext: inode ${file.inode.ino} is not a regular file`);
    return this.readBytes(file, buf, offset);
  }

  private async readBytes(file: ExtNode, buf: Uint8Array, offset: number): Promise<number> {
    const { inode } = file;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new DiskError('EINVAL', `ext: bad offset ${offset}`);
    const end = Math.min(inode.size, offset + buf.length);
    if (end <= offset) return 0;
    if (this.isInline(inode)) {
      buf.set(this.inlineData(inode).subarray(offset, end));
      return end - offset;
    }
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const runs = await this.runs(file, first, Math.ceil(end / bs) - first);
    const work: Promise<void>[] = [];
    for (const run of runs) {
      const from = Math.max(run.lblk * bs, offset);
      const to = Math.min((run.lblk + run.len) * bs, end);
      if (to <= from) continue;
      const dest = buf.subarray(from - offset, to - offset);
      if (run.pblk === null) dest.fill(0);
      else work.push(this.device.read(dest, run.pblk * bs + (from - run.lblk * bs)));
    }
    await settled(work);
    return end - offset;
  }

  async readlink(link: FsNode): Promise<string> {
    if (!(link instanceof ExtNode)) throw new DiskError('EINVAL', 'ext: not a node of this filesystem');
    const { inode, stat } = link;
    if (stat.kind !== 'symlink') throw new DiskError('EINVAL', `ext: inode ${inode.ino} is not a symbolic link`);
    if (inode.size > this.blockSize || inode.size > 4096) throw corrupt(`symlink inode ${inode.ino} is ${inode.size} bytes long`);
    let bytes: Uint8Array;
    if (this.isInline(inode)) bytes = this.inlineData(inode);
    else if (this.isFastSymlink(inode, stat)) {
      if (inode.size >= I_BLOCK_SIZE) throw corrupt(`fast symlink inode ${inode.ino} is ${inode.size} bytes long`);
      bytes = inode.iBlock.subarray(0, inode.size);
    } else {
      bytes = new Uint8Array(inode.size);
      await this.readBytes(link, bytes, 0);
    }
    return NAME_DECODER.decode(bytes);
  }

  /** The kernel's ext4_inode_is_fast_symlink: no blocks besides an extended attribute block. */
  private isFastSymlink(inode: ExtInode, stat: FileStat): boolean {
    if (inode.flags & INODE_FLAG.eaInode) return inode.size < I_BLOCK_SIZE;
    const acl = INODE.get(inode.raw, 'fileAclLo') + INODE.get(inode.raw, 'fileAclHigh') * 2 ** 32;
    const eaBlocks = acl ? this.blockSize / 512 : 0;
    return (stat.blocks ?? 0) - eaBlocks === 0;
  }
}

/** File names are bytes; they are shown as UTF-8 (invalid sequences as U+FFFD, as ls does with a UTF-8 locale). */
const NAME_DECODER = new TextDecoder('utf-8');
const NAME_ENCODER = new TextEncoder();

/** Open an ext2/3/4 filesystem (the registry's opener). */
export function openExt(device: BlockDevice, type?: string): Promise<ExtFilesystem> {
  return ExtFilesystem.open(device, type);
}

