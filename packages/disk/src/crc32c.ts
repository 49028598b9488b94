/**
 * Table-driven reflected CRC-32 registers (no Node APIs, so the dashboard can bundle the VHDX
 * header parser), and CRC-32C.
 */
/** The byte-at-a-time table of a reflected CRC-32 polynomial. */
export function crcTable(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? poly ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
}

/** The bare register update (no inversions): crc' = update(crc, data). */
export function crcUpdate(crc: number, data: Uint8Array, t: Uint32Array): number {
  for (let i = 0; i < data.length; i++) crc = t[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}

let tableC: Uint32Array | undefined;

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): VHDX checksums its headers, region and log entries with it (MS-VHDX §2.2). */
export function crc32c(data: Uint8Array, previous = 0): number {
  return (crcUpdate(~previous >>> 0, data, (tableC ??= crcTable(0x82f63b78))) ^ 0xffffffff) >>> 0;
}

/** The bare CRC-32C register update from `crc` (no inversions): what ext4 calls ext4_chksum (its metadata checksums, §3.5 of the kernel's ext4 docs). */
export function crc32cRegister(crc: number, data: Uint8Array): number {
  return crcUpdate(crc >>> 0, data, (tableC ??= crcTable(0x82f63b78)));
}
