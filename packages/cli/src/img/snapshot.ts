/**
 * `diskhub img snapshot`: listing internal snapshots (`-l`, the default). Creating, applying
 * and deleting need a snapshot-writing hook no format driver has yet; they fail the way
 * qemu-img fails for a format without snapshots.
 */
import { closeChain } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, openCliImage, out } from './common.js';
import { snapshotHeader, snapshotLine } from './info.js';
import { printHelp } from './help.js';

export async function snapshotCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':la:c:d:hqU', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'object', hasArg: 1, val: 'object' },
    { name: 'image-opts', hasArg: 0, val: 'image-opts' },
    { name: 'force-share', hasArg: 0, val: 'U' },
  ]);
  let action: { op: 'l' | 'a' | 'c' | 'd'; name?: string } | undefined;
  for (const o of options) {
    switch (o.opt) {
      case 'h': return printHelp();
      case 'l': case 'a': case 'c': case 'd':
        if (action) throw new UsageError("Cannot mix '-l', '-a', '-c', '-d'");
        action = { op: o.opt, name: o.arg };
        break;
      case 'image-opts': throw new UsageError('--image-opts is not supported', false);
    }
  }
  if (positional.length !== 1) throw new UsageError('Expecting one image file name');
  const filename = positional[0]!;
  const op = action?.op ?? 'l';
  const image = await openCliImage(filename, { backing: false });
  try {
    if (op !== 'l') {
      const verb = op === 'c' ? 'create' : op === 'a' ? 'apply' : 'delete';
      throw new CliError(`Could not ${verb} snapshot '${action!.name}': -95 (Operation not supported)`);
    }
    const list = image.snapshots ? await image.snapshots() : [];
    if (list.length > 0) out('Snapshot list:\n' + snapshotHeader() + '\n' + list.map((s) => snapshotLine(s) + '\n').join(''));
  } finally {
    await closeChain(image);
  }
  return 0;
}
