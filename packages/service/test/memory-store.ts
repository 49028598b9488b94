/**
 * An in-memory store for tests: it keeps the store contract (the contract suite runs on it in
 * stores.test.ts) and can be made slow, fail after N bytes, fail on commit or on every call
 * (unavailable), and report a secret in its configuration, so the service's handling of store
 * failures and credentials can be tested without a real backend.
 */
import { randomBytes } from 'node:crypto';
import type { Writable } from 'node:stream';
import { StoreError, type LiveKeys, type Store, type StoreType, type StoreWriter } from '../src/stores/store.js';
import { register, registeredTypes, type StoreSpec } from '../src/stores/registry.js';

export interface MemoryStoreFaults {
  /** ms each read, size and write call waits. */
  delayMs?: number;
  /** Writes fail once this many bytes were written (kind). */
  failAfterBytes?: number;
  failKind?: StoreError['kind'];
  /** commit fails. */
  failCommit?: boolean;
  /** Every call fails as unavailable (the backend is down). */
  down?: boolean;
}

export class MemoryStore implements Store {
  readonly type: StoreType = 's3';
  readonly objects = new Map<string, Buffer>();
  readonly temp = new Map<string, Buffer[]>();
  /** Bytes read through read() and calls made (for tests of how much is fetched). */
  bytesRead = 0;
  readCalls = 0;
  discards = 0;
  faults: MemoryStoreFaults;

  constructor(readonly id: string, readonly description = 'Memory store (tests)', faults: MemoryStoreFaults = {}, private readonly secret = '') {
    this.faults = faults;
  }

  private async step(): Promise<void> {
    if (this.faults.delayMs) await new Promise((r) => setTimeout(r, this.faults.delayMs));
    if (this.faults.down) throw new StoreError(`memory store ${this.id} is down (endpoint memory.invalid, password=${this.secret})`, 'unavailable');
  }

  locationOf(key: string): string {
    return `memory://${this.id}/${key}`;
  }

  private keyOf(location: string): string {
    const prefix = `memory://${this.id}/`;
    if (!location.startsWith(prefix)) throw new StoreError(`location is not in memory store '${this.id}'`, 'not-found');
    return location.slice(prefix.length);
  }

  async init(): Promise<void> { await this.step(); }
  newTempKey(imageId: string): string { return `tmp-${imageId}-${randomBytes(6).toString('hex')}`; }

  async begin(tempKey: string): Promise<StoreWriter> {
    await this.step();
    const parts: Buffer[] = [];
    this.temp.set(tempKey, parts);
    let written = 0;
    return {
      tempKey,
      write: async (chunks) => {
        await this.step();
        for (const c of chunks) {
          written += c.length;
          if (this.faults.failAfterBytes !== undefined && written > this.faults.failAfterBytes) {
            throw new StoreError(`memory store ${this.id}: write failed (token=${this.secret})`, this.faults.failKind ?? 'failed');
          }
          parts.push(Buffer.from(c));
        }
      },
      commit: async (imageId) => {
        await this.step();
        if (this.faults.failCommit) throw new StoreError(`memory store ${this.id}: commit failed (secret ${this.secret})`, this.faults.failKind ?? 'unavailable');
        if (!this.temp.has(tempKey)) throw new StoreError('temporary data is gone', 'failed');
        this.objects.set(imageId, Buffer.concat(parts));
        this.temp.delete(tempKey);
        return this.locationOf(imageId);
      },
      discard: async () => { this.discards++; this.temp.delete(tempKey); },
    };
  }

  private object(location: string): Buffer {
    const data = this.objects.get(this.keyOf(location));
    if (!data) throw new StoreError(`no object ${location}`, 'not-found');
    return data;
  }

  async read(location: string, offset: number, length: number): Promise<Buffer> {
    await this.step();
    const data = this.object(location);
    const got = Buffer.from(data.subarray(offset, offset + length));
    this.bytesRead += got.length;
    this.readCalls++;
    return got;
  }

  async send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void> {
    await this.step();
    const data = this.object(location);
    const end = range ? range.end + 1 : data.length;
    for (let at = range?.start ?? 0; at < end && !out.destroyed; at += 1 << 20) {
      if (!out.write(data.subarray(at, Math.min(end, at + (1 << 20))))) {
        await new Promise<void>((r) => { const done = () => { out.off('drain', done); out.off('close', done); r(); }; out.on('drain', done); out.on('close', done); });
      }
    }
    if (!out.destroyed) out.end();
  }

  async size(location: string): Promise<number> {
    await this.step();
    return this.object(location).length;
  }

  async delete(location: string): Promise<void> {
    await this.step();
    this.objects.delete(this.keyOf(location));
  }

  async sweep(live: LiveKeys): Promise<string[]> {
    await this.step();
    const removed = [...this.temp.keys()].filter((k) => !live.has(k));
    for (const k of removed) this.temp.delete(k);
    return removed;
  }

  owns(location: string): boolean {
    return location.startsWith(`memory://${this.id}/`) && /^[A-Za-z0-9._-]+$/.test(location.slice(`memory://${this.id}/`.length));
  }

  detail(): Record<string, unknown> {
    // A careless store that puts its credential in its detail: the service must not show it.
    return this.secret ? { endpoint: 'https://memory.invalid', bucket: this.id, secret_key: this.secret } : { endpoint: 'https://memory.invalid', bucket: this.id };
  }

  async close(): Promise<void> {}
}

/** Memory stores built by the service from `{"type": "memory"}` specs, by id (the test reaches into them). */
export const memoryStores = new Map<string, MemoryStore>();

/** Register the `memory` store type (once per process). */
export function registerMemoryStores(): void {
  if (registeredTypes().includes('memory')) return;
  register('memory', (spec: StoreSpec) => {
    const store = new MemoryStore(spec.id, typeof spec.description === 'string' ? spec.description : undefined, {}, typeof spec.secret === 'string' ? spec.secret : '');
    memoryStores.set(spec.id, store);
    return store;
  });
}
