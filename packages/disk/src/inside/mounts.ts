/**
 * An operating system's files as its /etc/fstab mounts them: the root filesystem with the
 * disk's other filesystems (a separate /boot, /boot/efi, /var, ...) at their mount points,
 * read as one Filesystem without mounting anything — what libguestfs's inspection does before
 * virt-ls, virt-cat, virt-copy-out and virt-inspector look at the files
 * (options/inspect.c inspect_mount_root: the mount points sorted by length, each mounted
 * read-only where it is; one that cannot be mounted is left out with a warning).
 *
 * A directory of one filesystem that a mount covers is replaced by the mounted filesystem's
 * root wherever it is reached (lookup, readdir + open), so paths, `..` and symlinks resolve
 * across mounts as they do in the kernel. Inode numbers of mounted filesystems are made
 * distinct from the root's (the mount's index in the top bits), so walks that detect loops and
 * copy-out's hard-link detection see one numbering.
 */
import { DiskError, isDiskError } from '../errors.js';
import type { DirEntry, FileStat, Filesystem, FsNode } from '../filesystem.js';
import { resolvePath } from '../filesystems.js';
import { isDiskMount, parseFstab, resolveSpec, type KnownFilesystem } from '../inspect-os/fstab.js';

/** The largest /etc/fstab read (a real one is a few hundred bytes). */
const MAX_FSTAB_BYTES = 1 << 20;
/** Inode numbers of the n-th mounted filesystem get n in these top bits (ext4 and XFS inode numbers stay below 2^56). */
const MOUNT_INO_SHIFT = 56n;

class MountedNode implements FsNode {
  constructor(readonly stat: FileStat, readonly mount: number, readonly inner: FsNode) {}
}

export class MountedFilesystem implements Filesystem {
  readonly type: string;
  readonly device;
  readonly warnings: string[] = [];
  /** [0] is the root filesystem; the others in mount order. */
  private readonly filesystems: Filesystem[];
  /** Directories covered by a mount: "filesystem index:inode" → the index of the filesystem mounted there. */
  private readonly covered = new Map<string, number>();

  constructor(root: Filesystem) {
    this.type = root.type;
    this.device = root.device;
    this.filesystems = [root];
    this.warnings.push(...root.warnings);
  }

  /**
   * Mount `fs` at the directory `at` (resolved in what is mounted so far, so mount /boot before
   * /boot/efi). ENOENT or EINVAL when `at` is not a directory.
   */
  async mount(at: string, fs: Filesystem): Promise<void> {
    const dir = await resolvePath(this, at, { follow: true });
    if (dir.stat.kind !== 'directory') throw new DiskError('EINVAL', `${at}: Not a directory`);
    const { mount, inner } = this.unwrap(dir);
    const index = this.filesystems.length;
    this.filesystems.push(fs);
    this.covered.set(`${mount}:${inner.stat.ino}`, index);
    this.warnings.push(...fs.warnings.map((w) => `${at}: ${w}`));
  }

  private unwrap(node: FsNode): MountedNode {
    if (!(node instanceof MountedNode)) throw new DiskError('EINVAL', 'not a node of this filesystem');
    return node;
  }

  /** A node of filesystem `mount`, or the mounted filesystem's root when the node is a covered directory. */
  private async wrap(mount: number, inner: FsNode): Promise<MountedNode> {
    if (inner.stat.kind === 'directory' && this.covered.size > 0) {
      const over = this.covered.get(`${mount}:${inner.stat.ino}`);
      if (over !== undefined) return this.wrap(over, await this.filesystems[over]!.root());
    }
    return new MountedNode(mount === 0 ? inner.stat : { ...inner.stat, ino: this.ino(mount, inner.stat.ino) }, mount, inner);
  }

  private ino(mount: number, ino: bigint): bigint {
    return mount === 0 ? ino : (BigInt(mount) << MOUNT_INO_SHIFT) | ino;
  }

  async root(): Promise<FsNode> {
    return this.wrap(0, await this.filesystems[0]!.root());
  }

  async *readdir(dir: FsNode): AsyncIterable<DirEntry> {
    const { mount, inner } = this.unwrap(dir);
    for await (const e of this.filesystems[mount]!.readdir(inner)) yield mount === 0 ? e : { ...e, ino: this.ino(mount, e.ino) };
  }

  async lookup(dir: FsNode, name: string): Promise<FsNode | null> {
    const { mount, inner } = this.unwrap(dir);
    const found = await this.filesystems[mount]!.lookup(inner, name);
    return found ? this.wrap(mount, found) : null;
  }

  async open(dir: FsNode, entry: DirEntry): Promise<FsNode> {
    const { mount, inner } = this.unwrap(dir);
    const fs = this.filesystems[mount]!;
    const innerEntry = mount === 0 ? entry : { ...entry, ino: entry.ino & ((1n << MOUNT_INO_SHIFT) - 1n) };
    let node: FsNode | null;
    if (fs.open) node = await fs.open(inner, innerEntry);
    else {
      node = await fs.lookup(inner, entry.name);
      if (!node) throw new DiskError('ECORRUPT', `${entry.name}: listed in its directory but not found there`);
    }
    return this.wrap(mount, node);
  }

  read(file: FsNode, buf: Uint8Array, offset: number): Promise<number> {
    const { mount, inner } = this.unwrap(file);
    return this.filesystems[mount]!.read(inner, buf, offset);
  }

  readlink(link: FsNode): Promise<string> {
    const { mount, inner } = this.unwrap(link);
    return this.filesystems[mount]!.readlink(inner);
  }
}

export interface FstabMountpoint {
  mountpoint: string;
  /** The fstab spec as written (UUID=..., /dev/sda1, ...). */
  spec: string;
  fstype: string;
  /** The disk's filesystem it names (libguestfs's device name), or null when none matches. */
  device: string | null;
}

export interface MountedOs {
  /** The root with every filesystem its fstab names mounted (the root alone without an fstab). */
  fs: MountedFilesystem;
  /** The fstab's entries for filesystems on disks (swap, /proc, NFS, bind mounts left out), in fstab order. */
  mountpoints: FstabMountpoint[];
  /** What could not be mounted, and why. */
  notes: string[];
  /** Filesystems mounted under the root. */
  mounts: number;
}

/**
 * The root filesystem `root` (libguestfs device name `rootDevice`) with the filesystems its
 * /etc/fstab names mounted, found among `known` by UUID=, LABEL=, PARTUUID=, PARTLABEL= or
 * device name; `open` opens the filesystem of a known device (undefined: not read).
 */
export async function mountFstab(root: Filesystem, rootDevice: string, known: KnownFilesystem[], open: (device: string) => Promise<Filesystem | undefined>): Promise<MountedOs> {
  const fs = new MountedFilesystem(root);
  const mountpoints: FstabMountpoint[] = [];
  const notes: string[] = [];
  const text = await readSmallFile(root, '/etc/fstab', MAX_FSTAB_BYTES);
  if (text === null) return { fs, mountpoints, notes, mounts: 0 };
  const toMount: { at: string; device: string; fs: Filesystem }[] = [];
  for (const e of parseFstab(text)) {
    if (!isDiskMount(e)) continue;
    const k = resolveSpec(e.spec, known);
    mountpoints.push({ mountpoint: e.mountpoint, spec: e.spec, fstype: e.fstype, device: k?.device ?? null });
    if (!k) { notes.push(`fstab: ${e.spec} (${e.mountpoint}) matches no filesystem of the disk`); continue; }
    if (e.mountpoint === '/' || k.device === rootDevice) continue;
    const other = await open(k.device);
    if (!other) { notes.push(`${e.mountpoint}: ${k.device} is not read`); continue; }
    toMount.push({ at: normalise(e.mountpoint), device: k.device, fs: other });
  }
  // libguestfs's order: shorter mount points first (a parent before what is mounted inside it), then by name.
  toMount.sort((a, b) => a.at.length - b.at.length || (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  let mounts = 0;
  for (const m of toMount) {
    try {
      await fs.mount(m.at, m.fs);
      mounts++;
    } catch (e) {
      if (!isDiskError(e)) throw e;
      notes.push(`${m.at}: ${m.device} not mounted: ${e.message}`);
    }
  }
  return { fs, mountpoints, notes, mounts };
}

/** "/boot/" and "/boot//efi" as the kernel takes them. */
function normalise(path: string): string {
  return `/${path.split('/').filter((c) => c !== '').join('/')}`;
}

async function readSmallFile(fs: Filesystem, path: string, max: number): Promise<string | null> {
  let node: FsNode;
  try {
    node = await resolvePath(fs, path, { follow: true });
  } catch (e) {
    if (isDiskError(e)) return null;
    throw e;
  }
  if (node.stat.kind !== 'file' || node.stat.size > max) return null;
  const buf = new Uint8Array(node.stat.size);
  const n = buf.length > 0 ? await fs.read(node, buf, 0) : 0;
  return Buffer.from(buf.subarray(0, n)).toString('utf8');
}
