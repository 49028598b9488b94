/**
 * A volume group as its metadata text describes it: physical volumes (by UUID, with where
 * their extents start), logical volumes and their segments. Extent sizes and starts are in
 * 512-byte sectors in the text; here they are bytes.
 */
import { DiskError } from '../errors.js';
import { isSection, parseLvmConfig, type ConfigSection, type ConfigValue } from './config.js';

const SECTOR = 512;

export interface PhysicalVolumeRef {
  /** The name the metadata uses for it ("pv0"). */
  key: string;
  uuid: string;
  /** The device path LVM last saw it on (a hint only). */
  device?: string;
  /** Byte offset of extent 0 from the start of the PV. */
  peStart: number;
  peCount: number;
}

export interface StripeArea {
  /** PV key ("pv0"). */
  pv: string;
  startExtent: number;
}

export interface LvSegment {
  startExtent: number;
  extentCount: number;
  /** "striped" (stripe_count 1 is what lvs calls linear), "zero", "error", or a type we cannot map. */
  type: string;
  /** Bytes per stripe chunk (striped with more than one stripe). */
  stripeSize?: number;
  stripes: StripeArea[];
}

export interface LogicalVolumeInfo {
  name: string;
  uuid: string;
  status: string[];
  /** Hidden LVs are parts of others (raid images, thin pool data, ...). */
  visible: boolean;
  size: number;
  segments: LvSegment[];
  /** "linear", "striped", or the first other segment type (as lvs -o segtype shows). */
  segmentType: string;
  /** Can it be opened as a block device? If not, why. */
  unsupported?: string;
}

export interface VolumeGroupInfo {
  name: string;
  uuid: string;
  seqno: number;
  extentSize: number;
  pvs: PhysicalVolumeRef[];
  lvs: LogicalVolumeInfo[];
}

const bad = (what: string): never => { throw new DiskError('ECORRUPT', `LVM metadata: ${what}`); };

function num(s: ConfigSection, key: string, where: string): number {
  const v = s[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) return bad(`${where}: ${key} is missing or not a count`);
  return v;
}

function str(s: ConfigSection, key: string, where: string): string {
  const v = s[key];
  if (typeof v !== 'string') return bad(`${where}: ${key} is missing or not a string`);
  return v;
}

function strings(v: ConfigValue | ConfigSection | undefined): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

const SUPPORTED_TYPES = new Set(['striped', 'zero', 'error']);

export function parseVolumeGroup(text: string): VolumeGroupInfo {
  const root = parseLvmConfig(text);
  const names = Object.keys(root).filter((k) => isSection(root[k]));
  if (names.length !== 1) bad(`expected one volume group section, found ${names.length}`);
  const name = names[0]!;
  const vg = root[name] as ConfigSection;
  const extentSectors = num(vg, 'extent_size', name);
  if (extentSectors === 0) bad(`${name}: extent_size is 0`);
  const extentSize = extentSectors * SECTOR;
  const pvSection = vg.physical_volumes;
  const pvs: PhysicalVolumeRef[] = [];
  if (isSection(pvSection)) {
    for (const key of Object.keys(pvSection)) {
      const p = pvSection[key];
      if (!isSection(p)) continue;
      const where = `${name}/${key}`;
      const device = p.device;
      pvs.push({
        key, uuid: str(p, 'id', where), ...(typeof device === 'string' ? { device } : {}),
        peStart: num(p, 'pe_start', where) * SECTOR, peCount: num(p, 'pe_count', where),
      });
    }
  }
  const pvKeys = new Map(pvs.map((p) => [p.key, p]));
  const lvs: LogicalVolumeInfo[] = [];
  const lvSection = vg.logical_volumes;
  if (isSection(lvSection)) {
    for (const lvName of Object.keys(lvSection)) {
      const l = lvSection[lvName];
      if (isSection(l)) lvs.push(parseLv(lvName, l, name, extentSize, pvKeys));
    }
  }
  return { name, uuid: str(vg, 'id', name), seqno: num(vg, 'seqno', name), extentSize, pvs, lvs };
}

function parseLv(name: string, l: ConfigSection, vgName: string, extentSize: number, pvs: Map<string, PhysicalVolumeRef>): LogicalVolumeInfo {
  const where = `${vgName}/${name}`;
  const status = strings(l.status);
  const segments: LvSegment[] = [];
  let unsupported: string | undefined;
  for (const key of Object.keys(l)) {
    const s = l[key];
    if (!isSection(s) || !/^segment\d+$/.test(key)) continue;
    const sw = `${where} ${key}`;
    const type = str(s, 'type', sw);
    const seg: LvSegment = { startExtent: num(s, 'start_extent', sw), extentCount: num(s, 'extent_count', sw), type, stripes: [] };
    if (seg.extentCount === 0) bad(`${sw}: extent_count is 0`);
    if (type === 'striped') {
      const count = num(s, 'stripe_count', sw);
      const list = Array.isArray(s.stripes) ? s.stripes : [];
      if (count < 1 || list.length !== 2 * count) bad(`${sw}: stripes list does not match stripe_count ${count}`);
      for (let i = 0; i < list.length; i += 2) {
        const pv = list[i];
        const start = list[i + 1];
        if (typeof pv !== 'string' || typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0) bad(`${sw}: bad stripe entry`);
        seg.stripes.push({ pv: pv as string, startExtent: start as number });
      }
      if (count > 1) {
        seg.stripeSize = num(s, 'stripe_size', sw) * SECTOR;
        if (seg.stripeSize === 0 || seg.extentCount % count !== 0) bad(`${sw}: stripe size or extent count does not fit ${count} stripes`);
      }
      const perStripe = seg.extentCount / count;
      for (const st of seg.stripes) {
        const pv = pvs.get(st.pv);
        if (!pv) bad(`${sw}: stripe on unknown physical volume ${st.pv}`);
        if (st.startExtent + perStripe > pv!.peCount) bad(`${sw}: extents ${st.startExtent}+${perStripe} lie past the end of ${st.pv} (${pv!.peCount} extents)`);
      }
    } else if (!SUPPORTED_TYPES.has(type)) {
      unsupported ??= `segment type "${type}" is not supported`;
    }
    segments.push(seg);
  }
  segments.sort((a, b) => a.startExtent - b.startExtent);
  let next = 0;
  for (const seg of segments) {
    if (seg.startExtent !== next) bad(`${where}: segments do not follow each other at extent ${next}`);
    next += seg.extentCount;
  }
  if (!Number.isSafeInteger(next * extentSize)) bad(`${where}: ${next} extents of ${extentSize} bytes is too large`);
  const striped = segments.filter((s) => s.type === 'striped');
  const segmentType = segments.find((s) => s.type !== 'striped')?.type
    ?? (striped.some((s) => s.stripes.length > 1) ? 'striped' : 'linear');
  return {
    name, uuid: str(l, 'id', where), status, visible: status.includes('VISIBLE'),
    size: next * extentSize, segments, segmentType, ...(unsupported ? { unsupported } : {}),
  };
}
