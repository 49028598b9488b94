/**
 * The VG metadata kept in a PV's metadata area (LVM2 lib/format_text/layout.h): a 512-byte
 * mda_header (checksum, magic, the area's start and size, then raw_locn slots), and a
 * circular buffer after it holding the text. The first raw_locn names the committed copy:
 * its offset (from the area start), size, and checksum; text that reaches the end of the
 * area continues right after the header.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { crcRegister } from '../crc32.js';
import { LVM_INITIAL_CRC, type DiskArea } from './label.js';

export const MDA_HEADER_SIZE = 512;
const MDA_MAGIC = ' LVM2 x[5A%r0N*>';
/** Bigger metadata than this is not something LVM writes (its default area is ~1 MiB). */
export const MAX_METADATA_TEXT = 16 << 20;

export interface MetadataText {
  text: string;
  /** Where it was found, for messages. */
  area: DiskArea;
}

/** Read the committed VG metadata text of one metadata area; null when the area holds none yet. */
export async function readMetadataArea(dev: BlockDevice, area: DiskArea): Promise<MetadataText | null> {
  if (area.offset + area.size > dev.size || area.size <= MDA_HEADER_SIZE) {
    throw new DiskError('ECORRUPT', `LVM metadata area at ${area.offset} (${area.size} bytes) lies outside the device`);
  }
  const header = new Uint8Array(MDA_HEADER_SIZE);
  await dev.read(header, area.offset);
  const v = new DataView(header.buffer);
  if (String.fromCharCode(...header.subarray(4, 20)) !== MDA_MAGIC) {
    throw new DiskError('ECORRUPT', `LVM metadata area at ${area.offset}: bad magic`);
  }
  if (crcRegister(header.subarray(4), LVM_INITIAL_CRC) !== v.getUint32(0, true)) {
    throw new DiskError('ECORRUPT', `LVM metadata area at ${area.offset}: header checksum mismatch`);
  }
  const start = Number(v.getBigUint64(24, true));
  const size = Number(v.getBigUint64(32, true));
  if (start !== area.offset || size !== area.size) {
    throw new DiskError('ECORRUPT', `LVM metadata area at ${area.offset}: header says start ${start} size ${size}`);
  }
  // The first raw_locn is the committed metadata; an all-zero slot means there is none.
  const offset = Number(v.getBigUint64(40, true));
  const length = Number(v.getBigUint64(48, true));
  const checksum = v.getUint32(56, true);
  if (offset === 0 && length === 0) return null;
  const ring = size - MDA_HEADER_SIZE;
  if (!(offset >= MDA_HEADER_SIZE && offset < size) || !(length > 0 && length <= ring && length <= MAX_METADATA_TEXT)) {
    throw new DiskError('ECORRUPT', `LVM metadata area at ${area.offset}: text location ${offset}+${length} is invalid`);
  }
  const text = new Uint8Array(length);
  const first = Math.min(length, size - offset);
  await dev.read(text.subarray(0, first), area.offset + offset);
  if (first < length) await dev.read(text.subarray(first), area.offset + MDA_HEADER_SIZE); // wrapped around
  if (crcRegister(text, LVM_INITIAL_CRC) !== checksum) {
    throw new DiskError('ECORRUPT', `LVM metadata area at ${area.offset}: metadata text checksum mismatch`);
  }
  const nul = text.indexOf(0);
  return { text: new TextDecoder().decode(nul < 0 ? text : text.subarray(0, nul)), area };
}
