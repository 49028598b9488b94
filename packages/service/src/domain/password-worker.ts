/**
 * The password hashing thread: scrypt runs here, synchronously, one request at a time, so
 * hashing never occupies libuv's thread pool, where the service's file reads and writes wait.
 */
import { scryptSync } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

export interface HashRequest { id: number; password: string; salt: Uint8Array; N: number; r: number; p: number; length: number }
export type HashReply = { id: number; hash: Uint8Array } | { id: number; error: string };

parentPort!.on('message', (m: HashRequest) => {
  try {
    const hash = scryptSync(m.password, m.salt, m.length, { N: m.N, r: m.r, p: m.p, maxmem: 128 * m.N * m.r * 2 });
    parentPort!.postMessage({ id: m.id, hash } satisfies HashReply);
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: (e as Error).message } satisfies HashReply);
  }
});
