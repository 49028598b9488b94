/**
 * `qemu-img create -f vpc`: the virtual size rounded up to a CHS geometry (unless
 * `force_size`), a footer, and for dynamic disks the footer copy at 0, the dynamic header at
 * 512, the BAT at 1536 (all unallocated) and the footer again after it. 2 MiB blocks.
 */
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import type { CreateOption, CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  DISK_DYNAMIC, DISK_FIXED, FOOTER_SIZE, MAX_CHS_SECTORS, VHD_MAX_SECTORS, VHD_TIMESTAMP_BASE, chsGeometry,
  serializeDynamicHeader, serializeFooter, type Geometry,
} from './header.js';

export const VPC_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'subformat', type: 'string', help: 'Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ' },
  { name: 'force_size', type: 'bool', help: 'Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation' },
];

const BLOCK_SIZE = 2 * 1024 * 1024;
const MAX_GEOMETRY: Geometry = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 };

/** The geometry and sector count qemu-img gives a disk of `bytes`. */
export function vpcCreateGeometry(bytes: number, forceSize: boolean): { geometry: Geometry; totalSectors: number } {
  let geometry: Geometry = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  const sectors = (g: Geometry) => g.cylinders * g.heads * g.sectorsPerTrack;
  if (forceSize) {
    geometry = MAX_GEOMETRY;
  } else {
    // The smallest geometry that covers the size: the size is rounded up, never truncated.
    const wanted = Math.min(MAX_CHS_SECTORS, Math.floor(bytes / 512));
    for (let i = 0; wanted > sectors(geometry); i++) geometry = chsGeometry(wanted + i);
  }
  if (sectors(geometry) === MAX_CHS_SECTORS) {
    const totalSectors = Math.floor(bytes / 512);
    if (totalSectors > VHD_MAX_SECTORS) throw new DiskError('EINVAL', "The image size is too large for file format 'vpc'");
    return { geometry, totalSectors };
  }
  return { geometry, totalSectors: sectors(geometry) };
}

export async function createVpc(target: ByteSource, request: CreateRequest): Promise<void> {
  if (request.backingFile) throw new DiskError('EUNSUPPORTED', "Backing file not supported for file format 'vpc'");
  const subformat = request.options.subformat ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new DiskError('EINVAL', `Invalid subformat '${subformat}'`);
  const forceSize = request.options.force_size === 'on';
  if (request.size / 512 > VHD_MAX_SECTORS) throw new DiskError('EINVAL', "The image size is too large for file format 'vpc'");
  // qemu-img rounds the requested size up to whole sectors first.
  const { geometry, totalSectors } = vpcCreateGeometry(Math.ceil(request.size / 512) * 512, forceSize);
  const size = totalSectors * 512;
  const dynamic = subformat === 'dynamic';
  const footer = serializeFooter({
    dataOffset: dynamic ? 512 : -1,
    // "qem2" tells readers (QEMU among them) to trust current_size over the geometry.
    creatorApp: forceSize ? 'qem2' : 'qemu',
    size,
    geometry,
    diskType: dynamic ? DISK_DYNAMIC : DISK_FIXED,
    uuid: crypto().randomBytes(16),
    timestamp: Math.floor(Date.now() / 1000) - VHD_TIMESTAMP_BASE,
  });
  if (!dynamic) {
    await target.truncate(size);
    await target.write(footer, size);
    return;
  }
  const entries = Math.ceil(totalSectors / (BLOCK_SIZE / 512));
  const batBytes = Math.ceil((entries * 4) / 512) * 512;
  await target.write(footer, 0);
  await target.write(serializeDynamicHeader(3 * 512, entries, BLOCK_SIZE), 512);
  for (let at = 0; at < batBytes; at += 1 << 20) {
    await target.write(new Uint8Array(Math.min(1 << 20, batBytes - at)).fill(0xff), 3 * 512 + at);
  }
  await target.write(footer, 3 * 512 + batBytes);
  if ((await target.size()) !== 3 * 512 + batBytes + FOOTER_SIZE) throw new DiskError('EIO', `${target.name}: unexpected size after create`);
}
