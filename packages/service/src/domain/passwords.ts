/**
 * Password hashing (scrypt) on a thread of its own with a bounded queue.
 *
 * Node's crypto.scrypt runs on libuv's thread pool, the same four threads that serve the
 * service's file reads and writes: 32 concurrent wrong-password logins made a 1 MiB download
 * wait 7.6 s behind them. Here one worker thread hashes, one password at a time; at most
 * `queueLimit` wait, and a login beyond that is refused at once (HashingBusy, 503 with
 * Retry-After) instead of making every later request wait longer.
 *
 * Unknown users and users without a password cost one hash like everybody else
 * (`verify(password, null)`), so response times do not tell which user names exist.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { HashReply, HashRequest } from './password-worker.js';

/** scrypt cost: N=2^14, r=8, p=1 (16 MiB, the parameters RFC 7914 names for interactive logins). */
const N = 1 << 14, R = 8, P = 1, LENGTH = 32;

export class HashingBusy extends Error {
  constructor() { super('Too many authentication requests are being processed; try again later.'); this.name = 'HashingBusy'; }
}

export class PasswordHasher {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(h: Buffer): void; reject(e: Error): void }>();
  /** Salt for the hash spent on unknown users (compared with nothing). */
  private readonly decoySalt = randomBytes(16);

  /** @param queueLimit hashes that may wait behind the one running before new ones are refused */
  constructor(readonly queueLimit = 16) {}

  /** Hashes waiting or running. */
  get load(): number { return this.pending.size; }
  /** Hashes computed since start (decoys for unknown users included). */
  completed = 0;

  async hash(password: string): Promise<string> {
    const salt = randomBytes(16);
    const hash = await this.scrypt(password, salt, N, R, P, LENGTH);
    return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
  }

  /** Whether `password` matches `stored`; with no stored hash, spends the same work and says no. */
  async verify(password: string, stored: string | null | undefined): Promise<boolean> {
    const [kind, n, r, p, salt, hash] = (stored ?? '').split('$');
    if (kind !== 'scrypt' || !salt || !hash) {
      await this.scrypt(password, this.decoySalt, N, R, P, LENGTH);
      return false;
    }
    const expect = Buffer.from(hash, 'base64url');
    const got = await this.scrypt(password, Buffer.from(salt, 'base64url'), Number(n), Number(r), Number(p), expect.length);
    return got.length === expect.length && timingSafeEqual(expect, got);
  }

  private scrypt(password: string, salt: Buffer, n: number, r: number, p: number, length: number): Promise<Buffer> {
    if (this.pending.size > this.queueLimit) return Promise.reject(new HashingBusy());
    const worker = this.worker ??= this.start();
    const id = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, password, salt, N: n, r, p, length } satisfies HashRequest);
    });
  }

  private start(): Worker {
    const worker = new Worker(new URL('./password-worker.js', import.meta.url));
    // An idle hasher does not keep the process alive; it is referenced while work is pending.
    worker.unref();
    worker.on('message', (m: HashReply) => {
      const job = this.pending.get(m.id);
      if (!job) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) worker.unref();
      this.completed++;
      if ('error' in m) job.reject(new Error(`password hashing failed: ${m.error}`));
      else job.resolve(Buffer.from(m.hash.buffer, m.hash.byteOffset, m.hash.byteLength));
    });
    const fail = (e: Error) => {
      if (this.worker === worker) this.worker = null;
      for (const job of this.pending.values()) job.reject(e);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`password hashing thread exited (${code})`)));
    return worker;
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }
}
