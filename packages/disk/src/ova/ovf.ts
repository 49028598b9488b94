/**
 * The parts of an OVF descriptor (DMTF DSP0243) that say which disks an appliance has: the
 * References section's File elements and the DiskSection's Disk elements (capacity with its
 * allocation units, format URI, the file it lives in). Attributes are read from the element
 * tags; the rest of the envelope (virtual hardware, product sections) is not needed here.
 */
import { DiskError } from '../errors.js';

export interface OvfFile {
  id: string;
  href: string;
  size?: number;
}

export interface OvfDisk {
  diskId: string;
  fileRef?: string;
  /** Capacity in bytes. */
  capacity: number;
  /** The format URI (…/vmdk.html#streamOptimized, …). */
  format?: string;
  populatedSize?: number;
}

export interface OvfDescriptor {
  files: OvfFile[];
  disks: OvfDisk[];
}

/** Largest OVF descriptor read (they are a few KiB; a huge one is refused, not parsed). */
export const MAX_OVF_BYTES = 4 << 20;

const decodeEntities = (s: string): string =>
  s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    if (named[e.toLowerCase()]) return named[e.toLowerCase()]!;
    const code = e[1] === 'x' || e[1] === 'X' ? Number.parseInt(e.slice(2), 16) : Number.parseInt(e.slice(1), 10);
    return Number.isSafeInteger(code) && code > 0 && code < 0x110000 ? String.fromCodePoint(code) : '';
  });

/** Attributes of every `<prefix:Name ...>` tag, keyed by local name (namespace prefixes dropped). */
function elements(xml: string, name: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  const tag = new RegExp(`<(?:[A-Za-z_][\\w.-]*:)?${name}(\\s[^<>]*)?/?>`, 'g');
  for (const m of xml.matchAll(tag)) {
    const attrs: Record<string, string> = {};
    for (const a of (m[1] ?? '').matchAll(/(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)\s*=\s*("([^"]*)"|'([^']*)')/g)) {
      attrs[a[1]!] = decodeEntities(a[3] ?? a[4] ?? '');
    }
    out.push(attrs);
  }
  return out;
}

/** "byte * 2^30" → 2^30; "byte" or absent → 1 (DSP0004 programmatic units, the forms OVF tools write). */
export function allocationUnits(units: string | undefined, file: string): number {
  if (!units) return 1;
  const m = /^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$/i.exec(units);
  if (!m) throw new DiskError('EUNSUPPORTED', `${file}: OVF capacity units '${units}' are not supported`);
  return m[1] ? Number(m[1]) ** Number(m[2]) : 1;
}

export function parseOvf(xml: string, file = 'ovf'): OvfDescriptor {
  if (!/<(?:[\w.-]+:)?Envelope[\s>]/.test(xml)) throw new DiskError('EFORMAT', `${file}: not an OVF descriptor (no Envelope element)`);
  const num = (v: string | undefined, what: string): number | undefined => {
    if (v === undefined || v === '') return undefined;
    if (!/^\d+$/.test(v.trim())) throw new DiskError('ECORRUPT', `${file}: OVF ${what} '${v}' is not a number`);
    return Number(v.trim());
  };
  const files = elements(xml, 'File').map((a) => {
    if (!a.id || !a.href) throw new DiskError('ECORRUPT', `${file}: OVF File element without id or href`);
    const size = num(a.size, 'file size');
    return { id: a.id, href: a.href, ...(size !== undefined ? { size } : {}) };
  });
  const disks = elements(xml, 'Disk').filter((a) => a.diskId !== undefined).map((a) => {
    const capacity = (num(a.capacity, 'disk capacity') ?? 0) * allocationUnits(a.capacityAllocationUnits, file);
    if (!Number.isSafeInteger(capacity)) throw new DiskError('ECORRUPT', `${file}: OVF disk capacity is out of range`);
    const populatedSize = num(a.populatedSize, 'populated size');
    return {
      diskId: a.diskId!, capacity,
      ...(a.fileRef ? { fileRef: a.fileRef } : {}),
      ...(a.format ? { format: a.format } : {}),
      ...(populatedSize !== undefined ? { populatedSize } : {}),
    };
  });
  return { files, disks };
}
