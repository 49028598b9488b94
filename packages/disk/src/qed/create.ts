/**
 * `qemu-img create -f qed`: the header in cluster 0 (the backing file name right after its
 * fields), a zeroed L1 table in the next `table_size` clusters, nothing else.
 */
import { DiskError } from '../errors.js';
import type { CreateOption, CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  QED_DEFAULT_CLUSTER_SIZE, QED_DEFAULT_TABLE_SIZE, QED_HEADER_BYTES, QED_MAX_CLUSTER_SIZE, QED_MAX_TABLE_SIZE, QED_MIN_CLUSTER_SIZE,
  QED_MIN_TABLE_SIZE, backingFeatures, qedMaxImageSize, serializeQedHeader,
} from './header.js';

export const QED_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Image format of the base image' },
  { name: 'cluster_size', type: 'size', help: 'Cluster size (in bytes)', default: String(QED_DEFAULT_CLUSTER_SIZE) },
  { name: 'table_size', type: 'size', help: 'L1/L2 table size (in clusters)' },
];

const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

export async function createQed(target: ByteSource, request: CreateRequest): Promise<void> {
  const cs = Number(request.options.cluster_size ?? QED_DEFAULT_CLUSTER_SIZE);
  const tableSize = Number(request.options.table_size ?? QED_DEFAULT_TABLE_SIZE);
  if (!pow2(cs) || cs < QED_MIN_CLUSTER_SIZE || cs > QED_MAX_CLUSTER_SIZE) {
    throw new DiskError('EINVAL', `QED cluster size must be within range [${QED_MIN_CLUSTER_SIZE}, ${QED_MAX_CLUSTER_SIZE}] and power of 2`);
  }
  if (!pow2(tableSize) || tableSize < QED_MIN_TABLE_SIZE || tableSize > QED_MAX_TABLE_SIZE) {
    throw new DiskError('EINVAL', `QED table size must be within range [${QED_MIN_TABLE_SIZE}, ${QED_MAX_TABLE_SIZE}] and power of 2`);
  }
  // QEMU rounds the size up to whole sectors.
  const size = Math.ceil(request.size / 512) * 512;
  const max = qedMaxImageSize(cs, tableSize);
  if (size > max) throw new DiskError('EINVAL', `QED image size must be a non-zero multiple of cluster size and less than ${max} bytes`);
  const name = request.backingFile !== undefined ? new TextEncoder().encode(request.backingFile) : undefined;
  if (name && name.length > cs - QED_HEADER_BYTES) throw new DiskError('EINVAL', 'Backing file name is too long for the qed header cluster');
  const header = serializeQedHeader({
    clusterSize: cs,
    tableSize,
    headerSize: 1,
    features: name ? backingFeatures(request.backingFormat) : 0n,
    compatFeatures: 0n,
    autoclearFeatures: 0n,
    l1TableOffset: cs,
    imageSize: size,
    backingFilenameOffset: name ? QED_HEADER_BYTES : 0,
    backingFilenameSize: name?.length ?? 0,
  });
  await target.write(header, 0);
  if (name) await target.write(name, QED_HEADER_BYTES);
  // The L1 table is written (as QEMU does), in 1 MiB pieces: with 64 MiB clusters it is large.
  const l1Bytes = tableSize * cs;
  const zero = new Uint8Array(Math.min(l1Bytes, 1 << 20));
  for (let at = 0; at < l1Bytes; at += zero.length) await target.write(zero.subarray(0, Math.min(zero.length, l1Bytes - at)), cs + at);
}
