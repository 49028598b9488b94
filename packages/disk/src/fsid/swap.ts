/**
 * Linux swap: "SWAPSPACE2" (v1) or "SWAP-SPACE" (v0) in the last 10 bytes of the first page,
 * for each page size Linux has; v1 keeps its header (version, last page, UUID, label) at 1 KiB,
 * in the byte order of the machine that made it.
 */
import { type Prober, view, ascii, cString, uuidString, isZero } from './model.js';

const PAGE_SIZES = [4096, 8192, 16384, 32768, 65536];

export const probeSwap: Prober = (ctx) => {
  for (const page of PAGE_SIZES) {
    const magic = ctx.at(page - 10, 10);
    if (!magic) return null;
    const m = ascii(magic);
    if (m === 'SWAP-SPACE') return { type: 'swap', usage: 'other', version: '0' };
    if (m !== 'SWAPSPACE2') continue;
    const h = ctx.at(1024, 512)!;
    const v = view(h);
    const little = v.getUint32(0, true) === 1;
    if (!little && v.getUint32(0, false) !== 1) return null;
    const lastPage = v.getUint32(4, little);
    const uuid = h.subarray(12, 28);
    const label = cString(h.subarray(28, 44));
    return {
      type: 'swap', usage: 'other', version: '1',
      ...(label ? { label } : {}),
      ...(isZero(uuid) ? {} : { uuid: uuidString(uuid) }),
      size: (lastPage + 1) * page,
    };
  }
  return null;
};
