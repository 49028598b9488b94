/**
 * On-disk structures declared once, as data: a Struct is a named table of fields (byte offset
 * and type) with the structure's total size, checked when it is declared (every field inside
 * the size, no two fields overlapping), and used both to decode bytes into values and to
 * encode values into bytes. The filesystem readers (iso9660, fat, xfs) parse with it and the
 * iso9660 writer encodes with the same tables, so a layout is never written twice.
 *
 * Field types are small objects (size, read, write); a format adds its own where its
 * encoding is special (ISO 9660's both-byte-order integers and dates, say).
 */
import { DiskError } from './errors.js';

export interface Field<V> {
  readonly size: number;
  read(b: Uint8Array, at: number): V;
  write(b: Uint8Array, at: number, value: V): void;
}

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** DataView's own error for a read past the end (a reader's bounds are its own to check; this keeps the old behaviour). */
function outside(): never {
  throw new RangeError('Offset is outside the bounds of the DataView');
}

/**
 * Integer fields are read from the bytes directly: a DataView per read was the largest single
 * cost of walking a filesystem's metadata (`img ls -lR` reads a dozen fields of every inode).
 */
const UINT_READERS: Record<string, (b: Uint8Array, at: number) => number> = {
  '1le': (b, at) => (at >= 0 && at < b.length ? b[at]! : outside()),
  '1be': (b, at) => (at >= 0 && at < b.length ? b[at]! : outside()),
  '2le': (b, at) => (at >= 0 && at + 2 <= b.length ? b[at]! | (b[at + 1]! << 8) : outside()),
  '2be': (b, at) => (at >= 0 && at + 2 <= b.length ? (b[at]! << 8) | b[at + 1]! : outside()),
  '4le': (b, at) => (at >= 0 && at + 4 <= b.length ? (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000 : outside()),
  '4be': (b, at) => (at >= 0 && at + 4 <= b.length ? b[at]! * 0x1000000 + ((b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) : outside()),
};

function uint(width: 1 | 2 | 4, littleEndian: boolean): Field<number> {
  return {
    size: width,
    read: UINT_READERS[`${width}${littleEndian ? 'le' : 'be'}`]!,
    write: (b, at, value) => {
      const v = dv(b);
      if (width === 1) v.setUint8(at, value);
      else if (width === 2) v.setUint16(at, value, littleEndian);
      else v.setUint32(at, value, littleEndian);
    },
  };
}

function uint64(littleEndian: boolean): Field<bigint> {
  return {
    size: 8,
    read: (b, at) => dv(b).getBigUint64(at, littleEndian),
    write: (b, at, value) => dv(b).setBigUint64(at, value, littleEndian),
  };
}

export const u8 = uint(1, true);
export const u16le = uint(2, true);
export const u16be = uint(2, false);
export const u32le = uint(4, true);
export const u32be = uint(4, false);
export const u64le = uint64(true);
export const u64be = uint64(false);

/** Raw bytes (decoded as a copy, so a decoded structure does not pin the block it came from). */
export function bytes(length: number): Field<Uint8Array> {
  return {
    size: length,
    read: (b, at) => b.slice(at, at + length),
    write: (b, at, value) => {
      if (value.length > length) throw new DiskError('EINVAL', `${value.length} bytes do not fit a ${length}-byte field`);
      b.set(value, at);
      b.fill(0, at + value.length, at + length);
    },
  };
}

/**
 * Fixed-length 8-bit text padded with `pad` (ISO 9660 pads with spaces, FAT names too, XFS
 * labels with NULs). Decoding drops the trailing padding; encoding adds it and refuses text
 * that does not fit or is not 8-bit.
 */
export function text(length: number, pad = 0x20): Field<string> {
  return {
    size: length,
    read: (b, at) => {
      let end = at + length;
      while (end > at && b[end - 1] === pad) end--;
      let s = '';
      for (let i = at; i < end; i++) s += String.fromCharCode(b[i]!);
      return s;
    },
    write: (b, at, value) => {
      if (value.length > length) throw new DiskError('EINVAL', `'${value}' is longer than ${length} characters`);
      for (let i = 0; i < value.length; i++) {
        const c = value.charCodeAt(i);
        if (c > 0xff) throw new DiskError('EINVAL', `'${value}' has a character outside 8 bits`);
        b[at + i] = c;
      }
      b.fill(pad, at + value.length, at + length);
    },
  };
}

type FieldTable = Record<string, readonly [offset: number, field: Field<any>]>;
type FieldValue<E> = E extends readonly [number, Field<infer V>] ? V : never;
export type Decoded<F extends FieldTable> = { [K in keyof F]: FieldValue<F[K]> };

export class Struct<F extends FieldTable> {
  /**
   * `size` is the structure's length on disk; `fields` map names to [byte offset, type]. A
   * table whose fields overflow the size or overlap is a programming error, thrown here, at
   * module load, so every layout is checked by merely importing it.
   */
  constructor(readonly name: string, readonly size: number, readonly fields: F) {
    const spans = Object.entries(fields)
      .map(([n, [at, f]]) => ({ n, at, end: at + f.size }))
      .sort((a, b) => a.at - b.at);
    let prev: { n: string; end: number } | undefined;
    for (const s of spans) {
      if (s.at < 0 || s.end > size) throw new Error(`${name}.${s.n} [${s.at}, ${s.end}) lies outside its ${size} bytes`);
      if (prev && s.at < prev.end) throw new Error(`${name}.${s.n} at ${s.at} overlaps ${name}.${prev.n}`);
      prev = s;
    }
  }

  /** The structure at `at` in `b`; ETRUNCATED when `b` ends before it does. */
  decode(b: Uint8Array, at = 0): Decoded<F> {
    if (at < 0 || at + this.size > b.length) {
      throw new DiskError('ETRUNCATED', `${this.name} at byte ${at} needs ${this.size} bytes, ${Math.max(0, b.length - at)} there`);
    }
    const out = {} as Record<string, unknown>;
    for (const [n, [off, f]] of Object.entries(this.fields)) out[n] = f.read(b, at + off);
    return out as Decoded<F>;
  }

  /** One field only (a hot loop that needs a single value need not decode the rest). */
  get<K extends keyof F & string>(b: Uint8Array, name: K, at = 0): FieldValue<F[K]> {
    const [off, f] = this.fields[name]!;
    return f.read(b, at + off) as FieldValue<F[K]>;
  }

  /**
   * Writes `values` into `into` at `at` (a new zeroed buffer of `size` bytes by default);
   * fields left out keep what is there. Returns the buffer.
   */
  encode(values: Partial<Decoded<F>>, into: Uint8Array = new Uint8Array(this.size), at = 0): Uint8Array {
    if (at < 0 || at + this.size > into.length) throw new DiskError('EINVAL', `${this.name} does not fit at byte ${at}`);
    for (const [n, v] of Object.entries(values)) {
      const entry = this.fields[n];
      if (!entry) throw new DiskError('EINVAL', `${this.name} has no field '${n}'`);
      if (v !== undefined) entry[1].write(into, at + entry[0], v);
    }
    return into;
  }
}

export const defineStruct = <F extends FieldTable>(name: string, size: number, fields: F) => new Struct(name, size, fields);
