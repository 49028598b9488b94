/**
 * A window onto another block device: bytes [start, start+size) of the parent seen as a
 * device of its own. This is what a partition (or an LVM linear segment) is to the layers
 * above it: every request is bounds-checked against the window, then shifted into the parent.
 */
import { checkRange, type BlockDevice, type Extent, type WriteZeroesOptions } from '../blockdev.js';
import { DiskError } from '../errors.js';

export interface WindowOptions {
  /** Refuse writes even if the parent accepts them. */
  readOnly?: boolean;
  /** What the window is, for messages ("partition 2"). */
  name?: string;
  /**
   * Called by close(). By default closing a window leaves the parent open: the caller that
   * opened the parent owns it. Pass e.g. `() => closeChain(image)` to hand it over.
   */
  onClose?: () => Promise<void>;
}

export class WindowDevice implements BlockDevice {
  readonly name: string;
  private readonly readOnly: boolean;
  private closed = false;

  constructor(readonly parent: BlockDevice, readonly start: number, readonly size: number, private readonly options: WindowOptions = {}) {
    this.name = options.name ?? `window at ${start}`;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(size) || start < 0 || size < 0 || start + size > parent.size) {
      throw new DiskError('ECORRUPT', `${this.name}: bytes ${start}..${start + size} lie outside the device (size ${parent.size})`);
    }
    this.readOnly = !!options.readOnly || typeof parent.write !== 'function';
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, `${this.name}: read`);
    await this.parent.read(buf, this.start + offset);
  }

  get write(): ((buf: Uint8Array, offset: number) => Promise<void>) | undefined {
    if (this.readOnly) return undefined;
    return async (buf, offset) => {
      checkRange(this.size, offset, buf.length, `${this.name}: write`);
      await this.parent.write!(buf, this.start + offset);
    };
  }

  get writeZeroes(): ((offset: number, length: number, options?: WriteZeroesOptions) => Promise<void>) | undefined {
    if (this.readOnly) return undefined;
    return async (offset, length, options) => {
      checkRange(this.size, offset, length, `${this.name}: write zeroes`);
      if (this.parent.writeZeroes) return this.parent.writeZeroes(this.start + offset, length, options);
      await writeZeroBytes(this.parent, this.start + offset, length);
    };
  }

  get discard(): ((offset: number, length: number) => Promise<void>) | undefined {
    if (this.readOnly || !this.parent.discard) return undefined;
    return async (offset, length) => {
      checkRange(this.size, offset, length, `${this.name}: discard`);
      await this.parent.discard!(this.start + offset, length);
    };
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, `${this.name}: block status`);
    yield* remapExtents(this.parent.blockStatus(this.start + offset, length), this.start + offset, length, offset);
  }

  async flush(): Promise<void> {
    await this.parent.flush?.();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.options.onClose?.();
  }
}

/**
 * Extents of the parent range [parentOffset, parentOffset+length) seen at `offset` of a
 * device stacked on it (a partition, an LV piece). Runs the parent reports beyond the range
 * are clipped; host offsets move with the clipped start.
 */
export async function* remapExtents(parentExtents: AsyncIterable<Extent>, parentOffset: number, length: number, offset: number): AsyncIterable<Extent> {
  for await (const e of parentExtents) {
    const from = Math.max(e.offset, parentOffset);
    const to = Math.min(e.offset + e.length, parentOffset + length);
    if (to <= from) continue;
    const shifted: Extent = { ...e, offset: offset + (from - parentOffset), length: to - from };
    if (e.hostOffset !== undefined) shifted.hostOffset = e.hostOffset + (from - e.offset);
    yield shifted;
  }
}

/** Zeroes for a device without writeZeroes: plain writes, in bounded steps. */
export async function writeZeroBytes(dev: BlockDevice, offset: number, length: number): Promise<void> {
  const zero = new Uint8Array(Math.min(length, 1 << 20));
  for (let done = 0; done < length; done += zero.length) {
    await dev.write!(zero.subarray(0, Math.min(zero.length, length - done)), offset + done);
  }
}
