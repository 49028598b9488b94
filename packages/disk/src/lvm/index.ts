/**
 * LVM2 without the kernel: find physical volumes among block devices (whole images,
 * partitions), read their volume group metadata, and open logical volumes as block devices —
 * what `pvscan`, `vgscan` and `vgchange -ay` do with device-mapper.
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError, isDiskError } from '../errors.js';
import { readPvLabel, type PhysicalVolumeLabel } from './label.js';
import { readMetadataArea } from './metadata.js';
import { parseVolumeGroup, type VolumeGroupInfo } from './vg.js';
import { LogicalVolumeDevice } from './volume.js';

export { readPvLabel, parsePvLabel, formatLvmUuid, type PhysicalVolumeLabel, type DiskArea } from './label.js';
export { readMetadataArea, MAX_METADATA_TEXT } from './metadata.js';
export { parseLvmConfig, type ConfigSection, type ConfigValue } from './config.js';
export { parseVolumeGroup, type VolumeGroupInfo, type LogicalVolumeInfo, type LvSegment, type PhysicalVolumeRef } from './vg.js';
export { LogicalVolumeDevice } from './volume.js';

export interface NamedDevice {
  /** How the user knows it ("disk.qcow2 partition 3"). */
  name: string;
  device: BlockDevice;
}

export interface LvmPhysicalVolume extends NamedDevice {
  label: PhysicalVolumeLabel;
  /** The VG whose metadata this PV carries (absent for a PV without metadata areas or in no VG). */
  vgName?: string;
}

export interface LvmVolumeGroup {
  /** The newest metadata (highest seqno) found on any of its PVs. */
  vg: VolumeGroupInfo;
  /** PV key ("pv0") → the device holding that PV, for the PVs that were found. */
  pvDevices: Map<string, NamedDevice>;
  /** UUIDs of the VG's PVs that were not among the devices scanned. */
  missing: string[];
}

export interface LvmScan {
  pvs: LvmPhysicalVolume[];
  vgs: LvmVolumeGroup[];
  /** PV labels or metadata that could not be read, and why. */
  warnings: string[];
}

/** Find the PVs among `devices` and assemble their volume groups. */
export async function scanLvm(devices: NamedDevice[]): Promise<LvmScan> {
  const pvs: LvmPhysicalVolume[] = [];
  const warnings: string[] = [];
  const newest = new Map<string, VolumeGroupInfo>();
  for (const d of devices) {
    const label = await readPvLabel(d.device);
    if (!label) continue;
    const pv: LvmPhysicalVolume = { ...d, label };
    pvs.push(pv);
    for (const w of label.warnings) warnings.push(`${d.name}: ${w}`);
    for (const area of label.metadataAreas) {
      try {
        const meta = await readMetadataArea(d.device, area);
        if (!meta) continue;
        const vg = parseVolumeGroup(meta.text);
        pv.vgName = vg.name;
        const have = newest.get(vg.uuid);
        if (!have || vg.seqno > have.seqno) newest.set(vg.uuid, vg);
      } catch (e) {
        if (!isDiskError(e)) throw e;
        warnings.push(`${d.name}: ${e.message}`);
      }
    }
  }
  const vgs: LvmVolumeGroup[] = [];
  for (const vg of newest.values()) {
    const pvDevices = new Map<string, NamedDevice>();
    const missing: string[] = [];
    for (const ref of vg.pvs) {
      const found = pvs.find((p) => p.label.uuid === ref.uuid);
      if (found) { pvDevices.set(ref.key, found); found.vgName = vg.name; }
      else missing.push(ref.uuid);
    }
    vgs.push({ vg, pvDevices, missing });
  }
  return { pvs, vgs, warnings };
}

/** Open logical volume "VG/LV" of a scan as a block device. */
export function openLogicalVolume(scan: LvmScan, path: string, options: { readOnly?: boolean } = {}): LogicalVolumeDevice {
  const m = /^([^/]+)\/([^/]+)$/.exec(path);
  if (!m) throw new DiskError('EINVAL', `logical volume must be named VG/LV, not '${path}'`);
  const [, vgName, lvName] = m;
  const group = scan.vgs.find((g) => g.vg.name === vgName);
  if (!group) throw new DiskError('EINVAL', `volume group ${vgName} not found (found: ${scan.vgs.map((g) => g.vg.name).join(', ') || 'none'})`);
  const lv = group.vg.lvs.find((l) => l.name === lvName);
  if (!lv) throw new DiskError('EINVAL', `logical volume ${path} not found (${vgName} has: ${group.vg.lvs.map((l) => l.name).join(', ') || 'none'})`);
  const devices = new Map([...group.pvDevices].map(([k, v]) => [k, v.device]));
  return new LogicalVolumeDevice(group.vg, lv, devices, options);
}
