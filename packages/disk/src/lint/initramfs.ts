/**
 * The file names in an initramfs: concatenated cpio "newc" archives (the kernel's
 * Documentation/driver-api/early-userspace/buffer-format.rst), typically an uncompressed one
 * with CPU microcode followed by a compressed one with the rest. gzip is read with node:zlib;
 * zstd, xz, lzma, bzip2 and lz4 are recognised by their magic and reported as not read.
 */
import { zlib } from '../builtins.js';

/** The most bytes a compressed member may expand to (a large initramfs is ~100 MiB). */
const MAX_EXPANDED = 256 << 20;
/** The most names kept (a hostile archive of empty entries stays bounded). */
const MAX_NAMES = 1 << 20;

export interface InitramfsListing {
  names: string[];
  /** Compressed members that were not read, by compression ("zstd", "xz", ...). */
  notRead: string[];
}

const MAGICS: [string, number[]][] = [
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lzma', [0x5d, 0x00, 0x00]],
];

function startsWith(buf: Uint8Array, at: number, magic: number[]): boolean {
  return magic.every((b, i) => buf[at + i] === b);
}

export function listInitramfs(data: Buffer): InitramfsListing {
  const out: InitramfsListing = { names: [], notRead: [] };
  walk(data, out, 0);
  return out;
}

function walk(data: Buffer, out: InitramfsListing, depth: number): void {
  let at = 0;
  while (at < data.length) {
    // Members are 4-byte aligned and may be separated by zero padding.
    while (at < data.length && data[at] === 0) at++;
    if (at >= data.length) return;
    const magic = data.toString('latin1', at, at + 6);
    if (magic === '070701' || magic === '070702') { at = readCpio(data, at, out); continue; }
    if (data[at] === 0x1f && (data[at + 1] === 0x8b || data[at + 1] === 0x9e)) {
      // A gzip member runs to the end (the kernel decompresses the rest of the buffer).
      if (depth > 0) { out.notRead.push('gzip inside gzip'); return; }
      let inner: Buffer;
      try { inner = zlib().gunzipSync(data.subarray(at), { maxOutputLength: MAX_EXPANDED }); } catch (e) { out.notRead.push(`gzip (${(e as Error).message})`); return; }
      walk(inner, out, depth + 1);
      return;
    }
    const known = MAGICS.find(([, m]) => startsWith(data, at, m));
    out.notRead.push(known ? known[0] : `unknown data at byte ${at}`);
    return;
  }
}

/** One cpio newc archive from `at`; returns the offset after its TRAILER!!! entry (or the end). */
function readCpio(data: Buffer, at: number, out: InitramfsListing): number {
  while (at + 110 <= data.length) {
    const magic = data.toString('latin1', at, at + 6);
    if (magic !== '070701' && magic !== '070702') return at;
    const field = (i: number) => parseInt(data.toString('latin1', at + 6 + i * 8, at + 14 + i * 8), 16);
    const fileSize = field(6);
    const nameSize = field(11);
    if (!Number.isFinite(fileSize) || !Number.isFinite(nameSize) || nameSize < 1) return data.length;
    const name = data.toString('utf8', at + 110, Math.min(data.length, at + 110 + nameSize - 1));
    at = align4(at + 110 + nameSize);
    at = align4(at + fileSize);
    if (name === 'TRAILER!!!') return at;
    if (out.names.length < MAX_NAMES) out.names.push(name.replace(/^\.?\//, ''));
  }
  return data.length;
}

function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}
