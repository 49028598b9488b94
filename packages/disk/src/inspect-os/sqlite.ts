/**
 * A minimal read-only SQLite reader: the rows of one table of a database file, its pages read
 * on demand (a large rpmdb.sqlite is mostly index tables never visited), enough for rpm's
 * rpmdb.sqlite (the `Packages` table). Follows the SQLite file
 * format (https://www.sqlite.org/fileformat2.html): the 100-byte header (§1.3), table
 * b-tree pages (§1.6), cell payload overflow (§1.6, "local payload" formula), records (§2.1).
 * Hostile files give a DiskError: page numbers are checked, each page is visited once, and
 * the tree depth is bounded. A write-ahead log (-wal) is not read: only checkpointed content.
 */
import { DiskError } from '../errors.js';

export type SqlValue = null | number | bigint | string | Uint8Array;

const MAGIC = 'SQLite format 3\0';
/** A table b-tree deeper than this is hostile (a 64 KiB-page tree of depth 20 holds more rows than fit a file). */
const MAX_DEPTH = 20;

function corrupt(msg: string): never {
  throw new DiskError('ECORRUPT', `sqlite: ${msg}`);
}

/** Reads `length` bytes at `offset` of the database file (short at its end). */
export type SqliteRead = (offset: number, length: number) => Promise<Uint8Array>;

export class SqliteFile {
  private constructor(private readonly read: SqliteRead, readonly pageSize: number, readonly usable: number, readonly pageCount: number) {}

  /** Open a database file of `size` bytes. */
  static async open(read: SqliteRead, size: number): Promise<SqliteFile> {
    const head = await read(0, 100);
    if (head.length < 100 || Buffer.from(head.subarray(0, 16)).toString('latin1') !== MAGIC) corrupt('not an SQLite 3 database');
    const ps = new DataView(head.buffer, head.byteOffset, head.byteLength).getUint16(16);
    const pageSize = ps === 1 ? 65536 : ps;
    if (pageSize < 512 || (pageSize & (pageSize - 1)) !== 0) corrupt(`invalid page size ${ps}`);
    const usable = pageSize - head[20]!;
    if (usable < 480) corrupt('reserved space too large');
    return new SqliteFile(read, pageSize, usable, Math.floor(size / pageSize));
  }

  private async page(n: number): Promise<Uint8Array> {
    if (!Number.isInteger(n) || n < 1 || n > this.pageCount) corrupt(`page ${n} outside the file (${this.pageCount} pages)`);
    const p = await this.read((n - 1) * this.pageSize, this.pageSize);
    if (p.length !== this.pageSize) corrupt(`page ${n} short`);
    return p;
  }

  /** Every row of the table whose b-tree root is page `root`, in rowid order: [rowid, columns]. */
  async *rows(root: number): AsyncGenerator<[bigint, SqlValue[]]> {
    const seen = new Set<number>();
    const self = this;
    async function* visit(pageNo: number, depth: number): AsyncGenerator<[bigint, SqlValue[]]> {
      if (depth > MAX_DEPTH) corrupt('table b-tree too deep');
      if (seen.has(pageNo)) corrupt(`page ${pageNo} reached twice (a loop)`);
      seen.add(pageNo);
      const page = await self.page(pageNo);
      const h = pageNo === 1 ? 100 : 0;
      const dv = new DataView(page.buffer, page.byteOffset, page.byteLength);
      const kind = page[h];
      const cells = dv.getUint16(h + 3);
      // The cell pointer array follows the 12-byte (interior) or 8-byte (leaf) page header.
      if (h + (kind === 0x05 ? 12 : 8) + 2 * cells > page.length) corrupt(`page ${pageNo}: ${cells} cells do not fit the page`);
      if (kind === 0x05) {
        for (let i = 0; i < cells; i++) {
          const at = dv.getUint16(h + 12 + 2 * i);
          if (at + 4 > page.length) corrupt('cell outside its page');
          yield* visit(dv.getUint32(at), depth + 1);
        }
        yield* visit(dv.getUint32(h + 8), depth + 1);
      } else if (kind === 0x0d) {
        for (let i = 0; i < cells; i++) {
          let at = dv.getUint16(h + 8 + 2 * i);
          const [size, n1] = varint(page, at);
          at += n1;
          const [rowid, n2] = varint(page, at);
          at += n2;
          yield [rowid, parseRecord(await self.payload(page, at, Number(size)))];
        }
      } else corrupt(`page ${pageNo} is not a table b-tree page (type ${kind})`);
    }
    yield* visit(root, 0);
  }

  /** A cell's payload: the local part, then the overflow chain (§1.6). */
  private async payload(page: Uint8Array, at: number, size: number): Promise<Uint8Array> {
    const u = this.usable;
    const x = u - 35;
    let local = size;
    if (size > x) {
      const m = Math.floor(((u - 12) * 32) / 255) - 23;
      const k = m + ((size - m) % (u - 4));
      local = k <= x ? k : m;
    }
    if (at + local > page.length) corrupt('cell payload outside its page');
    if (local === size) return page.subarray(at, at + size);
    if (size > this.pageCount * this.pageSize) corrupt('payload larger than the file');
    const out = new Uint8Array(size);
    out.set(page.subarray(at, at + local));
    let filled = local;
    let next = new DataView(page.buffer, page.byteOffset, page.byteLength).getUint32(at + local);
    const seen = new Set<number>();
    while (filled < size) {
      if (seen.has(next)) corrupt('overflow chain loops');
      seen.add(next);
      const ov = await this.page(next);
      const take = Math.min(u - 4, size - filled);
      out.set(ov.subarray(4, 4 + take), filled);
      filled += take;
      next = new DataView(ov.buffer, ov.byteOffset, ov.byteLength).getUint32(0);
    }
    return out;
  }

  /** The root page of a table, from sqlite_schema (page 1: type, name, tbl_name, rootpage, sql). */
  async tableRoot(name: string): Promise<number | null> {
    for await (const [, cols] of this.rows(1)) {
      if (cols[0] === 'table' && cols[1] === name) return Number(cols[3]);
    }
    return null;
  }
}

/** A SQLite varint (§1.5): 1-9 bytes, big-endian, 7 bits a byte, all 8 bits of the ninth. */
function varint(b: Uint8Array, at: number): [bigint, number] {
  let v = 0n;
  for (let i = 0; i < 9; i++) {
    if (at + i >= b.length) corrupt('varint past the end of its page');
    const c = b[at + i]!;
    if (i === 8) return [(v << 8n) | BigInt(c), 9];
    v = (v << 7n) | BigInt(c & 0x7f);
    if ((c & 0x80) === 0) return [v, i + 1];
  }
  return [v, 9];
}

/** A record (§2.1): a header of serial types, then the values. */
function parseRecord(p: Uint8Array): SqlValue[] {
  const [hsize, n0] = varint(p, 0);
  const headerEnd = Number(hsize);
  if (headerEnd > p.length) corrupt('record header longer than the record');
  const types: bigint[] = [];
  for (let at = n0; at < headerEnd;) {
    const [t, n] = varint(p, at);
    types.push(t);
    at += n;
  }
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const out: SqlValue[] = [];
  let at = headerEnd;
  const INT_BYTES = [0, 1, 2, 3, 4, 6, 8];
  for (const tb of types) {
    const t = Number(tb);
    if (t === 0) out.push(null);
    else if (t >= 1 && t <= 6) {
      const n = INT_BYTES[t]!;
      if (at + n > p.length) corrupt('record value past its end');
      let v = 0n;
      for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(p[at + i]!);
      if (p[at]! & 0x80) v -= 1n << BigInt(8 * n);
      out.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
      at += n;
    } else if (t === 7) {
      if (at + 8 > p.length) corrupt('record value past its end');
      out.push(dv.getFloat64(at));
      at += 8;
    } else if (t === 8 || t === 9) out.push(t - 8);
    else if (t >= 12) {
      const n = Math.floor((t - 12) / 2);
      if (at + n > p.length) corrupt('record value past its end');
      const v = p.subarray(at, at + n);
      out.push(t % 2 === 0 ? v : Buffer.from(v).toString('utf8'));
      at += n;
    } else corrupt(`reserved serial type ${t}`);
  }
  return out;
}
