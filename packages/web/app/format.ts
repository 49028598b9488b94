/** Numbers for people: sizes in binary units as qemu-img prints them, durations. */
import type { Translate } from './i18n.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
  const text = u === 0 ? String(v) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${text.replace(/\.0+$|(\.\d*?)0+$/, '$1')} ${UNITS[u]}`;
}

export function formatDuration(t: Translate, seconds: number): string {
  if (!Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? t('unit.secondsLeft', { n: s }) : t('unit.minutesLeft', { m: Math.floor(s / 60), s: s % 60 });
}

export const percent = (part: number, whole: number) => (whole > 0 ? `${((100 * part) / whole).toFixed(part === whole || part === 0 ? 0 : 1)}%` : '0%');
