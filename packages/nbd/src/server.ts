/**
 * An NBD server (NetworkBlockDevice/nbd doc/proto.md, fixed newstyle) over any BlockDevice:
 * option haggling with NBD_OPT_GO/INFO/LIST/EXPORT_NAME, structured replies with holes, the
 * base:allocation and qemu:allocation-depth metadata contexts, and pipelined requests that
 * complete in any order. Every length a client sends is bounded before anything is
 * allocated; a client that breaks the protocol is disconnected, never trusted.
 */
import { createServer, type Server, type Socket, type AddressInfo } from 'node:net';
import { isDiskError, pageAlignedBytes, type BlockDevice, type Extent } from '@diskhub/disk';
import * as P from './protocol.js';

export interface NbdExport {
  name: string;
  device: BlockDevice;
  readOnly: boolean;
  description?: string;
  /** Offer the qemu:allocation-depth context (qemu-nbd --allocation-depth). */
  allocationDepth?: boolean;
  /** qemu-nbd --discard: 'ignore' (default) answers TRIM without deallocating; 'unmap' deallocates. */
  discard?: 'ignore' | 'unmap';
  /** qemu-nbd --detect-zeroes: writes of all-zero data become write-zeroes ('unmap' may deallocate). */
  detectZeroes?: 'off' | 'on' | 'unmap';
}

const ZERO_PAGE = Buffer.alloc(1 << 16);
function allZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZERO_PAGE.length) {
    const n = Math.min(ZERO_PAGE.length, b.length - off);
    if (b.compare(ZERO_PAGE, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}

export interface NbdServerOptions {
  exports: NbdExport[];
  /** Most clients at once (qemu-nbd -e); further connections are closed at once. Default unlimited. */
  maxConnections?: number;
  /** Called when a client leaves and none is left (qemu-nbd without --persistent exits then). */
  onIdle?: () => void;
  /** Called for every protocol violation or I/O error, for logging. */
  onError?: (message: string) => void;
}

/** The largest request payload (READ/WRITE) accepted, as qemu-nbd's. */
export const MAX_REQUEST = 32 << 20;
/** The largest option payload read; longer options are refused (after being skipped). */
export const MAX_OPTION = 64 << 10;
/** Requests processed at once per connection; reading more waits (backpressure). */
const MAX_INFLIGHT = 16;
/** Bytes of read and write payloads held at once per connection. */
const MAX_INFLIGHT_BYTES = 64 << 20;
/** Descriptors in one block status reply at most. */
const MAX_EXTENTS = 65536;

class Disconnect extends Error {}

/** Exact-length reads from a socket, with the socket paused while enough is buffered. */
class SocketReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter?: () => void;
  private closed = false;
  constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.length += d.length;
      if (this.length > 2 * MAX_REQUEST) socket.pause();
      this.waiter?.();
    });
    const end = () => { this.closed = true; this.waiter?.(); };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  async read(n: number): Promise<Buffer> {
    while (this.length < n) {
      if (this.closed) throw new Disconnect('client went away');
      await new Promise<void>((resolve) => { this.waiter = resolve; });
      this.waiter = undefined;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.length = rest.length;
    if (this.length <= MAX_REQUEST) this.socket.resume();
    return out;
  }

  /** Read and drop `n` bytes in bounded pieces. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const step = Math.min(n, 1 << 20);
      await this.read(step);
      n -= step;
    }
  }
}

/**
 * Read buffers by power-of-two size, reused once the socket has written them: a fresh buffer
 * per request costs an allocation, first-touch page faults, and later a collection.
 * Shared by all connections, holding at most POOL_BYTES while idle.
 */
class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  /** The whole page-aligned buffer each pooled allocation started as. */
  private readonly whole = new WeakMap<ArrayBufferLike, Buffer>();
  private bytes = 0;
  constructor(private readonly maxBytes: number) {}
  take(length: number): Buffer {
    const size = sizeClass(length);
    let b = this.free.get(size)?.pop();
    if (b) this.bytes -= size;
    else {
      const bytes = pageAlignedBytes(size);
      b = Buffer.from(bytes.buffer, bytes.byteOffset, size);
      this.whole.set(b.buffer, b);
    }
    return b.subarray(0, length);
  }
  give(buf: Buffer): void {
    const whole = this.whole.get(buf.buffer);
    if (!whole || buf.byteOffset !== whole.byteOffset || this.bytes + whole.length > this.maxBytes) return;
    let list = this.free.get(whole.length);
    if (!list) this.free.set(whole.length, (list = []));
    list.push(whole);
    this.bytes += whole.length;
  }
}
const sizeClass = (n: number) => Math.max(4096, 2 ** Math.ceil(Math.log2(Math.max(n, 1))));
const POOL_BYTES = 64 << 20;
const readBuffers = new BufferPool(POOL_BYTES);

function u16(n: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; }
function u64(n: number | bigint): Buffer { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; }

/** The errno an NBD reply carries for an error from the engine. */
function errnoOf(e: unknown): number {
  if (isDiskError(e)) {
    switch (e.code) {
      case 'EROFS': return P.EPERM;
      case 'EINVAL': return P.EINVAL;
      case 'ENOSPC': return P.ENOSPC;
      case 'EUNSUPPORTED': return P.ENOTSUP;
      default: return P.EIO;
    }
  }
  return P.EIO;
}

export class NbdServer {
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();

  constructor(private readonly options: NbdServerOptions) {
    if (!options.exports.length) throw new Error('an NBD server needs at least one export');
  }

  get connections(): number { return this.sockets.size; }

  /** Listen on TCP (`{ port, host }`) or a unix socket (`{ path }`). */
  async listen(at: { port: number; host?: string } | { path: string }): Promise<AddressInfo | string> {
    const server = createServer((socket) => this.accept(socket));
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if ('path' in at) server.listen(at.path, resolve);
      else server.listen(at.port, at.host ?? '127.0.0.1', resolve);
    });
    return server.address()!;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  private accept(socket: Socket): void {
    if (this.options.maxConnections !== undefined && this.sockets.size >= this.options.maxConnections) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('error', () => {});
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (this.sockets.size === 0) this.options.onIdle?.();
    });
    new Connection(socket, this.options).run().catch((e) => {
      if (!(e instanceof Disconnect)) this.options.onError?.(`nbd: ${(e as Error).message}`);
    }).finally(() => socket.destroy());
  }
}

class Connection {
  private readonly reader: SocketReader;
  private structured = false;
  private noZeroes = false;
  /** Selected metadata contexts: id → name. */
  private contexts = new Map<number, string>();
  private export?: NbdExport;
  private inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private draining?: Promise<void>;

  constructor(private readonly socket: Socket, private readonly options: NbdServerOptions) {
    this.reader = new SocketReader(socket);
  }

  /**
   * Write one reply (all its pieces back to back) and wait if the socket is full. `written`
   * runs once the socket is done with the pieces (they may be reused then).
   */
  private async send(parts: Buffer[], written?: () => void): Promise<void> {
    if (this.socket.destroyed) throw new Disconnect('client went away');
    // Corked, a reply's header and payload leave in one writev rather than a syscall each.
    this.socket.cork();
    parts.forEach((p, i) => this.socket.write(p, i === parts.length - 1 ? written : undefined));
    this.socket.uncork();
    if (this.socket.writableNeedDrain) {
      this.draining ??= new Promise<void>((resolve) => {
        const done = () => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          this.draining = undefined;
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
      });
      await this.draining;
    }
  }

  async run(): Promise<void> {
    await this.send([u64(P.NBDMAGIC), u64(P.IHAVEOPT), u16(P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES)]);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if (clientFlags & ~(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES)) throw new Disconnect('unknown client flags');
    if (!(clientFlags & P.FLAG_C_FIXED_NEWSTYLE)) throw new Disconnect('client does not speak fixed newstyle');
    this.noZeroes = (clientFlags & P.FLAG_C_NO_ZEROES) !== 0;
    if (!(await this.haggle())) return;
    await this.transmission();
  }

  private find(name: string): NbdExport | undefined {
    // The empty name selects the default (first) export, as qemu-nbd does.
    return name === '' ? this.options.exports[0] : this.options.exports.find((e) => e.name === name);
  }

  private flagsOf(e: NbdExport): number {
    let f = P.TF_HAS_FLAGS | P.TF_SEND_FLUSH | P.TF_SEND_FUA | P.TF_SEND_CACHE;
    if (this.structured) f |= P.TF_SEND_DF;
    // Several connections see the same data only without writes in flight (read-only), and
    // only if the server accepts them (clients like nbdcopy open more when told they can).
    const multi = this.options.maxConnections === undefined || this.options.maxConnections > 1;
    if (e.readOnly) f |= P.TF_READ_ONLY | (multi ? P.TF_CAN_MULTI_CONN : 0);
    else f |= P.TF_SEND_TRIM | P.TF_SEND_WRITE_ZEROES | P.TF_SEND_FAST_ZERO;
    return f;
  }

  private reply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Promise<void> {
    return this.send([u64(P.OPT_REPLY_MAGIC), u32(option), u32(type), u32(data.length), data]);
  }

  private offered(e: NbdExport): string[] {
    return [P.CONTEXT_BASE_ALLOCATION, ...(e.allocationDepth ? [P.CONTEXT_ALLOCATION_DEPTH] : [])];
  }

  /** Option haggling; true when transmission begins. */
  private async haggle(): Promise<boolean> {
    for (;;) {
      const head = await this.reader.read(16);
      if (head.readBigUInt64BE(0) !== P.IHAVEOPT) throw new Disconnect('bad option magic');
      const option = head.readUInt32BE(8);
      const length = head.readUInt32BE(12);
      if (length > MAX_OPTION) {
        if (length > 16 << 20) throw new Disconnect('option too long');
        await this.reader.skip(length);
        await this.reply(option, P.REP_ERR_TOO_BIG, Buffer.from('option data too long'));
        continue;
      }
      const data = await this.reader.read(length);
      const invalid = (why: string) => this.reply(option, P.REP_ERR_INVALID, Buffer.from(why));
      switch (option) {
        case P.OPT_EXPORT_NAME: {
          const e = this.find(data.toString('utf8'));
          if (!e) throw new Disconnect('unknown export');
          this.export = e;
          await this.send([u64(e.device.size), u16(this.flagsOf(e)), ...(this.noZeroes ? [] : [Buffer.alloc(124)])]);
          return true;
        }
        case P.OPT_ABORT:
          await this.reply(option, P.REP_ACK).catch(() => {});
          return false;
        case P.OPT_LIST:
          if (length) { await invalid('NBD_OPT_LIST takes no data'); break; }
          for (const e of this.options.exports) {
            const name = Buffer.from(e.name, 'utf8');
            await this.reply(option, P.REP_SERVER, Buffer.concat([u32(name.length), name]));
          }
          await this.reply(option, P.REP_ACK);
          break;
        case P.OPT_STARTTLS:
          await this.reply(option, P.REP_ERR_POLICY, Buffer.from('TLS is not configured on this server'));
          break;
        case P.OPT_STRUCTURED_REPLY:
          if (length) { await invalid('NBD_OPT_STRUCTURED_REPLY takes no data'); break; }
          this.structured = true;
          await this.reply(option, P.REP_ACK);
          break;
        case P.OPT_INFO:
        case P.OPT_GO: {
          if (length < 6) { await invalid('short NBD_OPT_INFO/GO'); break; }
          const nameLen = data.readUInt32BE(0);
          if (nameLen > length - 6) { await invalid('export name overruns the option'); break; }
          const count = data.readUInt16BE(4 + nameLen);
          if (length !== 6 + nameLen + 2 * count) { await invalid('information requests do not match the option length'); break; }
          const name = data.subarray(4, 4 + nameLen).toString('utf8');
          const e = this.find(name);
          if (!e) { await this.reply(option, P.REP_ERR_UNKNOWN, Buffer.from(`export '${name}' not present`)); break; }
          const wanted = new Set<number>();
          for (let i = 0; i < count; i++) wanted.add(data.readUInt16BE(6 + nameLen + 2 * i));
          await this.reply(option, P.REP_INFO, Buffer.concat([u16(P.INFO_EXPORT), u64(e.device.size), u16(this.flagsOf(e))]));
          if (wanted.has(P.INFO_NAME)) await this.reply(option, P.REP_INFO, Buffer.concat([u16(P.INFO_NAME), Buffer.from(e.name, 'utf8')]));
          if (wanted.has(P.INFO_DESCRIPTION) && e.description) await this.reply(option, P.REP_INFO, Buffer.concat([u16(P.INFO_DESCRIPTION), Buffer.from(e.description, 'utf8')]));
          await this.reply(option, P.REP_INFO, Buffer.concat([u16(P.INFO_BLOCK_SIZE), u32(1), u32(4096), u32(MAX_REQUEST)]));
          await this.reply(option, P.REP_ACK);
          if (option === P.OPT_GO) {
            this.export = e;
            return true;
          }
          break;
        }
        case P.OPT_LIST_META_CONTEXT:
        case P.OPT_SET_META_CONTEXT: {
          if (option === P.OPT_SET_META_CONTEXT && !this.structured) { await invalid('structured replies must be negotiated first'); break; }
          const parsed = this.parseContexts(data);
          if (typeof parsed === 'string') { await invalid(parsed); break; }
          const e = this.find(parsed.name);
          if (!e) { await this.reply(option, P.REP_ERR_UNKNOWN, Buffer.from(`export '${parsed.name}' not present`)); break; }
          const offered = this.offered(e);
          let chosen: string[];
          if (option === P.OPT_LIST_META_CONTEXT) {
            chosen = parsed.queries.length === 0 ? offered
              : offered.filter((c) => parsed.queries.some((q) => q === c || (q.endsWith(':') && c.startsWith(q))));
          } else {
            chosen = offered.filter((c) => parsed.queries.includes(c));
            this.contexts = new Map();
          }
          for (const c of chosen) {
            const id = offered.indexOf(c) + 1;
            if (option === P.OPT_SET_META_CONTEXT) this.contexts.set(id, c);
            await this.reply(option, P.REP_META_CONTEXT, Buffer.concat([u32(option === P.OPT_SET_META_CONTEXT ? id : 0), Buffer.from(c)]));
          }
          await this.reply(option, P.REP_ACK);
          break;
        }
        default:
          await this.reply(option, P.REP_ERR_UNSUP, Buffer.from(`option ${option} is not supported`));
      }
    }
  }

  private parseContexts(data: Buffer): { name: string; queries: string[] } | string {
    if (data.length < 8) return 'short metadata context request';
    const nameLen = data.readUInt32BE(0);
    if (4 + nameLen + 4 > data.length) return 'export name overruns the option';
    const name = data.subarray(4, 4 + nameLen).toString('utf8');
    const count = data.readUInt32BE(4 + nameLen);
    const queries: string[] = [];
    let at = 8 + nameLen;
    for (let i = 0; i < count; i++) {
      if (at + 4 > data.length) return 'query overruns the option';
      const len = data.readUInt32BE(at);
      if (at + 4 + len > data.length) return 'query overruns the option';
      queries.push(data.subarray(at + 4, at + 4 + len).toString('utf8'));
      at += 4 + len;
    }
    if (at !== data.length) return 'trailing data after the queries';
    return { name, queries };
  }

  // ---- transmission ----

  private async transmission(): Promise<void> {
    const e = this.export!;
    try {
      for (;;) {
        const h = await this.reader.read(28);
        if (h.readUInt32BE(0) !== P.REQUEST_MAGIC) throw new Disconnect('bad request magic');
        const flags = h.readUInt16BE(4);
        const type = h.readUInt16BE(6);
        const handle = h.subarray(8, 16);
        const offset = Number(h.readBigUInt64BE(16));
        const length = h.readUInt32BE(24);
        if (type === P.CMD_DISC) break;
        let payload: Buffer | undefined;
        if (type === P.CMD_WRITE) {
          // The payload must be consumed to stay in step; past the limit we cannot afford to.
          if (length > MAX_REQUEST) throw new Disconnect('write request too large');
          payload = await this.reader.read(length);
        }
        // Bounded work in flight: requests and the bytes their replies or payloads hold.
        const cost = type === P.CMD_READ || type === P.CMD_WRITE ? Math.min(length, MAX_REQUEST) : 0;
        while (this.inflight.size >= MAX_INFLIGHT || (this.inflight.size > 0 && this.inflightBytes + cost > MAX_INFLIGHT_BYTES)) {
          await Promise.race(this.inflight);
        }
        this.inflightBytes += cost;
        const p = this.handle(e, type, flags, Buffer.from(handle), offset, length, payload)
          .catch((err) => { if (!(err instanceof Disconnect)) this.options.onError?.(`nbd: ${(err as Error).message}`); this.socket.destroy(); });
        this.inflight.add(p);
        void p.finally(() => { this.inflight.delete(p); this.inflightBytes -= cost; });
      }
    } finally {
      await Promise.allSettled([...this.inflight]);
      if (!e.readOnly) await e.device.flush?.().catch(() => {});
    }
  }

  private async simpleReply(handle: Buffer, error: number, data?: Buffer, written?: () => void): Promise<void> {
    await this.send([u32(P.SIMPLE_REPLY_MAGIC), u32(error), handle, ...(data ? [data] : [])], written);
  }

  private chunk(handle: Buffer, flags: number, type: number, payload: Buffer[]): Buffer[] {
    const len = payload.reduce((n, b) => n + b.length, 0);
    return [u32(P.STRUCTURED_REPLY_MAGIC), u16(flags), u16(type), handle, u32(len), ...payload];
  }

  private async fail(handle: Buffer, error: number, message: string): Promise<void> {
    if (!this.structured) return this.simpleReply(handle, error);
    const msg = Buffer.from(message.slice(0, 4096), 'utf8');
    await this.send(this.chunk(handle, P.REPLY_FLAG_DONE, P.REPLY_TYPE_ERROR, [u32(error), u16(msg.length), msg]));
  }

  private async handle(e: NbdExport, type: number, flags: number, handle: Buffer, offset: number, length: number, payload?: Buffer): Promise<void> {
    const dev = e.device;
    const known = [P.CMD_READ, P.CMD_WRITE, P.CMD_FLUSH, P.CMD_TRIM, P.CMD_CACHE, P.CMD_WRITE_ZEROES, P.CMD_BLOCK_STATUS];
    if (!known.includes(type)) return this.fail(handle, P.EINVAL, `unknown command ${type}`);
    if (type !== P.CMD_FLUSH && (!Number.isSafeInteger(offset) || offset + length > dev.size)) {
      return this.fail(handle, P.EINVAL, `request at ${offset} of ${length} bytes is outside the export (${dev.size} bytes)`);
    }
    const writes = type === P.CMD_WRITE || type === P.CMD_TRIM || type === P.CMD_WRITE_ZEROES;
    if (writes && e.readOnly) return this.fail(handle, P.EPERM, 'the export is read-only');
    try {
      switch (type) {
        case P.CMD_READ:
          if (length > MAX_REQUEST) return this.fail(handle, P.EINVAL, `read of ${length} bytes is over the ${MAX_REQUEST} byte limit`);
          return await this.read(dev, handle, flags, offset, length);
        case P.CMD_WRITE:
          if (!dev.write) return this.fail(handle, P.EPERM, 'the export is read-only');
          if (e.detectZeroes && e.detectZeroes !== 'off' && dev.writeZeroes && allZero(payload!)) {
            await dev.writeZeroes(offset, length, { mayUnmap: e.detectZeroes === 'unmap' && e.discard === 'unmap' });
          } else {
            await dev.write(payload!, offset);
          }
          break;
        case P.CMD_TRIM:
          if (e.discard === 'unmap' && dev.discard) await dev.discard(offset, length);
          break;
        case P.CMD_WRITE_ZEROES:
          if (!dev.writeZeroes) return this.fail(handle, P.ENOTSUP, 'write zeroes is not supported');
          await dev.writeZeroes(offset, length, { mayUnmap: e.discard === 'unmap' && !(flags & P.CMD_FLAG_NO_HOLE) });
          break;
        case P.CMD_FLUSH:
          await dev.flush?.();
          break;
        case P.CMD_CACHE:
          break;
        case P.CMD_BLOCK_STATUS:
          return await this.blockStatus(dev, handle, flags, offset, length);
      }
      if (writes && (flags & P.CMD_FLAG_FUA)) await dev.flush?.();
    } catch (err) {
      if (err instanceof Disconnect) throw err;
      return this.fail(handle, errnoOf(err), (err as Error).message);
    }
    if (this.structured) await this.send(this.chunk(handle, P.REPLY_FLAG_DONE, P.REPLY_TYPE_NONE, []));
    else await this.simpleReply(handle, 0);
  }

  private async read(dev: BlockDevice, handle: Buffer, flags: number, offset: number, length: number): Promise<void> {
    // Read buffers come from the pool and are not zero-filled first: a device read fills all
    // of it or throws (and then only an error is sent).
    const taken: Buffer[] = [];
    const take = (n: number) => { const b = readBuffers.take(n); taken.push(b); return b; };
    const release = () => { for (const b of taken.splice(0)) readBuffers.give(b); };
    let handed = false;
    try {
      if (!this.structured) {
        const buf = take(length);
        await dev.read(buf, offset);
        handed = true;
        return await this.simpleReply(handle, 0, buf, release);
      }
      if (length === 0) return await this.send(this.chunk(handle, P.REPLY_FLAG_DONE, P.REPLY_TYPE_NONE, []));
      // Structured: holes travel as OFFSET_HOLE chunks (unless the client asked for one piece).
      const pieces: Array<{ offset: number; length: number; zero: boolean }> = [];
      if (flags & P.CMD_FLAG_DF) pieces.push({ offset, length, zero: false });
      else {
        for await (const x of dev.blockStatus(offset, length)) {
          const last = pieces[pieces.length - 1];
          const zero = x.zero;
          if (last && last.zero === zero && last.offset + last.length === x.offset) last.length += x.length;
          else pieces.push({ offset: x.offset, length: x.length, zero });
        }
      }
      const parts: Buffer[] = [];
      for (const [i, piece] of pieces.entries()) {
        const done = i === pieces.length - 1 ? P.REPLY_FLAG_DONE : 0;
        if (piece.zero) {
          parts.push(...this.chunk(handle, done, P.REPLY_TYPE_OFFSET_HOLE, [u64(piece.offset), u32(piece.length)]));
        } else {
          const buf = take(piece.length);
          await dev.read(buf, piece.offset);
          parts.push(...this.chunk(handle, done, P.REPLY_TYPE_OFFSET_DATA, [u64(piece.offset), buf]));
        }
      }
      handed = true;
      await this.send(parts, release);
    } catch (e) {
      // Never handed to the socket (the read failed): back to the pool now. Once handed, only
      // the socket's write callback returns them.
      if (!handed) release();
      throw e;
    }
  }

  private async blockStatus(dev: BlockDevice, handle: Buffer, flags: number, offset: number, length: number): Promise<void> {
    if (!this.structured || this.contexts.size === 0) return this.fail(handle, P.EINVAL, 'no metadata context was negotiated');
    if (length === 0) return this.fail(handle, P.EINVAL, 'block status of zero bytes');
    const extents: Extent[] = [];
    for await (const x of dev.blockStatus(offset, length)) {
      extents.push(x);
      if ((flags & P.CMD_FLAG_REQ_ONE) || extents.length >= MAX_EXTENTS) break;
    }
    const ids = [...this.contexts.keys()];
    const parts: Buffer[] = [];
    ids.forEach((id, n) => {
      const name = this.contexts.get(id)!;
      const value = (x: Extent) => name === P.CONTEXT_BASE_ALLOCATION
        ? (x.data ? 0 : P.STATE_HOLE) | (x.zero ? P.STATE_ZERO : 0)
        : (x.present ? x.depth + 1 : 0);
      // Merge neighbours with the same value; the protocol wants descriptors, not extents.
      const merged: Array<[number, number]> = [];
      for (const x of extents) {
        const v = value(x);
        const last = merged[merged.length - 1];
        if (last && last[1] === v && !(flags & P.CMD_FLAG_REQ_ONE)) last[0] += x.length;
        else merged.push([x.length, v]);
      }
      if (flags & P.CMD_FLAG_REQ_ONE) merged.length = Math.min(merged.length, 1);
      const body = Buffer.alloc(4 + merged.length * 8);
      body.writeUInt32BE(id, 0);
      merged.forEach(([len, v], i) => { body.writeUInt32BE(len, 4 + i * 8); body.writeUInt32BE(v, 8 + i * 8); });
      parts.push(...this.chunk(handle, n === ids.length - 1 ? P.REPLY_FLAG_DONE : 0, P.REPLY_TYPE_BLOCK_STATUS, [body]));
    });
    await this.send(parts);
  }
}
