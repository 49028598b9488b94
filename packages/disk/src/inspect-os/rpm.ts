/**
 * Installed packages from rpm's sqlite database (rpmdb.sqlite, rpm ≥ 4.16: Fedora 33+, RHEL 9):
 * each row of the `Packages` table is a package's header blob. Header layout (rpm's
 * lib/header.c, "on-disk header"): big-endian index count and data length, then 16-byte index
 * entries (tag, type, offset, count), then the data store.
 */
import { DiskError } from '../errors.js';
import type { InstalledPackage } from './packages.js';
import { SqliteFile, type SqliteRead } from './sqlite.js';

const TAG_NAME = 1000;
const TAG_VERSION = 1001;
const TAG_RELEASE = 1002;
const TAG_EPOCH = 1003;
const TAG_ARCH = 1022;
const TYPE_INT32 = 4;
const TYPE_STRING = 6;

/** NAME, [EPOCH:]VERSION-RELEASE (the epoch whenever the header has one, 0 included, as `%{EPOCH}` prints it) and ARCH of one header blob. */
export function parseRpmHeader(blob: Uint8Array): InstalledPackage {
  if (blob.length < 8) throw new DiskError('ECORRUPT', 'rpm header: too short');
  const dv = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const il = dv.getUint32(0);
  const dl = dv.getUint32(4);
  const dataStart = 8 + il * 16;
  if (il > 0x10000 || dataStart + dl > blob.length) throw new DiskError('ECORRUPT', 'rpm header: index or data past its end');
  const strings = new Map<number, string>();
  let epoch: number | null = null;
  for (let i = 0; i < il; i++) {
    const e = 8 + i * 16;
    const tag = dv.getUint32(e);
    const type = dv.getUint32(e + 4);
    const off = dv.getUint32(e + 8);
    if (off >= dl) continue;
    const at = dataStart + off;
    if (type === TYPE_STRING && (tag === TAG_NAME || tag === TAG_VERSION || tag === TAG_RELEASE || tag === TAG_ARCH)) {
      const end = blob.indexOf(0, at);
      if (end < 0 || end > dataStart + dl) throw new DiskError('ECORRUPT', 'rpm header: unterminated string');
      strings.set(tag, Buffer.from(blob.subarray(at, end)).toString('utf8'));
    } else if (type === TYPE_INT32 && tag === TAG_EPOCH && at + 4 <= dataStart + dl) {
      epoch = dv.getUint32(at);
    }
  }
  const version = `${strings.get(TAG_VERSION) ?? ''}-${strings.get(TAG_RELEASE) ?? ''}`;
  return { name: strings.get(TAG_NAME) ?? '', version: epoch !== null ? `${epoch}:${version}` : version, arch: strings.get(TAG_ARCH) ?? null };
}

/** Every package of an rpmdb.sqlite file of `size` bytes. */
export async function readRpmSqlite(read: SqliteRead, size: number): Promise<InstalledPackage[]> {
  const file = await SqliteFile.open(read, size);
  const root = await file.tableRoot('Packages');
  if (root === null) throw new DiskError('ECORRUPT', 'rpmdb.sqlite: no Packages table');
  const out: InstalledPackage[] = [];
  for await (const [, cols] of file.rows(root)) {
    const blob = cols[1];
    if (blob instanceof Uint8Array) out.push(parseRpmHeader(blob));
  }
  return out;
}
