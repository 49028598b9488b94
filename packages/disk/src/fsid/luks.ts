/**
 * LUKS 1 and 2 (cryptsetup's on-disk format documents): "LUKS\xba\xbe", a big-endian version,
 * and the UUID as text at byte 168; LUKS2 adds a label (byte 24) and a subsystem (byte 208),
 * and keeps a second binary header ("SKUL\xba\xbe") right after the first one's JSON area, at
 * one of the offsets the LUKS2 specification allows, which serves when the first is wiped.
 */
import { type Prober, type FilesystemInfo, view, cString } from './model.js';

/** "LUKS\xba\xbe": also what the LUKS block driver (../luks/) checks. */
export const LUKS_MAGIC: readonly number[] = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
const PRIMARY_MAGIC = LUKS_MAGIC;
const SECONDARY_MAGIC = [0x53, 0x4b, 0x55, 0x4c, 0xba, 0xbe];
/** Where a LUKS2 secondary header may sit (LUKS2 on-disk format, §2: 16 KiB .. 4 MiB). */
const SECONDARY_OFFSETS = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];

function parseHeader(h: Uint8Array, magic: readonly number[]): FilesystemInfo | null {
  if (!magic.every((b, i) => h[i] === b)) return null;
  const version = view(h).getUint16(6, false);
  if (version !== 1 && version !== 2) return null;
  if (magic === SECONDARY_MAGIC && version !== 2) return null;
  const uuid = cString(h.subarray(168, 208));
  const info: FilesystemInfo = { type: 'crypto_LUKS', usage: 'crypto', version: String(version), ...(uuid ? { uuid } : {}) };
  if (version === 1) return info;
  const label = cString(h.subarray(24, 72));
  const subsystem = cString(h.subarray(208, 256));
  return { ...info, ...(label ? { label } : {}), ...(subsystem ? { subsystem } : {}) };
}

export const probeLuks: Prober = async (ctx) => {
  const h = ctx.at(0, 512);
  if (!h) return null;
  const primary = parseHeader(h, PRIMARY_MAGIC);
  if (primary) return primary;
  for (const offset of SECONDARY_OFFSETS) {
    const s = await ctx.read(offset, 512);
    if (!s) return null;
    // The secondary header records its own offset (hdr_offset, byte 256): a stray magic does not.
    if (Number(view(s).getBigUint64(256, false)) !== offset) continue;
    const found = parseHeader(s, SECONDARY_MAGIC);
    if (found) return found;
  }
  return null;
};
