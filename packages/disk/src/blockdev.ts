/**
 * The one abstraction the engine speaks: a BlockDevice is a
 * virtual disk of `size` bytes. Format drivers turn a ByteSource into a BlockDevice; layers
 * (backing chains, partition windows, overlays) stack on BlockDevices; operations (convert,
 * check, map, ...) are functions over BlockDevices.
 */
import { DiskError } from './errors.js';
import type { ByteSource } from './source.js';

/**
 * One run of the virtual disk with uniform allocation status, as `qemu-img map` reports it.
 * - `data`:    the layer at `depth` stores data for this range (it is allocated there).
 * - `zero`:    reads return zeroes (a zero cluster, a hole in raw, or unallocated everywhere).
 * - `present`: some layer of the chain provides the range (false: falls through every layer).
 * - `depth`:   0 = the top image, 1 = its backing file, ...; for `present: false` it is the
 *              chain length (as qemu-img prints it).
 * A hole is `data: false`; a hole that reads as zeroes is `{ data: false, zero: true }`.
 */
export interface Extent {
  offset: number;
  length: number;
  data: boolean;
  zero: boolean;
  present: boolean;
  depth: number;
  /** Host offset in the file of layer `depth`, when the range is stored there contiguously and uncompressed. */
  hostOffset?: number;
  /** Host file (layer at `depth`) that `hostOffset` refers to. */
  hostFile?: string;
  /** The range is stored compressed (qcow2 compressed clusters, vmdk streamOptimized grains). */
  compressed?: boolean;
}

export interface WriteZeroesOptions {
  /** The caller allows the range to be deallocated (punched) rather than written. */
  mayUnmap?: boolean;
}

export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  /** Read `buf.length` bytes at `offset`; the range must lie inside [0, size). */
  read(buf: Uint8Array, offset: number): Promise<void>;
  write?(buf: Uint8Array, offset: number): Promise<void>;
  writeZeroes?(offset: number, length: number, options?: WriteZeroesOptions): Promise<void>;
  /** Deallocate; later reads return zeroes or backing data, as the format defines. */
  discard?(offset: number, length: number): Promise<void>;
  /**
   * Allocation status of [offset, offset+length), as contiguous extents in ascending order
   * covering the whole range (clipped to `size`). Adjacent extents may share a status.
   */
  blockStatus(offset: number, length: number): AsyncIterable<Extent>;
  flush?(): Promise<void>;
  close(): Promise<void>;
  /**
   * Copy offloading (`qemu-img convert -C`), source side (QEMU's bdrv_co_copy_range_from):
   * make [offset, offset+length) of this device appear at `dstOffset` of `dst` by handing the
   * host ranges that store it to `dst.copyRangeFrom` (ranges that read as zeroes become
   * writeZeroes). Throws where the device cannot (compressed or encrypted data, a target
   * without copyRangeFrom, the kernel refusing); the caller then reads and writes instead.
   */
  copyRangeTo?(offset: number, length: number, dst: BlockDevice, dstOffset: number): Promise<void>;
  /**
   * Copy offloading, target side (QEMU's bdrv_co_copy_range_to): store the `length` bytes at
   * `fromOffset` of the host file `from` at guest `offset` of this device, copied by the kernel
   * where the device maps them to its own file. Throws where it cannot.
   */
  copyRangeFrom?(from: ByteSource, fromOffset: number, offset: number, length: number): Promise<void>;
}

/**
 * Runs `body`, which may push promises (reads into a caller's buffer, say) onto `work`, and waits
 * for every one of them. A failure, of `body` or of any promise, is thrown only once all have
 * settled: nothing still writes into the buffer after the call returns and no rejection goes
 * unhandled. Without `body`: waits for `work`.
 */
export async function settled(work: Promise<unknown>[], body?: () => Promise<void>): Promise<void> {
  if (!body && work.length === 1) {
    await work[0];
    return;
  }
  let failure: { reason: unknown } | undefined;
  if (body) {
    try {
      await body();
    } catch (e) {
      failure = { reason: e };
    }
  }
  const results = await Promise.allSettled(work);
  failure ??= results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}

/** Check a request against a device's size; throws EINVAL with a clear message. */
export function checkRange(size: number, offset: number, length: number, what = 'request'): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new DiskError('EINVAL', `${what} at offset ${offset} length ${length} is outside the device (size ${size})`);
  }
}

/**
 * Read what an image leaves to its backing device (qcow2/qed unallocated clusters, a
 * differencing VHD's unset sectors): the backing device's bytes, zeroes past its end or
 * without one.
 */
export async function readBacking(backing: BlockDevice | undefined, buf: Uint8Array, offset: number): Promise<void> {
  const inside = backing ? Math.max(0, Math.min(buf.length, backing.size - offset)) : 0;
  if (inside > 0) await backing!.read(buf.subarray(0, inside), offset);
  if (inside < buf.length) buf.fill(0, inside);
}

/**
 * Block status of a range an image leaves to its backing device: the backing device's
 * extents one level deeper; past its end, or without one, unallocated zeroes.
 */
export async function* backingStatus(backing: BlockDevice | undefined, offset: number, length: number): AsyncIterable<Extent> {
  const inside = backing ? Math.max(0, Math.min(length, backing.size - offset)) : 0;
  if (inside > 0) for await (const e of backing!.blockStatus(offset, inside)) yield { ...e, depth: e.depth + 1 };
  if (inside < length) yield { offset: offset + inside, length: length - inside, data: false, zero: true, present: false, depth: backing ? 1 : 0 };
}

/** Merge adjacent extents with the same status (what qemu-img map does before printing). */
export function sameStatus(a: Extent, b: Extent): boolean {
  if (a.data !== b.data || a.zero !== b.zero || a.present !== b.present || a.depth !== b.depth) return false;
  if (!!a.compressed !== !!b.compressed) return false;
  if (a.hostFile !== b.hostFile) return false;
  if (a.hostOffset === undefined || b.hostOffset === undefined) return a.hostOffset === b.hostOffset;
  return a.hostOffset + a.length === b.hostOffset;
}

export async function* coalesce(extents: AsyncIterable<Extent>): AsyncIterable<Extent> {
  let cur: Extent | undefined;
  for await (const e of extents) {
    if (e.length === 0) continue;
    if (cur && cur.offset + cur.length === e.offset && sameStatus(cur, e)) {
      cur = { ...cur, length: cur.length + e.length };
      continue;
    }
    if (cur) yield cur;
    cur = { ...e };
  }
  if (cur) yield cur;
}
