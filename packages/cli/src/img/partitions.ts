/**
 * `diskhub img partitions`: what is inside an image, without root or kernel modules — its
 * partition table (like `sfdisk -l` / `kpartx -l`), the filesystem on each partition (like
 * `blkid`), and the LVM volume groups and logical volumes found on them (like `lvs`).
 */
import {
  closeChain, readPartitionTable, openLogicalVolume, isDiskError, DiskError, contentDevices, filesystemOf, scanDevicesLvm, MAX_PROBED_PARTITIONS,
  type Image, type PartitionTable, type FilesystemInfo, type LvmScan, type NamedDevice,
} from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, openCliImage, parseOutputFormat, out, err, type OutputFormat } from './common.js';

export const PARTITIONS_HELP = `usage: diskhub img partitions [-f fmt] [--output=human|json] filename [filename2 ...]
List the partition table of an image (MBR or GPT), the filesystem on each partition, and the
LVM volume groups and logical volumes inside (assembled across all the images given). Select one for info, map or convert with
--partition N or --lv VG/LV.
`;

/** Sizes as fdisk prints them: 1024-based, one letter, one decimal when not whole ("39M", "7.8G"). */
export function shortSize(bytes: number): string {
  const units = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1).replace(/\.0$/, '');
  return text + units[u];
}

function table(rows: string[][], rightAligned: Set<number>): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (rightAligned.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join(' ').trimEnd()).join('\n') + '\n';
}

const fsColumns = (fs: FilesystemInfo | null | undefined) => [fs ? fs.type + (fs.version && fs.type === 'vfat' ? ` (${fs.version})` : '') : '', fs?.label ?? '', fs?.uuid ?? ''];

interface LvReport {
  name: string; uuid: string; size: number; segtype: string; visible: boolean; unsupported?: string; filesystem: FilesystemInfo | null;
}

export async function partitionsCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':f:h', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'format', hasArg: 1, val: 'f' },
    { name: 'output', hasArg: 1, val: 'output' },
  ]);
  let format: string | undefined;
  let output: OutputFormat = 'human';
  for (const o of options) {
    switch (o.opt) {
      case 'h': out(PARTITIONS_HELP); return 0;
      case 'f': format = o.arg; break;
      case 'output': output = parseOutputFormat(o.arg); break;
    }
  }
  if (positional.length < 1) throw new UsageError('Expecting an image file name');
  const images: { filename: string; image: Image }[] = [];
  try {
    for (const filename of positional) images.push({ filename, image: await openCliImage(filename, { format }) });
    return await report(images, output);
  } catch (e) {
    if (isDiskError(e)) throw new CliError(e.message);
    throw e;
  } finally {
    for (const { image } of images) await closeChain(image);
  }
}

interface DiskReport {
  filename: string;
  image: Image;
  pt: PartitionTable | null;
  fsByPartition: Map<number, FilesystemInfo | null>;
  wholeDisk: FilesystemInfo | null;
}

/** One disk's table and filesystems; its devices join `all` (named after the disk when there are several). */
async function describeDisk(filename: string, image: Image, several: boolean, all: NamedDevice[], identified: Map<NamedDevice, FilesystemInfo | null>, warnings: string[]): Promise<DiskReport> {
  let pt: PartitionTable | null;
  try {
    pt = await readPartitionTable(image);
  } catch (e) {
    if (isDiskError(e)) throw new DiskError(e.code, `${filename}: ${e.message}`);
    throw e;
  }
  const { devices, partitions, skipped } = await contentDevices(image, pt);
  const fsByPartition = new Map<number, FilesystemInfo | null>();
  let wholeDisk: FilesystemInfo | null = null;
  for (const d of devices) {
    const fs = await filesystemOf(d.device);
    const named = several ? { name: `${filename} ${d.name}`, device: d.device } : d;
    identified.set(named, fs);
    all.push(named);
    const p = partitions.get(d);
    if (p) fsByPartition.set(p.number, fs);
    else wholeDisk = fs;
  }
  const prefix = several ? `${filename}: ` : '';
  for (const w of pt?.warnings ?? []) warnings.push(prefix + w);
  if (skipped) warnings.push(`${prefix}${skipped} partitions past the first ${MAX_PROBED_PARTITIONS} were not looked into`);
  return { filename, image, pt, fsByPartition, wholeDisk };
}

function diskJson(d: DiskReport) {
  const { pt } = d;
  return {
    filename: d.filename, format: d.image.format, size: d.image.size,
    partitiontable: pt && {
      label: pt.type, id: pt.id, sectorsize: pt.sectorSize,
      ...(pt.gpt ? { header: pt.gpt.header, firstlba: pt.gpt.firstUsableLba, lastlba: pt.gpt.lastUsableLba } : {}),
      partitions: pt.partitions.map((p) => ({
        number: p.number, kind: p.kind, start: p.startSector, end: p.startSector + p.sectors - 1, sectors: p.sectors,
        offset: p.start, size: p.size, type: p.type, ...(p.typeName ? { typename: p.typeName } : {}),
        ...(p.name ? { name: p.name } : {}), ...(p.uuid ? { uuid: p.uuid } : {}), ...(p.attributes ? { attrs: p.attributes } : {}),
        ...(p.bootable ? { bootable: true } : {}), ...(p.beyondDisk ? { beyonddisk: true } : {}),
        filesystem: d.fsByPartition.get(p.number) ?? null,
      })),
    },
    filesystem: pt ? undefined : d.wholeDisk,
  };
}

function diskHuman(d: DiskReport): string {
  const { pt } = d;
  let s = `Disk ${d.filename}: ${shortSize(d.image.size)}, ${d.image.size} bytes, format ${d.image.format}\n`;
  if (!pt) {
    s += 'No partition table.\n';
    if (d.wholeDisk) s += table([['Filesystem', 'Label', 'UUID'], fsColumns(d.wholeDisk)], new Set());
    return s;
  }
  s += `Disklabel type: ${pt.type}\nDisk identifier: ${pt.id}\nSector size: ${pt.sectorSize} bytes\n`;
  if (pt.gpt) s += `GPT header: ${pt.gpt.header} (LBA ${pt.gpt.headerLba})\n`;
  s += '\n';
  const rows = [['Part', 'Boot', 'Start', 'End', 'Sectors', 'Size', 'Type', 'Name', 'UUID', 'Filesystem', 'Label', 'FS-UUID']];
  for (const p of pt.partitions) {
    rows.push([
      String(p.number), p.bootable ? '*' : '', String(p.startSector), String(p.startSector + p.sectors - 1), String(p.sectors), shortSize(p.size),
      p.typeName ?? p.type, p.name ?? '', p.uuid ?? '', ...fsColumns(d.fsByPartition.get(p.number)),
    ]);
  }
  return s + table(rows, new Set([0, 2, 3, 4, 5]));
}

/**
 * Several images are a machine's disks: each is listed, and LVM is assembled across all of
 * them (a volume group spanning vda and vdb).
 */
async function report(images: { filename: string; image: Image }[], output: OutputFormat): Promise<number> {
  const several = images.length > 1;
  const all: NamedDevice[] = [];
  const identified = new Map<NamedDevice, FilesystemInfo | null>();
  const warnings: string[] = [];
  const disks: DiskReport[] = [];
  for (const { filename, image } of images) disks.push(await describeDisk(filename, image, several, all, identified, warnings));
  const scan: LvmScan = await scanDevicesLvm(all, identified);
  warnings.push(...scan.warnings);
  const lvs = new Map<string, LvReport[]>();
  for (const g of scan.vgs) {
    const list: LvReport[] = [];
    for (const lv of g.vg.lvs) {
      let fs: FilesystemInfo | null = null;
      let unsupported = lv.unsupported;
      if (!unsupported) {
        try { fs = await filesystemOf(openLogicalVolume(scan, `${g.vg.name}/${lv.name}`)); } catch (e) {
          if (!isDiskError(e)) throw e;
          unsupported = e.message;
        }
      }
      list.push({ name: lv.name, uuid: lv.uuid, size: lv.size, segtype: lv.segmentType, visible: lv.visible, ...(unsupported ? { unsupported } : {}), filesystem: fs });
    }
    lvs.set(g.vg.uuid, list);
  }
  const pvName = new Map(scan.pvs.map((p) => [p.label.uuid, p.name]));

  if (output === 'json') {
    const lvm = scan.vgs.map((g) => ({
      name: g.vg.name, uuid: g.vg.uuid, seqno: g.vg.seqno, extentsize: g.vg.extentSize,
      pvs: g.vg.pvs.map((p) => ({ uuid: p.uuid, device: pvName.get(p.uuid) ?? null })),
      missing: g.missing,
      lvs: lvs.get(g.vg.uuid),
    }));
    const json = several ? { disks: disks.map(diskJson), lvm, warnings } : { ...diskJson(disks[0]!), lvm, warnings };
    out(JSON.stringify(json, null, 2) + '\n');
  } else {
    let s = disks.map(diskHuman).join('\n');
    for (const g of scan.vgs) {
      const on = g.vg.pvs.map((p) => pvName.get(p.uuid) ?? `missing PV ${p.uuid}`).join(', ');
      s += `\nLVM volume group ${g.vg.name} (UUID ${g.vg.uuid}, extent size ${shortSize(g.vg.extentSize)}) on ${on}\n`;
      const rows = [['LV', 'Size', 'Type', 'Filesystem', 'Label', 'FS-UUID']];
      for (const lv of lvs.get(g.vg.uuid)!) {
        rows.push([`${g.vg.name}/${lv.name}`, shortSize(lv.size), lv.segtype + (lv.unsupported ? ' (cannot open)' : '') + (lv.visible ? '' : ' (hidden)'), ...fsColumns(lv.filesystem)]);
      }
      s += table(rows, new Set([1]));
    }
    out(s);
  }
  for (const w of warnings) err(`diskhub img partitions: warning: ${w}\n`);
  return 0;
}
