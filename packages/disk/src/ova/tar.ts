/**
 * Reading a tar archive in place (POSIX ustar, with GNU long names and pax path/size records),
 * as an OVA is one: the entries' names, sizes and data offsets, so that a disk inside can be
 * read where it lies without extracting it.
 */
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';

export interface TarEntry {
  name: string;
  /** Byte offset of the entry's data in the archive. */
  offset: number;
  size: number;
  /** '0' regular file, '5' directory, ... */
  type: string;
}

const BLOCK = 512;
/** An OVA holds a descriptor, a manifest and a few disks; an archive listing more is not one we open. */
export const MAX_TAR_ENTRIES = 4096;
/** Long-name and pax records are small; a larger one is refused rather than buffered. */
const MAX_META_RECORD = 1 << 20;

const latin1 = new TextDecoder('latin1');
const cString = (b: Uint8Array): string => {
  const nul = b.indexOf(0);
  return latin1.decode(nul >= 0 ? b.subarray(0, nul) : b);
};

/** A numeric header field: octal text, or GNU base-256 when the top bit of the first byte is set. */
function tarNumber(b: Uint8Array, what: string, file: string): number {
  if (b[0]! & 0x80) {
    let n = 0n;
    for (let i = 1; i < b.length; i++) n = (n << 8n) | BigInt(b[i]!);
    if (b[0]! !== 0x80 || n > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskError('ECORRUPT', `${file}: tar ${what} is out of range`);
    return Number(n);
  }
  const text = cString(b).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new DiskError('ECORRUPT', `${file}: tar ${what} '${text}' is not an octal number`);
  const n = Number.parseInt(text, 8);
  if (!Number.isSafeInteger(n)) throw new DiskError('ECORRUPT', `${file}: tar ${what} is out of range`);
  return n;
}

/** Does this block start a ustar (or GNU) tar archive? */
export function isTarHeader(b: Uint8Array): boolean {
  if (b.length < BLOCK) return false;
  if (latin1.decode(b.subarray(257, 262)) !== 'ustar') return false;
  return checksumOk(b);
}

function checksumOk(b: Uint8Array): boolean {
  const stored = cString(b.subarray(148, 156)).trim();
  if (!/^[0-7]+$/.test(stored)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : b[i]!;
  return sum === Number.parseInt(stored, 8);
}

/** The regular-file entries of the archive, in order. */
export async function listTar(src: ByteSource): Promise<TarEntry[]> {
  const file = src.name;
  const total = await src.size();
  const out: TarEntry[] = [];
  let pos = 0;
  let longName: string | undefined;
  let paxPath: string | undefined;
  let paxSize: number | undefined;
  const head = new Uint8Array(BLOCK);
  for (let count = 0; pos + BLOCK <= total; count++) {
    if (count > MAX_TAR_ENTRIES * 3) throw new DiskError('ELIMIT', `${file}: tar archive has more than ${MAX_TAR_ENTRIES} entries`);
    await src.read(head, pos);
    if (head.every((x) => x === 0)) break; // end-of-archive marker
    if (!checksumOk(head)) throw new DiskError('ECORRUPT', `${file}: tar header at offset ${pos} has a bad checksum`);
    const type = String.fromCharCode(head[156]!) || '0';
    let size = tarNumber(head.subarray(124, 136), 'size', file);
    const dataAt = pos + BLOCK;
    if (paxSize !== undefined && type !== 'x' && type !== 'g' && type !== 'L') size = paxSize;
    if (dataAt + size > total) throw new DiskError('ETRUNCATED', `${file}: tar entry at offset ${pos} (${size} bytes) extends past the end of the archive`);
    const readMeta = async (): Promise<string> => {
      if (size > MAX_META_RECORD) throw new DiskError('ELIMIT', `${file}: tar metadata record of ${size} bytes is too large`);
      const b = new Uint8Array(size);
      await src.read(b, dataAt);
      return cString(b);
    };
    if (type === 'L') {
      longName = await readMeta();
    } else if (type === 'x') {
      // pax extended header: "LEN key=value\n" records.
      for (const m of (await readMeta()).matchAll(/\d+ ([^=\n]+)=([^\n]*)\n/g)) {
        if (m[1] === 'path') paxPath = m[2];
        if (m[1] === 'size' && /^\d+$/.test(m[2]!)) paxSize = Number(m[2]);
      }
    } else if (type !== 'g') {
      const prefix = latin1.decode(head.subarray(257, 263)) === 'ustar\0' ? cString(head.subarray(345, 500)) : '';
      const base = cString(head.subarray(0, 100));
      const name = paxPath ?? longName ?? (prefix ? `${prefix}/${base}` : base);
      if (type === '0' || type === '\0' || type === '7') {
        out.push({ name, offset: dataAt, size, type: '0' });
        if (out.length > MAX_TAR_ENTRIES) throw new DiskError('ELIMIT', `${file}: tar archive has more than ${MAX_TAR_ENTRIES} entries`);
      }
      longName = paxPath = undefined;
      paxSize = undefined;
    }
    pos = dataAt + Math.ceil(size / BLOCK) * BLOCK;
  }
  return out;
}
