/** Several devices end to end as one (`qemu-img convert a b c out` concatenates its sources). */
import type { BlockDevice, Extent } from '../blockdev.js';
import { checkRange } from '../blockdev.js';

export class ConcatDevice implements BlockDevice {
  readonly size: number;
  private readonly starts: number[] = [];
  constructor(private readonly parts: readonly BlockDevice[]) {
    let pos = 0;
    for (const p of parts) { this.starts.push(pos); pos += p.size; }
    this.size = pos;
  }

  /** Index of the part holding `offset`. */
  private partAt(offset: number): number {
    let lo = 0;
    let hi = this.parts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= offset) lo = mid; else hi = mid - 1;
    }
    // Skip empty parts sitting at the same start.
    while (lo < this.parts.length - 1 && this.parts[lo]!.size === 0) lo++;
    return lo;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    checkRange(this.size, offset, buf.length, 'read');
    let done = 0;
    while (done < buf.length) {
      const i = this.partAt(offset + done);
      const part = this.parts[i]!;
      const local = offset + done - this.starts[i]!;
      const n = Math.min(buf.length - done, part.size - local);
      await part.read(buf.subarray(done, done + n), local);
      done += n;
    }
  }

  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const i = this.partAt(pos);
      const part = this.parts[i]!;
      const base = this.starts[i]!;
      const n = Math.min(end - pos, part.size - (pos - base));
      for await (const e of part.blockStatus(pos - base, n)) {
        // Host offsets name a different file per part; keep them with their file.
        yield { ...e, offset: e.offset + base };
      }
      pos += n;
    }
  }

  async close(): Promise<void> {
    for (const p of this.parts) await p.close();
  }
}
