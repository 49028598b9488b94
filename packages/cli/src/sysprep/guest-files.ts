/**
 * File operations on a guest's mounted root, as libguestfs's guestfs_glob_expand, rm, rm_rf and
 * truncate behave on the guest's paths: every path is resolved inside the root (a symbolic link
 * in the guest, `/var/log -> /`, leads to the guest's own files, never to this machine's), and
 * every change is reported (the -v listing, the dry run's answer).
 */
import { lstat, readdir, rm, truncate } from 'node:fs/promises';
import { inRoot } from '../image-build/rootpath.js';

export class GuestFiles {
  /** Guest paths changed, in order: "removed /etc/ssh/ssh_host_rsa_key", "emptied /etc/machine-id". */
  readonly changes: string[] = [];

  constructor(readonly root: string) {}

  /** The host path of a guest path (its directories followed within the root; the last component itself not). */
  host(path: string): Promise<string> { return inRoot(this.root, path); }

  async lstat(path: string) { return await lstat(await this.host(path)).catch(() => null); }

  /** stat(2) of a guest path, links followed within the root. */
  async statFollowed(path: string) { return await lstat(await inRoot(this.root, path, { followLast: true })).catch(() => null); }

  /** Entries of a guest directory (followed through links), or [] when it is not one. */
  async list(dir: string): Promise<string[]> {
    return (await readdir(await inRoot(this.root, dir, { followLast: true })).catch(() => [] as string[])).sort();
  }

  /**
   * glob(3) as guestfs_glob_expand uses it: `*`, `?` and `[...]` in any component, a `*` that
   * does not match a leading dot, directories followed through links; sorted results.
   */
  async glob(pattern: string): Promise<string[]> {
    const parts = pattern.split('/').filter((p) => p !== '');
    let paths = [''];
    for (const [i, part] of parts.entries()) {
      const last = i === parts.length - 1;
      const next: string[] = [];
      for (const base of paths) {
        if (!/[*?[]/.test(part)) {
          const p = `${base}/${part}`;
          const st = last ? await this.lstat(p) : await this.statFollowed(p);
          if (st && (last || st.isDirectory())) next.push(p);
          continue;
        }
        const re = globRegExp(part);
        for (const name of await this.list(base || '/')) if (re.test(name)) next.push(`${base}/${name}`);
      }
      paths = next;
    }
    return paths.filter((p) => p !== '').sort();
  }

  /** rm -rf of a guest path (a link is removed, not followed). */
  async removeTree(path: string): Promise<void> {
    const st = await this.lstat(path);
    if (!st) return;
    await rm(await this.host(path), { recursive: true, force: true });
    this.changes.push(`removed ${path}${st.isDirectory() ? '/' : ''}`);
  }

  /** rm of a guest file or link (guestfs_rm: not a directory). */
  async removeFile(path: string): Promise<void> {
    const st = await this.lstat(path);
    if (!st || st.isDirectory()) return;
    await rm(await this.host(path), { force: true });
    this.changes.push(`removed ${path}`);
  }

  /** Empty a regular file (a link is left alone), keeping its owner, mode and inode. */
  async empty(path: string): Promise<void> {
    const st = await this.lstat(path);
    if (!st?.isFile() || st.size === 0) return;
    await truncate(await this.host(path), 0);
    this.changes.push(`emptied ${path}`);
  }

  /** Every regular file below a directory, directories kept (libguestfs's rm_rf_only_files). */
  async removeFilesBelow(dir: string): Promise<void> {
    const st = await this.lstat(dir);
    if (!st?.isDirectory()) return;
    for (const name of await this.list(dir)) {
      const p = `${dir.replace(/\/$/, '')}/${name}`;
      const s = await this.lstat(p);
      if (s?.isDirectory()) await this.removeFilesBelow(p);
      else if (s?.isFile()) await this.removeFile(p);
    }
  }
}

/** One path component's glob pattern as a regular expression (fnmatch without FNM_PERIOD's dot rule relaxed). */
export function globRegExp(part: string): RegExp {
  let re = '';
  for (let i = 0; i < part.length; i++) {
    const c = part[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = part.indexOf(']', i + 2);
      if (end < 0) { re += '\\['; continue; }
      let body = part.slice(i + 1, end);
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  // A leading dot is matched only by a pattern that starts with one (glob(3) without GLOB_PERIOD).
  return new RegExp(`^${part.startsWith('.') ? '' : '(?!\\.)'}${re}$`);
}
