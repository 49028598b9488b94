/** The qcow2 safety inspection (QEMU docs/interop/qcow2.txt): backing and external data files, and tables that point outside the file. */
import { DiskError } from '../errors.js';
import { MAX_READ } from '../inspect/reader.js';
import { finding, guard, issue, quoted, view, type FormatInspection } from '../inspect/finding.js';
import type { FormatFinding } from '../inspect/report.js';
import {
  QCOW2_MAGIC, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_CORRUPT,
  OFFSET_MASK, L1E_RESERVED_MASK, parseHeader,
} from './layout.js';

/** Table entries (big-endian u64) whose offsets must lie inside the file and be aligned. */
function checkOffsets(f: FormatFinding, table: Uint8Array, what: string, fileSize: number, align: number, mask: bigint, reserved: bigint): void {
  const v = view(table);
  for (let i = 0; i + 8 <= table.length; i += 8) {
    const e = v.getBigUint64(i, false);
    if (e === 0n) continue;
    if (reserved && (e & reserved)) {
      issue(f, 'geometry', `${what} entry ${i / 8} has reserved bits set (0x${e.toString(16)})`);
      return;
    }
    const off = Number(e & mask);
    if (off === 0) continue;
    if (off % align !== 0) {
      issue(f, 'geometry', `${what} entry ${i / 8} points to unaligned offset ${off}`);
      return;
    }
    if (off + align > fileSize) {
      issue(f, 'geometry', `${what} entry ${i / 8} points to offset ${off}, outside the file (${fileSize} bytes)`);
      return;
    }
  }
}

export const inspectQcow2: FormatInspection = async (r, file) => {
  const head = await r.read(0, 512);
  if (head.length < 8 || view(head).getUint32(0, false) !== QCOW2_MAGIC) return null;
  const version = view(head).getUint32(4, false);
  if (version === 1) return null; // qcow (v1), below
  const f = finding('qcow2', 'start');
  return guard(f, async () => {
    f.details.version = version;
    if (head.length < 24) throw new DiskError('ETRUNCATED', `${file}: qcow2 header is truncated`);
    const clusterBits = view(head).getUint32(20, false);
    if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
      throw new DiskError('ECORRUPT', `${file}: qcow2 cluster size 2^${clusterBits} is invalid`);
    }
    const clusterSize = 2 ** clusterBits;
    // The header, its extensions and the backing file name all live in the first cluster.
    const cluster0 = await r.read(0, clusterSize);
    const h = parseHeader(cluster0, Number.MAX_SAFE_INTEGER, file);
    f.virtualSize = h.size;
    Object.assign(f.details, {
      'cluster-size': clusterSize,
      compat: h.version === 2 ? '0.10' : '1.1',
      encrypted: h.cryptMethod !== 0,
      dirty: (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
      corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      snapshots: h.nbSnapshots,
    });
    if (h.backingFile !== undefined) {
      f.details['backing-filename'] = h.backingFile;
      if (h.backingFormat) f.details['backing-format'] = h.backingFormat;
      issue(f, 'backing-file', `qcow2 image names a backing file ${quoted(h.backingFile)}; a standalone image must not read another file`);
    }
    if (h.dataFile !== undefined || (h.incompatibleFeatures & INCOMPAT_DATA_FILE)) {
      if (h.dataFile !== undefined) f.details['data-file'] = h.dataFile;
      issue(f, 'data-file', `qcow2 image keeps its data in an external data file${h.dataFile !== undefined ? ` ${quoted(h.dataFile)}` : ''}`);
    }
    // Ask for the tables now, so a stream captures them as it passes.
    const l1Bytes = h.l1Size * 8;
    const reftableBytes = h.refcountTableClusters * clusterSize;
    const l1 = l1Bytes > 0 && l1Bytes <= MAX_READ ? r.read(h.l1TableOffset, l1Bytes) : undefined;
    const reftable = reftableBytes <= MAX_READ ? r.read(h.refcountTableOffset, reftableBytes) : undefined;
    l1?.catch(() => {});
    reftable?.catch(() => {});
    const size = await r.size();
    for (const [what, off, len] of [
      ['L1 table', h.l1TableOffset, l1Bytes],
      ['refcount table', h.refcountTableOffset, reftableBytes],
    ] as const) {
      if (len > 0 && off + len > size) issue(f, 'geometry', `qcow2 ${what} (offset ${off}, ${len} bytes) extends past the end of the file (${size} bytes)`);
      if (len > 0 && off < clusterSize) issue(f, 'geometry', `qcow2 ${what} (offset ${off}) overlaps the header cluster`);
    }
    if (h.nbSnapshots > 0 && h.snapshotsOffset >= size) {
      issue(f, 'geometry', `qcow2 snapshot table (offset ${h.snapshotsOffset}) lies past the end of the file (${size} bytes)`);
    }
    if (f.issues.some((i) => i.code === 'geometry')) return;
    if (l1) checkOffsets(f, await l1, 'qcow2 L1 table', size, clusterSize, OFFSET_MASK, L1E_RESERVED_MASK);
    else if (l1Bytes > 0) issue(f, 'geometry', `qcow2 L1 table of ${l1Bytes} bytes is too large to verify`);
    if (reftable) checkOffsets(f, await reftable, 'qcow2 refcount table', size, clusterSize, OFFSET_MASK, 0x1ffn);
    else issue(f, 'geometry', `qcow2 refcount table of ${reftableBytes} bytes is too large to verify`);
  });
};
