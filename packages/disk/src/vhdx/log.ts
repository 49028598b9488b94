/**
 * The VHDX metadata log ([MS-VHDX] §2.3) and the pair of headers (§2.2.2) it is tied to.
 *
 * The log is a circular buffer of 4 KiB sectors. An entry is a header sector (64-byte entry
 * header, then 32-byte descriptors), further descriptor sectors when needed, then one data
 * sector per data descriptor. A "data" descriptor writes one 4 KiB sector (its first 8 and
 * last 4 bytes live in the descriptor), a "zero" descriptor zeroes a range. Entries with the
 * header's log GUID and consecutive sequence numbers form a sequence; the active sequence is
 * replayed on open (§2.3.3). Semantics follow QEMU 7.2's vhdx-log.c: the whole buffer is
 * scanned from offset 0 (the entry's tail field is not trusted), the sequence whose first
 * entry has the highest sequence number wins, and after replay the log GUID is cleared by two
 * header updates. Metadata writes (BAT entries) go through the log the same way: one entry is
 * written, flushed, replayed and the log emptied again.
 */
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import { crc32c } from '../crc32c.js';
import { formatGuid } from '../partition/guid.js';
import type { ByteSource } from '../source.js';
import {
  HEADER_OFFSETS, HEADER_SIZE, LOG_DESCRIPTOR_SIZE, LOG_ENTRY_HEADER_SIZE, LOG_SECTOR_SIZE, MiB, ZERO_GUID,
  guidBytes, readHeaderFields, serializeVhdxHeader, type VhdxHeader,
} from './header.js';

const ascii = (b: Uint8Array) => new TextDecoder('latin1').decode(b);
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

export const newGuid = (): string => formatGuid(crypto().randomBytes(16));

/**
 * The two headers: which one is current, and the update procedure of §2.2.2.1 (write the
 * non-current one with the next sequence number, then it becomes current; done twice so both
 * copies hold the new state). A session GUID is the file write GUID of every update; the data
 * write GUID changes before the first guest-visible write of a session.
 */
export class HeaderPair {
  private readonly session = newGuid();
  private firstVisibleWrite = true;
  constructor(private readonly source: ByteSource, readonly headers: [VhdxHeader, VhdxHeader], public current: 0 | 1, private readonly slots: [Uint8Array, Uint8Array]) {}

  get active(): VhdxHeader { return this.headers[this.current]; }

  /** Read both headers; the current one is the valid one with the higher sequence number. */
  static async read(source: ByteSource): Promise<HeaderPair> {
    const slots: Uint8Array[] = [];
    const parsed: { h: VhdxHeader; valid: boolean }[] = [];
    for (const at of HEADER_OFFSETS) {
      const b = new Uint8Array(HEADER_SIZE);
      await source.read(b, at);
      slots.push(b);
      const h = readHeaderFields(b);
      parsed.push({ h, valid: h.checksumOk && h.signature === 'head' && h.version === 1 });
    }
    const a = parsed[0]!, b = parsed[1]!;
    let current: 0 | 1;
    if (a.valid && !b.valid) current = 0;
    else if (!a.valid && b.valid) current = 1;
    else if (!a.valid && !b.valid) throw new DiskError('ECORRUPT', `${source.name}: No valid VHDX header found (both headers fail their signature, version or checksum test)`);
    else if (a.h.sequenceNumber > b.h.sequenceNumber) current = 0;
    else if (b.h.sequenceNumber > a.h.sequenceNumber) current = 1;
    // Disk2VHD writes two identical headers; identical copies are fine, differing ones with one sequence number are not.
    else if (Buffer.from(slots[0]!.subarray(0, 80)).equals(Buffer.from(slots[1]!.subarray(0, 80)))) current = 0;
    else throw new DiskError('ECORRUPT', `${source.name}: No valid VHDX header found (two different headers with sequence number ${a.h.sequenceNumber})`);
    // An invalid copy is rewritten from the current one on the next update.
    const other = current === 0 ? b : a;
    const headers: [VhdxHeader, VhdxHeader] = current === 0 ? [a.h, other.valid ? b.h : { ...a.h }] : [other.valid ? a.h : { ...b.h }, b.h];
    return new HeaderPair(source, headers, current, slots as [Uint8Array, Uint8Array]);
  }

  private async updateOnce(newDataGuid: boolean, logGuid?: string): Promise<void> {
    const idx = this.current === 0 ? 1 : 0;
    const next: VhdxHeader = {
      ...this.active,
      sequenceNumber: this.active.sequenceNumber + 1n,
      fileWriteGuid: this.session,
      dataWriteGuid: newDataGuid ? newGuid() : this.active.dataWriteGuid,
      logGuid: logGuid ?? this.active.logGuid,
    };
    const bytes = serializeVhdxHeader(next, this.slots[idx]);
    await this.source.write(bytes, HEADER_OFFSETS[idx]);
    await this.source.flush();
    this.slots[idx] = bytes;
    this.headers[idx] = next;
    this.current = idx;
  }

  async update(newDataGuid: boolean, logGuid?: string): Promise<void> {
    await this.updateOnce(newDataGuid, logGuid);
    await this.updateOnce(newDataGuid, logGuid);
  }

  /** Before the first write that changes what the guest reads: a new data write GUID (§2.2.2). */
  async userVisibleWrite(): Promise<void> {
    if (!this.firstVisibleWrite) return;
    this.firstVisibleWrite = false;
    await this.update(true);
  }
}

interface LogCursor {
  offset: number;
  length: number;
  read: number;
  write: number;
}

interface EntryHeader {
  signature: string;
  checksum: number;
  entryLength: number;
  tail: number;
  sequence: bigint;
  descriptorCount: number;
  logGuid: string;
  flushedFileOffset: bigint;
  lastFileOffset: bigint;
}

interface Descriptor {
  kind: 'desc' | 'zero';
  trailing: Uint8Array;
  leading: Uint8Array;
  zeroLength: bigint;
  fileOffset: bigint;
  sequence: bigint;
}

function parseEntryHeader(b: Uint8Array): EntryHeader {
  const v = dv(b);
  return {
    signature: ascii(b.subarray(0, 4)),
    checksum: v.getUint32(4, true),
    entryLength: v.getUint32(8, true),
    tail: v.getUint32(12, true),
    sequence: v.getBigUint64(16, true),
    descriptorCount: v.getUint32(24, true),
    logGuid: formatGuid(b.subarray(32, 48)),
    flushedFileOffset: v.getBigUint64(48, true),
    lastFileOffset: v.getBigUint64(56, true),
  };
}

function parseDescriptor(b: Uint8Array): Descriptor {
  const v = dv(b);
  const sig = ascii(b.subarray(0, 4));
  return {
    kind: sig === 'desc' ? 'desc' : sig === 'zero' ? 'zero' : (sig as 'desc'),
    trailing: b.slice(4, 8),
    leading: b.slice(8, 16),
    zeroLength: v.getBigUint64(8, true),
    fileOffset: v.getBigUint64(16, true),
    sequence: v.getBigUint64(24, true),
  };
}

/** Sectors holding the entry header and `count` descriptors (the header takes two descriptor slots). */
export const descriptorSectors = (count: number): number => Math.ceil((count + 2) / 128);

/**
 * Reads log sectors with QEMU's circular-buffer index rules, counting every sector read so a
 * hostile log cannot keep the search going forever.
 */
class LogReader {
  reads = 0;
  constructor(private readonly source: ByteSource, private readonly budget: number) {}

  private inc(c: LogCursor, idx: number): number {
    idx += LOG_SECTOR_SIZE;
    return idx >= c.length ? 0 : idx;
  }

  async sector(c: LogCursor, at: number): Promise<Uint8Array> {
    if (++this.reads > this.budget) {
      throw new DiskError('ECORRUPT', `${this.source.name}: vhdx log search does not terminate (more than ${this.budget} sector reads)`);
    }
    const b = new Uint8Array(LOG_SECTOR_SIZE);
    const got = await this.source.read(b, c.offset + at);
    if (got < b.length) b.fill(0, got);
    return b;
  }

  async peekHeader(c: LogCursor): Promise<EntryHeader | null> {
    let at = c.read;
    if (at + LOG_ENTRY_HEADER_SIZE > c.length) at = 0;
    if (at === c.write) return null;
    return parseEntryHeader(await this.sector(c, at));
  }

  /** Up to n sectors from the read index; advances it unless peeking. */
  async readSectors(c: LogCursor, n: number): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    let at = c.read;
    while (n-- > 0 && at !== c.write) {
      out.push(await this.sector(c, at));
      at = this.inc(c, at);
    }
    c.read = at;
    return out;
  }

  skipSector(c: LogCursor): void {
    c.read = this.inc(c, c.read);
  }
}

function headerIsValid(c: LogCursor, h: EntryHeader, logGuid: string): boolean {
  return h.signature === 'loge'
    && h.entryLength <= c.length
    && h.entryLength % LOG_SECTOR_SIZE === 0
    && h.sequence !== 0n
    && h.logGuid === logGuid
    && h.descriptorCount * LOG_DESCRIPTOR_SIZE <= h.entryLength;
}

function descriptorIsValid(d: Descriptor, h: EntryHeader): boolean {
  if (d.sequence !== h.sequence || d.fileOffset % BigInt(LOG_SECTOR_SIZE) !== 0n) return false;
  if (d.kind === 'zero') return d.zeroLength % BigInt(LOG_SECTOR_SIZE) === 0n;
  return d.kind === 'desc';
}

/** Read an entry's header and descriptor sectors at the read index; a bad descriptor fails the open (as in QEMU). */
async function readDescriptors(r: LogReader, c: LogCursor, logGuid: string, file: string): Promise<{ header: EntryHeader; sectors: Uint8Array[]; descriptors: Descriptor[] }> {
  const h = await r.peekHeader(c);
  if (!h || !headerIsValid(c, h, logGuid)) throw new DiskError('ECORRUPT', `${file}: vhdx log entry at log offset ${c.read} is not valid`);
  const count = descriptorSectors(h.descriptorCount);
  const sectors = await r.readSectors(c, count);
  if (sectors.length !== count) throw new DiskError('ECORRUPT', `${file}: vhdx log entry (sequence ${h.sequence}) is cut short: its descriptors pass the end of the log sequence`);
  const all = new Uint8Array(count * LOG_SECTOR_SIZE);
  sectors.forEach((s, i) => all.set(s, i * LOG_SECTOR_SIZE));
  const descriptors: Descriptor[] = [];
  for (let i = 0; i < h.descriptorCount; i++) {
    const at = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    const d = parseDescriptor(all.subarray(at, at + LOG_DESCRIPTOR_SIZE));
    if (!descriptorIsValid(d, h)) {
      throw new DiskError('ECORRUPT', `${file}: vhdx log entry (sequence ${h.sequence}) has an invalid descriptor ${i} (signature, sequence number or alignment)`);
    }
    descriptors.push(d);
  }
  return { header: h, sectors, descriptors };
}

/** Validate the entry at the read index (QEMU's vhdx_validate_log_entry): header, sequence, checksum over every sector. */
async function validateEntry(r: LogReader, c: LogCursor, prevSeq: bigint, logGuid: string, file: string): Promise<EntryHeader | null> {
  const h = await r.peekHeader(c);
  if (!h || !headerIsValid(c, h, logGuid) || (prevSeq > 0n && h.sequence !== prevSeq + 1n)) {
    r.skipSector(c);
    return null;
  }
  const total = h.entryLength / LOG_SECTOR_SIZE;
  const { sectors } = await readDescriptors(r, c, logGuid, file);
  const first = sectors[0]!.slice();
  first.fill(0, 4, 8);
  let crc = crc32c(first);
  for (let i = 1; i < sectors.length; i++) crc = crc32c(sectors[i]!, crc);
  for (let i = sectors.length; i < total; i++) {
    const [s] = await r.readSectors(c, 1);
    if (!s) return null;
    crc = crc32c(s, crc);
  }
  return crc === h.checksum ? h : null;
}

export interface LogSequence {
  /** Cursor over the sequence: read = its first entry, write = just past its last. */
  cursor: LogCursor;
  count: number;
  first: EntryHeader;
}

/** Find the active sequence (QEMU's vhdx_log_search), or null when the log holds none. */
export async function searchLog(source: ByteSource, header: VhdxHeader): Promise<LogSequence | null> {
  const c: LogCursor = { offset: header.logOffset, length: header.logLength, read: 0, write: header.logLength };
  const sectors = header.logLength / LOG_SECTOR_SIZE;
  const r = new LogReader(source, 8 * sectors + 1024);
  let candidate: LogSequence | null = null;
  for (;;) {
    const tail = c.read;
    const first = await validateEntry(r, c, 0n, header.logGuid, source.name);
    if (first) {
      const current: LogSequence = { cursor: { ...c, read: tail, write: c.read }, count: 1, first };
      // As in QEMU, the entry after the first is not held to first+1; later ones are.
      let seq = 0n;
      for (;;) {
        const next = await validateEntry(r, c, seq, header.logGuid, source.name);
        if (!next) break;
        current.cursor.write = c.read;
        current.count++;
        seq = next.sequence;
      }
      if (!candidate || current.first.sequence > candidate.first.sequence) candidate = current;
    }
    if (c.read < tail) break;
  }
  return candidate;
}

/**
 * Apply a sequence to the file (QEMU's vhdx_log_flush): per entry, refuse when the file is
 * shorter than the entry's flushed file offset, write each data sector and zero range, grow
 * the file to the entry's last file offset; then flush and empty the log (log GUID cleared).
 */
export async function replayLog(source: ByteSource, headers: HeaderPair, seq: LogSequence): Promise<void> {
  const file = source.name;
  const c = { ...seq.cursor };
  const r = new LogReader(source, 4 * (c.length / LOG_SECTOR_SIZE) + 1024);
  await headers.userVisibleWrite();
  for (let n = 0; n < seq.count; n++) {
    const fileLength = await source.size();
    const peek = await r.peekHeader(c);
    if (!peek) throw new DiskError('ECORRUPT', `${file}: vhdx log sequence ends early`);
    if (peek.flushedFileOffset > BigInt(fileLength)) {
      throw new DiskError('ECORRUPT', `${file}: vhdx log entry (sequence ${peek.sequence}) was written when the file was ${peek.flushedFileOffset} bytes long; it is ${fileLength} now: the image has been truncated`);
    }
    const { header, descriptors } = await readDescriptors(r, c, headers.active.logGuid, file);
    // A descriptor may not write far past what the file holds: a hostile zero length would fill the disk.
    const limit = BigInt(Math.max(fileLength, roundUpMiB(Number(header.lastFileOffset > BigInt(Number.MAX_SAFE_INTEGER) ? 0n : header.lastFileOffset)))) ;
    for (const d of descriptors) {
      const length = d.kind === 'zero' ? d.zeroLength : BigInt(LOG_SECTOR_SIZE);
      if (d.fileOffset + length > limit) {
        throw new DiskError('ECORRUPT', `${file}: vhdx log entry (sequence ${header.sequence}) writes ${length} bytes at ${d.fileOffset}, past the end of the file (${limit} bytes)`);
      }
      const at = Number(d.fileOffset);
      if (d.kind === 'desc') {
        const [data] = await r.readSectors(c, 1);
        if (!data) throw new DiskError('ECORRUPT', `${file}: vhdx log entry (sequence ${header.sequence}) lacks a data sector`);
        const v = dv(data);
        const dataSeq = (BigInt(v.getUint32(4, true)) << 32n) | BigInt(v.getUint32(4092, true));
        if (dataSeq !== d.sequence) throw new DiskError('ECORRUPT', `${file}: vhdx log data sector sequence ${dataSeq} does not match its descriptor (${d.sequence})`);
        const sector = data.slice();
        sector.set(d.leading, 0);
        sector.set(d.trailing, 4092);
        await source.write(sector, at);
      } else {
        const total = Number(d.zeroLength);
        const zero = new Uint8Array(Math.min(total, MiB));
        for (let done = 0; done < total; done += zero.length) await source.write(zero.subarray(0, Math.min(zero.length, total - done)), at + done);
      }
    }
    // QEMU grows the file only when the last file offset is not a whole MiB; so do we.
    const last = Number(header.lastFileOffset);
    if (fileLength < last && last % MiB) await source.truncate(roundUpMiB(last));
  }
  await source.flush();
  await headers.update(false, ZERO_GUID);
}

const roundUpMiB = (n: number) => Math.ceil(n / MiB) * MiB;

/** Log state of an open image: the next sequence number and where the next entry goes. */
export interface LogWriter {
  sequence: bigint;
  tail: number;
}

/**
 * Write `data` at file offset `offset` through the log (QEMU's vhdx_log_write_and_flush):
 * set a new log GUID, write one entry holding the 4 KiB sectors the bytes fall in (merged
 * with what the file holds), flush, replay it and empty the log again. A crash at any point
 * leaves either the old bytes or an entry that the next open replays.
 */
export async function writeThroughLog(source: ByteSource, headers: HeaderPair, state: LogWriter, data: Uint8Array, offset: number): Promise<void> {
  const h = headers.active;
  if (data.length > h.logLength) throw new DiskError('EINVAL', `${source.name}: vhdx log of ${h.logLength} bytes cannot hold a ${data.length}-byte update`);
  if (h.logGuid !== ZERO_GUID) {
    throw new DiskError('EUNSUPPORTED', `${source.name}: the vhdx log is not empty (log GUID ${h.logGuid}); replay it first (check -r all)`);
  }
  await source.flush();
  const logGuid = newGuid();
  await headers.update(false, logGuid);
  if (state.sequence === 0n) state.sequence = 1n;
  const first = Math.floor(offset / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  const end = Math.ceil((offset + data.length) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
  const count = (end - first) / LOG_SECTOR_SIZE;
  const merged = new Uint8Array(end - first);
  const got = await source.read(merged, first);
  if (got < merged.length) merged.fill(0, got);
  merged.set(data, offset - first);
  const descSectors = descriptorSectors(count);
  const entry = new Uint8Array((descSectors + count) * LOG_SECTOR_SIZE);
  const v = dv(entry);
  const fileLength = BigInt(await source.size());
  entry.set(new TextEncoder().encode('loge'), 0);
  v.setUint32(8, entry.length, true);
  v.setUint32(12, state.tail, true);
  v.setBigUint64(16, state.sequence, true);
  v.setUint32(24, count, true);
  entry.set(guidBytes(logGuid), 32);
  v.setBigUint64(48, fileLength, true);
  v.setBigUint64(56, fileLength, true);
  for (let i = 0; i < count; i++) {
    const sector = merged.subarray(i * LOG_SECTOR_SIZE, (i + 1) * LOG_SECTOR_SIZE);
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    entry.set(new TextEncoder().encode('desc'), d);
    entry.set(sector.subarray(4092, 4096), d + 4);
    entry.set(sector.subarray(0, 8), d + 8);
    v.setBigUint64(d + 16, BigInt(first + i * LOG_SECTOR_SIZE), true);
    v.setBigUint64(d + 24, state.sequence, true);
    const s = (descSectors + i) * LOG_SECTOR_SIZE;
    entry.set(new TextEncoder().encode('data'), s);
    v.setUint32(s + 4, Number(state.sequence >> 32n), true);
    entry.set(sector.subarray(8, 4092), s + 8);
    v.setUint32(s + 4092, Number(state.sequence & 0xffffffffn), true);
  }
  v.setUint32(4, crc32c(entry), true);
  // The log was emptied by the last replay: the entry goes at its start.
  await source.write(entry, h.logOffset);
  await source.flush();
  const seq: LogSequence = {
    cursor: { offset: h.logOffset, length: h.logLength, read: 0, write: entry.length % h.logLength },
    count: 1,
    first: parseEntryHeader(entry),
  };
  state.sequence++;
  state.tail = entry.length;
  await replayLog(source, headers, seq);
}
