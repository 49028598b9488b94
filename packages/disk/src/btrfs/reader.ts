/**
 * A read-only btrfs filesystem over a BlockDevice (one device: SINGLE and DUP chunks, and RAID0
 * over a single stripe; other RAID profiles are EUNSUPPORTED where a read meets them).
 *
 * Opening reads the primary superblock (checksum verified), maps logical addresses through
 * the superblock's sys_chunk_array and then the chunk tree, and finds the subvolume the
 * kernel mounts by default (the "default" entry of the root tree directory, else the top
 * level, id 5). Files are read from the subvolume's fs tree as the kernel shows them:
 * INODE_ITEM for the stat, DIR_INDEX for listings in creation order (DIR_ITEM, by name hash,
 * for lookups), EXTENT_DATA for the bytes (inline, regular, preallocated, holes; zlib, lzo
 * and zstd compression); a directory entry naming a subvolume shows that subvolume's root
 * directory. XATTR items are ignored; a log tree (fsync'd changes not yet in the trees) is a
 * warning, not replayed. Data checksums (the csum tree) are not verified.
 *
 * Every tree block is verified as the kernel does before use: its checksum, fsid, bytenr,
 * level, and keys — ascending, the first equal to the parent's pointer, none beyond the next
 * pointer — so a walk can neither loop nor visit a block twice under different keys; blocks
 * outside the device, huge counts and malformed items are DiskErrors.
 *
 * Inode numbers: the opened subvolume's are its own; a node in another subvolume gets
 * (subvolume id << 48) | inode (the kernel tells them apart by st_dev, which a FileStat
 * does not have), so hard-link detection and loop checks never mix two subvolumes up.
 */
import { Decompress } from 'fzstd';
import type { BlockDevice } from '../blockdev.js';
import { zlib } from '../builtins.js';
import { crc32cRegister } from '../crc32c.js';
import { DiskError } from '../errors.js';
import type { DirEntry, FileKind, FileStat, Filesystem, FsNode } from '../filesystem.js';
import { RecentDirectories } from '../fscache.js';
import { kindOfMode } from '../fsmode.js';
import { cString } from '../fsid/model.js';
import {
  BLOCK_GROUP_DUP, BLOCK_GROUP_PROFILES, BLOCK_GROUP_RAID0, BTRFS_FT, BTRFS_MAGIC, BTRFS_MAX_LEVEL, BTRFS_SUPER_INFO_OFFSET, BTRFS_SUPER_INFO_SIZE, CHUNK, CHUNK_ITEM_KEY,
  COMPRESS_LZO, COMPRESS_NONE, COMPRESS_ZLIB, COMPRESS_ZSTD, DIR_INDEX_KEY, DIR_ITEM, DIR_ITEM_KEY, DISK_KEY_SIZE, EXTENT_DATA_KEY,
  FILE_EXTENT, FILE_EXTENT_INLINE, FILE_EXTENT_INLINE_DATA_START, FILE_EXTENT_PREALLOC, FILE_EXTENT_REG, FIRST_CHUNK_TREE_OBJECTID,
  FIRST_FREE_OBJECTID, FS_TREE_OBJECTID, HEADER, INCOMPAT_METADATA_UUID, INCOMPAT_READABLE, INODE_ITEM, INODE_ITEM_KEY, INODE_REF,
  INODE_REF_KEY, ITEM, KEY_PTR, LAST_FREE_OBJECTID, ROOT_BACKREF_KEY, ROOT_ITEM, ROOT_ITEM_KEY, ROOT_REF, ROOT_REF_KEY, ROOT_TREE_DIR_OBJECTID,
  EMPTY_SUBVOL_DIR_OBJECTID,
  ROOT_TREE_OBJECTID, STRIPE, SUPERBLOCK,
} from './layout.js';
import { btrfsLzoDecompress } from './lzo.js';
import { checksumSize, verifyChecksum } from './checksum.js';

/** Extents of one file held in memory. */
export const MAX_EXTENTS = 1 << 20;
/** A compressed extent holds at most 128 KiB (BTRFS_MAX_UNCOMPRESSED); an inline one at most a sector. */
const MAX_UNCOMPRESSED = 128 << 10;
/** Tree blocks kept (16 KiB each by default: 8 MiB). */
const NODE_CACHE = 512;
/** Directories up to this many entries are listed once and kept among the recent ones. */
const CACHED_DIRECTORY_ENTRIES = 1 << 16;
/** Entries of one directory listed at all (as filesystems.ts's MAX_DIRECTORY_ENTRIES). */
const MAX_DIRECTORY_ENTRIES = 1 << 24;
/** Subvolumes nested in one another (a chain longer than this is a loop). */
const MAX_SUBVOLUME_DEPTH = 256;
/** Directories above one another inside a subvolume when its path is built. */
const MAX_PATH_DEPTH = 2048;

export interface Key { objectid: bigint; type: number; offset: bigint }
const MAX_OFFSET = 0xffffffffffffffffn;
const range = (objectid: bigint, type: number): [Key, Key] => [{ objectid, type, offset: 0n }, { objectid, type, offset: MAX_OFFSET }];

export function compareKeys(a: Key, b: Key): number {
  if (a.objectid !== b.objectid) return a.objectid < b.objectid ? -1 : 1;
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  return a.offset === b.offset ? 0 : a.offset < b.offset ? -1 : 1;
}
const keyString = (k: Key) => `(${k.objectid} ${k.type} ${k.offset})`;

interface Item { key: Key; data: Uint8Array }
/** A tree: its id (the objectid of its ROOT_ITEM), root block and level. */
interface Tree { id: bigint; bytenr: number; level: number }
interface Chunk { logical: number; length: number; physical: number; profile: string | undefined }

interface FileExtent {
  fileOffset: number;
  /** Bytes of the file it covers. */
  length: number;
  type: number;
  compression: number;
  diskBytenr: number;
  diskNumBytes: number;
  /** Where in the (decompressed) extent the file's bytes start. */
  offset: number;
  ramBytes: number;
  inline?: Uint8Array;
}

export interface BtrfsNode extends FsNode {
  readonly stat: FileStat;
  readonly tree: Tree;
  readonly objectid: bigint;
  extents?: FileExtent[];
}

/** A directory entry with where it points (an inode of the same tree, or a subvolume's root). */
interface BtrfsDirEntry extends DirEntry { location: Key }
interface ListedDirectory { entries: BtrfsDirEntry[]; byName: Map<string, BtrfsDirEntry> }

export interface Subvolume {
  id: bigint;
  /** The path from the top level, as `btrfs subvolume list` prints it ("root", "home", "var/lib/machines"). */
  path: string;
}

const corrupt = (m: string) => new DiskError('ECORRUPT', `btrfs: ${m}`);
const safe = (v: bigint, what: string): number => {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} ${v} is out of range`);
  return Number(v);
};
const utf8 = (b: Uint8Array) => new TextDecoder().decode(b);
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The state every view of one filesystem shares: device, geometry, chunk map, caches. */
class Volume {
  readonly nodes = new Map<number, Uint8Array>();
  readonly trees = new Map<bigint, Tree>();
  chunks: Chunk[] = [];
  /** The last compressed extent decompressed (reads of 64 KiB pieces would otherwise decompress each 128 KiB extent twice). */
  lastExtent?: { diskBytenr: number; data: Uint8Array };

  constructor(
    readonly device: BlockDevice,
    readonly sb: ReturnType<typeof SUPERBLOCK.decode>,
    readonly csumSize: number,
    readonly metadataFsid: Uint8Array,
  ) {}
}

export class Btrfs implements Filesystem {
  readonly type = 'btrfs';
  readonly warnings: string[];
  private readonly recent = new RecentDirectories<string, ListedDirectory>();

  private constructor(private readonly vol: Volume, readonly top: Tree, warnings: string[]) {
    this.warnings = warnings;
  }

  get device(): BlockDevice { return this.vol.device; }
  get sb(): ReturnType<typeof SUPERBLOCK.decode> { return this.vol.sb; }
  /** The label, as blkid reports it. */
  get label(): string { return cString(this.vol.sb.label); }
  /** The subvolume this view shows as its root. */
  get subvolumeId(): bigint { return this.top.id; }

  /** Open the filesystem at the subvolume the kernel mounts by default (or the one `subvolume` names: an id or a path from the top level). */
  static async open(device: BlockDevice, options: { subvolume?: bigint | string } = {}): Promise<Btrfs> {
    if (device.size < BTRFS_SUPER_INFO_OFFSET + BTRFS_SUPER_INFO_SIZE) throw new DiskError('EFORMAT', 'btrfs: device too small for a superblock');
    const b = new Uint8Array(BTRFS_SUPER_INFO_SIZE);
    await device.read(b, BTRFS_SUPER_INFO_OFFSET);
    const sb = SUPERBLOCK.decode(b);
    if (sb.magic !== BTRFS_MAGIC) throw new DiskError('EFORMAT', 'btrfs: no btrfs superblock');
    const csumSize = checksumSize(sb.csumType);
    verifyChecksum(sb.csumType, b, csumSize, 'superblock');
    if (sb.bytenr !== BigInt(BTRFS_SUPER_INFO_OFFSET)) throw corrupt(`the superblock says it is at byte ${sb.bytenr}`);
    const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
    if (!pow2(sb.sectorSize) || sb.sectorSize < 4096 || sb.sectorSize > 65536 || !pow2(sb.nodeSize) || sb.nodeSize < sb.sectorSize || sb.nodeSize > 65536) {
      throw corrupt(`sector size ${sb.sectorSize}, node size ${sb.nodeSize}`);
    }
    const unknown = sb.incompatFlags & ~INCOMPAT_READABLE;
    if (unknown) throw new DiskError('EUNSUPPORTED', `btrfs: incompatible features 0x${unknown.toString(16)} cannot be read`);
    if (sb.numDevices !== 1n) throw new DiskError('EUNSUPPORTED', `btrfs: the filesystem spans ${sb.numDevices} devices (only single-device filesystems are read)`);
    const metadataFsid = sb.incompatFlags & INCOMPAT_METADATA_UUID ? sb.metadataUuid : sb.fsid;
    const vol = new Volume(device, sb, csumSize, metadataFsid);
    const warnings: string[] = [];
    if (sb.logRoot !== 0n) warnings.push('the log tree needs replay (the filesystem was not cleanly unmounted; changes fsync\'d since the last commit are in it and are not shown)');
    const fs = new Btrfs(vol, { id: 0n, bytenr: 0, level: 0 }, warnings);
    await fs.loadChunks();
    const rootTree: Tree = { id: ROOT_TREE_OBJECTID, bytenr: safe(sb.root, 'root tree address'), level: sb.rootLevel };
    if (rootTree.level >= BTRFS_MAX_LEVEL) throw corrupt(`root tree level ${rootTree.level}`);
    vol.trees.set(ROOT_TREE_OBJECTID, rootTree);
    let id: bigint;
    if (typeof options.subvolume === 'bigint') id = options.subvolume;
    else if (typeof options.subvolume === 'string') {
      const path = options.subvolume.split('/').filter(Boolean).join('/');
      const found = path === '' ? { id: FS_TREE_OBJECTID } : (await fs.subvolumes()).find((s) => s.path === path);
      if (!found) throw new DiskError('ENOENT', `btrfs: no subvolume ${options.subvolume}`);
      id = found.id;
    } else id = await fs.defaultSubvolume();
    return new Btrfs(vol, await fs.tree(id), warnings);
  }

  /** The same filesystem showing another subvolume as its root (sharing this one's caches). */
  async atSubvolume(id: bigint): Promise<Btrfs> {
    return new Btrfs(this.vol, await this.tree(id), this.warnings);
  }

  /** Every other subvolume as a root of its own (for inspection: an operating system may live in any). */
  async subvolumeViews(): Promise<Btrfs[]> {
    const out: Btrfs[] = [];
    const ids = [FS_TREE_OBJECTID, ...(await this.subvolumes()).map((s) => s.id)];
    for (const id of ids) if (id !== this.top.id) out.push(await this.atSubvolume(id));
    return out;
  }

  /** The id of the subvolume mounted by default: the root tree directory's "default" entry, else the top level. */
  private async defaultSubvolume(): Promise<bigint> {
    const root = await this.tree(ROOT_TREE_OBJECTID);
    const entry = await this.dirItem(root, ROOT_TREE_DIR_OBJECTID, 'default');
    return entry ? entry.location.objectid : FS_TREE_OBJECTID;
  }

  /** Every subvolume and snapshot but the top level, by id, with its path as `btrfs subvolume list` prints it. */
  async subvolumes(): Promise<Subvolume[]> {
    const root = await this.tree(ROOT_TREE_OBJECTID);
    const parents = new Map<bigint, { parent: bigint; dirid: bigint; name: string }>();
    for await (const item of this.items(root, { objectid: FIRST_FREE_OBJECTID, type: 0, offset: 0n }, { objectid: LAST_FREE_OBJECTID, type: 255, offset: MAX_OFFSET })) {
      if (item.key.type !== ROOT_BACKREF_KEY) continue;
      const ref = ROOT_REF.decode(item.data);
      if (ROOT_REF.size + ref.nameLen > item.data.length) throw corrupt(`root backref ${keyString(item.key)} runs past its item`);
      parents.set(item.key.objectid, { parent: item.key.offset, dirid: ref.dirid, name: utf8(item.data.subarray(ROOT_REF.size, ROOT_REF.size + ref.nameLen)) });
    }
    const paths = new Map<bigint, string>([[FS_TREE_OBJECTID, '']]);
    const pathOf = async (id: bigint, depth: number): Promise<string> => {
      const known = paths.get(id);
      if (known !== undefined) return known;
      const ref = parents.get(id);
      if (!ref) throw corrupt(`subvolume ${id} has no parent`);
      if (depth > MAX_SUBVOLUME_DEPTH) throw new DiskError('ELOOP', `btrfs: subvolume ${id} is nested in itself`);
      const parentPath = await pathOf(ref.parent, depth + 1);
      const dir = await this.directoryPath(await this.tree(ref.parent), ref.dirid);
      const path = [parentPath, dir, ref.name].filter(Boolean).join('/');
      paths.set(id, path);
      return path;
    };
    const out: Subvolume[] = [];
    for (const id of [...parents.keys()].sort((a, b) => (a < b ? -1 : 1))) out.push({ id, path: await pathOf(id, 0) });
    return out;
  }

  /** The path of directory `ino` from its tree's root directory, through INODE_REF items ("" for the root). */
  private async directoryPath(tree: Tree, ino: bigint): Promise<string> {
    const names: string[] = [];
    for (let depth = 0; ino !== FIRST_FREE_OBJECTID; depth++) {
      if (depth > MAX_PATH_DEPTH) throw new DiskError('ELOOP', `btrfs: directory ${ino} of tree ${tree.id} is its own ancestor`);
      const [from, to] = range(ino, INODE_REF_KEY);
      let ref: Item | undefined;
      for await (const item of this.items(tree, from, to)) { ref = item; break; }
      if (!ref) throw corrupt(`directory ${ino} of tree ${tree.id} has no INODE_REF`);
      const r = INODE_REF.decode(ref.data);
      if (INODE_REF.size + r.nameLen > ref.data.length) throw corrupt(`INODE_REF ${keyString(ref.key)} runs past its item`);
      names.push(utf8(ref.data.subarray(INODE_REF.size, INODE_REF.size + r.nameLen)));
      ino = ref.key.offset;
    }
    return names.reverse().join('/');
  }

  async root(): Promise<BtrfsNode> {
    return this.subvolumeRoot(this.top);
  }

  async *readdir(dir: FsNode): AsyncIterable<DirEntry> {
    yield* (await this.listed(asBtrfs(dir))).entries;
  }

  async lookup(dir: FsNode, name: string): Promise<BtrfsNode | null> {
    const d = asBtrfs(dir);
    if (d.stat.kind !== 'directory') throw new DiskError('EINVAL', 'btrfs: not a directory');
    const cached = this.recent.get(dirKey(d));
    const entry = cached ? cached.byName.get(name) : await this.dirItem(d.tree, d.objectid, name);
    return entry ? this.locate(d, entry.location, name) : null;
  }

  async open(dir: FsNode, entry: DirEntry): Promise<BtrfsNode> {
    const location = (entry as Partial<BtrfsDirEntry>).location;
    if (location) return this.locate(asBtrfs(dir), location, entry.name);
    const node = await this.lookup(dir, entry.name);
    if (!node) throw corrupt(`${entry.name}: listed in its directory but not found there`);
    return node;
  }

  async read(file: FsNode, buf: Uint8Array, offset: number): Promise<number> {
    const f = asBtrfs(file);
    if (f.stat.kind !== 'file') throw new DiskError('EINVAL', 'btrfs: not a regular file');
    const n = Math.max(0, Math.min(buf.length, f.stat.size - offset));
    if (n > 0) await this.readData(f, buf.subarray(0, n), offset);
    return n;
  }

  async readlink(link: FsNode): Promise<string> {
    const l = asBtrfs(link);
    if (l.stat.kind !== 'symlink') throw new DiskError('EINVAL', 'btrfs: not a symbolic link');
    // The target is the symlink's data: one inline extent.
    if (l.stat.size <= 0 || l.stat.size > 4095) throw corrupt(`symlink inode ${l.objectid} has length ${l.stat.size}`);
    const b = new Uint8Array(l.stat.size);
    await this.readData(l, b, 0);
    return utf8(b);
  }

  // -------------------------------------------------------------------------------------------
  // Logical addresses and tree blocks

  /** The chunk map: the superblock's bootstrap chunks, then every CHUNK_ITEM of the chunk tree. */
  private async loadChunks(): Promise<void> {
    const sb = this.vol.sb;
    const array = sb.sysChunkArray;
    if (sb.sysChunkArraySize > array.length) throw corrupt(`sys_chunk_array of ${sb.sysChunkArraySize} bytes`);
    const chunks = new Map<number, Chunk>();
    for (let at = 0; at < sb.sysChunkArraySize; ) {
      if (at + DISK_KEY_SIZE + CHUNK.size > sb.sysChunkArraySize) throw corrupt('sys_chunk_array ends inside a chunk');
      const key = decodeKey(array, at);
      if (key.type !== CHUNK_ITEM_KEY) throw corrupt(`sys_chunk_array holds an item of type ${key.type}`);
      const chunk = this.decodeChunk(key, array.subarray(at + DISK_KEY_SIZE, sb.sysChunkArraySize));
      chunks.set(chunk.logical, chunk.chunk);
      at += DISK_KEY_SIZE + chunk.size;
    }
    this.vol.chunks = sortChunks([...chunks.values()]);
    const chunkRoot: Tree = { id: 3n, bytenr: safe(sb.chunkRoot, 'chunk root address'), level: sb.chunkRootLevel };
    if (chunkRoot.level >= BTRFS_MAX_LEVEL) throw corrupt(`chunk tree level ${chunkRoot.level}`);
    const [from, to] = range(FIRST_CHUNK_TREE_OBJECTID, CHUNK_ITEM_KEY);
    for await (const item of this.items(chunkRoot, from, to)) {
      if (chunks.size >= MAX_EXTENTS) throw new DiskError('ELIMIT', `btrfs: more than ${MAX_EXTENTS} chunks`);
      const chunk = this.decodeChunk(item.key, item.data);
      chunks.set(chunk.logical, chunk.chunk);
    }
    this.vol.chunks = sortChunks([...chunks.values()]);
  }

  private decodeChunk(key: Key, b: Uint8Array): { logical: number; chunk: Chunk; size: number } {
    const c = CHUNK.decode(b);
    const size = CHUNK.size + c.numStripes * STRIPE.size;
    if (c.numStripes === 0 || size > b.length) throw corrupt(`chunk at ${key.offset} has ${c.numStripes} stripes in ${b.length} bytes`);
    const logical = safe(key.offset, 'chunk address');
    const length = safe(c.length, 'chunk length');
    if (length === 0) throw corrupt(`chunk at ${logical} is empty`);
    // RAID0 over one stripe (mkfs.btrfs -d raid0 on one device) maps linearly, as SINGLE does.
    const profile = c.type & BLOCK_GROUP_RAID0 && c.numStripes === 1 ? undefined : BLOCK_GROUP_PROFILES.find(([bit]) => c.type & bit)?.[1];
    // SINGLE has one stripe, DUP two on this device holding the same bytes: either serves.
    let physical = -1;
    for (let i = 0; i < c.numStripes && physical < 0; i++) {
      const s = STRIPE.decode(b, CHUNK.size + i * STRIPE.size);
      if (s.devid === this.vol.sb.devid) physical = safe(s.offset, 'stripe offset');
    }
    if (physical < 0) throw corrupt(`chunk at ${logical} has no stripe on this device`);
    if (!profile && c.numStripes > (c.type & BLOCK_GROUP_DUP ? 2 : 1)) throw corrupt(`chunk at ${logical} has ${c.numStripes} stripes`);
    return { logical, chunk: { logical, length, physical, profile }, size };
  }

  /** The device byte of `length` logical bytes at `logical` (all in one chunk). */
  private physical(logical: number, length: number, what: string): number {
    const chunks = this.vol.chunks;
    let lo = 0;
    for (let hi = chunks.length; lo < hi; ) {
      const mid = (lo + hi) >> 1;
      if (chunks[mid]!.logical + chunks[mid]!.length <= logical) lo = mid + 1;
      else hi = mid;
    }
    const c = chunks[lo];
    if (!c || c.logical > logical || logical + length > c.logical + c.length) throw corrupt(`${what}: logical address ${logical} is in no chunk`);
    if (c.profile) throw new DiskError('EUNSUPPORTED', `btrfs: ${what} is in a ${c.profile} chunk (only SINGLE and DUP are read)`);
    const pos = c.physical + (logical - c.logical);
    if (pos + length > this.vol.device.size) throw corrupt(`${what} at byte ${pos} (${length} bytes) lies outside the device (${this.vol.device.size} bytes)`);
    return pos;
  }

  /** A tree block, verified (checksum, fsid, address, level); cached. */
  private async block(logical: number, level: number, tree: bigint): Promise<Uint8Array> {
    const vol = this.vol;
    let b = vol.nodes.get(logical);
    if (b) {
      vol.nodes.delete(logical);
      vol.nodes.set(logical, b);
    } else {
      const size = vol.sb.nodeSize;
      if (logical % vol.sb.sectorSize !== 0) throw corrupt(`tree block address ${logical} is not sector-aligned`);
      b = new Uint8Array(size);
      await vol.device.read(b, this.physical(logical, size, `tree block ${logical}`));
      verifyChecksum(vol.sb.csumType, b, vol.csumSize, `tree block ${logical} of tree ${tree}`);
      const h = HEADER.decode(b);
      if (h.bytenr !== BigInt(logical)) throw corrupt(`tree block ${logical} says it is at ${h.bytenr}`);
      if (!sameBytes(h.fsid, vol.metadataFsid)) throw corrupt(`tree block ${logical} belongs to another filesystem`);
      if (vol.nodes.size >= NODE_CACHE) vol.nodes.delete(vol.nodes.keys().next().value as number);
      vol.nodes.set(logical, b);
    }
    const level0 = HEADER.get(b, 'level');
    if (level0 !== level) throw corrupt(`tree block ${logical} of tree ${tree} has level ${level0}, ${level} expected`);
    return b;
  }

  /**
   * The items with keys in [from, to] in key order. Each block's keys are checked: ascending,
   * the first one the parent's pointer key, all below the next pointer's key — so blocks
   * visited are distinct and the walk ends.
   */
  async *items(tree: Tree, from: Key, to: Key): AsyncIterable<Item> {
    const nodeSize = this.vol.sb.nodeSize;
    const self = this;
    async function* visit(logical: number, level: number, first: Key | null, next: Key | null): AsyncIterable<Item> {
      const b = await self.block(logical, level, tree.id);
      const n = HEADER.get(b, 'nritems');
      const entrySize = level === 0 ? ITEM.size : KEY_PTR.size;
      if (HEADER.size + n * entrySize > nodeSize) throw corrupt(`tree block ${logical} claims ${n} items`);
      if (n === 0) {
        if (first !== null) throw corrupt(`tree block ${logical} of tree ${tree.id} is empty`);
        return;
      }
      const keys: Key[] = [];
      for (let i = 0; i < n; i++) {
        const k = decodeKey(b, HEADER.size + i * entrySize);
        if (i === 0 ? first !== null && compareKeys(k, first) !== 0 : compareKeys(keys[i - 1]!, k) >= 0) {
          throw corrupt(`tree block ${logical} of tree ${tree.id}: key ${keyString(k)} is out of order`);
        }
        keys.push(k);
      }
      if (next !== null && compareKeys(keys[n - 1]!, next) >= 0) throw corrupt(`tree block ${logical} of tree ${tree.id}: key ${keyString(keys[n - 1]!)} belongs to the next block`);
      if (level === 0) {
        for (let i = 0; i < n; i++) {
          const k = keys[i]!;
          if (compareKeys(k, from) < 0) continue;
          if (compareKeys(k, to) > 0) return;
          const at = HEADER.size + i * ITEM.size;
          const off = ITEM.get(b, 'dataOffset', at);
          const size = ITEM.get(b, 'dataSize', at);
          const start = HEADER.size + off;
          if (off < n * ITEM.size || start + size > nodeSize) throw corrupt(`tree block ${logical}: item ${keyString(k)} lies outside its block`);
          yield { key: k, data: b.subarray(start, start + size) };
        }
        return;
      }
      for (let i = 0; i < n; i++) {
        const upper = i + 1 < n ? keys[i + 1]! : next;
        if (upper !== null && compareKeys(upper, from) <= 0) continue;
        if (compareKeys(keys[i]!, to) > 0) return;
        const child = safe(KEY_PTR.get(b, 'blockptr', HEADER.size + i * KEY_PTR.size), 'block pointer');
        yield* visit(child, level - 1, keys[i]!, upper);
      }
    }
    yield* visit(tree.bytenr, tree.level, null, null);
  }

  /** A tree by its id (the root tree's ROOT_ITEMs; for a snapshot, the latest). */
  private async tree(id: bigint): Promise<Tree> {
    const known = this.vol.trees.get(id);
    if (known) return known;
    let item: Item | undefined;
    const [from, to] = range(id, ROOT_ITEM_KEY);
    for await (const i of this.items(await this.tree(ROOT_TREE_OBJECTID), from, to)) item = i;
    if (!item) throw new DiskError('ENOENT', `btrfs: no subvolume or tree ${id}`);
    if (item.data.length < ROOT_ITEM.size) throw corrupt(`ROOT_ITEM of tree ${id} is ${item.data.length} bytes`);
    const r = ROOT_ITEM.decode(item.data);
    if (r.level >= BTRFS_MAX_LEVEL) throw corrupt(`tree ${id} has level ${r.level}`);
    const tree = { id, bytenr: safe(r.bytenr, `tree ${id} address`), level: r.level };
    this.vol.trees.set(id, tree);
    return tree;
  }

  // -------------------------------------------------------------------------------------------
  // Inodes and directories

  private async subvolumeRoot(tree: Tree): Promise<BtrfsNode> {
    const root = await this.inode(tree, FIRST_FREE_OBJECTID);
    if (root.stat.kind !== 'directory') throw corrupt(`the root of subvolume ${tree.id} is not a directory`);
    return root;
  }

  /** The node the entry `name` of directory `dir` names by its location. */
  private async locate(dir: BtrfsNode, location: Key, name: string): Promise<BtrfsNode> {
    if (location.type === ROOT_ITEM_KEY) {
      // A subvolume is shown where its ROOT_REF says it lives; a snapshot's copy of the entry
      // of a subvolume nested in the original is an empty directory (the kernel's new_simple_dir).
      if (!(await this.rootRef(dir.tree.id, location.objectid, dir.objectid, name))) return this.emptyDirectory(dir, location.objectid);
      return this.subvolumeRoot(await this.tree(location.objectid));
    }
    if (location.type !== INODE_ITEM_KEY) throw corrupt(`a directory entry points to an item of type ${location.type}`);
    return this.inode(dir.tree, location.objectid);
  }

  /** Does subvolume `parent` hold subvolume `child` as entry `name` of directory `dirid` (a ROOT_REF item)? */
  private async rootRef(parent: bigint, child: bigint, dirid: bigint, name: string): Promise<boolean> {
    const key = { objectid: parent, type: ROOT_REF_KEY, offset: child };
    for await (const item of this.items(await this.tree(ROOT_TREE_OBJECTID), key, key)) {
      const ref = ROOT_REF.decode(item.data);
      if (ROOT_REF.size + ref.nameLen > item.data.length) throw corrupt(`root ref ${keyString(item.key)} runs past its item`);
      return ref.dirid === dirid && utf8(item.data.subarray(ROOT_REF.size, ROOT_REF.size + ref.nameLen)) === name;
    }
    return false;
  }

  /** The empty directory the kernel shows in place of a subvolume that is not there (inode 2, BTRFS_EMPTY_SUBVOL_DIR_OBJECTID). */
  private emptyDirectory(parent: BtrfsNode, subvolume: bigint): BtrfsNode {
    const p = parent.stat;
    const stat: FileStat = {
      ino: (subvolume << 48n) | EMPTY_SUBVOL_DIR_OBJECTID, kind: 'directory', perm: 0o755, uid: 0, gid: 0, size: 0, nlink: 1,
      atime: p.atime, mtime: p.mtime, ctime: p.ctime, blocks: 0,
    };
    // Objectid 2 holds no items in any tree: it lists as empty.
    return { stat, tree: parent.tree, objectid: EMPTY_SUBVOL_DIR_OBJECTID };
  }

  private async inode(tree: Tree, objectid: bigint): Promise<BtrfsNode> {
    const key = { objectid, type: INODE_ITEM_KEY, offset: 0n };
    let item: Item | undefined;
    for await (const i of this.items(tree, key, key)) item = i;
    if (!item) throw corrupt(`inode ${objectid} of tree ${tree.id} has no INODE_ITEM`);
    if (item.data.length < INODE_ITEM.size) throw corrupt(`INODE_ITEM of inode ${objectid} is ${item.data.length} bytes`);
    const i = INODE_ITEM.decode(item.data);
    const kind = kindOfMode(i.mode);
    if (!kind) throw corrupt(`inode ${objectid} has mode ${i.mode.toString(8)}`);
    const time = (sec: bigint, nsec: number) => Number(BigInt.asIntN(64, sec)) + nsec / 1e9;
    const rdev = Number(i.rdev & 0xffffffffn);
    const stat: FileStat = {
      ino: tree.id === this.top.id ? objectid : (tree.id << 48n) | objectid,
      kind,
      perm: i.mode & 0o7777,
      uid: i.uid,
      gid: i.gid,
      size: safe(i.size, `inode ${objectid} size`),
      nlink: i.nlink,
      atime: time(i.atimeSec, i.atimeNsec),
      mtime: time(i.mtimeSec, i.mtimeNsec),
      ctime: time(i.ctimeSec, i.ctimeNsec),
      birthtime: time(i.otimeSec, i.otimeNsec),
      // As the kernel's btrfs_getattr: the bytes allocated, rounded up to whole sectors.
      blocks: (Math.ceil(safe(i.nbytes, `inode ${objectid} byte count`) / this.vol.sb.sectorSize) * this.vol.sb.sectorSize) / 512,
      // The kernel's dev_t (MAJOR << 20 | MINOR), as btrfs_inode_rdev stores it.
      ...(kind === 'char' || kind === 'block' ? { rdev: { major: rdev >>> 20, minor: rdev & 0xfffff } } : {}),
    };
    return { stat, tree, objectid };
  }

  /** A directory's DIR_INDEX entries (creation order), listed once while it is among the recent ones. */
  private async listed(d: BtrfsNode): Promise<ListedDirectory> {
    if (d.stat.kind !== 'directory') throw new DiskError('EINVAL', 'btrfs: not a directory');
    const cached = this.recent.get(dirKey(d));
    if (cached) return cached;
    const entries: BtrfsDirEntry[] = [];
    const [from, to] = range(d.objectid, DIR_INDEX_KEY);
    for await (const item of this.items(d.tree, from, to)) {
      if (entries.length >= MAX_DIRECTORY_ENTRIES) throw new DiskError('ELIMIT', `btrfs: directory ${d.objectid} has too many entries`);
      for (const e of decodeDirItems(item)) entries.push(this.entry(d.tree, e.location, e.name, e.type));
    }
    const listed = { entries, byName: new Map(entries.map((e) => [e.name, e])) };
    if (entries.length <= CACHED_DIRECTORY_ENTRIES) this.recent.set(dirKey(d), listed);
    return listed;
  }

  private entry(tree: Tree, location: Key, name: string, type: number): BtrfsDirEntry {
    const target = location.type === ROOT_ITEM_KEY ? location.objectid : tree.id;
    const objectid = location.type === ROOT_ITEM_KEY ? FIRST_FREE_OBJECTID : location.objectid;
    const kind: FileKind | 'unknown' = BTRFS_FT[type] ?? 'unknown';
    return { name, ino: target === this.top.id ? objectid : (target << 48n) | objectid, kind, location };
  }

  /** The DIR_ITEM entry named `name` in directory `dir` (found by its name hash), or null. */
  private async dirItem(tree: Tree, dir: bigint, name: string): Promise<BtrfsDirEntry | null> {
    const bytes = new TextEncoder().encode(name);
    // btrfs_name_hash: the CRC-32C register from ~1, without the final inversion.
    const key = { objectid: dir, type: DIR_ITEM_KEY, offset: BigInt(crc32cRegister(0xfffffffe, bytes)) };
    for await (const item of this.items(tree, key, key)) {
      for (const e of decodeDirItems(item)) if (e.name === name) return this.entry(tree, e.location, e.name, e.type);
    }
    return null;
  }

  // -------------------------------------------------------------------------------------------
  // File data

  /** The file's EXTENT_DATA items, in file order. */
  private async extents(node: BtrfsNode): Promise<FileExtent[]> {
    if (node.extents) return node.extents;
    const out: FileExtent[] = [];
    const [from, to] = range(node.objectid, EXTENT_DATA_KEY);
    for await (const item of this.items(node.tree, from, to)) {
      if (out.length >= MAX_EXTENTS) throw new DiskError('ELIMIT', `btrfs: inode ${node.objectid} has more than ${MAX_EXTENTS} extents`);
      out.push(decodeExtent(node.objectid, item));
    }
    node.extents = out;
    return out;
  }

  /** Bytes of a file (or a symlink's target): holes, preallocated ranges and bytes past an extent read as zeroes. */
  private async readData(node: BtrfsNode, buf: Uint8Array, offset: number): Promise<void> {
    buf.fill(0);
    const list = await this.extents(node);
    const end = offset + buf.length;
    // The first extent that ends after `offset`.
    let lo = 0;
    for (let hi = list.length; lo < hi; ) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.fileOffset + list[mid]!.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < list.length; i++) {
      const e = list[i]!;
      if (e.fileOffset >= end) break;
      const from = Math.max(offset, e.fileOffset);
      const to = Math.min(end, e.fileOffset + e.length);
      if (to <= from) continue;
      const target = buf.subarray(from - offset, to - offset);
      const within = e.offset + (from - e.fileOffset);
      if (e.type === FILE_EXTENT_PREALLOC || (e.type === FILE_EXTENT_REG && e.diskBytenr === 0)) continue;
      if (e.compression === COMPRESS_NONE && e.type === FILE_EXTENT_REG) {
        if (within + target.length > e.diskNumBytes) throw corrupt(`inode ${node.objectid}: extent at ${e.fileOffset} reaches past its disk extent`);
        await this.vol.device.read(target, this.physical(e.diskBytenr + within, target.length, `data of inode ${node.objectid}`));
        continue;
      }
      const data = await this.extentBytes(node, e);
      target.set(data.subarray(Math.min(within, data.length), Math.min(within + target.length, data.length)));
    }
  }

  /** An inline or compressed extent's bytes, decompressed. */
  private async extentBytes(node: BtrfsNode, e: FileExtent): Promise<Uint8Array> {
    if (e.inline && e.compression === COMPRESS_NONE) return e.inline;
    const vol = this.vol;
    if (!e.inline && vol.lastExtent?.diskBytenr === e.diskBytenr) return vol.lastExtent.data;
    if (e.ramBytes > MAX_UNCOMPRESSED) throw corrupt(`inode ${node.objectid}: a compressed extent of ${e.ramBytes} bytes`);
    let input = e.inline;
    if (!input) {
      if (e.diskNumBytes > MAX_UNCOMPRESSED) throw corrupt(`inode ${node.objectid}: a compressed extent of ${e.diskNumBytes} bytes on disk`);
      input = new Uint8Array(e.diskNumBytes);
      await vol.device.read(input, this.physical(e.diskBytenr, input.length, `data of inode ${node.objectid}`));
    }
    const data = decompress(e.compression, input, e.ramBytes, vol.sb.sectorSize, `inode ${node.objectid} extent at ${e.fileOffset}`);
    if (!e.inline) vol.lastExtent = { diskBytenr: e.diskBytenr, data };
    return data;
  }
}

function decodeKey(b: Uint8Array, at: number): Key {
  const v = new DataView(b.buffer, b.byteOffset + at, DISK_KEY_SIZE);
  return { objectid: v.getBigUint64(0, true), type: v.getUint8(8), offset: v.getBigUint64(9, true) };
}

function sortChunks(chunks: Chunk[]): Chunk[] {
  chunks.sort((a, b) => a.logical - b.logical);
  for (let i = 1; i < chunks.length; i++) {
    if (chunks[i - 1]!.logical + chunks[i - 1]!.length > chunks[i]!.logical) throw corrupt(`chunks at ${chunks[i - 1]!.logical} and ${chunks[i]!.logical} overlap`);
  }
  return chunks;
}

/** The entries packed in one DIR_ITEM or DIR_INDEX item (several share a DIR_ITEM when their names' hashes collide). */
function* decodeDirItems(item: Item): Iterable<{ name: string; location: Key; type: number }> {
  const b = item.data;
  for (let at = 0; at < b.length; ) {
    if (at + DIR_ITEM.size > b.length) throw corrupt(`directory item ${keyString(item.key)} runs past its end`);
    const d = DIR_ITEM.decode(b, at);
    const nameAt = at + DIR_ITEM.size;
    const next = nameAt + d.nameLen + d.dataLen;
    if (d.nameLen === 0 || d.nameLen > 255 || next > b.length) throw corrupt(`directory item ${keyString(item.key)} has a name of ${d.nameLen} bytes`);
    yield { name: utf8(b.subarray(nameAt, nameAt + d.nameLen)), location: decodeKey(b, at), type: d.type };
    at = next;
  }
}

function decodeExtent(ino: bigint, item: Item): FileExtent {
  const b = item.data;
  const what = `inode ${ino} extent at ${item.key.offset}`;
  if (b.length < FILE_EXTENT_INLINE_DATA_START) throw corrupt(`${what} is ${b.length} bytes`);
  // The fields before the inline data; the rest only for regular and preallocated extents.
  const h = { ramBytes: FILE_EXTENT.get(b, 'ramBytes'), compression: FILE_EXTENT.get(b, 'compression'), encryption: FILE_EXTENT.get(b, 'encryption'),
    otherEncoding: FILE_EXTENT.get(b, 'otherEncoding'), type: FILE_EXTENT.get(b, 'type') };
  if (h.encryption !== 0 || h.otherEncoding !== 0) throw new DiskError('EUNSUPPORTED', `btrfs: ${what} is encrypted or encoded`);
  if (h.compression > COMPRESS_ZSTD) throw new DiskError('EUNSUPPORTED', `btrfs: ${what} has compression type ${h.compression}`);
  const fileOffset = safe(item.key.offset, what);
  const ramBytes = safe(h.ramBytes, `${what} size`);
  if (h.type === FILE_EXTENT_INLINE) {
    const inline = b.slice(FILE_EXTENT_INLINE_DATA_START);
    // Uncompressed inline data is the item's rest; ram_bytes says how much of it (and, compressed, the size it expands to).
    const length = h.compression === COMPRESS_NONE ? inline.length : ramBytes;
    return { fileOffset, length, type: h.type, compression: h.compression, diskBytenr: 0, diskNumBytes: 0, offset: 0, ramBytes, inline };
  }
  if (h.type !== FILE_EXTENT_REG && h.type !== FILE_EXTENT_PREALLOC) throw corrupt(`${what} has type ${h.type}`);
  if (b.length < FILE_EXTENT.size) throw corrupt(`${what} is ${b.length} bytes`);
  const r = FILE_EXTENT.decode(b);
  const e: FileExtent = {
    fileOffset, length: safe(r.numBytes, `${what} length`), type: h.type, compression: h.compression,
    diskBytenr: safe(r.diskBytenr, `${what} address`), diskNumBytes: safe(r.diskNumBytes, `${what} disk size`), offset: safe(r.offset, `${what} offset`), ramBytes,
  };
  if (fileOffset + e.length > Number.MAX_SAFE_INTEGER) throw corrupt(`${what} is ${e.length} bytes long`);
  return e;
}

function decompress(type: number, input: Uint8Array, size: number, sectorSize: number, what: string): Uint8Array {
  const out = new Uint8Array(size);
  try {
    if (type === COMPRESS_ZLIB) {
      const data = zlib().inflateSync(input, { maxOutputLength: Math.max(size, 1) });
      out.set(data.subarray(0, size));
    } else if (type === COMPRESS_LZO) {
      btrfsLzoDecompress(input, out, sectorSize);
    } else if (type === COMPRESS_ZSTD) {
      // One zstd frame, then zeroes to the sector's end (which are no frame): decode the frame alone.
      let filled = 0;
      const d = new Decompress((chunk) => {
        const n = Math.min(chunk.length, out.length - filled);
        out.set(chunk.subarray(0, n), filled);
        filled += n;
      });
      d.push(input.subarray(0, zstdFrameLength(input)), true);
    }
  } catch (e) {
    if (e instanceof DiskError) throw e;
    throw corrupt(`${what} does not decompress: ${(e as Error).message}`);
  }
  return out;
}

/** The bytes of the zstd frame at the start of `b` (RFC 8878 §3.1.1: header, blocks to the last one, optional checksum). */
function zstdFrameLength(b: Uint8Array): number {
  const need = (n: number) => {
    if (n > b.length) throw corrupt('a zstd frame runs past its extent');
  };
  need(5);
  if (b[0] !== 0x28 || b[1] !== 0xb5 || b[2] !== 0x2f || b[3] !== 0xfd) throw corrupt('a zstd extent does not start with a zstd frame');
  const fhd = b[4]!;
  const singleSegment = (fhd >> 5) & 1;
  const fcsFlag = fhd >> 6;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + (fcsFlag ? 1 << fcsFlag : singleSegment);
  for (;;) {
    need(at + 3);
    const h = b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16);
    const type = (h >> 1) & 3;
    at += 3 + (type === 1 ? 1 : h >>> 3);
    if (h & 1) break;
  }
  at += (fhd >> 2) & 1 ? 4 : 0;
  need(at);
  return at;
}

const dirKey = (d: BtrfsNode) => `${d.tree.id}:${d.objectid}`;

function asBtrfs(n: FsNode): BtrfsNode {
  if (!('tree' in n) || !('objectid' in n)) throw new DiskError('EINVAL', 'btrfs: a node from another filesystem');
  return n as BtrfsNode;
}

export const openBtrfs = (device: BlockDevice): Promise<Btrfs> => Btrfs.open(device);
