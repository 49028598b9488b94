/**
 * diskhub extension to the Images API: what is inside a stored image, for the dashboard.
 * GET /v2/images/{id}/x-diskhub/inside answers with the safety inspector's findings, a
 * picture of the image's allocation (bytes of data, compressed data, zeroes, backing and
 * unallocated ranges in each of N equal slices of the virtual disk) and the partitions and
 * filesystems on it. Everything is read with the disk engine from the stored data itself, in
 * whichever store holds it (a StoreSource: only the ranges the engine asks for are fetched);
 * backing and external data files are never opened (uploads naming them are refused anyway).
 */
import {
  closeChain, contentDevices, filesystemOf, getFormat, inspectSource, isDiskError, openSource, readPartitionTable,
  type ByteSource, type FilesystemInfo, type Image, type InspectionReport,
} from '@diskhub/disk';

/** Order of the per-bucket byte counts in `allocation.buckets`. */
export const ALLOCATION_LEGEND = ['data', 'compressed', 'zero', 'backing', 'unallocated'] as const;
export const DEFAULT_BUCKETS = 256;
export const MAX_BUCKETS = 4096;
/** Partitions whose filesystem is identified (more are listed without it). */
const MAX_IDENTIFIED = 32;

export interface Allocation {
  legend: readonly string[];
  bucket_size: number;
  /** Per bucket, bytes of each legend entry. */
  buckets: number[][];
  totals: Record<string, number>;
}

export interface InsideView {
  format: string;
  virtual_size: number | null;
  inspection: { format: string; safe: boolean; detected: string[]; subformat?: string; issues: { code: string; message: string }[] };
  allocation: Allocation | null;
  /** Why there is no allocation picture (a format the engine cannot open, a broken image). */
  allocation_unavailable?: string;
  partitions: {
    table: 'dos' | 'gpt' | null;
    entries: { number: number; start: number; size: number; kind: string; type: string; type_name?: string; name?: string; filesystem: FsView | null }[];
    /** Filesystem of the whole disk when it has no partition table. */
    filesystem?: FsView | null;
  } | null;
}

type FsView = { type: string; label?: string; uuid?: string; size?: number };
const fsView = (f: FilesystemInfo | null): FsView | null => f && { type: f.type, label: f.label, uuid: f.uuid, size: f.size };

/** Which legend slot an extent of the image (opened without its backing chain) falls in. */
function slotOf(e: { data: boolean; zero: boolean; present: boolean; compressed?: boolean }, hasBacking: boolean): number {
  if (!e.present) return hasBacking ? 3 : 4;
  if (e.data) return e.compressed ? 1 : 0;
  return e.zero ? 2 : 4;
}

export async function allocationOf(image: Image, buckets: number): Promise<Allocation> {
  const size = image.size;
  const n = Math.max(1, Math.min(buckets, size || 1));
  const bucketSize = Math.max(1, Math.ceil(size / n));
  const count = size === 0 ? 0 : Math.ceil(size / bucketSize);
  const out = Array.from({ length: count }, () => [0, 0, 0, 0, 0]);
  const totals = [0, 0, 0, 0, 0];
  const hasBacking = !!image.backingRef;
  for await (const e of image.blockStatus(0, size)) {
    const slot = slotOf(e, hasBacking);
    totals[slot]! += e.length;
    // Spread the extent over the buckets it covers.
    let off = e.offset;
    const end = e.offset + e.length;
    while (off < end) {
      const b = Math.floor(off / bucketSize);
      const stop = Math.min(end, (b + 1) * bucketSize);
      out[b]![slot]! += stop - off;
      off = stop;
    }
  }
  return {
    legend: ALLOCATION_LEGEND, bucket_size: bucketSize, buckets: out,
    totals: Object.fromEntries(ALLOCATION_LEGEND.map((k, i) => [k, totals[i]!])),
  };
}

async function partitionsOf(image: Image): Promise<InsideView['partitions']> {
  const table = await readPartitionTable(image).catch(() => null);
  const { devices, partitions } = await contentDevices(image, table);
  const byNumber = new Map<number, FsView | null>();
  let whole: FsView | null | undefined;
  for (const d of devices.slice(0, MAX_IDENTIFIED)) {
    const fs = fsView(await filesystemOf(d.device));
    const p = partitions.get(d);
    if (p) byNumber.set(p.number, fs); else whole = fs;
  }
  if (!table) return { table: null, entries: [], filesystem: whole ?? null };
  return {
    table: table.type,
    entries: table.partitions.map((p) => ({
      number: p.number, start: p.start, size: p.size, kind: p.kind, type: p.type, type_name: p.typeName, name: p.name,
      filesystem: byNumber.get(p.number) ?? null,
    })),
  };
}

function inspectionView(r: InspectionReport): InsideView['inspection'] {
  return { format: r.format, safe: r.safe, detected: r.detected, subformat: r.subformat, issues: r.issues.map((i) => ({ code: i.code, message: i.message })) };
}

/** Everything the extension reports about the image data `source` reads (it is not closed here). */
export async function describeInside(source: ByteSource, buckets = DEFAULT_BUCKETS): Promise<InsideView> {
  const report = await inspectSource(source);
  const view: InsideView = { format: report.format, virtual_size: report.virtualSize, inspection: inspectionView(report), allocation: null, partitions: null };
  // The images that the engine can open safely: a format it has a driver for, and nothing
  // that would make it read another file.
  const risky = report.issues.some((i) => i.code === 'backing-file' || i.code === 'data-file' || i.code === 'extents' || i.code === 'parent');
  const format = report.format === 'iso' ? 'raw' : report.format;
  let driverKnown = true;
  try { getFormat(format); } catch { driverKnown = false; }
  if (risky || !driverKnown) {
    view.allocation_unavailable = risky ? 'the image refers to other files' : `the disk engine cannot read ${report.format} images yet`;
    return view;
  }
  let image: Image | undefined;
  try {
    image = await openSource(source, { format });
    view.virtual_size = image.size;
    view.allocation = await allocationOf(image, buckets);
    view.partitions = await partitionsOf(image);
  } catch (e) {
    if (!isDiskError(e)) throw e;
    view.allocation_unavailable = e.message;
  } finally {
    await closeChain(image);
  }
  return view;
}
