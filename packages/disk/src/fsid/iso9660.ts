/**
 * ISO 9660 (ECMA-119 §8.4): the primary volume descriptor at 32 KiB. The label is the volume
 * identifier; blkid's UUID is the volume modification (else creation) time, "YYYY-MM-DD-HH-MM-SS-CC".
 */
import { type Prober, view, ascii } from './model.js';
import { decodeUcs2, jolietLevel } from '../iso9660/layout.js';

const PVD = 32768;

function isoTime(b: Uint8Array): string | undefined {
  const s = ascii(b.subarray(0, 16));
  if (!/^\d{16}$/.test(s) || /^0+$/.test(s)) return undefined;
  return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}-${s.slice(8, 10)}-${s.slice(10, 12)}-${s.slice(12, 14)}-${s.slice(14, 16)}`;
}

/** Volume descriptors we read after the primary before giving up on a terminator. */
const MAX_DESCRIPTORS = 32;

const trimLabel = (s: string) => s.replace(/[ \0]+$/, '');

/** The volume identifier of a Joliet supplementary descriptor (UCS-2 big-endian), if the image has one. */
async function jolietLabel(ctx: Parameters<Prober>[0]): Promise<string | undefined> {
  for (let i = 1; i <= MAX_DESCRIPTORS; i++) {
    const d = await ctx.read(PVD + i * 2048, 2048);
    if (!d || ascii(d.subarray(1, 6)) !== 'CD001' || d[0] === 255) return undefined;
    if (d[0] !== 2 || jolietLevel(d.subarray(88, 91)) === 0) continue;
    return trimLabel(decodeUcs2(d.subarray(40, 72)));
  }
  return undefined;
}

export const probeIso9660: Prober = async (ctx) => {
  const d = ctx.at(PVD, 2048);
  if (!d || d[0] !== 1 || ascii(d.subarray(1, 6)) !== 'CD001') return null;
  const v = view(d);
  const blockSize = v.getUint16(128, true);
  const joliet = await jolietLabel(ctx);
  // Joliet's label keeps case and non-ASCII characters the primary descriptor cannot hold.
  const label = joliet || trimLabel(new TextDecoder().decode(d.subarray(40, 72)));
  const uuid = isoTime(d.subarray(830, 847)) ?? isoTime(d.subarray(813, 830));
  return {
    type: 'iso9660', usage: 'filesystem',
    ...(label ? { label } : {}),
    ...(uuid ? { uuid } : {}),
    ...(joliet !== undefined ? { version: 'Joliet Extension' } : {}),
    blockSize,
    size: v.getUint32(80, true) * blockSize,
  };
};
