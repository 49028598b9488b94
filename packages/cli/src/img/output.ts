/**
 * Output the way qemu-img prints it: JSON with QEMU's key order and escaping, sizes in
 * "1.25 MiB" style, and the size syntax qemu-img accepts ("1G", "1.5k", "512b", "0x1000").
 */
import { UsageError } from './getopt.js';

/**
 * QEMU keeps JSON objects in a hash table of 512 buckets and prints them bucket by bucket;
 * within one bucket the entry inserted last comes first. This is the bucket of a key
 * (the classic tdb string hash QEMU's QDict uses), so our JSON lists keys in the same order.
 */
function qdictBucket(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let h = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) h = (h + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  return ((Math.imul(1103515243, h) + 12345) >>> 0) % 512;
}

/** The keys of an object in the order QEMU prints them (insertion order = the object's own order). */
export function qdictOrder(obj: Record<string, unknown>): string[] {
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
  const indexed = keys.map((k, i) => ({ k, i, b: qdictBucket(k) }));
  indexed.sort((x, y) => x.b - y.b || y.i - x.i);
  return indexed.map((e) => e.k);
}

/** A JSON string literal escaped as QEMU's JSON writer does (non-ASCII as \uXXXX). */
export function qemuJsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"': out += '\\"'; break;
      case '\\': out += '\\\\'; break;
      case '\b': out += '\\b'; break;
      case '\f': out += '\\f'; break;
      case '\n': out += '\\n'; break;
      case '\r': out += '\\r'; break;
      case '\t': out += '\\t'; break;
      default:
        if (cp < 0x20 || cp >= 0x7f) {
          if (cp > 0xffff) {
            const v = cp - 0x10000;
            out += `\\u${hex4(0xd800 + (v >> 10))}\\u${hex4(0xdc00 + (v & 0x3ff))}`;
          } else out += `\\u${hex4(cp)}`;
        } else out += ch;
    }
  }
  return out + '"';
}

function hex4(n: number): string { return n.toString(16).toUpperCase().padStart(4, '0'); }

/** QEMU's pretty JSON: 4-space indent, QDict key order. */
export function qemuJson(value: unknown, indent = 0): string {
  const pad = ' '.repeat(indent + 4);
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return qemuJsonString(value);
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[\n' + ' '.repeat(indent) + ']';
    return '[\n' + value.map((v) => pad + qemuJson(v, indent + 4)).join(',\n') + '\n' + ' '.repeat(indent) + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = qdictOrder(obj);
  if (keys.length === 0) return '{\n' + ' '.repeat(indent) + '}';
  return '{\n' + keys.map((k) => `${pad}${qemuJsonString(k)}: ${qemuJson(obj[k], indent + 4)}`).join(',\n') + '\n' + ' '.repeat(indent) + '}';
}

/**
 * The human dump of a nested value ("Format specific information:" and friends): dict keys
 * with '-' shown as ' ', nested values indented by 4, list items as "[i]:".
 */
export function humanDump(value: unknown, indent: number): string {
  let out = '';
  const pad = ' '.repeat(indent * 4);
  const scalar = (v: unknown) => typeof v === 'boolean' ? (v ? 'true' : 'false') : String(v);
  const nested = (v: unknown) => v !== null && typeof v === 'object';
  if (Array.isArray(value)) {
    value.forEach((v, i) => {
      if (nested(v)) out += `${pad}[${i}]:\n` + humanDump(v, indent + 1);
      else out += `${pad}[${i}]: ${scalar(v)}\n`;
    });
    return out;
  }
  const obj = value as Record<string, unknown>;
  for (const k of qdictOrder(obj)) {
    const v = obj[k];
    const name = k.replace(/-/g, ' ');
    if (nested(v)) out += `${pad}${name}:\n` + humanDump(v, indent + 1);
    else out += `${pad}${name}: ${scalar(v)}\n`;
  }
  return out;
}

/** "1 GiB", "1.25 MiB", "196 KiB", "0 B": three significant digits, the unit switching at 1000. */
export function sizeToStr(bytes: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  let i = 0;
  // The unit is the power of 1024 whose value stays below 1000 (floor(log2(v*1024/1000))/10).
  if (bytes > 0) i = Math.trunc((Math.floor(Math.log2(bytes / (1000 / 1024))) + 1 - 1) / 10);
  i = Math.max(0, Math.min(i, suffixes.length - 1));
  return `${formatG3(bytes / 2 ** (i * 10))} ${suffixes[i]}B`;
}

/** printf("%0.3g") for values in [0, 1000). */
function formatG3(v: number): string {
  if (v === 0) return '0';
  let s = v.toPrecision(3);
  // toPrecision rounds a tie up; printf rounds an exact tie to even (16.25 -> "16.2").
  const digits = Math.floor(Math.log10(v));
  const scaled = v * 10 ** (2 - digits);
  if (digits >= 0 && digits < 3 && scaled - Math.floor(scaled) === 0.5 && Math.floor(scaled) % 2 === 0) {
    s = (Math.floor(scaled) / 10 ** (2 - digits)).toFixed(2 - digits);
  }
  if (s.includes('e')) {
    // C's %g: mantissa without trailing zeros, exponent with a sign and at least two digits.
    const [mant, exp] = s.split('e') as [string, string];
    const m = mant.includes('.') ? mant.replace(/0+$/, '').replace(/\.$/, '') : mant;
    const n = Number(exp);
    return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}

const SIZE_SUFFIXES: Record<string, bigint> = {
  b: 1n, k: 1n << 10n, m: 1n << 20n, g: 1n << 30n, t: 1n << 40n, p: 1n << 50n, e: 1n << 60n,
};
export const INT64_MAX = (1n << 63n) - 1n;

/**
 * Parse a size as qemu-img does: a decimal (fraction allowed with a multiplier) or hex number,
 * an optional suffix b/k/M/G/T/P/E (any case), `defaultUnit` when none. Returns null when the
 * text is not a size; the value may exceed INT64_MAX (callers check the range).
 */
export function parseSize(text: string, defaultUnit: 'b' | 'm' = 'b'): bigint | null {
  const m = /^\s*\+?(?:(0[xX][0-9a-fA-F]+)|(\d+)(?:\.(\d*))?)([bBkKmMgGtTpPeE]?)$/.exec(text);
  if (!m) return null;
  const mul = SIZE_SUFFIXES[(m[4] || defaultUnit).toLowerCase()]!;
  if (m[1]) return BigInt(m[1]) * mul;
  const whole = BigInt(m[2]!);
  const frac = m[3] ?? '';
  if (/[1-9]/.test(frac)) {
    if (mul === 1n) return null; // a fraction of a byte
    const f = Number('0.' + frac);
    return whole * mul + BigInt(Math.trunc(f * Number(mul)));
  }
  return whole * mul;
}

export const SUFFIX_HELP = 'You may use k, M, G, T, P or E suffixes for\nqemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.';

/** qemu-img's cvtnum_full: a number with size suffixes in [min, max], or its error messages. */
export function cvtnum(what: string, text: string, min = 0n, max = INT64_MAX): bigint {
  const v = parseSize(text);
  if (v === null) throw new UsageError(`Invalid ${what} specified. ${SUFFIX_HELP}`, false);
  if (v < min || v > max) throw new UsageError(`Invalid ${what} specified. Must be between ${min} and ${max}.`, false);
  return v;
}

/** An image size argument (create, measure --size, convert -S...); throws qemu-img's messages. */
export function parseImageSize(text: string, what = 'image size'): number {
  const v = cvtnum(what, text);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`Invalid ${what} specified: ${v} is larger than this tool supports (${Number.MAX_SAFE_INTEGER}).`, false);
  return Number(v);
}
