/**
 * `diskhub img snapshot [-l | -c NAME | -a NAME | -d NAME] [-q] [-U] IMAGE`: qemu-img 7.2's
 * img_snapshot. Like qemu-img it takes no -f (the format is probed) and opens the image
 * for writing except for -l; the messages and exit codes are qemu-img's, errno included.
 */
import type { DiskErrorCode } from '@diskhub/disk';
import { isDiskError } from '@diskhub/disk/errors';
import { closeChain } from '@diskhub/disk/open';
import { getopt, UsageError } from './getopt.js';
import { SECRET_LONG_OPTIONS, Secrets, openOptionsOf } from './secrets.js';
import { CliError, errorMessage, openCliImage, out, warnProbedRaw } from './common.js';
import { baselineOnly } from './optimise.js';
import { snapshotHeader, snapshotLine } from './info.js';
import { printHelp } from './help.js';

/** The errno QEMU's block layer would return for a failure of ours, for qemu-img's "-N (text)" messages. */
const ERRNO: Partial<Record<DiskErrorCode, [number, string]>> = {
  ENOENT: [2, 'No such file or directory'],
  EINVAL: [22, 'Invalid argument'],
  EUNSUPPORTED: [95, 'Operation not supported'],
  ENOSPC: [27, 'File too large'],
  EROFS: [30, 'Read-only file system'],
  EACCES: [1, 'Operation not permitted'],
};

function errnoOf(e: unknown): [number, string] {
  return (isDiskError(e) && ERRNO[e.code]) || [5, 'Input/output error'];
}

/** The current time as g_get_real_time gives it (microseconds), split into seconds and nanoseconds. */
function realTime(): { sec: number; nsec: number } {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return { sec: Math.floor(us / 1e6), nsec: (us % 1e6) * 1000 };
}

export async function snapshotCommand(argv: string[]): Promise<number> {
  baselineOnly();
  const { options, positional } = getopt(argv, ':la:c:d:hqU', [
    { name: 'help', hasArg: 0, val: 'h' },
    ...SECRET_LONG_OPTIONS,
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let action: { op: 'l' | 'a' | 'c' | 'd'; name?: string } | undefined;
  const secrets = new Secrets();
  for (const o of options) {
    if (secrets.option(o)) continue;
    switch (o.opt) {
      case 'h': return printHelp();
      case 'l': case 'a': case 'c': case 'd':
        if (action) throw new UsageError("Cannot mix '-l', '-a', '-c', '-d'");
        action = { op: o.opt, name: o.arg };
        break;
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const arg = secrets.image(positional[0]!);
  const op = action?.op ?? 'l';
  const name = action?.name ?? '';
  const image = await openCliImage(arg.path, { ...openOptionsOf(arg), backing: false, writable: op !== 'l' }, arg.display);
  try {
    if (op !== 'l' && arg.format === undefined && image.format === 'raw') warnProbedRaw(arg.path);
    switch (op) {
      case 'l': {
        const list = image.snapshots ? await image.snapshots() : [];
        if (list.length > 0) out('Snapshot list:\n' + snapshotHeader() + '\n' + list.map((s) => snapshotLine(s) + '\n').join(''));
        break;
      }
      case 'c':
        try {
          if (!image.createSnapshot) throw Object.assign(new Error(), { errno: [95, 'Operation not supported'] });
          await image.createSnapshot(name, realTime());
        } catch (e) {
          const [n, text] = (e as { errno?: [number, string] }).errno ?? errnoOf(e);
          throw new CliError(`Could not create snapshot '${name}': -${n} (${text})`);
        }
        break;
      case 'a':
        if (!image.applySnapshot) {
          // QEMU falls back to the file below the format driver, then reopens the format (warning again).
          if (arg.format === undefined && image.format === 'raw') warnProbedRaw(arg.path);
          throw new CliError(`Could not apply snapshot '${name}': Block driver does not support snapshots`);
        }
        try {
          await image.applySnapshot(name);
        } catch (e) {
          throw new CliError(`Could not apply snapshot '${name}': Failed to load snapshot: ${errnoOf(e)[1]}`);
        }
        break;
      case 'd':
        if (!image.deleteSnapshot || !(await image.snapshots?.())?.some((s) => s.name === name)) {
          throw new CliError(`Could not delete snapshot '${name}': snapshot not found`);
        }
        try {
          await image.deleteSnapshot(name);
        } catch (e) {
          throw new CliError(`Could not delete snapshot '${name}': ${errorMessage(e)}`);
        }
        break;
    }
  } finally {
    await closeChain(image);
  }
  return 0;
}
