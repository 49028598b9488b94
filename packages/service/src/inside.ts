/**
 * diskhub extension to the Images API: what is inside a stored image, for the dashboard.
 * GET /v2/images/{id}/x-diskhub/inside answers with the safety inspector's findings, a
 * picture of the image's allocation (bytes of data, compressed data, zeroes, backing and
 * unallocated ranges in each of N equal slices of the virtual disk) and the partitions and
 * filesystems on it. Everything is read with the disk engine from the stored data itself, in
 * whichever store holds it (a StoreSource: only the ranges the engine asks for are fetched);
 * backing and external data files are never opened (uploads naming them are refused anyway).
 *
 * It also inspects the operating systems on the image and checks each Linux one against the
 * cloud-image checklist (what `diskhub img inspect` and `diskhub img lint` print). That work
 * reads files of someone else's image, so it runs under a read budget (bytes and time): past
 * either, it stops and the answer says why instead of holding the request. An image's data
 * does not change once it is active, so answers are cached per image and location.
 */
import {
  BudgetedSource, DiskError, closeChain, contentDevices, filesystemOf, getFormat, inspectSource, inspectedOsJson, isDiskError, lintChecksJson, lintDisk,
  openSource, readPartitionTable,
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

/** What inspecting an operating system may cost for one answer. */
export interface InsideLimits {
  /** Milliseconds the operating system inspection and lint may take. */
  timeMs: number;
  /** Bytes of the image they may read. */
  maxBytes: number;
}

export const DEFAULT_INSIDE_LIMITS: InsideLimits = { timeMs: 20_000, maxBytes: 512 << 20 };

/** One operating system: `img inspect`'s JSON without the package list (its count instead), with `img lint`'s checks. */
export type OsView = Omit<ReturnType<typeof inspectedOsJson>, 'applications'> & {
  application_count: number | null;
  /** The checklist (Linux systems only). */
  lint: ReturnType<typeof lintChecksJson> | null;
};

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
  /** Operating systems found (empty: none), or null when they were not looked for. */
  operating_systems: OsView[] | null;
  /** Why `operating_systems` is null (the image cannot be read, the read budget ran out). */
  operating_systems_unavailable?: string;
  /** When this answer was computed (answers are cached: the same time means the same answer). */
  computed_at: string;
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

/**
 * The operating systems of the image `source` holds (in `format`), inspected and linted within
 * `limits`: the list, or why there is none.
 */
export async function operatingSystemsOf(source: ByteSource, format: string, limits: InsideLimits): Promise<{ systems: OsView[] } | { unavailable: string; code: string }> {
  // A timer of our own (AbortSignal.timeout's does not keep the process alive, and work that
  // waits on a store read that never answers must still end).
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), limits.timeMs);
  const signal = controller.signal;
  const budgeted = new BudgetedSource(source, { maxBytes: limits.maxBytes, signal });
  let image: Image | undefined;
  const work = (async () => {
    image = await openSource(budgeted, { format });
    return lintDisk(image);
  })();
  // Work that is busy between reads is stopped here; the next read it makes fails.
  let onAbort = () => {};
  const timedOut = new Promise<never>((_, reject) => {
    onAbort = () => reject(new DiskError('EABORTED', 'time limit'));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    const { inspection, linted } = await Promise.race([work, timedOut]);
    return {
      systems: inspection.operatingSystems.map((os) => {
        const { applications, ...rest } = inspectedOsJson(os);
        const checks = linted.find((l) => l.os === os)?.checks;
        return { ...rest, application_count: applications?.length ?? null, lint: checks ? lintChecksJson(checks) : null };
      }),
    };
  } catch (e) {
    if (!isDiskError(e)) throw e;
    const unavailable = e.code === 'EABORTED' ? `looking for operating systems took longer than ${limits.timeMs / 1000} s (the time budget)`
      : e.code === 'ELIMIT' && e.message.includes('read budget') ? `looking for operating systems needs more than ${limits.maxBytes} bytes of the image (the read budget)`
        : e.message;
    return { unavailable, code: e.code };
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    work.catch(() => {});
    await closeChain(image).catch(() => {});
  }
}

/** Everything the extension reports about the image data `source` reads (it is not closed here). */
export async function describeInside(source: ByteSource, buckets = DEFAULT_BUCKETS, limits: InsideLimits = DEFAULT_INSIDE_LIMITS): Promise<InsideView> {
  const report = await inspectSource(source);
  const view: InsideView = {
    format: report.format, virtual_size: report.virtualSize, inspection: inspectionView(report), allocation: null, partitions: null,
    operating_systems: null, computed_at: new Date().toISOString(),
  };
  // The images that the engine can open safely: a format it has a driver for, and nothing
  // that would make it read another file.
  const risky = report.issues.some((i) => i.code === 'backing-file' || i.code === 'data-file' || i.code === 'extents' || i.code === 'parent');
  const format = report.format === 'iso' ? 'raw' : report.format;
  let driverKnown = true;
  try { getFormat(format); } catch { driverKnown = false; }
  if (risky || !driverKnown) {
    view.allocation_unavailable = risky ? 'the image refers to other files' : `the disk engine cannot read ${report.format} images yet`;
    view.operating_systems_unavailable = view.allocation_unavailable;
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
    view.operating_systems_unavailable = e.message;
    return view;
  } finally {
    await closeChain(image);
  }
  const os = await operatingSystemsOf(source, format, limits);
  if ('systems' in os) view.operating_systems = os.systems;
  else view.operating_systems_unavailable = os.unavailable;
  return view;
}

/** How long an answer cut short by the time budget is kept (a busy server may finish next time). */
const TIMED_OUT_TTL_MS = 10 * 60_000;

/**
 * Answers per image (and location and bucket count), the least recently used dropped past
 * `max`. Requests that arrive while an answer is being computed wait for that one computation.
 * An answer that failed (the store did not answer) is not kept.
 */
export class InsideCache {
  private readonly entries = new Map<string, { view: Promise<InsideView>; expires: number }>();
  constructor(private readonly max = 256) {}

  get(key: string, compute: () => Promise<InsideView>): Promise<InsideView> {
    const hit = this.entries.get(key);
    if (hit && hit.expires > Date.now()) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.view;
    }
    const entry = { view: compute(), expires: Infinity };
    this.entries.set(key, entry);
    entry.view.then((v) => {
      if (v.operating_systems_unavailable?.includes('(the time budget)')) entry.expires = Date.now() + TIMED_OUT_TTL_MS;
    }, () => { if (this.entries.get(key) === entry) this.entries.delete(key); });
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
    return entry.view;
  }
}
