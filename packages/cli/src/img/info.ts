/** `diskhub img info`: qemu-img info. */
import type { ImageInfo, SnapshotInfo } from '@diskhub/disk';
import { closeChain } from '@diskhub/disk/open';
import { infoChain } from '@diskhub/disk/ops/info';
import { getopt, UsageError } from './getopt.js';
import { openCliImage, parseOutputFormat, out, type OutputFormat } from './common.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { qemuJson, humanDump, sizeToStr } from './output.js';
import { printHelp } from './help.js';
import { INSIDE_OPTIONS, insideOption, selectInside, selectionInfo, hasSelection, type InsideSelection } from './inside.js';

export async function infoCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':f:hU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'format', hasArg: 1, val: 'f' },
    { name: 'output', hasArg: 1, val: 'output' },
    { name: 'backing-chain', hasArg: 0, val: 'backing-chain' },
    { name: 'force-share', hasArg: 0, val: 'U' },
    ...SECRET_LONG_OPTIONS,
    ...INSIDE_OPTIONS,
  ]);
  const inside: InsideSelection = {};
  let format: string | undefined;
  let output: OutputFormat = 'human';
  let chain = false;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'f': format = o.arg; break;
      case 'output': output = parseOutputFormat(o.arg); break;
      case 'backing-chain': chain = true; break;
      case 'U': break; // we never lock images, so sharing is always allowed
      default: insideOption(o.opt, o.arg, inside);
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const filename = positional[0]!;
  if (chain && hasSelection(inside)) throw new UsageError('--backing-chain cannot be combined with --partition or --lv', false);
  const arg = secrets.image(filename, format);
  // Like qemu-img info (BDRV_O_NO_IO), an encrypted image's description needs no secret.
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), backing: chain || hasSelection(inside), headerOnly: !hasSelection(inside) }, arg.display);
  try {
    const infos = await infoChain(image, chain);
    if (arg.jsonName !== undefined) infos[0]!.filename = arg.jsonName;
    if (hasSelection(inside)) {
      const { info, human } = await selectionInfo(infos[0]!, await selectInside(image, filename, inside));
      out(output === 'json' ? qemuJson(info) + '\n' : humanInfo(info) + human);
      return 0;
    }
    if (output === 'json') out(qemuJson(chain ? infos : infos[0]) + '\n');
    else out(infos.map(humanInfo).join('\n'));
  } finally {
    await closeChain(image);
  }
  return 0;
}

/** The human report of one image, line for line as qemu-img prints it. */
export function humanInfo(info: ImageInfo): string {
  let s = `image: ${info.filename}\nfile format: ${info.format}\n`;
  s += `virtual size: ${sizeToStr(info['virtual-size'])} (${info['virtual-size']} bytes)\n`;
  s += `disk size: ${info['actual-size'] !== undefined ? sizeToStr(info['actual-size']) : 'unavailable'}\n`;
  if (info.encrypted) s += 'encrypted: yes\n';
  if (info['cluster-size']) s += `cluster_size: ${info['cluster-size']}\n`;
  if (info['dirty-flag']) s += 'cleanly shut down: no\n';
  if (info['backing-filename'] !== undefined) {
    s += `backing file: ${info['backing-filename']}`;
    const full = info['full-backing-filename'];
    if (full !== undefined && full !== info['backing-filename']) s += ` (actual path: ${full})`;
    s += '\n';
    if (info['backing-filename-format'] !== undefined) s += `backing file format: ${info['backing-filename-format']}\n`;
  }
  if (info.snapshots && info.snapshots.length > 0) {
    s += 'Snapshot list:\n' + snapshotHeader() + '\n';
    for (const sn of info.snapshots) s += snapshotLine(sn) + '\n';
  }
  const specific = info['format-specific'];
  if (specific && specific.data && Object.keys(specific.data).length > 0) {
    s += 'Format specific information:\n' + humanDump(specific.data, 1);
  }
  return s;
}

const row = (id: string, tag: string, vmSize: string, date: string, clock: string, icount: string) =>
  `${id.padEnd(9)} ${tag.padEnd(16)} ${vmSize.padStart(8)} ${date.padStart(19)} ${clock.padStart(12)} ${icount.padStart(10)}`;

export function snapshotHeader(): string {
  return row('ID', 'TAG', 'VM SIZE', 'DATE', 'VM CLOCK', 'ICOUNT');
}

const two = (n: number) => String(n).padStart(2, '0');

/** One row of the snapshot table (date in local time, VM clock as HH:MM:SS.mmm). */
export function snapshotLine(sn: SnapshotInfo): string {
  const d = new Date(sn['date-sec'] * 1000);
  const date = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  const clockMs = sn['vm-clock-sec'] * 1000 + Math.floor(sn['vm-clock-nsec'] / 1e6);
  const secs = Math.floor(clockMs / 1000);
  const clock = `${two(Math.floor(secs / 3600))}:${two(Math.floor(secs / 60) % 60)}:${two(secs % 60)}.${String(clockMs % 1000).padStart(3, '0')}`;
  return row(sn.id, sn.name, sizeToStr(sn['vm-state-size']), date, clock, sn.icount === undefined ? '' : String(sn.icount));
}
