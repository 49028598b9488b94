/**
 * `qemu-img create -f vdi`: a header, the block map right after it (rounded up to a sector),
 * then the data area. Dynamic images start with every block unallocated; static ones
 * (`-o static=on`) map block i to data block i and size the file to hold them all.
 */
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import type { CreateOption, CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  VDI_BLOCK_SIZE, VDI_DISK_SIZE_MAX, VDI_HEADER_SIZE, VDI_SECTOR_SIZE, VDI_TYPE_DYNAMIC, VDI_TYPE_STATIC,
  VDI_UNALLOCATED, serializeVdiHeader,
} from './header.js';

export const VDI_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'static', type: 'bool', help: 'VDI static (pre-allocated) image', default: 'off' },
];

/** A random (version 4) UUID in VirtualBox's byte order (first three fields little-endian). */
function newUuid(): Uint8Array {
  const u = crypto().randomBytes(16);
  u[6] = (u[6]! & 0x0f) | 0x40;
  u[8] = (u[8]! & 0x3f) | 0x80;
  u.subarray(0, 4).reverse();
  u.subarray(4, 6).reverse();
  u.subarray(6, 8).reverse();
  return u;
}

export async function createVdi(target: ByteSource, request: CreateRequest): Promise<void> {
  if (request.backingFile) throw new DiskError('EUNSUPPORTED', "Backing file not supported for file format 'vdi'");
  const isStatic = request.options.static === 'on';
  const prealloc = request.options.preallocation ?? 'off';
  if (!['off', 'falloc', 'full'].includes(prealloc)) {
    throw new DiskError('EINVAL', `Parameter 'preallocation' does not accept value '${prealloc}'`);
  }
  // QEMU silently rounds the size up to whole sectors.
  const bytes = Math.ceil(request.size / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE;
  if (bytes > VDI_DISK_SIZE_MAX) {
    throw new DiskError('EUNSUPPORTED', `Unsupported VDI image size (size is 0x${bytes.toString(16)}, max supported is 0x${VDI_DISK_SIZE_MAX.toString(16)})`);
  }
  // preallocation is the host file's option: qemu-img creates the file at the virtual size
  // that way first, then writes the vdi structures over its start.
  if (prealloc === 'falloc') await target.allocate(0, bytes);
  if (prealloc === 'full') {
    const zero = new Uint8Array(Math.min(bytes, 1 << 20));
    for (let at = 0; at < bytes; at += zero.length) await target.write(zero.subarray(0, Math.min(zero.length, bytes - at)), at);
  }
  const blocks = Math.ceil(bytes / VDI_BLOCK_SIZE);
  const bmapSize = Math.ceil((blocks * 4) / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE;
  const offsetData = VDI_HEADER_SIZE + bmapSize;
  await target.write(serializeVdiHeader({
    imageType: isStatic ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC,
    diskSize: bytes,
    blocksInImage: blocks,
    blocksAllocated: isStatic ? blocks : 0,
    offsetData,
    uuidImage: newUuid(),
    uuidLastSnap: newUuid(),
  }), 0);
  const bmap = new Uint8Array(bmapSize);
  const v = new DataView(bmap.buffer);
  for (let i = 0; i < blocks; i++) v.setUint32(i * 4, isStatic ? i : VDI_UNALLOCATED, true);
  // Written in 1 MiB pieces: a multi-terabyte disk has a map of several MiB.
  for (let at = 0; at < bmapSize; at += 1 << 20) await target.write(bmap.subarray(at, Math.min(bmapSize, at + (1 << 20))), VDI_HEADER_SIZE + at);
  if (isStatic) await target.truncate(Math.max(await target.size(), offsetData + blocks * VDI_BLOCK_SIZE));
}
