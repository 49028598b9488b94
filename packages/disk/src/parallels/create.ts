/**
 * `qemu-img create -f parallels` as QEMU 7.2's block/parallels.c makes it: the extended-format
 * header ("WithouFreSpacExt", cluster-sized offsets), an all-zero BAT, and the data area from
 * the first cluster boundary after it. Sizes are rounded up to whole sectors, as QEMU does.
 */
import { DiskError } from '../errors.js';
import type { CreateOption, CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import { PARALLELS_MAGIC_EXT, PARALLELS_VERSION, PARALLELS_HEADER_BYTES } from './header.js';

export const PARALLELS_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'cluster_size', type: 'size', help: 'Parallels image cluster size', default: '1048576' },
];

const SECTOR = 512;
/** QEMU's geometry for the header (unused by the format itself). */
const HEADS = 16;
const SECTORS_PER_CYLINDER = 32;
/** QEMU's MAX_PARALLELS_IMAGE_FACTOR: at most 2^32 clusters. */
const MAX_CLUSTERS = 2 ** 32;

export async function createParallels(target: ByteSource, request: CreateRequest): Promise<void> {
  if (request.backingFile !== undefined) throw new DiskError('EUNSUPPORTED', "Backing file not supported for file format 'parallels'");
  const roundUp = (n: number) => Math.ceil(n / SECTOR) * SECTOR;
  const size = roundUp(request.size);
  const cluster = roundUp(Number(request.options.cluster_size ?? 1 << 20));
  if (BigInt(cluster) >= (2n ** 63n - 1n) / BigInt(MAX_CLUSTERS)) throw new DiskError('EINVAL', 'Cluster size is too large');
  if (size >= MAX_CLUSTERS * cluster) throw new DiskError('EINVAL', 'Image size is too large for this cluster size');
  const batEntries = Math.ceil(size / cluster);
  const dataSectors = (Math.ceil((PARALLELS_HEADER_BYTES + 4 * batEntries) / cluster) * cluster) / SECTOR;
  const head = new Uint8Array(SECTOR);
  const v = new DataView(head.buffer);
  head.set(new TextEncoder().encode(PARALLELS_MAGIC_EXT), 0);
  v.setUint32(16, PARALLELS_VERSION, true);
  v.setUint32(20, HEADS, true);
  v.setUint32(24, Math.floor(size / SECTOR / HEADS / SECTORS_PER_CYLINDER), true);
  v.setUint32(28, cluster / SECTOR, true);
  v.setUint32(32, batEntries, true);
  v.setBigUint64(36, BigInt(size / SECTOR), true);
  v.setUint32(48, dataSectors, true);
  await target.write(head, 0);
  // The rest of the BAT's clusters: zeroes up to the data area.
  await target.truncate(dataSectors * SECTOR);
}
