/**
 * How sysprep reaches a guest's filesystems to change them: the kernel mounts them, because only
 * the kernel's ext4/xfs drivers write these filesystems correctly (journal, allocation, xfs
 * log); the engine's filesystem readers are read-only.
 *
 * This machine (and a CI runner like it) has loop devices without partition scanning, no nbd
 * module and no device-mapper, so a filesystem is mounted from a loop device over its byte range
 * (`losetup --offset --sizelimit`, as `diskhub build` does):
 *
 * - raw image: the loop device is over the image file itself; the kernel writes in place.
 * - any other writable format (qcow2, vmdk, vhdx, ...), and any filesystem on an LVM logical
 *   volume (whose extents need not be contiguous, and device-mapper is what would join them):
 *   the filesystem's bytes (the partition, or the LV read through the engine's LVM layer) are copied
 *   into a sparse temporary raw file (the engine reads the image, holes stay holes), that file
 *   is mounted and changed, and after the unmount every 64 KiB block whose content differs from
 *   the image's is written back through the engine (compared by SHA-1 digests taken during the
 *   copy, so the image is read once); qcow2 stays qcow2, unchanged clusters stay as they were
 *   (compressed ones too). A FUSE view of the image would avoid the copy, but FUSE is not
 *   dependable in the containers this runs in; the copy costs the allocated size of the
 *   filesystems changed, in TMPDIR.
 *
 * LVM: linear and striped logical volumes are reached through the engine's LVM layer, which
 * writes each block back to the physical volume extents it lives in; thin, cache and RAID
 * volumes are not (the engine does not map them), and neither are LVs whose PVs span disks.
 */
import { createHash } from 'node:crypto';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { openImage, openLogicalVolume, readPartitionTable, scanDiskLvm, type BlockDevice, type Image, type InspectedFilesystem, type InspectedOs, type LvmScan } from '@diskhub/disk';
import { attachLoop, mountAt } from '../image-build/disk.js';
import type { BuildSession } from '../image-build/session.js';

export class SysprepError extends Error {}

/** One filesystem of the guest to mount: where in the guest, and its bytes on the disk (or in its logical volume). */
export interface GuestFilesystem {
  mountpoint: string;
  device: string;
  fstype: string;
  /** "VG/LV" when the filesystem is on a logical volume: then start is 0 and size the LV's. */
  lv?: string;
  start: number;
  size: number;
}

/** The block device a filesystem's start and size refer to: the disk, or its logical volume (writable when the disk is). */
export class FilesystemDevices {
  private scan: LvmScan | null = null;
  constructor(private readonly image: Image) {}
  async deviceOf(fs: GuestFilesystem): Promise<BlockDevice> {
    if (!fs.lv) return this.image;
    this.scan ??= await scanDiskLvm(this.image);
    return openLogicalVolume(this.scan, fs.lv);
  }
}

/** The kernel's filesystem type for the engine's identification. */
const KERNEL_TYPES: Record<string, string> = { ext2: 'ext4', ext3: 'ext4', ext4: 'ext4', xfs: 'xfs', vfat: 'vfat', fat: 'vfat', btrfs: 'btrfs' };

/**
 * The root and the guest's fstab filesystems that hold files sysprep changes. /boot and below
 * (the ESP, a separate /boot) are left unmounted: no operation touches them, and a vfat mounted
 * read-write gets its dirty flag written.
 */
export async function planFilesystems(image: Image, os: InspectedOs, filesystems: InspectedFilesystem[]): Promise<GuestFilesystem[]> {
  const table = await readPartitionTable(image);
  const out: GuestFilesystem[] = [];
  for (const m of os.mountpoints) {
    if (m.mountpoint !== '/' && (m.mountpoint === '/boot' || m.mountpoint.startsWith('/boot/'))) continue;
    // The root is the filesystem inspection found, whatever its fstab line says.
    const fs = filesystems.find((f) => f.device === (m.mountpoint === '/' ? os.root : m.device));
    if (!fs) {
      if (m.mountpoint === '/') throw new SysprepError(`${os.root}: the root filesystem is not found`);
      continue; // a network or missing filesystem (inspection noted it)
    }
    const kernelType = KERNEL_TYPES[fs.type];
    if (!kernelType) throw new SysprepError(`${m.mountpoint} (${fs.device}) is ${fs.type}: not supported`);
    if (fs.lv) {
      const lv = `${fs.lv.vg}/${fs.lv.name}`;
      const size = (await openLogicalVolume(await scanDiskLvm(image), lv)).size;
      out.push({ mountpoint: m.mountpoint, device: fs.device, fstype: kernelType, lv, start: 0, size });
    } else if (fs.wholeDisk) out.push({ mountpoint: m.mountpoint, device: fs.device, fstype: kernelType, start: 0, size: image.size });
    else {
      const p = table?.partitions.find((x) => x.number === fs.partition);
      if (!p) throw new SysprepError(`${fs.device}: no such partition`);
      out.push({ mountpoint: m.mountpoint, device: fs.device, fstype: kernelType, start: p.start, size: p.size });
    }
  }
  return out.sort((a, b) => a.mountpoint.length - b.mountpoint.length);
}

/** Mount options: xfs refuses a second filesystem with the UUID of a mounted one (a copy of an image) without nouuid. */
const mountOptions = (fs: GuestFilesystem, readOnly: boolean) => ['-t', fs.fstype, '-o', [readOnly ? 'ro' : 'rw', ...(fs.fstype === 'xfs' ? ['nouuid'] : [])].join(',')];

/** Mount one filesystem of a raw image file in place (the kernel writes the image). */
export async function mountInPlace(session: BuildSession, file: string, fs: GuestFilesystem, target: string): Promise<void> {
  const dev = await attachLoop(session, file, fs.start, fs.size);
  await mountAt(session, dev, target, mountOptions(fs, false));
}

const BLOCK = 64 * 1024;
const DIGEST = 20;

/** A filesystem copied out of the image into a sparse raw file, with the digests of what it held. */
export class CopiedFilesystem {
  private constructor(readonly fs: GuestFilesystem, readonly file: string, private readonly digests: Buffer, private readonly present: Uint8Array) {}

  /** Copy [start, start + size) of the image into `file` (holes and zero extents are skipped). */
  static async copy(image: BlockDevice, fs: GuestFilesystem, file: string, signal: AbortSignal): Promise<CopiedFilesystem> {
    const blocks = Math.ceil(fs.size / BLOCK);
    const digests = Buffer.alloc(blocks * DIGEST);
    const present = new Uint8Array(blocks);
    await writeFile(file, '', { flag: 'wx' });
    await truncate(file, fs.size);
    const temp = await openImage(file, { format: 'raw', writable: true });
    const write = temp.write!.bind(temp);
    try {
      const CHUNK = 16; // blocks read at once (1 MiB)
      const buf = Buffer.alloc(CHUNK * BLOCK);
      let next = 0; // the first block not yet copied (extents may end inside a block)
      for await (const e of image.blockStatus(fs.start, fs.size)) {
        if (!e.data || e.zero) continue;
        const first = Math.max(next, Math.floor((e.offset - fs.start) / BLOCK));
        const end = Math.ceil((e.offset + e.length - fs.start) / BLOCK);
        for (let b = first; b < end; b += CHUNK) {
          signal.throwIfAborted();
          const count = Math.min(CHUNK, end - b);
          const chunk = buf.subarray(0, Math.min(count * BLOCK, fs.size - b * BLOCK));
          await image.read(chunk, fs.start + b * BLOCK);
          for (let k = 0; k < count; k++) {
            const view = chunk.subarray(k * BLOCK, (k + 1) * BLOCK);
            if (isZero(view)) continue;
            await write(view, (b + k) * BLOCK);
            present[b + k] = 1;
            createHash('sha1').update(view).digest().copy(digests, (b + k) * DIGEST);
          }
        }
        next = Math.max(next, end);
      }
      await temp.flush?.();
    } finally {
      await temp.close();
    }
    return new CopiedFilesystem(fs, file, digests, present);
  }

  async mount(session: BuildSession, target: string, readOnly: boolean): Promise<void> {
    const dev = await attachLoop(session, this.file, 0, this.fs.size);
    await mountAt(session, dev, target, mountOptions(this.fs, readOnly));
  }

  /**
   * Write every block that differs from what was copied back into the image (zeroes as zero
   * writes). Returns the bytes written. Not interruptible: a half-written filesystem would be
   * worse than either state.
   */
  async writeBack(image: BlockDevice): Promise<number> {
    if (!image.write) throw new SysprepError(`${this.fs.device} is not writable`);
    const write = image.write.bind(image);
    const temp = await openImage(this.file, { format: 'raw' });
    let written = 0;
    try {
      const buf = Buffer.alloc(BLOCK);
      const blocks = this.present.length;
      const changed: number[] = [];
      // Blocks the temporary file holds (data extents); every other block reads as zeroes.
      const inFile = new Uint8Array(blocks);
      for await (const e of temp.blockStatus(0, this.fs.size)) {
        if (!e.data) continue;
        for (let b = Math.floor(e.offset / BLOCK); b < Math.ceil((e.offset + e.length) / BLOCK); b++) inFile[b] = 1;
      }
      for (let b = 0; b < blocks; b++) {
        if (!inFile[b]) { if (this.present[b]) changed.push(b); continue; }
        const len = Math.min(BLOCK, this.fs.size - b * BLOCK);
        const view = buf.subarray(0, len);
        await temp.read(view, b * BLOCK);
        if (isZero(view)) { if (this.present[b]) changed.push(b); continue; }
        if (!this.present[b] || !createHash('sha1').update(view).digest().equals(this.digests.subarray(b * DIGEST, (b + 1) * DIGEST))) changed.push(b);
      }
      for (const b of changed) {
        const len = Math.min(BLOCK, this.fs.size - b * BLOCK);
        const view = buf.subarray(0, len);
        await temp.read(view, b * BLOCK);
        if (isZero(view) && image.writeZeroes) await image.writeZeroes(this.fs.start + b * BLOCK, len);
        else await write(view, this.fs.start + b * BLOCK);
        written += len;
      }
      await image.flush?.();
    } finally {
      await temp.close();
    }
    return written;
  }
}

const ZERO = Buffer.alloc(BLOCK);
function isZero(b: Buffer): boolean {
  return b.equals(ZERO.subarray(0, b.length));
}

/**
 * Who else has the image: a process holding a lock on it (QEMU locks the images of a running
 * VM, as qemu-img and libguestfs find with their own lock) or a loop device over it.
 */
export async function imageUsers(session: BuildSession, path: string): Promise<string[]> {
  const st = await stat(path);
  // /proc/locks names the file as MAJOR:MINOR:INODE, in hex, of the kernel's dev_t encoding.
  const major = (st.dev >> 8) & 0xfff;
  const minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
  const id = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
  const users: string[] = [];
  for (const line of (await readFile('/proc/locks', 'utf8').catch(() => '')).split('\n')) {
    const f = line.trim().split(/\s+/);
    const at = f.findIndex((x) => /^[0-9a-f]+:[0-9a-f]+:\d+$/.test(x));
    if (at < 0 || f[at] !== id) continue;
    const pid = f[at - 1];
    users.push(pid && pid !== '-1' ? `process ${pid} holds a ${f[1]} lock on it` : `a process holds an ${f[1]} lock on it (a running VM?)`);
  }
  const loops = (await session.run('losetup', ['--associated', path, '--noheadings', '--output', 'NAME'], { capture: true }).catch(() => '')).split('\n').filter((l) => l.trim() !== '');
  for (const l of loops) users.push(`loop device ${l.trim()} is attached to it`);
  return [...new Set(users)];
}
