/**
 * `diskhub img copy-out`: virt-copy-out without an appliance. Files and directories
 * (recursively) of the image are copied into a local directory, as virt-copy-out's tar does:
 * symlinks as symlinks, hard links as hard links, sparse files sparse, permission bits, and
 * access and modification times (and owners when run as root). Nothing is written outside the target
 * directory: names that are not plain names ("..", anything with a slash) are refused, and
 * no path is ever opened through a symlink — an existing symlink where a directory must be
 * made is replaced, as tar replaces it. Fifos, sockets and device files are skipped with a
 * warning (Node cannot make them).
 */
import { constants } from 'node:fs';
import { chmod, link, lchown, lstat, lutimes, mkdir, open, symlink, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { resolvePath, walk, type Filesystem, type FsNode } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, err, out } from './common.js';
import { FILE_LONG_OPTIONS, ImageFileOptions, runFileCommand, withImageFiles } from './files.js';
import { streamFile } from './cat.js';

export const COPY_OUT_HELP = `usage: diskhub img copy-out [-f fmt] [--partition N | --lv VG/LV] [--object ...] [--image-opts] IMAGE PATH [PATH...] LOCALDIR
Copy files and directories out of a disk image into LOCALDIR, as virt-copy-out does, without
booting an appliance: directories recursively, with symlinks, hard links, modes and times
(and owners when run as root).
`;

export async function copyOutCommand(argv: string[]): Promise<number> {
  return runFileCommand('copy-out', async () => {
    const { options, positional } = getopt(argv, ':f:', [{ name: 'help', hasArg: 0, val: 'help' }, ...FILE_LONG_OPTIONS]);
    const files = new ImageFileOptions();
    for (const o of options) {
      if (files.option(o)) continue;
      if (o.opt === 'help') { out(COPY_OUT_HELP); return 0; }
    }
    if (positional.length < 3) throw new UsageError('expecting an image file name, one or more paths and a local directory');
    const filename = positional[0]!;
    const paths = positional.slice(1, -1);
    const target = positional[positional.length - 1]!;
    const st = await lstat(target).catch(() => null);
    if (!st?.isDirectory()) throw new CliError(`copy-out: target '${target}' is not a directory`);
    return withImageFiles(filename, files, async ({ fs }) => {
      const copier = new Copier(fs, target);
      for (const path of paths) {
        // A symlink named on the command line is copied as a link, as tar copies it.
        const node = await resolvePath(fs, path);
        const base = path.split('/').filter((c) => c !== '' && c !== '.').pop();
        // virt-copy-out of "/" copies the root's contents into the directory.
        await copier.copyTree(node, path, base === undefined || base === '..' ? [] : [base]);
      }
      await copier.finish();
      return 0;
    });
  });
}

/** The granularity at which copied files keep holes. */
const HOLE_GRAIN = 64 * 1024;
let zeroes = new Uint8Array(0);
/** Whether `b` is all zero bytes (one native compare). */
function isZeroes(b: Uint8Array): boolean {
  if (zeroes.length < b.length) zeroes = new Uint8Array(b.length);
  return Buffer.compare(b, zeroes.subarray(0, b.length)) === 0;
}

class Copier {
  private readonly asRoot = process.getuid?.() === 0;
  /** Inodes already copied (hard links): image inode → local path. */
  private readonly copied = new Map<bigint, string>();
  /** Directories whose mode and times are set last, deepest first, so they can be filled even when read-only. */
  private readonly dirs: { local: string; node: FsNode }[] = [];

  constructor(private readonly fs: Filesystem, private readonly target: string) {}

  async copyTree(start: FsNode, path: string, base: string[]): Promise<void> {
    for await (const e of walk(this.fs, start, path)) {
      const rel = e.path.slice(path.length).split('/').filter((c) => c !== '');
      const parts = [...base, ...rel];
      const bad = parts.find((c) => c === '.' || c === '..');
      if (bad !== undefined) {
        err(`warning: ${e.path}: a file name that is not a plain name is not copied\n`);
        continue;
      }
      await this.copyOne(e.node, e.path, parts);
    }
  }

  private async copyOne(node: FsNode, path: string, parts: string[]): Promise<void> {
    const st = node.stat;
    if (parts.length === 0) {
      if (st.kind !== 'directory') throw new CliError(`${path}: cannot copy a ${st.kind} onto the target directory`);
      return; // the root's contents go straight into the target
    }
    await this.ensureParents(parts);
    const local = join(this.target, ...parts);
    switch (st.kind) {
      case 'directory': {
        const existing = await lstat(local).catch(() => null);
        if (existing && !existing.isDirectory()) await unlink(local);
        if (!existing?.isDirectory()) await mkdir(local, { mode: 0o700 });
        this.dirs.push({ local, node });
        return;
      }
      case 'file': {
        await this.removeNonDirectory(local);
        const first = st.nlink > 1 ? this.copied.get(st.ino) : undefined;
        if (first !== undefined) {
          await link(first, local);
          return;
        }
        // O_EXCL|O_NOFOLLOW: a file is only ever created, never written through a link.
        const fh = await open(local, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        try {
          let at = 0;
          await streamFile(this.fs, node, async (piece) => {
            // Runs of zeroes (64 KiB at a time) are left as holes, the length set below: sparse files stay sparse.
            for (let off = 0; off < piece.length; off += HOLE_GRAIN) {
              const part = piece.subarray(off, off + HOLE_GRAIN);
              if (!isZeroes(part)) await fh.write(part, 0, part.length, at + off);
            }
            at += piece.length;
          });
          await fh.truncate(st.size);
        } finally {
          await fh.close();
        }
        await this.setAttributes(local, node);
        if (st.nlink > 1) this.copied.set(st.ino, local);
        return;
      }
      case 'symlink': {
        await this.removeNonDirectory(local);
        await symlink(await this.fs.readlink(node), local);
        if (this.asRoot) await lchown(local, st.uid, st.gid);
        await lutimes(local, st.atime, st.mtime);
        return;
      }
      default:
        err(`warning: ${path}: ${st.kind === 'fifo' ? 'a fifo' : st.kind === 'socket' ? 'a socket' : `a ${st.kind} device`} is not copied\n`);
    }
  }

  /** Every directory on the way to `parts` must be a real directory inside the target (made by this copy or there before). */
  private async ensureParents(parts: string[]): Promise<void> {
    let at = this.target;
    for (const p of parts.slice(0, -1)) {
      at = join(at, p);
      const s = await lstat(at).catch(() => null);
      if (s?.isDirectory()) continue;
      if (s) await unlink(at); // a symlink or file where a directory belongs: replaced, never followed
      await mkdir(at, { mode: 0o700 });
    }
  }

  private async removeNonDirectory(local: string): Promise<void> {
    const s = await lstat(local).catch(() => null);
    if (!s) return;
    if (s.isDirectory()) throw new CliError(`${local}: a directory is in the way`);
    await unlink(local);
  }

  private async setAttributes(local: string, node: FsNode): Promise<void> {
    const st = node.stat;
    if (this.asRoot) await lchown(local, st.uid, st.gid);
    // After chown, which clears set-id bits.
    await chmod(local, st.perm);
    await utimes(local, st.atime, st.mtime);
  }

  /** Directory modes and times, deepest first (writing into a directory changes its mtime). */
  async finish(): Promise<void> {
    for (const { local, node } of this.dirs.reverse()) await this.setAttributes(local, node);
  }
}

