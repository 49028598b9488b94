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
import { pageAlignedBytes } from '@diskhub/disk';
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

/** A worker: one hash state per upload id; acknowledges every batch it has hashed. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const states = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'update') {
    let h = states.get(m.id);
    if (!h) states.set(m.id, (h = createHash(workerData)));
    h.update(m.data);
    parentPort.postMessage({ op: 'ack', id: m.id, bytes: m.data.byteLength });
  } else if (m.op === 'digest') {
    const h = states.get(m.id) ?? createHash(workerData);
    states.delete(m.id);
    parentPort.postMessage({ op: 'digest', id: m.id, hex: h.digest('hex') });
  } else if (m.op === 'drop') {
    states.delete(m.id);
  }
});
`;

interface Upload {
  /** Bytes posted to this worker and not yet acknowledged. */
  backlog: number;
  wake?: () => void;
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
    w.on('message', (m: { op: string; id: number; bytes?: number; hex?: string }) => {
      const u = this.uploads.get(m.id);
      if (!u) return;
      if (m.op === 'ack') {
        u.backlog -= m.bytes!;
        if (u.backlog <= MAX_BACKLOG) { u.wake?.(); u.wake = undefined; }
      } else if (m.op === 'digest') {
        this.uploads.delete(m.id);
        this.refIfBusy();
        u.done?.(m.hex!);
      }
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

  /** Starts hashing upload `id`; the returned functions feed, finish or abandon it. */
  open(id: number) {
    const worker = this.start();
    let failure: Error | null = null;
    const u: Upload = { backlog: 0, fail: (e) => { failure = e; u.wake?.(); u.done?.(''); } };
    this.uploads.set(id, u);
    this.refIfBusy();
    const check = () => { if (failure) throw failure; };
    return {
      post: (data: Uint8Array) => {
        check();
        u.backlog += data.byteLength;
        worker.postMessage({ op: 'update', id, data });
      },
      /** Resolves once the backlog is small enough for more data. */
      drained: async () => {
        if (u.backlog > MAX_BACKLOG) await new Promise<void>((resolve) => { u.wake = resolve; });
        check();
      },
      digest: async () => {
        check();
        const hex = await new Promise<string>((resolve) => { u.done = resolve; worker.postMessage({ op: 'digest', id }); });
        check();
        return hex;
      },
      drop: () => {
        if (this.uploads.delete(id)) worker.postMessage({ op: 'drop', id });
        this.refIfBusy();
      },
    };
  }
}

const workers = { md5: new HashWorker('md5'), sha512: new HashWorker('sha512') };
let nextId = 1;

/** One upload's hash of one algorithm, as UploadHasher feeds it. */
type HashStream = ReturnType<HashWorker['open']>;

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
function threadPoolHash(algorithm: Algorithm): HashStream {
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
    post: (data: Uint8Array) => {
      check();
      backlog += data.byteLength;
      queued.push(data);
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
const openHash = (algorithm: Algorithm, id: number): HashStream => (onThreadPool() ? threadPoolHash(algorithm) : workers[algorithm].open(id));

/**
 * Hashes one upload and, given a `sink`, writes it: every chunk is copied once into a 1 MiB
 * page-aligned shared batch; full batches go to both hashes and, in order, to the sink
 * (the store's file), so the socket's own buffers are never written (the kernel copies aligned
 * memory into the page cache much faster, see pageAlignedBytes). Feed it with `update`, call
 * `finish` when the data is complete (flushes and waits for the writes), then `digest` once;
 * or `drop` when the upload fails. Chunks are only read during `update`.
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

  constructor(private readonly sink?: (batch: Uint8Array) => Promise<void>) {}

  /** Resolves when the workers' backlog and the sink allow more data. */
  async update(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length;) {
      const batch = (this.batch ??= await this.nextBatch());
      const n = Math.min(chunk.length - at, BATCH - this.filled);
      batch.set(chunk.subarray(at, at + n), this.filled);
      this.filled += n;
      at += n;
      if (this.filled === BATCH) await this.flush();
    }
  }

  private async nextBatch(): Promise<Uint8Array> {
    const i = this.batches++ % RING;
    await this.writes[i];
    return (this.ring[i] ??= pageAlignedBytes(BATCH, { shared: true }));
  }

  private async flush(): Promise<void> {
    if (!this.batch || this.filled === 0) return;
    if (!this.streams) {
      const id = nextId++;
      this.streams = [openHash('md5', id), openHash('sha512', id)];
    }
    const data = this.batch.subarray(0, this.filled);
    for (const s of this.streams) s.post(data);
    if (this.sink) {
      const sink = this.sink;
      const write = this.lastWrite.then(() => sink(data));
      write.catch(() => {}); // awaited before the batch is reused and in finish(); never unhandled
      this.writes[(this.batches - 1) % RING] = this.lastWrite = write;
    }
    this.batch = null;
    this.filled = 0;
    for (const s of this.streams) await s.drained();
  }

  /** The data is complete: hash and write what is left, and wait until every write has landed. */
  async finish(): Promise<void> {
    await this.flush();
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
