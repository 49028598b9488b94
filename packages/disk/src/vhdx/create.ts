/**
 * `qemu-img create -f vhdx` (QEMU 7.2's layout): file identifier, two headers, two region
 * tables, the log at 1 MiB, the BAT after it, the metadata region after the BAT, and data
 * from 5 MiB past the BAT's end. Dynamic images start with every block ZERO (block_state_zero,
 * QEMU's default) or NOT_PRESENT; fixed ones map block i to the data area in order.
 */
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import type { CreateOption, CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import { formatGuid } from '../partition/guid.js';
import {
  BAT_GUID, BLOCK_SIZE_MAX, FILE_PARAMETERS_GUID, FILE_SIGNATURE, HEADER_OFFSETS, HEADER_SECTION_SIZE, KiB,
  LOGICAL_SECTOR_SIZE_GUID, MAX_IMAGE_SIZE, MAX_SECTORS_PER_BLOCK, METADATA_FLAG_IS_REQUIRED,
  METADATA_FLAG_IS_VIRTUAL_DISK, METADATA_GUID, MiB, PAGE83_GUID, PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT, PAYLOAD_BLOCK_ZERO, PHYSICAL_SECTOR_SIZE_GUID, REGION_TABLE_OFFSETS, VIRTUAL_DISK_SIZE_GUID,
  ZERO_GUID, guidBytes, serializeRegionTable, serializeVhdxHeader,
} from './header.js';

export const VHDX_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size; max of 64TB.' },
  { name: 'log_size', type: 'size', help: 'Log size; min 1MB.', default: '1048576' },
  { name: 'block_size', type: 'size', help: 'Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.', default: '0' },
  { name: 'subformat', type: 'string', help: "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'." },
  { name: 'block_state_zero', type: 'bool', help: "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic." },
];

const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
const roundUp = (n: number, to: number) => Math.ceil(n / to) * to;

function parseSize(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new DiskError('EINVAL', `Parameter '${name}' expects a size`);
  return n;
}

export async function createVhdx(target: ByteSource, request: CreateRequest): Promise<void> {
  if (request.backingFile) throw new DiskError('EUNSUPPORTED', "Backing file not supported for file format 'vhdx'");
  const o = request.options;
  // qemu-img rounds silently: the size to sectors, log and block sizes to whole MiB.
  const size = roundUp(request.size, 512);
  if (size > MAX_IMAGE_SIZE) throw new DiskError('EINVAL', 'Image size too large; max of 64TB');
  const logOpt = parseSize(o.log_size, 'log_size');
  const logSize = logOpt === undefined ? MiB : roundUp(logOpt, MiB);
  if (logSize > 0xffffffff) throw new DiskError('EINVAL', 'Log size must be smaller than 4 GB');
  if (logSize < MiB) throw new DiskError('EINVAL', 'Log size must be a multiple of 1 MB');
  let blockSize = parseSize(o.block_size, 'block_size') ?? 0;
  blockSize = Math.min(roundUp(blockSize, MiB), BLOCK_SIZE_MAX);
  if (blockSize === 0) blockSize = size > 32 * TiB ? 64 * MiB : size > 100 * GiB ? 32 * MiB : size > GiB ? 16 * MiB : 8 * MiB;
  if ((blockSize & (blockSize - 1)) !== 0) throw new DiskError('EINVAL', 'Block size must be a power of two');
  const subformat = o.subformat ?? 'dynamic';
  if (subformat !== 'dynamic' && subformat !== 'fixed') throw new DiskError('EINVAL', `Parameter 'subformat' does not accept value '${subformat}'`);
  const fixed = subformat === 'fixed';
  const zeroBlocks = o.block_state_zero === undefined ? true : o.block_state_zero === 'on';
  const sectorSize = 512;

  // File identifier: signature and a UTF-16 creator string (diagnostic only, §2.2.1).
  const ident = new Uint8Array(8 + 2 * 32);
  ident.set(new TextEncoder().encode(FILE_SIGNATURE), 0);
  const creator = 'diskhub';
  for (let i = 0; i < creator.length; i++) new DataView(ident.buffer).setUint16(8 + 2 * i, creator.charCodeAt(i), true);
  await target.write(ident, 0);

  // Two headers: the second has the higher sequence number and is current.
  const header = {
    sequenceNumber: BigInt(crypto().randomBytes(4).readUInt32LE(0)),
    fileWriteGuid: formatGuid(crypto().randomBytes(16)),
    dataWriteGuid: formatGuid(crypto().randomBytes(16)),
    logGuid: ZERO_GUID,
    logVersion: 0,
    version: 1,
    logLength: logSize,
    logOffset: HEADER_SECTION_SIZE,
  };
  await target.write(serializeVhdxHeader(header), HEADER_OFFSETS[0]);
  await target.write(serializeVhdxHeader({ ...header, sequenceNumber: header.sequenceNumber + 1n }), HEADER_OFFSETS[1]);

  // Region tables (QEMU leaves their "required" bits clear), BAT.
  const chunkRatio = (MAX_SECTORS_PER_BLOCK * sectorSize) / blockSize;
  const dataBlocks = Math.ceil(size / blockSize);
  const batEntries = dataBlocks === 0 ? 0 : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  const batOffset = roundUp(HEADER_SECTION_SIZE + logSize, MiB);
  const batLength = roundUp(batEntries * 8, MiB);
  const metadataOffset = roundUp(batOffset + batLength, MiB);
  const dataOffset = batOffset + batLength + 5 * MiB;
  await target.truncate(fixed ? dataOffset + size : dataOffset);
  if (fixed || zeroBlocks) {
    // Written in pieces of 1 MiB (128 Ki entries): a 64 TiB disk has a BAT of many MiB.
    const state = BigInt(zeroBlocks ? PAYLOAD_BLOCK_ZERO : fixed ? PAYLOAD_BLOCK_FULLY_PRESENT : PAYLOAD_BLOCK_NOT_PRESENT);
    const perPiece = MiB / 8;
    for (let first = 0; first < batEntries; first += perPiece) {
      const n = Math.min(perPiece, batEntries - first);
      const piece = new Uint8Array(n * 8);
      const v = new DataView(piece.buffer);
      for (let i = first; i < first + n; i++) {
        if ((i + 1) % (chunkRatio + 1) === 0) continue; // sector bitmap entries stay NOT_PRESENT
        const block = i - Math.floor(i / (chunkRatio + 1));
        const at = zeroBlocks ? 0n : BigInt(roundUp(dataOffset + block * blockSize, MiB));
        v.setBigUint64((i - first) * 8, at | state, true);
      }
      await target.write(piece, batOffset + first * 8);
    }
  }
  const regions = serializeRegionTable([
    { guid: BAT_GUID, fileOffset: batOffset, length: batLength, required: false },
    { guid: METADATA_GUID, fileOffset: metadataOffset, length: MiB, required: false },
  ]);
  for (const at of REGION_TABLE_OFFSETS) await target.write(regions, at);

  // Metadata: the table, then the five required items from 64 KiB on (§2.6).
  const items: [string, Uint8Array, number][] = [];
  const u32 = (n: number) => { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n, true); return b; };
  const params = new Uint8Array(8);
  new DataView(params.buffer).setUint32(0, blockSize, true);
  new DataView(params.buffer).setUint32(4, fixed ? 1 : 0, true);
  const vsize = new Uint8Array(8);
  new DataView(vsize.buffer).setBigUint64(0, BigInt(size), true);
  items.push([FILE_PARAMETERS_GUID, params, METADATA_FLAG_IS_REQUIRED]);
  items.push([VIRTUAL_DISK_SIZE_GUID, vsize, METADATA_FLAG_IS_REQUIRED | METADATA_FLAG_IS_VIRTUAL_DISK]);
  items.push([PAGE83_GUID, crypto().randomBytes(16), METADATA_FLAG_IS_REQUIRED | METADATA_FLAG_IS_VIRTUAL_DISK]);
  items.push([LOGICAL_SECTOR_SIZE_GUID, u32(sectorSize), METADATA_FLAG_IS_REQUIRED | METADATA_FLAG_IS_VIRTUAL_DISK]);
  items.push([PHYSICAL_SECTOR_SIZE_GUID, u32(sectorSize), METADATA_FLAG_IS_REQUIRED | METADATA_FLAG_IS_VIRTUAL_DISK]);
  const table = new Uint8Array(64 * KiB);
  const tv = new DataView(table.buffer);
  table.set(new TextEncoder().encode('metadata'), 0);
  tv.setUint16(10, items.length, true);
  const values = new Uint8Array(items.reduce((n, [, b]) => n + b.length, 0));
  let at = 0;
  items.forEach(([guid, value, flags], i) => {
    const e = 32 + i * 32;
    table.set(guidBytes(guid), e);
    tv.setUint32(e + 16, 64 * KiB + at, true);
    tv.setUint32(e + 20, value.length, true);
    tv.setUint32(e + 24, flags, true);
    values.set(value, at);
    at += value.length;
  });
  await target.write(table, metadataOffset);
  await target.write(values, metadataOffset + 64 * KiB);
}
