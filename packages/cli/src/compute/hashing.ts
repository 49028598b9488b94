/**
 * Hashing a download on a worker thread, so that sha512 (about a second of CPU per GiB) runs
 * beside the socket reads and file writes instead of between them, as `curl | tee | sha512sum`
 * spreads the same work over processes. The worker's queue is bounded: the download waits
 * when the hash falls behind.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';

export interface StreamHash {
  /** Hash these bytes (copied: the caller may reuse its buffer at once). */
  update(bytes: Uint8Array): Promise<void>;
  /** The hex digest of everything given. */
  digest(): Promise<string>;
  /** Stop without a digest (a failed download). */
  close(): Promise<void>;
}

/** Pieces that may wait in the worker's queue before update() waits for it. */
const MAX_QUEUED = 16;
/** Below this, a worker's start costs more than the overlap gains. */
export const WORKER_HASH_MIN_BYTES = 32 << 20;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash(workerData.algorithm);
parentPort.on('message', (m) => {
  if (m === null) parentPort.postMessage({ digest: hash.digest('hex') });
  else { hash.update(new Uint8Array(m)); parentPort.postMessage({ done: 1 }); }
});
`;

/** A hash of `algorithm` (a node:crypto name); on a worker thread when `expectedBytes` is large. */
export function streamHash(algorithm: string, expectedBytes: number | null): StreamHash {
  if (expectedBytes === null || expectedBytes < WORKER_HASH_MIN_BYTES) {
    const hash = createHash(algorithm);
    return {
      update: async (bytes) => { hash.update(bytes); },
      digest: async () => hash.digest('hex'),
      close: async () => undefined,
    };
  }
  return new WorkerHash(algorithm);
}

class WorkerHash implements StreamHash {
  private readonly worker: Worker;
  private queued = 0;
  private drained: (() => void) | undefined;
  private digested: ((hex: string) => void) | undefined;
  private failure: Error | undefined;

  constructor(algorithm: string) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { algorithm } });
    this.worker.on('message', (m: { done?: number; digest?: string }) => {
      if (m.digest !== undefined) { this.digested?.(m.digest); return; }
      this.queued--;
      if (this.queued < MAX_QUEUED) { const d = this.drained; this.drained = undefined; d?.(); }
    });
    this.worker.on('error', (e) => { this.failure = e; this.drained?.(); });
  }

  async update(bytes: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    const copy = new Uint8Array(bytes); // a copy whose memory moves to the worker
    this.queued++;
    this.worker.postMessage(copy.buffer, [copy.buffer]);
    if (this.queued >= MAX_QUEUED) await new Promise<void>((resolve) => { this.drained = resolve; });
    if (this.failure) throw this.failure;
  }

  async digest(): Promise<string> {
    if (this.failure) throw this.failure;
    const hex = await new Promise<string>((resolve, reject) => {
      this.digested = resolve;
      this.worker.once('error', reject);
      this.worker.postMessage(null);
    });
    await this.worker.terminate();
    return hex;
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
