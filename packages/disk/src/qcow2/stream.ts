/**
 * What reading a qcow2 image as it streams in needs (streamed/): whether the header allows it,
 * and which clusters the reader reads more than once (the header, the L1 table, the L2 tables),
 * which the stream keeps; data clusters are read once, in guest order.
 */
import type { ByteSource } from '../source.js';
import { readExact } from '../source.js';
import { AUTOCLEAR_BITMAPS, EXT_BITMAPS, INCOMPAT_DATA_FILE, entryOffset, geometry, type Qcow2Header } from './layout.js';

/**
 * Why an image with this header is not read as it streams (null: it is). Each of these makes
 * the reader (or the safety inspector, which must judge before anything is read) look at
 * structures anywhere in the file: a backing file or external data file (refused anyway),
 * internal snapshots (tables that share clusters), persistent bitmaps, encryption.
 */
export function streamingObstacle(h: Qcow2Header): string | null {
  if (h.backingFile !== undefined) return 'a backing file';
  if (h.incompatibleFeatures & INCOMPAT_DATA_FILE) return 'an external data file';
  if (h.nbSnapshots > 0) return 'internal snapshots';
  if (h.cryptMethod !== 0) return 'encryption';
  if ((h.autoclearFeatures & AUTOCLEAR_BITMAPS) || h.extensions.some((e) => e.type === EXT_BITMAPS)) return 'persistent bitmaps';
  return null;
}

/** Indices of the clusters holding the header, the L1 table and the L2 tables the L1 table names. */
export async function metadataClusters(source: ByteSource, h: Qcow2Header): Promise<Set<number>> {
  const geo = geometry(h);
  const cs = geo.clusterSize;
  const clusters = new Set<number>([0]);
  const l1 = new Uint8Array(geo.l1EntriesNeeded * 8);
  if (l1.length) await readExact(source, l1, h.l1TableOffset, 'L1 table');
  for (let c = Math.floor(h.l1TableOffset / cs); c * cs < h.l1TableOffset + l1.length; c++) clusters.add(c);
  const v = new DataView(l1.buffer);
  for (let i = 0; i < geo.l1EntriesNeeded; i++) {
    const off = entryOffset(v.getUint32(i * 8, false), v.getUint32(i * 8 + 4, false));
    if (off) clusters.add(Math.floor(off / cs));
  }
  return clusters;
}
