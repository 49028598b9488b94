/**
 * An instance snapshot as Nova takes one with the Qcow2 backend (compute/api.py _create_image
 * and _initialize_instance_snapshot_metadata, libvirt/driver.py snapshot and
 * _snapshot_metadata): the image record is created first (queued), the root disk's overlay is
 * flattened with the engine's convert into a qcow2 under <instances_path>/snapshots, and
 * uploaded; on failure the half-made image is deleted. Properties are the base image's
 * (without those Nova never inherits) plus Nova's own: image_type=snapshot, instance_uuid,
 * base_image_ref, user_id, owner_project_name, owner_user_name, image_location, image_state.
 * Nova's libvirt driver also sets owner_id (the instance's project); the image service here
 * refuses that name as reserved, and the image's `owner` says the same.
 */
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { convertFile, openImage, resolveBackingPath } from '@diskhub/disk';
import type { ImageRecord, ImageServiceClient } from './client.js';
import { ComputeError } from './errors.js';
import { cacheFileName, type CacheLayout } from './imagecache.js';
import { RbdDisks, type RbdSettings } from './rbd.js';

/** [DEFAULT] non_inheritable_image_properties (Nova's default). */
const NON_INHERITABLE = new Set(['cache_in_nova', 'bittorrent', 'img_signature_hash_method', 'img_signature', 'img_signature_key_type', 'img_signature_certificate_uuid']);
/** Fields of an image record that are Glance's, not properties to copy. */
const CORE_FIELDS = new Set([
  'id', 'name', 'status', 'visibility', 'protected', 'os_hidden', 'checksum', 'os_hash_algo', 'os_hash_value', 'size',
  'virtual_size', 'created_at', 'updated_at', 'file', 'schema', 'self', 'tags', 'owner', 'locations', 'direct_url',
  'disk_format', 'container_format', 'min_disk', 'min_ram', 'stores', 'os_glance_import_task', 'os_glance_failed_import',
  'os_glance_importing_to_stores',
]);
/** Properties Nova sets for each snapshot and never carries over from the base image. */
const SNAPSHOT_OWN = new Set(['image_type', 'instance_uuid', 'base_image_ref', 'user_id', 'owner_id', 'owner_project_name', 'owner_user_name', 'image_location', 'image_state']);
const GiB = 1024 ** 3;
/** Upload read size: 1 MiB pieces instead of the stream default's 64 KiB (16× fewer trips through the web stream). */
const UPLOAD_CHUNK = 1 << 20;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface SnapshotRequest {
  name: string;
  /** Default: the instance directory's name (Nova names it by the instance's uuid). */
  instanceUuid?: string;
  /** The image the instance was booted from; default: the image whose cache name is the root disk's base file. */
  baseImageRef?: string;
  signal?: AbortSignal;
  /** images_type = rbd: the root disk is the RBD image `<uuid>_disk` of this pool. */
  rbd?: RbdSettings;
}

export async function snapshotInstance(client: ImageServiceClient, instanceDir: string, layout: CacheLayout, req: SnapshotRequest): Promise<ImageRecord> {
  const disk = join(instanceDir, 'disk');
  const instanceUuid = req.instanceUuid ?? basename(instanceDir);
  if (!UUID.test(instanceUuid)) throw new ComputeError(`the instance directory's name '${instanceUuid}' is not an instance uuid; give --instance-uuid`, 'usage');
  // An RBD root disk is read through librbd (a clone through its parent), as Nova's
  // Rbd.snapshot_extract converts rbd:pool/<uuid>_disk, and uploaded raw (its source format).
  const rbd = req.rbd ? await RbdDisks.connect(req.rbd) : undefined;
  try {
    return await snapshotWith(client, disk, instanceUuid, layout, req, rbd);
  } finally {
    await rbd?.close();
  }
}

async function snapshotWith(client: ImageServiceClient, disk: string, instanceUuid: string, layout: CacheLayout, req: SnapshotRequest, rbd?: RbdDisks): Promise<ImageRecord> {
  const rbdName = RbdDisks.diskName(instanceUuid, 'disk');
  let rootSize: number, basePath: string | undefined;
  if (rbd) {
    const size = await rbd.sizeOf(rbdName);
    if (size === undefined) throw new ComputeError(`the instance's root disk ${rbd.spec(rbdName)} does not exist`, 'not-found');
    rootSize = size;
  } else ({ backing: basePath, size: rootSize } = await rootDiskFacts(disk));
  const baseImageRef = req.baseImageRef ?? (basePath ? await imageIdOfCacheName(client, basename(basePath)) : undefined);
  const base = baseImageRef ? await client.getImage(baseImageRef).catch(() => undefined) : undefined;

  const meta: Record<string, unknown> = {
    name: req.name,
    disk_format: rbd ? 'raw' : 'qcow2',
    container_format: base?.container_format ?? 'bare',
    visibility: 'private',
    // Nova records an instance's min_disk as the larger of the image's and the flavor's root
    // size (utils.get_system_metadata_from_image), and the snapshot inherits it.
    min_disk: Math.max(base?.min_disk ?? 0, Math.ceil(rootSize / GiB)),
    min_ram: base?.min_ram ?? 0,
  };
  if (base) {
    for (const [key, value] of Object.entries(base)) {
      if (CORE_FIELDS.has(key) || NON_INHERITABLE.has(key) || SNAPSHOT_OWN.has(key) || typeof value !== 'string') continue;
      meta[key] = value;
    }
  }
  Object.assign(meta, {
    image_type: 'snapshot',
    instance_uuid: instanceUuid,
    user_id: client.identity.userId,
    owner_project_name: client.identity.projectName,
    owner_user_name: client.identity.userName,
    image_location: 'snapshot',
    image_state: 'available',
    ...(baseImageRef ? { base_image_ref: baseImageRef } : {}),
  });

  const created = await client.createImage(meta);
  const snapshotsDir = join(layout.instancesPath, 'snapshots');
  await mkdir(snapshotsDir, { recursive: true });
  const workDir = await mkdtemp(join(snapshotsDir, 'tmp'));
  try {
    const flat = join(workDir, created.id);
    if (rbd) await rbd.exportTo(rbdName, flat);
    else await convertFile(disk, 'qcow2', flat, 'qcow2', { backing: true, ...(req.signal ? { signal: req.signal } : {}) });
    const size = (await stat(flat)).size;
    await client.upload(created.id, createReadStream(flat, { highWaterMark: UPLOAD_CHUNK }), size);
    return await client.getImage(created.id);
  } catch (e) {
    await client.deleteImage(created.id).catch(() => undefined);
    throw e;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** The disk's virtual size and the absolute path of its backing file (undefined when it has none), from its header. */
async function rootDiskFacts(disk: string): Promise<{ backing: string | undefined; size: number }> {
  let image;
  try {
    image = await openImage(disk, { backing: false, headerOnly: true });
  } catch (e) {
    throw new ComputeError(`cannot open the instance's root disk ${disk}: ${(e as Error).message}`, 'not-found');
  }
  try {
    return { backing: image.backingRef ? resolveBackingPath(disk, image.backingRef.filename) : undefined, size: image.size };
  } finally {
    await image.close();
  }
}

/** The image whose cache file name (sha1 of its id) is `name`, among those the token sees. */
async function imageIdOfCacheName(client: ImageServiceClient, name: string): Promise<string | undefined> {
  for await (const image of client.listImages()) if (cacheFileName(image.id) === name) return image.id;
  return undefined;
}
