/**
 * `diskhub img ls`: virt-ls without an appliance. The same modes, options and output as
 * libguestfs's cat/ls.c: names (guestfs_ls), `-l` (the appliance's `ls -la`; here with
 * numeric owners, as `ls -lan`), `-R` (guestfs_find: every path below, sorted), and `-lR`,
 * its own long format with --csv, -h, --uids, --times/--time-t/--time-relative/--time-days
 * and --checksum[=type].
 */
import { createHash } from 'node:crypto';
import { resolvePath, walk, sortEntries, joinPath, listDirectory, entryNode, type Filesystem, type FsNode, type FileStat } from '@diskhub/disk';
import { getopt, UsageError } from './getopt.js';
import { CliError, OutputBuffer, out } from './common.js';
import { FILE_LONG_OPTIONS, ImageFileOptions, runFileCommand, withImageFiles } from './files.js';

export const LS_HELP = `usage: diskhub img ls [-l] [-R] [--csv] [-h] [--uids] [--times | --time-t | --time-relative | --time-days]
                      [--checksum[=md5|sha1|sha224|sha256|sha384|sha512|crc]] [-f fmt]
                      [--partition N | --lv VG/LV] [--object ...] [--image-opts] IMAGE DIR [DIR...]
List files in a disk image, as virt-ls does, without booting an appliance.
  -l, --long             long listing (as 'ls -lan')
  -R, --recursive        every path below DIR
  -lR                    virt-ls's long recursive listing; these options apply to it only:
  --csv                  comma-separated values
  -h, --human-readable   sizes as 1.5K, 23M
  --uids                 show UID and GID
  --times                show atime, mtime and ctime; --time-t as seconds since the epoch,
                         --time-relative as seconds before now, --time-days as days before now
  --checksum[=type]      checksum of each regular file (default md5)
The filesystem is the one selected with --partition or --lv, or else the operating system's
root filesystem (the only filesystem, or the one holding /etc/fstab or os-release).
`;

interface LongOptions {
  csv: boolean;
  human: boolean;
  uids: boolean;
  times: boolean;
  /** 0: dates, 1: time_t, 2: seconds before now, 3: days before now. */
  timeStyle: 0 | 1 | 2 | 3;
  checksum?: string;
}

const CHECKSUMS = new Set(['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'crc']);

export async function lsCommand(argv: string[]): Promise<number> {
  return runFileCommand('ls', async () => {
    const { options, positional } = getopt(argv, ':f:hlR', [
      { name: 'help', hasArg: 0, val: 'help' },
      { name: 'long', hasArg: 0, val: 'l' },
      { name: 'recursive', hasArg: 0, val: 'R' },
      { name: 'human-readable', hasArg: 0, val: 'h' },
      { name: 'csv', hasArg: 0, val: 'csv' },
      { name: 'checksum', hasArg: 2, val: 'checksum' },
      { name: 'checksums', hasArg: 2, val: 'checksum' },
      { name: 'time', hasArg: 0, val: 'times' },
      { name: 'times', hasArg: 0, val: 'times' },
      { name: 'time-t', hasArg: 0, val: 'time-t' },
      { name: 'time-relative', hasArg: 0, val: 'time-relative' },
      { name: 'time-days', hasArg: 0, val: 'time-days' },
      { name: 'uid', hasArg: 0, val: 'uids' },
      { name: 'uids', hasArg: 0, val: 'uids' },
      ...FILE_LONG_OPTIONS,
    ]);
    const files = new ImageFileOptions();
    let long = false, recursive = false;
    const lo: LongOptions = { csv: false, human: false, uids: false, times: false, timeStyle: 0 };
    let extras = false;
    for (const o of options) {
      if (files.option(o)) continue;
      switch (o.opt) {
        case 'help': out(LS_HELP); return 0;
        case 'l': long = true; break;
        case 'R': recursive = true; break;
        case 'h': lo.human = true; extras = true; break;
        case 'csv': lo.csv = true; extras = true; break;
        case 'uids': lo.uids = true; extras = true; break;
        case 'times': lo.times = true; extras = true; break;
        case 'time-t': lo.times = true; lo.timeStyle = 1; extras = true; break;
        case 'time-relative': lo.times = true; lo.timeStyle = 2; extras = true; break;
        case 'time-days': lo.times = true; lo.timeStyle = 3; extras = true; break;
        case 'checksum':
          lo.checksum = o.arg ? o.arg : 'md5';
          if (!CHECKSUMS.has(lo.checksum)) throw new UsageError(`unknown checksum type '${lo.checksum}' (${[...CHECKSUMS].join(', ')})`, false);
          extras = true;
          break;
      }
    }
    // Many flags only apply to -lR mode (virt-ls's rule and message).
    if (extras && !(long && recursive)) throw new UsageError('used a flag which can only be combined with -lR mode', false);
    if (lo.human && lo.csv) throw new UsageError('you cannot use -h and --csv options together.', false);
    if (positional.length < 2) throw new UsageError('expecting an image file name and a directory');
    const [filename, ...dirs] = positional as [string, ...string[]];
    return withImageFiles(filename, files, async ({ fs }) => {
      const buf = new OutputBuffer();
      for (const dir of dirs) {
        if (long && recursive) await listLongRecursive(fs, dir, lo, buf);
        else if (long) await listLong(fs, dir, buf);
        else if (recursive) await listRecursive(fs, dir, buf);
        else await listNames(fs, dir, buf);
      }
      await buf.flush();
      return 0;
    });
  });
}

async function directory(fs: Filesystem, path: string): Promise<FsNode> {
  const node = await resolvePath(fs, path, { follow: true });
  if (node.stat.kind !== 'directory') throw new CliError(`${path}: Not a directory`);
  return node;
}

/** virt-ls DIR: guestfs_ls, the names sorted. */
async function listNames(fs: Filesystem, path: string, buf: OutputBuffer): Promise<void> {
  const dir = await directory(fs, path);
  for (const e of await listDirectory(fs, dir, path)) await buf.add(`${e.name}\n`);
}

/** virt-ls -R DIR: guestfs_find, every path below DIR relative to it, sorted as whole strings. */
async function listRecursive(fs: Filesystem, path: string, buf: OutputBuffer): Promise<void> {
  const dir = await directory(fs, path);
  const names: { name: string }[] = [];
  for await (const e of walk(fs, dir, '', { sorted: false })) if (e.depth > 0) names.push({ name: e.path.slice(1) });
  for (const n of sortEntries(names)) await buf.add(`${n.name}\n`);
}

// ---- virt-ls -l: the appliance's `ls -la` ----

const TYPE_CHAR: Record<FileStat['kind'], string> = { file: '-', directory: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' };

/** ls's mode string: type, then rwx for owner, group and others with set-id and sticky bits folded in. */
export function modeString(st: FileStat): string {
  const p = st.perm;
  const rwx = (bits: number, special: boolean, specialChar: string) =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? specialChar : specialChar.toUpperCase()) : bits & 1 ? 'x' : '-');
  return TYPE_CHAR[st.kind] + rwx(p >> 6, (p & 0o4000) !== 0, 's') + rwx(p >> 3, (p & 0o2000) !== 0, 's') + rwx(p, (p & 0o1000) !== 0, 't');
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** ls -l's date: "Mon dd HH:MM" within the last six months, "Mon dd  YYYY" otherwise (local time). */
export function lsDate(mtime: number, now: number): string {
  const d = new Date(Math.floor(mtime) * 1000);
  const recent = mtime > now - 31556952 / 2 && mtime <= now;
  const day = String(d.getDate()).padStart(2, ' ');
  return `${MONTHS[d.getMonth()]} ${day} ${recent ? `${two(d.getHours())}:${two(d.getMinutes())}` : ` ${d.getFullYear()}`}`;
}

async function listLong(fs: Filesystem, path: string, buf: OutputBuffer): Promise<void> {
  const node = await resolvePath(fs, path, { follow: false });
  const rows: { name: string; node: FsNode }[] = [];
  let dirListing = false;
  if (node.stat.kind === 'directory' || (node.stat.kind === 'symlink' && path.endsWith('/'))) {
    // A directory is the node already resolved; a symlink named with a trailing slash is followed.
    const dir = node.stat.kind === 'directory' ? node : await directory(fs, path);
    dirListing = true;
    const entries = [{ name: '.', node: dir }, { name: '..', node: await resolvePath(fs, joinPath(path, '..'), { follow: true }) }];
    for (const e of await listDirectory(fs, dir, path)) entries.push({ name: e.name, node: await entryNode(fs, dir, e) });
    rows.push(...sortEntries(entries));
  } else rows.push({ name: path, node });
  const now = Date.now() / 1000;
  const cells: { mode: string; nlink: string; uid: string; gid: string; size: string; major: string; minor: string; date: string; name: string; blocks: number }[] = [];
  for (const r of rows) {
    const st = r.node.stat;
    const device = st.rdev && (st.kind === 'char' || st.kind === 'block') ? st.rdev : undefined;
    cells.push({
      mode: modeString(st), nlink: String(st.nlink), uid: String(st.uid), gid: String(st.gid),
      size: device ? '' : String(st.size), major: device ? String(device.major) : '', minor: device ? String(device.minor) : '',
      date: lsDate(st.mtime, now), name: r.name + (st.kind === 'symlink' ? ` -> ${await fs.readlink(r.node)}` : ''),
      blocks: st.blocks ?? Math.ceil(st.size / 512),
    });
  }
  const w = (k: 'nlink' | 'uid' | 'gid' | 'size' | 'major' | 'minor') => Math.max(0, ...cells.map((c) => c[k].length));
  const majorW = w('major'), minorW = w('minor');
  const sizeW = Math.max(w('size'), majorW ? majorW + 2 + minorW : 0);
  let text = '';
  if (dirListing) text += `total ${Math.ceil(cells.reduce((s, c) => s + c.blocks, 0) / 2)}\n`;
  for (const c of cells) {
    const size = c.major ? `${c.major.padStart(majorW)}, ${c.minor.padStart(minorW)}` : c.size;
    text += `${c.mode} ${c.nlink.padStart(w('nlink'))} ${c.uid.padEnd(w('uid'))} ${c.gid.padEnd(w('gid'))} ${size.padStart(sizeW)} ${c.date} ${c.name}\n`;
  }
  await buf.add(text);
}

// ---- virt-ls -lR: show_file's fields ----

async function listLongRecursive(fs: Filesystem, path: string, lo: LongOptions, buf: OutputBuffer): Promise<void> {
  const start = await resolvePath(fs, path, { follow: false });
  const now = Math.floor(Date.now() / 1000);
  for await (const e of walk(fs, start, path)) {
    const st = e.node.stat;
    const fields: string[] = [];
    const str = (s: string) => fields.push(lo.csv ? csvQuote(s) : s);
    str(TYPE_CHAR[st.kind]);
    fields.push(st.perm.toString(8).padStart(4, '0'));
    const size = lo.human ? humanSize(st.size) : String(st.size);
    fields.push(lo.csv ? size : size.padStart(10));
    if (lo.uids) fields.push(String(st.uid).padStart(4), String(st.gid).padStart(4));
    if (lo.times) for (const t of [st.atime, st.mtime, st.ctime]) fields.push(timeField(Math.floor(t), lo.timeStyle, now));
    if (lo.checksum) {
      if (st.kind === 'file') str(await checksum(fs, e.node, lo.checksum));
      else if (lo.csv) str('');
    }
    str(e.path);
    if (st.kind === 'symlink') {
      const target = await fs.readlink(e.node);
      fields.push(lo.csv ? csvQuote(target) : `-> ${target}`);
    }
    await buf.add(fields.join(lo.csv ? ',' : ' ') + '\n');
  }
}

function timeField(secs: number, style: LongOptions['timeStyle'], now: number): string {
  switch (style) {
    case 1: return String(secs).padStart(10);
    case 2: return String(now - secs).padStart(8);
    case 3: return String(Math.trunc((now - secs) / 86400)).padStart(3);
    default: {
      const d = new Date(secs * 1000);
      return `${String(d.getFullYear()).padStart(4, '0')}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
    }
  }
}

/** virt-ls's CSV quoting: a field with a space, quote, newline or comma is quoted, quotes doubled. */
export function csvQuote(s: string): string {
  return /[ ",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * gnulib human_readable as virt-ls calls it (autoscale, base 1024, SI letters, round to
 * nearest): bytes below 1024 as they are, then one decimal below 10 ("1.5K"), whole numbers above ("117K").
 */
export function humanSize(n: number): string {
  if (n < 1024) return String(n);
  const units = 'KMGTPEZY';
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  if (v < 10) {
    const r = Math.round(v * 10) / 10;
    if (r < 10) return `${r.toFixed(1)}${units[u]}`;
    v = r;
  }
  const r = Math.round(v);
  // Rounding up to 1024 carries into the next unit.
  return r >= 1024 && u < units.length - 1 ? `1.0${units[u + 1]}` : `${r}${units[u]}`;
}

/** A regular file's checksum as guestfs_checksum prints it (hex digest; crc: POSIX cksum's number). */
async function checksum(fs: Filesystem, node: FsNode, type: string): Promise<string> {
  const hash: { update(d: Uint8Array): unknown; digest(e: 'hex'): string } = type === 'crc' ? new PosixCksum() : createHash(type);
  const chunk = new Uint8Array(1 << 20);
  for (let at = 0; at < node.stat.size;) {
    const n = await fs.read(node, chunk, at);
    if (n === 0) break;
    hash.update(chunk.subarray(0, n));
    at += n;
  }
  return hash.digest('hex');
}

let cksumTable: Uint32Array | undefined;

/** POSIX cksum: CRC-32 (poly 0x04C11DB7, MSB first) over the data and then its length. */
export class PosixCksum {
  private crc = 0;
  private length = 0;
  private readonly table = (cksumTable ??= (() => {
      const tab = new Uint32Array(256);
      for (let i = 0; i < 256; i++) {
        let c = i << 24;
        for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
        tab[i] = c >>> 0;
      }
      return tab;
    })());
  update(data: Uint8Array): void {
    const t = this.table;
    let c = this.crc;
    for (let i = 0; i < data.length; i++) c = ((c << 8) ^ t[((c >>> 24) ^ data[i]!) & 0xff]!) >>> 0;
    this.crc = c;
    this.length += data.length;
  }
  digest(_encoding: 'hex'): string {
    let c = this.crc;
    const t = this.table;
    for (let n = this.length; n > 0; n = Math.floor(n / 256)) c = ((c << 8) ^ t[((c >>> 24) ^ (n & 0xff)) & 0xff]!) >>> 0;
    return String((~c) >>> 0);
  }
}
