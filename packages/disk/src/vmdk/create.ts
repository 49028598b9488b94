/**
 * `qemu-img create -f vmdk` (QEMU 7.2 layout): the descriptor (embedded at sector 1 of a
 * sparse file, or a text file naming the extents), and each extent: flat files are sized
 * holes; sparse extents get a header, a redundant and a primary grain directory each followed
 * by their (all-zero) grain tables, and their grains start at the next 64 KiB grain boundary.
 * streamOptimized is a sparse extent whose grains are compressed (written by convert).
 */
import { basename, dirname, extname, join } from 'node:path';
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import type { CreateOption, CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT, FLAG_RGD, FLAG_ZERO_GRAIN, SECTOR, serializeSparseHeader,
} from './header.js';

export const VMDK_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'adapter_type', type: 'string', help: 'Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: "Must be 'vmdk' if present" },
  { name: 'compat6', type: 'bool', help: 'VMDK version 6 image', default: 'off' },
  { name: 'hwversion', type: 'string', help: 'VMDK hardware version', default: 'undefined' },
  { name: 'toolsversion', type: 'string', help: 'VMware guest tools version' },
  { name: 'subformat', type: 'string', help: 'VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ' },
  { name: 'zeroed_grain', type: 'bool', help: 'Enable efficient zero writes using the zeroed-grain GTE feature' },
];

export const VMDK_SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'] as const;
export type VmdkSubformat = typeof VMDK_SUBFORMATS[number];
const ADAPTER_TYPES = ['ide', 'buslogic', 'lsilogic', 'legacyESX'];
/** Split subformats cut the disk into extents of this size. */
const SPLIT_SIZE = 0x80000000;
/** qemu-img's new sparse extents: 64 KiB grains, 512-entry grain tables. */
const GRAIN_SECTORS = 128;
const GT_ENTRIES = 512;

/** Write a new sparse extent of `bytes` into `target` (QEMU's layout; see the file comment). */
export async function initSparseExtent(target: ByteSource, bytes: number, compress: boolean, zeroedGrain: boolean): Promise<void> {
  const capacity = Math.floor(bytes / SECTOR);
  const grains = Math.ceil(capacity / GRAIN_SECTORS);
  const gtSectors = (GT_ENTRIES * 4) / SECTOR;
  const gtCount = Math.ceil(grains / GT_ENTRIES);
  const gdSectors = Math.ceil((gtCount * 4) / SECTOR);
  const rgdOffset = 1 + 20;
  const gdOffset = rgdOffset + gdSectors + gtSectors * gtCount;
  const overHead = Math.ceil((gdOffset + gdSectors + gtSectors * gtCount) / GRAIN_SECTORS) * GRAIN_SECTORS;
  await target.write(serializeSparseHeader({
    version: compress ? 3 : zeroedGrain ? 2 : 1,
    flags: FLAG_RGD | FLAG_NL_DETECT | (compress ? FLAG_COMPRESSED | FLAG_MARKERS : 0) | (zeroedGrain ? FLAG_ZERO_GRAIN : 0),
    capacity, grainSize: GRAIN_SECTORS, descriptorOffset: 1, descriptorSize: 20, numGTEsPerGT: GT_ENTRIES,
    rgdOffset, gdOffset, overHead, compressAlgorithm: compress ? COMPRESSION_DEFLATE : 0,
  }), 0);
  await target.truncate(overHead * SECTOR);
  // Each directory points at the grain tables right after it.
  for (const dir of [rgdOffset, gdOffset]) {
    const gd = new Uint8Array(gdSectors * SECTOR);
    const v = new DataView(gd.buffer);
    for (let i = 0; i < gtCount; i++) v.setUint32(i * 4, dir + gdSectors + i * gtSectors, true);
    await target.write(gd, dir * SECTOR);
  }
}

export interface VmdkCreateSettings {
  subformat: VmdkSubformat;
  adapterType: string;
  hwVersion: string;
  toolsVersion: string;
  zeroedGrain: boolean;
}

/** Validate `-o` options as QEMU does (same messages). */
export function vmdkSettings(options: Record<string, string>): VmdkCreateSettings {
  const adapterType = options.adapter_type ?? 'ide';
  if (!ADAPTER_TYPES.includes(adapterType)) throw new DiskError('EINVAL', `invalid parameter value: ${adapterType}`);
  const subformat = (options.subformat ?? 'monolithicSparse') as VmdkSubformat;
  if (!VMDK_SUBFORMATS.includes(subformat)) throw new DiskError('EINVAL', `invalid parameter value: ${subformat}`);
  let hwVersion = options.hwversion && options.hwversion !== 'undefined' ? options.hwversion : undefined;
  if (options.compat6 === 'on') {
    if (hwVersion) throw new DiskError('EINVAL', 'compat6 cannot be enabled with hwversion set');
    hwVersion = '6';
  }
  return { subformat, adapterType, hwVersion: hwVersion ?? '4', toolsVersion: options.toolsversion ?? '2147483647', zeroedGrain: options.zeroed_grain === 'on' };
}

/** The descriptor text qemu-img writes. */
export function descriptorText(s: VmdkCreateSettings, size: number, extentLines: string[], cid: number, parentCid: number, parentHint?: string): string {
  const heads = s.adapterType === 'ide' ? 16 : 255;
  return '# Disk DescriptorFile\n'
    + 'version=1\n'
    + `CID=${cid.toString(16)}\n`
    + `parentCID=${parentCid.toString(16)}\n`
    + `createType="${s.subformat}"\n`
    + (parentHint !== undefined ? `parentFileNameHint="${parentHint}"` : '')
    + '\n# Extent description\n'
    + extentLines.join('')
    + '\n# The Disk Data Base\n#DDB\n\n'
    + `ddb.virtualHWVersion = "${s.hwVersion}"\n`
    + `ddb.geometry.cylinders = "${Math.floor(size / (63 * heads * SECTOR))}"\n`
    + `ddb.geometry.heads = "${heads}"\n`
    + 'ddb.geometry.sectors = "63"\n'
    + `ddb.adapterType = "${s.adapterType}"\n`
    + `ddb.toolsVersion = "${s.toolsVersion}"\n`;
}

/**
 * The name extents are named after. `diskhub img convert` creates its target under a temporary
 * name (".NAME.PID-RANDOM.diskhub-tmp") and renames it when done: the extents take the final
 * name, so that the renamed descriptor names them as qemu-img would.
 */
function extentBaseName(path: string): string {
  const m = /^\.(.+)\.\d+-[0-9a-f]+\.diskhub-tmp$/.exec(basename(path));
  return m ? join(dirname(path), m[1]!) : path;
}

/** Extent file names as QEMU derives them: prefix-flat.ext, prefix-s001.ext / prefix-f001.ext. */
export function extentFileName(descriptorPath: string, index: number, flat: boolean, split: boolean): string {
  const base = basename(extentBaseName(descriptorPath));
  const ext = extname(base);
  const prefix = ext ? base.slice(0, -ext.length) : base;
  return split ? `${prefix}-${flat ? 'f' : 's'}${String(index).padStart(3, '0')}${ext}` : `${prefix}-flat${ext}`;
}

export async function createVmdk(target: ByteSource, request: CreateRequest, parentCidOf?: (backing: string) => Promise<number>): Promise<void> {
  if (request.options.backing_fmt !== undefined && request.options.backing_fmt !== 'vmdk') throw new DiskError('EINVAL', 'backing_file must be a vmdk image');
  if (request.backingFormat !== undefined && request.backingFormat !== 'vmdk') throw new DiskError('EINVAL', 'backing_file must be a vmdk image');
  const s = vmdkSettings(request.options);
  const size = Math.ceil(request.size / SECTOR) * SECTOR;
  const flat = s.subformat === 'monolithicFlat' || s.subformat === 'twoGbMaxExtentFlat';
  const split = s.subformat === 'twoGbMaxExtentFlat' || s.subformat === 'twoGbMaxExtentSparse';
  const compress = s.subformat === 'streamOptimized';
  const backing = request.backingFile;
  if (flat && backing !== undefined) throw new DiskError('EUNSUPPORTED', "Flat image can't have backing file");
  if (flat && s.zeroedGrain) throw new DiskError('EUNSUPPORTED', "Flat image can't enable zeroed grain");
  let parentCid = 0xffffffff;
  if (backing !== undefined) {
    if (!parentCidOf) throw new DiskError('EUNSUPPORTED', 'cannot read the parent CID here');
    parentCid = await parentCidOf(backing);
  }
  const lines: string[] = [];
  const line = (bytes: number, name: string) => lines.push(flat ? `RW ${Math.ceil(bytes / SECTOR)} FLAT "${name}" 0\n` : `RW ${Math.ceil(bytes / SECTOR)} SPARSE "${name}"\n`);
  if (!split && !flat) {
    await initSparseExtent(target, size, compress, s.zeroedGrain);
    line(size, basename(target.name));
  } else {
    if (!request.createRelated) throw new DiskError('EUNSUPPORTED', `vmdk subformat ${s.subformat} needs extent files, which cannot be created here`);
    const extentSize = split ? SPLIT_SIZE : size;
    for (let done = 0, index = 1; done < size; index++) {
      const bytes = Math.min(size - done, extentSize);
      const name = extentFileName(target.name, index, flat, split);
      const file = await request.createRelated(name);
      try {
        if (flat) await file.truncate(bytes);
        else await initSparseExtent(file, bytes, compress, s.zeroedGrain);
        await file.flush();
      } finally {
        await file.close();
      }
      line(bytes, name);
      done += bytes;
    }
  }
  const cid = crypto().randomBytes(4).readUInt32LE(0);
  const text = new Uint8Array(Buffer.from(descriptorText(s, size, lines, cid, parentCid, backing), 'latin1'));
  if (!split && !flat) {
    if (text.length > 20 * SECTOR) throw new DiskError('EINVAL', `vmdk descriptor of ${text.length} bytes does not fit the 10240 bytes reserved for it`);
    await target.write(text, 0x200);
  } else {
    await target.write(text, 0);
    await target.truncate(text.length);
  }
}
