/**
 * A read budget over a ByteSource, for work done on behalf of someone else's image (the image
 * service looking inside an upload): past `maxBytes` read, or once `signal` aborts (a time
 * limit), every read fails with a typed error, so whatever walks the image — a filesystem
 * reader, the package database parser, the lint — unwinds instead of reading on. A read that
 * the source does not answer is abandoned when the signal aborts, so a stalled store cannot
 * hold the caller either.
 */
import { DiskError } from './errors.js';
import type { ByteSource, HostExtent } from './source.js';

export interface ReadBudget {
  /** Most bytes handed out by read() (requested sizes, whether the source had them cached or not). */
  maxBytes: number;
  /** Aborts the work (AbortSignal.timeout for a time limit); its reason is put in the error. */
  signal?: AbortSignal;
}

export class BudgetedSource implements ByteSource {
  readonly readOnly = true;
  readonly name: string;
  /** Bytes read so far. */
  bytesRead = 0;

  constructor(private readonly base: ByteSource, private readonly budget: ReadBudget) {
    this.name = base.name;
  }

  private check(): void {
    const { signal } = this.budget;
    if (signal?.aborted) {
      const why = signal.reason instanceof Error && signal.reason.name !== 'TimeoutError' && signal.reason.name !== 'AbortError' ? signal.reason.message : 'the time limit was reached';
      throw new DiskError('EABORTED', `${this.name}: ${why}`);
    }
  }

  async size(): Promise<number> {
    this.check();
    return this.base.size();
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    this.check();
    if (this.bytesRead + buf.length > this.budget.maxBytes) {
      throw new DiskError('ELIMIT', `${this.name}: reading more than ${this.budget.maxBytes} bytes of the image (the read budget) was refused`);
    }
    this.bytesRead += buf.length;
    const { signal } = this.budget;
    if (!signal) return this.base.read(buf, offset);
    // The source's read may never answer: stop waiting for it when the signal aborts.
    return new Promise<number>((resolve, reject) => {
      const onAbort = () => { try { this.check(); } catch (e) { reject(e); } };
      signal.addEventListener('abort', onAbort, { once: true });
      this.base.read(buf, offset).then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  hostExtents(offset: number, length: number): AsyncIterable<HostExtent> {
    this.check();
    return this.base.hostExtents(offset, length);
  }

  async allocatedSize(): Promise<number> { return this.base.allocatedSize(); }
  private refuse(): never { throw new DiskError('EROFS', `${this.name}: read-only`); }
  async write(): Promise<void> { this.refuse(); }
  async truncate(): Promise<void> { this.refuse(); }
  async punchHole(): Promise<void> { this.refuse(); }
  async allocate(): Promise<void> { this.refuse(); }
  async flush(): Promise<void> {}
  /** The source underneath is its owner's to close. */
  async close(): Promise<void> {}
}
