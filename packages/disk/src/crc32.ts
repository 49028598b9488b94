/**
 * CRC-32 with the IEEE 802.3 polynomial: the one UEFI uses for GPT headers and entry arrays
 * (UEFI 2.10 §5.3.2), and, with another starting value and no final inversion, LVM2's label
 * and metadata checksums.
 */
import { zlib } from './builtins.js';
import { crcTable, crcUpdate } from './crc32c.js';

export { crc32c } from './crc32c.js';

let table: Uint32Array | undefined;

// zlib.crc32 exists from Node 20.15; older 20.x releases use the table register. Looked up on
// first use (node:zlib is loaded only when something needs it, see builtins.ts).
let native: ((data: Uint8Array, value?: number) => number) | null | undefined;

/** The standard CRC-32 (zlib's, GPT's), continuing from `previous` like zlib's crc32(data, value). */
export function crc32(data: Uint8Array, previous = 0): number {
  native ??= (zlib() as { crc32?: (data: Uint8Array, value?: number) => number }).crc32 ?? null;
  if (native) return native(data, previous) >>> 0;
  return (crcUpdate(~previous >>> 0, data, (table ??= crcTable(0xedb88320))) ^ 0xffffffff) >>> 0;
}

/** LVM2's calc_crc (lib/misc/crc.c semantics): the same register, started at `initial`, never inverted. */
export function crcRegister(data: Uint8Array, initial: number): number {
  // update(init, d) = ~crc32(d, ~init): zlib's pre- and post-inversion cancel out.
  return (~crc32(data, ~initial >>> 0)) >>> 0;
}
