/**
 * Checksums of uploads, computed on the fly as data streams to the store: md5 (Glance's
 * `checksum`) and sha512 (`os_hash_value`).
 *
 * Both hashes are CPU-bound and, computed on the request's thread as Glance does, they bound
 * an upload. Here each runs off the main thread, so the two hashes and the request's socket
 * and file I/O run on different cores. Every chunk is copied once into a 1 MiB page-aligned
 * batch that both hashes read in place; an upload waits while more than MAX_BACKLOG bytes are
 * still unhashed, so slow hashing slows the upload down instead of growing memory.
 *
 * Where the hashes run: on a worker thread per algorithm shared by all uploads, each batch
 * posted to both. DISKHUB_UPLOAD_HASHING=threadpool runs them on libuv's thread pool instead
 * (hostio.digestUpdate, Node's own OpenSSL; each algorithm's pending batches in one call, one
 * call per algorithm at a time across all uploads). Measured on an idle machine (bench/upload.mjs,
 * BENCHMARKS.md): 1 GiB in 2.11-2.17 s with workers against 2.45-3.01 s on the thread pool (the
 * bound, openssl's two hashes in parallel, 1.56 s); the workers also leave the thread pool
 * entirely to file I/O.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { isSharedZeroes, pageAlignedBytes } from '@diskhub/disk';
import { hostio } from '@diskhub/hostio';

const BATCH = 1 << 20;
const MAX_BACKLOG = 4 << 20;
/**
 * Batch buffers per upload, reused in turn. After `drained` at most MAX_BACKLOG / BATCH batches
 * are unacknowledged by either worker (which hash in order), so the batch filled next, last
 * posted RING batches ago, has been read by both.
 */
const RING = MAX_BACKLOG / BATCH + 2;
type Algorithm = 'md5' | 'sha512';

/**
 * A worker's view of one upload (per algorithm): the upload's ring of batch buffers (shared
 * memory, handed over once when the upload starts) and a control array beside it, so a batch
 * is handed to the worker by two stores and a notify instead of a message each way (posting
 * and acknowledging 1 MiB batches cost the main thread 0.2-0.3 s per GiB):
 *   [EVENTS]    bumped by the upload on every publish and stop (what an idle worker waits on)
 *   [HASHED]    batches the worker has hashed (what an upload short of room waits on)
 *   [PUBLISHED] batches the upload has filled
 *   [STOP]      DIGEST: reply with the digest once every batch is hashed; DROP: forget the upload
 *   [LENGTHS + slot] the length of the batch in ring slot `slot`; negative: that many zero
 *               bytes, hashed from the worker's own zeroes (nothing was copied into the slot)
 */
const EVENTS = 0, HASHED = 1, PUBLISHED = 2, STOP = 3, LENGTHS = 4;
/** Atomics.waitAsync (Node 16+; not in TypeScript's ES2022 lib): resolves once `ctl[index]` is notified, at once if it is not `value`. */
const waitAsync = (ctl: Int32Array, index: number, value: number): Promise<unknown> | null => {
  const w = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<unknown> } }).waitAsync(ctl, index, value);
  return w.async ? w.value : null;
};
const DIGEST = 1, DROP = 2;

/** A worker: hashes the batches of every upload it is given, in order, as they are published. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ZEROES = new Uint8Array(${BATCH});
parentPort.on('message', (m) => { if (m.op === 'open') run(m).catch((e) => parentPort.postMessage({ op: 'error', id: m.id, message: String(e && e.message || e) })); });
async function run({ id, ring, ctl }) {
  const h = createHash(workerData);
  let hashed = 0;
  for (;;) {
    const events = Atomics.load(ctl, ${EVENTS});
    const published = Atomics.load(ctl, ${PUBLISHED});
    while (hashed < published) {
      const slot = hashed % ring.length;
      const n = ctl[${LENGTHS} + slot];
      if (n >= 0) h.update(ring[slot].subarray(0, n));
      else for (let left = -n; left > 0; left -= ZEROES.length) h.update(ZEROES.subarray(0, Math.min(left, ZEROES.length)));
      Atomics.store(ctl, ${HASHED}, ++hashed);
      Atomics.notify(ctl, ${HASHED});
    }
    const stop = Atomics.load(ctl, ${STOP});
    if (stop === ${DROP}) return;
    if (stop === ${DIGEST} && hashed === Atomics.load(ctl, ${PUBLISHED})) { parentPort.postMessage({ op: 'digest', id, hex: h.digest('hex') }); return; }
    const w = Atomics.waitAsync(ctl, ${EVENTS}, events);
    if (w.async) await w.value;
  }
}
`;

interface Upload {
  done?: (hex: string) => void;
  fail: (e: Error) => void;
}

/** One algorithm's worker, started on first use; it keeps the process alive only while uploads use it. */
class HashWorker {
  private worker: Worker | null = null;
  private readonly uploads = new Map<number, Upload>();

  constructor(private readonly algorithm: Algorithm) {}

  private start(): Worker {
    if (this.worker) return this.worker;
    // execArgv: [] so the eval'd source is CommonJS whatever flags the parent runs with.
    const w = new Worker(WORKER_SOURCE, { eval: true, name: this.algorithm, workerData: this.algorithm, execArgv: [] });
    w.unref();
    w.on('message', (m: { op: string; id: number; hex?: string; message?: string }) => {
      const u = this.uploads.get(m.id);
      if (!u) return;
      this.uploads.delete(m.id);
      this.refIfBusy();
      if (m.op === 'digest') u.done?.(m.hex!);
      else u.fail(new Error(`${this.algorithm} worker: ${m.message}`));
    });
    const lost = (e: Error) => {
      if (this.worker !== w) return;
      this.worker = null;
      for (const u of this.uploads.values()) u.fail(e);
      this.uploads.clear();
    };
    w.on('error', lost);
    w.on('exit', (code) => lost(new Error(`${this.algorithm} worker exited with code ${code}`)));
    return (this.worker = w);
  }

  private refIfBusy(): void {
    if (this.uploads.size > 0) this.worker?.ref();
    else this.worker?.unref();
  }

  /** Starts hashing upload `id`, whose batches are `ring`'s slots in turn; the returned functions feed, finish or abandon it. */
  open(id: number, ring: Uint8Array[]): HashStream {
    const worker = this.start();
    const ctl = new Int32Array(new SharedArrayBuffer((LENGTHS + ring.length) * 4));
    let failure: Error | null = null;
    let published = 0;
    const u: Upload = { fail: (e) => { failure = e; Atomics.notify(ctl, HASHED); u.done?.(''); } };
    this.uploads.set(id, u);
    this.refIfBusy();
    worker.postMessage({ op: 'open', id, ring, ctl });
    const check = () => { if (failure) throw failure; };
    const signal = (stop?: number) => {
      if (stop) Atomics.store(ctl, STOP, stop);
      Atomics.add(ctl, EVENTS, 1);
      Atomics.notify(ctl, EVENTS);
    };
    return {
      post: (slot: number, length: number, zero: boolean) => {
        check();
        ctl[LENGTHS + slot] = zero ? -length : length;
        Atomics.store(ctl, PUBLISHED, ++published);
        signal();
      },
      drained: async () => {
        for (;;) {
          check();
          const hashed = Atomics.load(ctl, HASHED);
          if (published - hashed <= MAX_BACKLOG / BATCH) return;
          await waitAsync(ctl, HASHED, hashed);
        }
      },
      digest: async () => {
        check();
        const hex = await new Promise<string>((resolve) => { u.done = resolve; signal(DIGEST); });
        check();
        return hex;
      },
      drop: () => {
        if (this.uploads.delete(id)) signal(DROP);
        this.refIfBusy();
      },
    };
  }
}

const workers = { md5: new HashWorker('md5'), sha512: new HashWorker('sha512') };
let nextId = 1;

/**
 * One upload's hash of one algorithm, as UploadHasher feeds it: `post` hands over the batch in
 * ring slot `slot` (`length` bytes; `zero`: that many zero bytes, the slot's contents unused).
 */
interface HashStream {
  post(slot: number, length: number, zero: boolean): void;
  /** Resolves once the backlog is small enough for more data. */
  drained(): Promise<void>;
  digest(): Promise<string>;
  drop(): void;
}

/**
 * libuv's pool has four threads, and file reads and writes need them too: hashing keeps at most
 * one update per algorithm in flight across all uploads (as the two worker threads did), so
 * any number of uploads leaves two threads to the service's file I/O.
 */
class HashLane {
  private busy = false;
  private readonly waiting: (() => void)[] = [];

  async run(update: () => Promise<void>): Promise<void> {
    while (this.busy) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.busy = true;
    try {
      await update();
    } finally {
      this.busy = false;
      this.waiting.shift()?.();
    }
  }
}
const lanes = { md5: new HashLane(), sha512: new HashLane() };

/**
 * A hash on libuv's thread pool: batches posted while an update runs (or waits for its lane)
 * are hashed together by the next one.
 */
function threadPoolHash(algorithm: Algorithm, ring: Uint8Array[]): HashStream {
  const io = hostio!;
  const digest = io.digestOpen!(algorithm);
  let queued: Uint8Array[] = [];
  let running: Promise<void> | null = null;
  let backlog = 0;
  let failure: Error | null = null;
  let dropped = false;
  let wake: (() => void) | undefined;
  const wakeUp = () => { wake?.(); wake = undefined; };
  const check = () => { if (failure) throw failure; };
  const pump = (): void => {
    if (running || dropped || failure || queued.length === 0) return;
    const views = queued;
    queued = [];
    const bytes = views.reduce((n, v) => n + v.byteLength, 0);
    running = lanes[algorithm].run(() => io.digestUpdate!(digest, views)).then(
      () => { running = null; backlog -= bytes; if (backlog <= MAX_BACKLOG) wakeUp(); pump(); },
      (e: Error) => { running = null; failure = e; wakeUp(); },
    );
  };
  return {
    post: (slot: number, length: number, zero: boolean) => {
      check();
      backlog += length;
      queued.push((zero ? ZERO_BATCH : ring[slot]!).subarray(0, length));
      pump();
    },
    drained: async () => {
      if (backlog > MAX_BACKLOG) await new Promise<void>((resolve) => { wake = resolve; });
      check();
    },
    digest: async () => {
      while (running) await running;
      check();
      return Buffer.from(io.digestFinal!(digest)).toString('hex');
    },
    drop: () => { dropped = true; queued = []; },
  };
}

/** Read per upload, so a test can switch it. */
const onThreadPool = () => !!hostio?.digestUpdate && process.env.DISKHUB_UPLOAD_HASHING === 'threadpool';
const openHash = (algorithm: Algorithm, id: number, ring: Uint8Array[]): HashStream => (onThreadPool() ? threadPoolHash(algorithm, ring) : workers[algorithm].open(id, ring));

/** A batch of zeroes, never written: what the thread pool hashes and the sink is given for a batch of zeroes. */
const ZERO_BATCH = pageAlignedBytes(BATCH, { shared: true });

/**
 * Hashes one upload and, given a `sink`, writes it: every chunk is copied once into a 1 MiB
 * page-aligned shared batch; full batches go to both hashes and, in order, to the sink
 * (the store's file), so the socket's own buffers are never written (the kernel copies aligned
 * memory into the page cache much faster, see pageAlignedBytes). A chunk of readRaw's shared
 * zeroes (a converted image's unallocated ranges) is not copied: whole batches of it go to the
 * hashes as a length (hashed from zeroes of their own) and to the sink flagged `zero`, with
 * ZERO_BATCH as their data. Feed it with `update`, call `finish` when the data is complete
 * (flushes and waits for the writes), then `digest` once; or `drop` when the upload fails.
 * Chunks are only read during `update`.
 */
export class UploadHasher {
  /** Opened with the first batch, so an upload that never sends data holds nothing. */
  private streams: HashStream[] | null = null;
  private readonly ring: Uint8Array[] = [];
  /** The sink's write of each ring batch, in order; a batch is reused only after its write. */
  private readonly writes: Promise<void>[] = [];
  private lastWrite: Promise<void> = Promise.resolve();
  private batches = 0;
  private batch: Uint8Array | null = null;
  private filled = 0;

  constructor(private readonly sink?: (batch: Uint8Array, zero: boolean) => Promise<void>) {}

  /** Resolves when the workers' backlog and the sink allow more data. */
  async update(chunk: Uint8Array): Promise<void> {
    const zero = isSharedZeroes(chunk);
    for (let at = 0; at < chunk.length;) {
      if (zero && this.filled === 0 && chunk.length - at >= BATCH) {
        await this.flush(BATCH, true);
        at += BATCH;
        continue;
      }
      const batch = (this.batch ??= await this.nextBatch());
      const n = Math.min(chunk.length - at, BATCH - this.filled);
      if (zero) batch.fill(0, this.filled, this.filled + n);
      else batch.set(chunk.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === BATCH) await this.flush(BATCH, false);
    }
  }

  /** The next ring slot's batch, once the sink's last write of it has landed. */
  private async nextBatch(): Promise<Uint8Array> {
    await this.writes[this.batches % RING];
    return this.slots()[this.batches % RING]!;
  }

  private slots(): Uint8Array[] {
    while (this.ring.length < RING) this.ring.push(pageAlignedBytes(BATCH, { shared: true }));
    return this.ring;
  }

  /** Hands on the filled batch (`length` bytes; `zero`: that many zeroes, no batch filled). */
  private async flush(length: number, zero: boolean): Promise<void> {
    if (length === 0) return;
    const slot = this.batches++ % RING;
    if (zero) await this.writes[slot];
    if (!this.streams) {
      const id = nextId++;
      this.streams = [openHash('md5', id, this.slots()), openHash('sha512', id, this.slots())];
    }
    for (const s of this.streams) s.post(slot, length, zero);
    if (this.sink) {
      const sink = this.sink;
      const data = zero ? ZERO_BATCH.subarray(0, length) : this.ring[slot]!.subarray(0, length);
      const write = this.lastWrite.then(() => sink(data, zero));
      write.catch(() => {}); // awaited before the batch is reused and in finish(); never unhandled
      this.writes[slot] = this.lastWrite = write;
    }
    this.batch = null;
    this.filled = 0;
    for (const s of this.streams) await s.drained();
  }

  /** The data is complete: hash and write what is left, and wait until every write has landed. */
  async finish(): Promise<void> {
    if (this.batch) await this.flush(this.filled, false);
    await this.lastWrite;
  }

  async digest(): Promise<{ md5: string; sha512: string }> {
    await this.finish();
    if (!this.streams) return { md5: createHash('md5').digest('hex'), sha512: createHash('sha512').digest('hex') };
    const [md5, sha512] = await Promise.all(this.streams.map((s) => s.digest()));
    return { md5, sha512 };
  }

  /** Abandons the upload's hashes; resolves once no write to the sink is in flight any more. */
  async drop(): Promise<void> {
    this.streams?.forEach((s) => s.drop());
    await this.lastWrite.catch(() => {});
  }
}
