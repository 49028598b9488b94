/**
 * Paths inside the image's root, resolved as the chroot would resolve them. The root comes from
 * an image or tarball the build does not control: a symbolic link in it (`/etc/resolv.conf ->
 * /run/...`, a hostile `/etc/x -> /`) must lead to a place inside the root, never to the build
 * machine's file of that name. Every directory on the way is followed within the root (absolute
 * targets start again at the root, `..` stops there); the last component is followed only on
 * request (a directory to list or mount on), and writes replace a link there with a file.
 */
import { lstat, mkdir, readlink, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BuildError } from './session.js';

/** Links followed in one path before giving up (Linux's MAXSYMLINKS). */
const MAX_LINKS = 40;

export async function inRoot(root: string, path: string, options: { followLast?: boolean } = {}): Promise<string> {
  const parts = path.split('/').filter((x) => x !== '' && x !== '.');
  const resolved: string[] = [];
  let links = 0;
  while (parts.length > 0) {
    const name = parts.shift()!;
    if (name === '..') { resolved.pop(); continue; }
    if (parts.length === 0 && !options.followLast) { resolved.push(name); break; }
    const host = join(root, ...resolved, name);
    const st = await lstat(host).catch(() => null);
    if (st?.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new BuildError(`${path}: too many levels of symbolic links in the image`);
      const target = await readlink(host);
      if (target.startsWith('/')) resolved.length = 0;
      parts.unshift(...target.split('/').filter((x) => x !== '' && x !== '.'));
      continue;
    }
    resolved.push(name);
  }
  return join(root, ...resolved);
}

/** Write a file inside the root (its directories made as needed, a link in its place replaced). */
export async function writeInRoot(root: string, path: string, data: string | Uint8Array, mode = 0o644): Promise<string> {
  const host = await inRoot(root, path);
  await mkdir(dirname(host), { recursive: true });
  await rm(host, { force: true });
  await writeFile(host, data, { mode, flag: 'wx' });
  return host;
}
