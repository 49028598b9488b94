/**
 * An instance's disks as Nova's Qcow2 image backend makes them (nova/virt/libvirt/
 * imagebackend.py Qcow2.create_image, driver.py _create_and_inject_local_root /
 * _create_ephemeral / _create_swap, utils.py create_cow_image):
 *   disk       qcow2 overlay on the cached image (backing_fmt and cluster_size from the base),
 *              the flavor's root size, never below the image's virtual size
 *   disk.eph0  qcow2 overlay on `_base/ephemeral_<GB>_<fs hash>`, a raw file made by mkfs
 *   disk.swap  qcow2 overlay on `_base/swap_<MB>`, a raw file made by mkswap
 *   disk.info  the formats of the disks, as Nova records them
 * A disk that already exists is kept as it is, as Nova does on a reboot or a second spawn.
 * With images_type = rbd the disks are RBD images instead (createRbdDisks, rbd.ts).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rmdir, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { createImage, openImage } from '@diskhub/disk';
import { ComputeError, flavorDiskSmallerThanImage } from './errors.js';
import { exists, writeThenRename } from './files.js';
import { cachedGenerated, cachedImage, touch, type CacheLayout, type ClientSource } from './imagecache.js';
import { withExternalLock } from './lock.js';
import { RbdDisks, type RbdSettings } from './rbd.js';

const execFileP = promisify(execFile);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** Filesystems an ephemeral disk may get (nova.privsep.fs.unprivileged_mkfs runs `mkfs -t FS`). */
export const EPHEMERAL_FILESYSTEMS = ['ext2', 'ext3', 'ext4', 'xfs', 'vfat', 'msdos', 'ntfs', 'btrfs'] as const;
/** Nova's filesystem for an ephemeral disk when nothing chooses one (_DEFAULT_FILE_SYSTEM). */
export const DEFAULT_EPHEMERAL_FS = 'vfat';
/** The label Nova gives the first ephemeral disk. */
export const EPHEMERAL_LABEL = 'ephemeral0';

export interface DiskRequest {
  imageId: string;
  /** Root disk bytes; 0 or absent: the image's virtual size (a flavor with root_gb 0). */
  rootBytes?: number;
  ephemeralGB?: number;
  ephemeralFs?: string;
  swapMB?: number;
  forceRaw: boolean;
  signal?: AbortSignal;
  /** Writes the config drive (raw ISO 9660) at the given path. */
  configDrive?: (path: string) => Promise<void>;
  /** images_type = rbd: the disks are RBD images in this pool (see rbd.ts). */
  rbd?: RbdSettings;
}

export interface DiskMade {
  name: string;
  path: string;
  format: string;
  size: number;
  backingFile?: string;
  /** false: it existed and was kept. */
  created: boolean;
}

/** nova.privsep.fs.get_file_extension_for_os_type: the first 7 hex digits of the md5 of the mkfs choice. */
export function ephemeralBaseName(gb: number, fs: string): string {
  return `ephemeral_${gb}_${createHash('md5').update(fs, 'utf8').digest('hex').slice(0, 7)}`;
}

export function swapBaseName(mb: number): string {
  return `swap_${mb}`;
}

export async function createDisks(connect: ClientSource, instanceDir: string, layout: CacheLayout, req: DiskRequest): Promise<DiskMade[]> {
  await mkdir(instanceDir, { recursive: true });
  if (req.rbd) return createRbdDisks(connect, instanceDir, layout, req, req.rbd);
  const made: DiskMade[] = [];
  const base = await cachedImage(connect, req.imageId, layout, { forceRaw: req.forceRaw, ...(req.rootBytes ? { maxSize: req.rootBytes } : {}), ...(req.signal ? { signal: req.signal } : {}) });
  const info = await imageFacts(base.path);
  const root = req.rootBytes || info.virtualSize;
  if (root < info.virtualSize) {
    // imagebackend.Image.verify_base_size → FlavorDiskSmallerThanImage.
    throw flavorDiskSmallerThanImage(root, info.virtualSize);
  }
  made.push(await overlay(instanceDir, 'disk', base.path, info, root, layout));

  if (req.ephemeralGB) {
    const path = await ephemeralBase(layout, req);
    made.push(await overlay(instanceDir, 'disk.eph0', path, await imageFacts(path), req.ephemeralGB * GiB, layout));
  }
  if (req.swapMB) {
    const path = await swapBase(layout, req);
    made.push(await overlay(instanceDir, 'disk.swap', path, await imageFacts(path), req.swapMB * MiB, layout));
  }
  if (req.configDrive) made.push(await configDrive(instanceDir, req.configDrive));
  await recordDiskInfo(instanceDir, made, layout);
  return made;
}

/** `_base/ephemeral_<GB>_<fs hash>`: a raw file of the size, made by mkfs (Nova's _create_ephemeral). */
function ephemeralBase(layout: CacheLayout, req: DiskRequest): Promise<string> {
  const fs = req.ephemeralFs ?? DEFAULT_EPHEMERAL_FS;
  const size = req.ephemeralGB! * GiB;
  return cachedGenerated(layout, ephemeralBaseName(req.ephemeralGB!, fs), async (temp) => {
    await truncateNew(temp, size);
    await mkfs(fs, temp, EPHEMERAL_LABEL, req.signal);
  }, req.signal);
}

/** `_base/swap_<MB>`: a raw file of the size with a swap signature (Nova's _create_swap). */
function swapBase(layout: CacheLayout, req: DiskRequest): Promise<string> {
  const size = req.swapMB! * MiB;
  return cachedGenerated(layout, swapBaseName(req.swapMB!), async (temp) => {
    await truncateNew(temp, size);
    await run('mkswap', [temp], req.signal);
  }, req.signal);
}

/** disk.config in the instance directory, kept when it is there. */
async function configDrive(instanceDir: string, write: (path: string) => Promise<void>): Promise<DiskMade> {
  const path = join(instanceDir, 'disk.config');
  const created = !(await exists(path));
  if (created) await writeThenRename(path, write);
  return { name: 'disk.config', path, format: 'raw', size: (await stat(path)).size, created };
}

/**
 * images_type = rbd (imagebackend.Rbd.create_image, driver._create_and_inject_local_root's
 * clone_fallback_to_fetch): each disk is `<uuid>_<name>` in the pool, kept when it exists. The
 * root disk is a clone of the image's protected snapshot where Glance keeps it in this
 * cluster, or else imported from the cached base file; then grown to the root size. The
 * ephemeral and swap disks are imported from their cached bases, the config drive from the
 * instance directory, whose copy is then removed (as Nova removes it once imported).
 */
async function createRbdDisks(connect: ClientSource, instanceDir: string, layout: CacheLayout, req: DiskRequest, settings: RbdSettings): Promise<DiskMade[]> {
  const uuid = basename(instanceDir);
  const rbd = await RbdDisks.connect(settings);
  try {
    const made: DiskMade[] = [];
    const disk = (name: string, size: number, created: boolean, parent?: string): DiskMade =>
      ({ name, path: `rbd:${rbd.spec(RbdDisks.diskName(uuid, name))}`, format: 'raw', size, created, ...(parent ? { backingFile: parent } : {}) });
    /** Import `base` as `name` unless the instance has that disk already. */
    const imported = async (name: string, base: () => Promise<string>): Promise<DiskMade> => {
      const rbdName = RbdDisks.diskName(uuid, name);
      const size = await rbd.sizeOf(rbdName);
      if (size !== undefined) return disk(name, size, false);
      return disk(name, await rbd.importFrom(await base(), rbdName), true);
    };

    const rootName = RbdDisks.diskName(uuid, 'disk');
    let size = await rbd.sizeOf(rootName);
    if (size !== undefined) made.push(disk('disk', size, false));
    else {
      const image = await (await connect()).getImage(req.imageId);
      const clone = await rbd.cloneFromLocations(image, rootName);
      let root: DiskMade;
      if ('cloned' in clone) root = disk('disk', size = (await rbd.sizeOf(rootName))!, true, clone.cloned);
      else {
        // Nova's clone_fallback_to_fetch: download into the cache and import.
        const base = await cachedImage(connect, req.imageId, layout, { forceRaw: req.forceRaw, ...(req.rootBytes ? { maxSize: req.rootBytes } : {}), ...(req.signal ? { signal: req.signal } : {}) });
        root = disk('disk', size = await rbd.importFrom(base.path, rootName), true);
      }
      const want = req.rootBytes || size;
      if (want < size) {
        await rbd.remove(rootName).catch(() => undefined);
        throw flavorDiskSmallerThanImage(want, size);
      }
      if (want > size) {
        await rbd.resize(rootName, want);
        root.size = want;
      }
      made.push(root);
    }
    if (req.ephemeralGB) made.push(await imported('disk.eph0', () => ephemeralBase(layout, req)));
    if (req.swapMB) made.push(await imported('disk.swap', () => swapBase(layout, req)));
    if (req.configDrive) {
      const local = await configDrive(instanceDir, req.configDrive);
      made.push(await imported('disk.config', async () => local.path));
      await unlink(local.path);
    }
    return made;
  } finally {
    await rbd.close();
  }
}

/**
 * An instance's disks removed (driver.cleanup: _cleanup_rbd for images_type = rbd, then the
 * instance directory's disk files): every `<uuid>_*` image of the pool, and disk, disk.eph0,
 * disk.swap, disk.config and disk.info in the directory, which goes too once empty. Returns
 * what was removed.
 */
export async function deleteDisks(instanceDir: string, rbdSettings?: RbdSettings): Promise<string[]> {
  const removed: string[] = [];
  if (rbdSettings) {
    const rbd = await RbdDisks.connect(rbdSettings);
    try {
      for (const name of await rbd.instanceImages(basename(instanceDir))) {
        await rbd.remove(name);
        removed.push(`rbd:${rbd.spec(name)}`);
      }
    } finally {
      await rbd.close();
    }
  }
  for (const name of ['disk', 'disk.eph0', 'disk.swap', 'disk.config', 'disk.info']) {
    const path = join(instanceDir, name);
    if (await unlink(path).then(() => true, (e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return false; throw e; })) removed.push(path);
  }
  await rmdir(instanceDir).catch(() => undefined); // only when empty
  return removed;
}

interface ImageFacts { format: string; virtualSize: number; clusterSize?: number }

async function imageFacts(path: string): Promise<ImageFacts> {
  const image = await openImage(path, { backing: false, headerOnly: true });
  try {
    return { format: image.format, virtualSize: image.size, ...(image.format === 'qcow2' && image.clusterSize ? { clusterSize: image.clusterSize } : {}) };
  } finally {
    await image.close();
  }
}

/**
 * utils.create_cow_image under the base file's lock (Qcow2.create_image's lock name is the
 * base's file name, the lock the cache manager takes before removing it): a qcow2 file naming
 * `base` (absolute, as Nova writes it) with its format, the base's cluster size when it is
 * qcow2, and `size`. The base's mtime is renewed, so the cache manager sees it in use.
 */
async function overlay(instanceDir: string, name: string, base: string, facts: ImageFacts, size: number, layout: CacheLayout): Promise<DiskMade> {
  const path = join(instanceDir, name);
  return withExternalLock(layout.lockDir, basename(base), async () => {
    await touch(base);
    if (await exists(path)) {
      const image = await openImage(path, { backing: false, headerOnly: true });
      try {
        return { name, path, format: image.format, size: image.size, ...(image.backingRef ? { backingFile: image.backingRef.filename } : {}), created: false };
      } finally {
        await image.close();
      }
    }
    try {
      await createImage(path, 'qcow2', {
        size,
        options: facts.clusterSize ? { cluster_size: String(facts.clusterSize) } : {},
        backingFile: base,
        backingFormat: facts.format,
      }, { exclusive: true });
    } catch (e) {
      throw new ComputeError(`cannot create ${path}: ${(e as Error).message}`);
    }
    return { name, path, format: 'qcow2', size, backingFile: base, created: true };
  });
}

/** A lock name for a file of the instance: its path with the slashes made dashes. */
function lockNameOf(path: string): string {
  return path.replace(/\//g, '-').replace(/^-+/, '');
}

/** A new sparse file of `size` bytes (utils.create_image(path, 'raw', size)). */
async function truncateNew(path: string, size: number): Promise<void> {
  await writeFile(path, '', { flag: 'wx' });
  await truncate(path, size);
}

/** nova.privsep.fs.unprivileged_mkfs: `mkfs -t FS [-F] [-L|-n LABEL] PATH`. */
async function mkfs(fs: string, path: string, label: string, signal?: AbortSignal): Promise<void> {
  const args = ['-t', fs];
  if (fs === 'ext3' || fs === 'ext4' || fs === 'ntfs') args.push('-F');
  args.push(fs === 'vfat' || fs === 'msdos' ? '-n' : '-L', label, path);
  await run('mkfs', args, signal);
}

async function run(cmd: string, args: string[], signal?: AbortSignal): Promise<void> {
  try {
    await execFileP(cmd, args, { timeout: 300_000, ...(signal ? { signal } : {}) });
  } catch (e) {
    if (signal?.aborted) throw new ComputeError('Operation cancelled', 'cancelled');
    const err = e as { stderr?: string; message: string };
    throw new ComputeError(`${cmd} ${args.join(' ')} failed: ${(err.stderr || err.message).trim()}`);
  }
}

/** disk.info: {"<disk path>": "<format>"} for the instance's disks, merged with what is there. */
async function recordDiskInfo(instanceDir: string, disks: DiskMade[], layout: CacheLayout): Promise<void> {
  const path = join(instanceDir, 'disk.info');
  await withExternalLock(layout.lockDir, lockNameOf(path), async () => {
    let known: Record<string, string> = {};
    try {
      const parsed = JSON.parse(await readFile(path, 'utf8')) as unknown;
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) known = parsed as Record<string, string>;
    } catch { /* absent or unreadable: written afresh */ }
    for (const d of disks) known[d.path] = d.format;
    await writeThenRename(path, (temp) => writeFile(temp, JSON.stringify(known)));
  });
}
