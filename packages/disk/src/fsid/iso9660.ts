/**
 * ISO 9660 (ECMA-119 §8.4): the primary volume descriptor at 32 KiB. The label is the volume
 * identifier; blkid's UUID is the volume modification (else creation) time, "YYYY-MM-DD-HH-MM-SS-CC".
 */
import { type Prober, view, ascii } from './model.js';

const PVD = 32768;

function isoTime(b: Uint8Array): string | undefined {
  const s = ascii(b.subarray(0, 16));
  if (!/^\d{16}$/.test(s) || /^0+$/.test(s)) return undefined;
  return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}-${s.slice(8, 10)}-${s.slice(10, 12)}-${s.slice(12, 14)}-${s.slice(14, 16)}`;
}

export const probeIso9660: Prober = (ctx) => {
  const d = ctx.at(PVD, 2048);
  if (!d || d[0] !== 1 || ascii(d.subarray(1, 6)) !== 'CD001') return null;
  const v = view(d);
  const blockSize = v.getUint16(128, true);
  const label = ascii(d.subarray(40, 72)).replace(/[ \0]+$/, '');
  const uuid = isoTime(d.subarray(830, 847)) ?? isoTime(d.subarray(813, 830));
  return {
    type: 'iso9660', usage: 'filesystem',
    ...(label ? { label } : {}),
    ...(uuid ? { uuid } : {}),
    blockSize,
    size: v.getUint32(80, true) * blockSize,
  };
};
