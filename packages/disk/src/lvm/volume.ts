/**
 * A logical volume as a block device: what device-mapper's linear and striped targets do
 * in the kernel, done here over the PVs' block devices. An LV byte maps to a segment, a
 * stripe and an extent of a PV; requests are split where the mapping changes.
 */
import { checkRange, type BlockDevice, type Extent, type WriteZeroesOptions } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { LogicalVolumeInfo, LvSegment, VolumeGroupInfo } from './vg.js';
import { remapExtents, writeZeroBytes } from '../partition/window.js';

interface Piece {
  /** Bytes from `offset` that map contiguously. */
  length: number;
  /** The PV device and byte offset in it; absent for zero segments. */
  device?: BlockDevice;
  deviceOffset?: number;
  segment: LvSegment;
}

export class LogicalVolumeDevice implements BlockDevice {
  readonly size: number;
  readonly name: string;
  private readonly extentSize: number;
  private readonly pvStart = new Map<string, number>();
  private readonly readOnly: boolean;

  constructor(readonly vg: VolumeGroupInfo, readonly lv: LogicalVolumeInfo, private readonly pvDevices: Map<string, BlockDevice>, options: { readOnly?: boolean } = {}) {
    this.name = `${vg.name}/${lv.name}`;
    if (lv.unsupported) throw new DiskError('EUNSUPPORTED', `logical volume ${this.name}: ${lv.unsupported}`);
    this.size = lv.size;
    this.extentSize = vg.extentSize;
    for (const pv of vg.pvs) this.pvStart.set(pv.key, pv.peStart);
    const used = new Set(lv.segments.flatMap((s) => s.stripes.map((st) => st.pv)));
    for (const key of used) {
      const dev = pvDevices.get(key);
      const pv = vg.pvs.find((p) => p.key === key)!;
      if (!dev) throw new DiskError('EINVAL', `logical volume ${this.name} needs physical volume ${pv.uuid} (${key}), which was not given`);
      if (pv.peStart + pv.peCount * this.extentSize > dev.size) {
        throw new DiskError('ECORRUPT', `physical volume ${pv.uuid}: ${pv.peCount} extents from byte ${pv.peStart} do not fit in the device (${dev.size} bytes)`);
      }
    }
    this.readOnly = !!options.readOnly || [...used].some((k) => typeof pvDevices.get(k)!.write !== 'function');
  }

  /** The contiguous run starting at LV byte `offset` (at most `length` bytes). */
  private piece(offset: number, length: number): Piece {
    const extent = Math.floor(offset / this.extentSize);
    const segs = this.lv.segments;
    let lo = 0;
    let hi = segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (segs[mid]!.startExtent <= extent) lo = mid; else hi = mid - 1;
    }
    const seg = segs[lo]!;
    const inSeg = offset - seg.startExtent * this.extentSize;
    const segLeft = seg.extentCount * this.extentSize - inSeg;
    if (seg.type !== 'striped') return { length: Math.min(length, segLeft), segment: seg };
    const count = seg.stripes.length;
    if (count === 1) {
      const st = seg.stripes[0]!;
      return {
        length: Math.min(length, segLeft), segment: seg, device: this.pvDevices.get(st.pv)!,
        deviceOffset: this.pvStart.get(st.pv)! + st.startExtent * this.extentSize + inSeg,
      };
    }
    // Striped: chunks of stripeSize go round the stripes in turn.
    const chunk = seg.stripeSize!;
    const chunkIndex = Math.floor(inSeg / chunk);
    const within = inSeg % chunk;
    const st = seg.stripes[chunkIndex % count]!;
    const row = Math.floor(chunkIndex / count);
    return {
      length: Math.min(length, chunk - within, segLeft), segment: seg, device: this.pvDevices.get(st.pv)!,
      deviceOffset: this.pvStart.get(st.pv)! + st.startExtent * this.extentSize + row * chunk + within,
    };
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, `${this.name}: read`);
    for (let done = 0; done < buf.length; ) {
      const p = this.piece(offset + done, buf.length - done);
      const part = buf.subarray(done, done + p.length);
      if (p.device) await p.device.read(part, p.deviceOffset!);
      else if (p.segment.type === 'zero') part.fill(0);
      else throw new DiskError('EIO', `${this.name}: read at ${offset + done} hits a "${p.segment.type}" segment`);
      done += p.length;
    }
  }

  get write(): ((buf: Uint8Array, offset: number) => Promise<void>) | undefined {
    if (this.readOnly) return undefined;
    return async (buf, offset) => {
      checkRange(this.size, offset, buf.length, `${this.name}: write`);
      for (let done = 0; done < buf.length; ) {
        const p = this.piece(offset + done, buf.length - done);
        if (!p.device) throw new DiskError('EIO', `${this.name}: write at ${offset + done} hits a "${p.segment.type}" segment`);
        await p.device.write!(buf.subarray(done, done + p.length), p.deviceOffset!);
        done += p.length;
      }
    };
  }

  get writeZeroes(): ((offset: number, length: number, options?: WriteZeroesOptions) => Promise<void>) | undefined {
    if (this.readOnly) return undefined;
    return async (offset, length, options) => {
      checkRange(this.size, offset, length, `${this.name}: write zeroes`);
      for (let done = 0; done < length; ) {
        const p = this.piece(offset + done, length - done);
        if (p.device?.writeZeroes) await p.device.writeZeroes(p.deviceOffset!, p.length, options);
        else if (p.device) await writeZeroBytes(p.device, p.deviceOffset!, p.length);
        else if (p.segment.type !== 'zero') throw new DiskError('EIO', `${this.name}: write at ${offset + done} hits a "${p.segment.type}" segment`);
        done += p.length;
      }
    };
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, `${this.name}: block status`);
    for (let done = 0; done < length; ) {
      const at = offset + done;
      const p = this.piece(at, length - done);
      if (!p.device) {
        yield { offset: at, length: p.length, data: false, zero: true, present: true, depth: 0 };
      } else {
        yield* remapExtents(p.device.blockStatus(p.deviceOffset!, p.length), p.deviceOffset!, p.length, at);
      }
      done += p.length;
    }
  }

  async flush(): Promise<void> {
    for (const dev of new Set(this.pvDevices.values())) await dev.flush?.();
  }

  /** The PV devices belong to whoever opened them. */
  async close(): Promise<void> {}
}
