/**
 * GUIDs as GPT stores them (UEFI 2.10 appendix A): the first three fields little-endian,
 * the last two big-endian, printed upper-case as sfdisk and sgdisk do.
 */
const hex = (b: Uint8Array, from: number, to: number, reverse: boolean): string => {
  let s = '';
  if (reverse) for (let i = to - 1; i >= from; i--) s += b[i]!.toString(16).padStart(2, '0');
  else for (let i = from; i < to; i++) s += b[i]!.toString(16).padStart(2, '0');
  return s;
};

export function formatGuid(bytes: Uint8Array): string {
  return [hex(bytes, 0, 4, true), hex(bytes, 4, 6, true), hex(bytes, 6, 8, true), hex(bytes, 8, 10, false), hex(bytes, 10, 16, false)]
    .join('-')
    .toUpperCase();
}

export function isZeroGuid(bytes: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (bytes[i] !== 0) return false;
  return true;
}
