/**
 * The compute node's image cache, laid out as Nova lays it out (nova/virt/libvirt/imagecache.py,
 * nova/virt/imagecache.py): `<instances_path>/_base/<sha1 of the image id>` for downloaded
 * images, `swap_<MB>` and `ephemeral_<GB>_<fs hash>` for the generated bases, locks in
 * `<instances_path>/locks/nova-<base file name>`. The cache manager removes base files that no
 * instance disk uses (found by reading every instance disk's backing file name with the
 * engine), once they are older than the given age, re-checking under the file's lock.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, stat, unlink, utimes } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { openImage, resolveBackingPath } from '@diskhub/disk';
import type { ImageServiceClient } from './client.js';
import { exists, writeThenRename } from './files.js';
import { fetchToRaw, type FetchResult } from './images.js';
import { removeLockFile, withExternalLock } from './lock.js';

/** Nova's default instances_path ($state_path/instances). */
export const DEFAULT_INSTANCES_PATH = '/var/lib/nova/instances';
/** [image_cache] subdirectory_name. */
export const BASE_SUBDIRECTORY = '_base';
const SHA1_HEX_LENGTH = 40;

export interface CacheLayout {
  instancesPath: string;
  baseDir: string;
  /** Nova's lock_path for the image backend: <instances_path>/locks. */
  lockDir: string;
}

/** From --instances-path and/or --base-dir: a base dir alone lies in its instances path. */
export function cacheLayout(options: { instancesPath?: string; baseDir?: string }): CacheLayout {
  const instancesPath = resolve(options.instancesPath ?? (options.baseDir ? dirname(resolve(options.baseDir)) : DEFAULT_INSTANCES_PATH));
  const baseDir = resolve(options.baseDir ?? join(instancesPath, BASE_SUBDIRECTORY));
  return { instancesPath, baseDir, lockDir: join(instancesPath, 'locks') };
}

/** imagecache.get_cache_fname: the sha1 hex digest of the image id. */
export function cacheFileName(imageId: string): string {
  return createHash('sha1').update(imageId, 'utf8').digest('hex');
}

export interface BaseFile {
  path: string;
  /** This call downloaded it (false: it was already cached). */
  downloaded: boolean;
  fetch?: FetchResult;
}

/** The image service, connected on first use: a cached image needs none (as in Nova's Image.cache). */
export type ClientSource = () => Promise<ImageServiceClient>;

/**
 * The image's base file, downloaded unless cached. Concurrent callers (in this process or
 * others, Nova's included) share one download through the base file's external lock.
 */
export async function cachedImage(connect: ClientSource, imageId: string, layout: CacheLayout, options: { forceRaw: boolean; maxSize?: number; signal?: AbortSignal }): Promise<BaseFile> {
  const name = cacheFileName(imageId);
  const path = join(layout.baseDir, name);
  return withExternalLock(layout.lockDir, name, async () => {
    if (await exists(path)) {
      await touch(path);
      return { path, downloaded: false };
    }
    const client = await connect();
    const image = await client.getImage(imageId);
    await mkdir(layout.baseDir, { recursive: true });
    const fetch = await fetchToRaw(client, image, path, options);
    return { path, downloaded: true, fetch };
  }, options.signal);
}

/**
 * A generated base (swap, ephemeral): made by `make` at a temporary name under the base
 * file's lock unless it exists, then renamed into place.
 */
export async function cachedGenerated(layout: CacheLayout, name: string, make: (tempPath: string) => Promise<void>, signal?: AbortSignal): Promise<string> {
  const path = join(layout.baseDir, name);
  return withExternalLock(layout.lockDir, name, async () => {
    if (await exists(path)) { await touch(path); return path; }
    await mkdir(layout.baseDir, { recursive: true });
    await writeThenRename(path, make);
    return path;
  }, signal);
}

/** Nova updates a base file's mtime whenever an instance uses it, so the cache manager keeps it. */
export async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now).catch(() => undefined);
}

export type BaseKind = 'original' | 'resized' | 'swap' | 'ephemeral';

/** imagecache._scan_base_images: which files of the base directory are cache entries. */
export function baseKind(name: string): BaseKind | undefined {
  if (name.length === SHA1_HEX_LENGTH) return 'original';
  if (name.startsWith('ephemeral_')) return 'ephemeral';
  if (name.startsWith('swap_')) return 'swap';
  if (name.length > SHA1_HEX_LENGTH + 1 && name[SHA1_HEX_LENGTH] === '_') return 'resized';
  return undefined;
}

export interface CleanReport {
  /** Base files some instance disk uses. */
  active: string[];
  /** Unused base files (Nova's "removable"). */
  removable: string[];
  removed: string[];
  tooYoung: string[];
  /** Unused originals: Nova warns "Unknown base file" for each. */
  unknown: string[];
  /** Instance disks that could not be read (their backing files are kept, unknowable). */
  unreadable: string[];
}

/**
 * One pass of the cache manager: keep what instance disks use, remove unused base files
 * older than `maxAgeSeconds`. `log` receives the lines Nova's imagecache logs.
 */
export async function cleanCache(layout: CacheLayout, maxAgeSeconds: number, log: (line: string) => void): Promise<CleanReport> {
  const report: CleanReport = { active: [], removable: [], removed: [], tooYoung: [], unknown: [], unreadable: [] };
  const entries = await readdir(layout.baseDir, { withFileTypes: true }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [];
    throw e;
  });
  const bases = entries.filter((e) => e.isFile() && baseKind(e.name) !== undefined).map((e) => e.name).sort();
  const { used, unreadable } = await backingFilesInUse(layout);
  report.unreadable = unreadable;
  // An unreadable disk might use any base: then nothing is removed this pass.
  const keepAll = unreadable.length > 0;
  for (const name of bases) {
    const path = join(layout.baseDir, name);
    if (used.has(path)) report.active.push(path);
    else report.removable.push(path);
  }
  if (report.active.length > 0) log(`Active base files: ${report.active.join(' ')}`);
  for (const path of report.removable) {
    if (baseKind(basename(path)) === 'original') { report.unknown.push(path); log(`Unknown base file: ${path}`); }
  }
  if (report.removable.length > 0) log(`Removable base files: ${report.removable.join(' ')}`);
  for (const u of unreadable) log(`Cannot read instance disk ${u}: keeping every base file`);
  if (keepAll) return report;
  for (const path of report.removable) {
    const name = basename(path);
    const age = await ageOf(path);
    if (age === undefined) continue;
    if (age < maxAgeSeconds) { report.tooYoung.push(path); log(`Base or swap file too young to remove: ${path}`); continue; }
    const removed = await withExternalLock(layout.lockDir, name, async () => {
      // A new user may have come while we waited for the lock: check again.
      const again = await ageOf(path);
      if (again === undefined || again < maxAgeSeconds) return false;
      if ((await backingFilesInUse(layout)).used.has(path)) return false;
      log(`Removing base or swap file: ${path}`);
      await unlink(path);
      return true;
    });
    if (removed) {
      report.removed.push(path);
      await removeLockFile(layout.lockDir, name);
    }
  }
  return report;
}

/** Seconds since the file was last modified; undefined when it is gone. */
async function ageOf(path: string): Promise<number | undefined> {
  const st = await stat(path).catch(() => undefined);
  return st ? (Date.now() - st.mtimeMs) / 1000 : undefined;
}

/**
 * The backing files (absolute paths) of every disk in every instance directory under the
 * instances path, read from the disks' own headers by the engine.
 */
export async function backingFilesInUse(layout: CacheLayout): Promise<{ used: Set<string>; unreadable: string[] }> {
  const used = new Set<string>();
  const unreadable: string[] = [];
  const skip = new Set([layout.baseDir, layout.lockDir]);
  for (const dir of await readdir(layout.instancesPath, { withFileTypes: true })) {
    const instanceDir = join(layout.instancesPath, dir.name);
    if (!dir.isDirectory() || skip.has(instanceDir)) continue;
    for (const file of await readdir(instanceDir, { withFileTypes: true }).catch(() => [])) {
      if (!file.isFile()) continue;
      const disk = join(instanceDir, file.name);
      try {
        const image = await openImage(disk, { backing: false, headerOnly: true });
        try {
          if (image.backingRef) used.add(resolve(resolveBackingPath(disk, image.backingRef.filename)));
        } finally {
          await image.close();
        }
      } catch (e) {
        // Files that are not disks (console.log, disk.info) open as raw; a disk that fails to
        // open may still name a base file.
        unreadable.push(`${disk} (${(e as Error).message})`);
      }
    }
  }
  return { used, unreadable };
}
