/**
 * `diskhub img cat`: virt-cat without an appliance — a file of the image's filesystem to
 * stdout, byte for byte (binary safe), symlinks followed within the filesystem. Streamed: the
 * next pieces are read while the last one is written, and a slow reader holds the reads back.
 */
import { resolvePath, type Filesystem, type FsNode } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, out, stdoutStream } from './common.js';
import { FILE_LONG_OPTIONS, ImageFileOptions, runFileCommand, withImageFiles } from './files.js';

export const CAT_HELP = `usage: diskhub img cat [-f fmt] [--partition N | --lv VG/LV] [--object ...] [--image-opts] IMAGE FILE [FILE...]
Write files of a disk image to standard output, as virt-cat does, without booting an appliance.
The filesystem is the one selected with --partition or --lv, or else the operating system's
root filesystem.
`;

/** Bytes read per piece, and pieces in flight: several reads keep the thread pool's threads busy (a piece is one read of a raw file, or a few of a qcow2). */
const PIECE = 2 << 20;
const READ_AHEAD = 4;

export async function catCommand(argv: string[]): Promise<number> {
  return runFileCommand('cat', async () => {
    const { options, positional } = getopt(argv, ':f:', [{ name: 'help', hasArg: 0, val: 'help' }, ...FILE_LONG_OPTIONS]);
    const files = new ImageFileOptions();
    for (const o of options) {
      if (files.option(o)) continue;
      if (o.opt === 'help') { out(CAT_HELP); return 0; }
    }
    if (positional.length < 2) throw new UsageError('expecting an image file name and a file name');
    const [filename, ...paths] = positional as [string, ...string[]];
    return withImageFiles(filename, files, async ({ fs }) => {
      for (const path of paths) {
        const node = await resolvePath(fs, path, { follow: true });
        if (node.stat.kind === 'directory') throw new CliError(`${path}: Is a directory`);
        if (node.stat.kind !== 'file') throw new CliError(`${path}: not a regular file`);
        await streamFile(fs, node, (piece) => write(stdoutStream(), piece));
      }
      return 0;
    }, false);
  });
}

/** Read a regular file in pieces, handing each to `sink` in order while the next ones are read. */
export async function streamFile(fs: Filesystem, node: FsNode, sink: (piece: Uint8Array) => Promise<void>): Promise<void> {
  const size = node.stat.size;
  const readPiece = async (at: number): Promise<Uint8Array> => {
    const b = Buffer.allocUnsafe(Math.min(PIECE, size - at));
    const n = await fs.read(node, b, at);
    if (n !== b.length) throw new CliError(`short read at offset ${at} of a ${size}-byte file`);
    return b;
  };
  const ahead: Promise<Uint8Array>[] = [];
  let next = 0;
  const fill = () => {
    while (ahead.length < READ_AHEAD && next < size) {
      const p = readPiece(next);
      // A failed read-ahead is seen when its turn comes; keep it from being reported as unhandled meanwhile.
      p.catch(() => undefined);
      ahead.push(p);
      next += Math.min(PIECE, size - next);
    }
  };
  fill();
  while (ahead.length > 0) {
    const piece = await ahead.shift()!;
    fill();
    await sink(piece);
  }
}

function write(stream: NodeJS.WritableStream, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    const ok = stream.write(data, (e) => (e ? reject(e) : undefined));
    if (ok) resolve();
    else stream.once('drain', resolve);
  });
}
