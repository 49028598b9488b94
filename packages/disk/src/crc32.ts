/**
 * CRC-32 with the IEEE 802.3 polynomial: the one UEFI uses for GPT headers and entry arrays
 * (UEFI 2.10 §5.3.2), and, with another starting value and no final inversion, LVM2's label
 * and metadata checksums.
 */
import * as zlib from 'node:zlib';

/** The byte-at-a-time table of a reflected CRC-32 polynomial. */
function makeTable(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? poly ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

let table: Uint32Array | undefined;

/** The bare register update (no inversions): crc' = update(crc, data). */
function update(crc: number, data: Uint8Array, t: Uint32Array = (table ??= makeTable(0xedb88320))): number {
  for (let i = 0; i < data.length; i++) crc = t[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}

// zlib.crc32 exists from Node 20.15; older 20.x releases use the table above.
const native = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/** The standard CRC-32 (zlib's, GPT's), continuing from `previous` like zlib's crc32(data, value). */
export function crc32(data: Uint8Array, previous = 0): number {
  if (native) return native(data, previous) >>> 0;
  return (update(~previous >>> 0, data) ^ 0xffffffff) >>> 0;
}

/** LVM2's calc_crc (lib/misc/crc.c semantics): the same register, started at `initial`, never inverted. */
export function crcRegister(data: Uint8Array, initial: number): number {
  // update(init, d) = ~crc32(d, ~init): zlib's pre- and post-inversion cancel out.
  return (~crc32(data, ~initial >>> 0)) >>> 0;
}

let tableC: Uint32Array | undefined;

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): VHDX checksums its headers, region and log entries with it (MS-VHDX §2.2). */
export function crc32c(data: Uint8Array, previous = 0): number {
  return (update(~previous >>> 0, data, (tableC ??= makeTable(0x82f63b78))) ^ 0xffffffff) >>> 0;
}
