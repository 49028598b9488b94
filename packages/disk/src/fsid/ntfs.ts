/**
 * NTFS: the boot sector ("NTFS    " OEM id) gives the geometry and the volume serial; the
 * label is the $VOLUME_NAME attribute of MFT record 3 ($Volume), read with the record's
 * update-sequence fixups applied.
 */
import { type Prober, view, ascii, isPowerOfTwo } from './model.js';

const VOLUME_RECORD = 3;
const ATTR_VOLUME_NAME = 0x60;
const ATTR_END = 0xffffffff;
/** Update sequences protect each 512-byte stride of a record, whatever the sector size. */
const FIXUP_STRIDE = 512;

function applyFixups(rec: Uint8Array): boolean {
  const v = view(rec);
  const usaOffset = v.getUint16(4, true);
  const usaCount = v.getUint16(6, true);
  if (usaCount === 0 || usaOffset + usaCount * 2 > rec.length || (usaCount - 1) * FIXUP_STRIDE > rec.length) return false;
  const check = v.getUint16(usaOffset, true);
  for (let i = 1; i < usaCount; i++) {
    const at = i * FIXUP_STRIDE - 2;
    if (v.getUint16(at, true) !== check) return false;
    v.setUint16(at, v.getUint16(usaOffset + i * 2, true), true);
  }
  return true;
}

export const probeNtfs: Prober = async (ctx) => {
  const bs = ctx.at(0, 512);
  if (!bs || ascii(bs.subarray(3, 11)) !== 'NTFS    ') return null;
  const v = view(bs);
  const sectorSize = v.getUint16(11, true);
  const spcRaw = bs[13]!;
  // Values above 0x80 encode 2^(256-n) sectors per cluster (large clusters).
  const sectorsPerCluster = spcRaw > 0x80 ? 2 ** (256 - spcRaw) : spcRaw;
  if (!isPowerOfTwo(sectorSize) || sectorSize < 256 || sectorSize > 4096 || !isPowerOfTwo(sectorsPerCluster)) return null;
  const clusterSize = sectorSize * sectorsPerCluster;
  const mftCluster = Number(v.getBigUint64(0x30, true));
  const perRecord = v.getInt8(0x40);
  const recordSize = perRecord > 0 ? perRecord * clusterSize : 2 ** -perRecord;
  const serial = v.getBigUint64(0x48, true);
  const info = {
    type: 'ntfs', usage: 'filesystem' as const,
    uuid: serial.toString(16).toUpperCase().padStart(16, '0'),
    blockSize: sectorSize,
    size: Number(v.getBigUint64(0x28, true)) * sectorSize,
  };
  if (!isPowerOfTwo(recordSize) || recordSize < 256 || recordSize > 65536) return info;
  const rec = await ctx.read(mftCluster * clusterSize + VOLUME_RECORD * recordSize, recordSize);
  if (!rec || ascii(rec.subarray(0, 4)) !== 'FILE') return info;
  const record = rec.slice();
  if (!applyFixups(record)) return info;
  const rv = view(record);
  let at = rv.getUint16(0x14, true);
  while (at + 24 <= record.length) {
    const type = rv.getUint32(at, true);
    const length = rv.getUint32(at + 4, true);
    if (type === ATTR_END || length < 24 || at + length > record.length) break;
    if (type === ATTR_VOLUME_NAME && record[at + 8] === 0) { // resident
      const valueLength = rv.getUint32(at + 0x10, true);
      const valueOffset = rv.getUint16(at + 0x14, true);
      if (valueOffset + valueLength <= length) {
        const label = new TextDecoder('utf-16le').decode(record.subarray(at + valueOffset, at + valueOffset + valueLength));
        return label ? { ...info, label } : info;
      }
    }
    at += length;
  }
  return info;
};
