/**
 * LUKS 1 and 2 (cryptsetup's on-disk format documents): "LUKS\xba\xbe", a big-endian version,
 * and the UUID as text at byte 168; LUKS2 adds a label (byte 24) and a subsystem (byte 208).
 */
import { type Prober, view, cString } from './model.js';

const MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];

export const probeLuks: Prober = (ctx) => {
  const h = ctx.at(0, 512);
  if (!h || !MAGIC.every((b, i) => h[i] === b)) return null;
  const version = view(h).getUint16(6, false);
  if (version !== 1 && version !== 2) return null;
  const uuid = cString(h.subarray(168, 208));
  const info = { type: 'crypto_LUKS', usage: 'crypto' as const, version: String(version), ...(uuid ? { uuid } : {}) };
  if (version === 1) return info;
  const label = cString(h.subarray(24, 72));
  const subsystem = cString(h.subarray(208, 256));
  return { ...info, ...(label ? { label } : {}), ...(subsystem ? { subsystem } : {}) };
};
