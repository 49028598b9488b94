/**
 * `qemu-img measure -O qcow2`: the file size a new image needs for a given size or source
 * (QEMU's qcow2_measure and qcow2_calc_prealloc_size): metadata for the fully allocated
 * image (header, L2 and L1 tables, refcount blocks and table, found as a fixed point since
 * refcount metadata counts itself), plus the data clusters the source really allocates.
 */
import { walkExtents } from '../ops/common.js';
import type { Image, MeasureRequest, MeasureResult } from '../format.js';
import { createParams } from './create.js';
import { DiskError } from '../errors.js';
import { luksAreaBytes, luksSpecFromOptions } from '../luks/volume.js';
import { KEY_SECRET_REQUIRED } from './crypto.js';

/** Refcount table and blocks for `clusters` clusters, themselves included. */
export function refcountMetadataSize(clusters: number, clusterSize: number, refcountOrder: number): number {
  const blocksPerTableCluster = clusterSize / 8;
  const refcountsPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  let table = 0, blocks = 0, n = 0, last: number;
  do {
    last = n;
    blocks = Math.ceil((clusters + table + blocks) / refcountsPerBlock);
    table = Math.ceil(blocks / blocksPerTableCluster);
    n = clusters + blocks + table;
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

/** Bytes of a fully allocated image of `size` bytes. */
export function fullyAllocatedSize(size: number, clusterSize: number, refcountOrder: number, extendedL2: boolean): number {
  const l2EntrySize = extendedL2 ? 16 : 8;
  const aligned = Math.ceil(size / clusterSize) * clusterSize;
  let meta = clusterSize; // header
  const perTable = clusterSize / l2EntrySize;
  const l2Entries = Math.ceil(aligned / clusterSize / perTable) * perTable;
  meta += l2Entries * l2EntrySize;
  const perL1Cluster = clusterSize / 8;
  const l1Entries = Math.ceil((l2Entries * l2EntrySize) / clusterSize / perL1Cluster) * perL1Cluster;
  meta += l1Entries * 8;
  meta += refcountMetadataSize((meta + aligned) / clusterSize, clusterSize, refcountOrder);
  return meta + aligned;
}

export async function measureQcow2(request: MeasureRequest): Promise<MeasureResult> {
  const size = request.source ? request.source.size : request.size ?? 0;
  const p = createParams({ size, options: request.options });
  const cs = 2 ** p.clusterBits;
  const virtualSize = Math.ceil(size / cs) * cs;
  let required = 0;
  if (request.source) {
    // Clusters holding data anywhere in the source's chain (zero runs need nothing).
    let next = 0;
    for await (const e of walkExtents(request.source, 0, request.source.size)) {
      if (e.zero || !e.data) continue;
      const from = Math.max(e.offset, next);
      const end = Math.ceil((e.offset + e.length) / cs) * cs;
      // Counted from the start of the cluster the data begins in, as QEMU counts.
      if (end > from) required += end - Math.floor(from / cs) * cs;
      next = Math.max(next, end);
    }
  }
  if (p.preallocation === 'full' || p.preallocation === 'falloc') required = virtualSize;
  const fully = fullyAllocatedSize(virtualSize, cs, p.refcountOrder, p.extendedL2);
  // encrypt.format=luks: the LUKS header area, in whole clusters, comes on top of both.
  const luks = p.luks ? Math.ceil(luksAreaBytes(luksSpecFromOptions(p.luks).spec.keyBytes) / cs) * cs : 0;
  if (p.luks && request.options['encrypt.key-secret'] === undefined) throw new DiskError('EACCES', KEY_SECRET_REQUIRED);
  const result: MeasureResult = { required: fully - virtualSize + required + luks, 'fully-allocated': fully + luks };
  // Persistent bitmaps travel only from a qcow2 source into a v3 image.
  if (p.version >= 3 && request.source && 'format' in request.source && request.source.format === 'qcow2') {
    result.bitmaps = await bitmapsSize(request.source as Image, cs);
  }
  return result;
}

/**
 * Room the source's persistent dirty bitmaps take in an image with `clusterSize` clusters, as
 * QEMU reckons it: every bitmap fully allocated (one bit per granule of the virtual disk), its
 * bitmap table rounded up to clusters, and the bitmap directory (24-byte entries plus the name,
 * 8-byte aligned) rounded up to clusters.
 */
async function bitmapsSize(source: Image, clusterSize: number): Promise<number> {
  const data = (await source.info())['format-specific']?.data;
  const list = (data?.bitmaps ?? []) as Array<{ name: string; granularity: number }>;
  let size = 0;
  let directory = 0;
  for (const bm of list) {
    const bytes = Math.ceil(Math.ceil(source.size / bm.granularity) / 8);
    const clusters = Math.ceil(bytes / clusterSize);
    size += clusters * clusterSize;
    size += Math.ceil((clusters * 8) / clusterSize) * clusterSize;
    directory += Math.ceil((24 + new TextEncoder().encode(bm.name).length) / 8) * 8;
  }
  return size + Math.ceil(directory / clusterSize) * clusterSize;
}
