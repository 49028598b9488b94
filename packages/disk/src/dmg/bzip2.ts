/**
 * A bzip2 decoder for dmg's bzip2 chunks (UDBZ), bounded for hostile input.
 *
 * Why our own: QEMU reads these chunks through libbz2 in an optional module (dmg-bz2) that
 * Debian does not ship, so qemu-img here fails on them; diskhub reads them. The npm decoders
 * (seek-bzip, unbzip2-stream, compressjs) either stream without an output bound, throw plain
 * Errors or strings, or are unmaintained; a chunk needs a one-shot decode with a hard output
 * limit (the chunk's declared size) and the engine's typed errors, which is about two hundred
 * lines of the published format: stream header "BZh1".."BZh9"; blocks of (CRC, origPtr,
 * symbol map, Huffman tables and selectors, MTF/RUNA-RUNB symbols); the inverse Burrows-Wheeler
 * transform; the initial run-length stage; the big-endian CRC-32 of each block and the stream.
 */
import { DiskError } from '../errors.js';

const BLOCK_MAGIC_HI = 0x314159, BLOCK_MAGIC_LO = 0x265359; // pi
const END_MAGIC_HI = 0x177245, END_MAGIC_LO = 0x385090; // sqrt(pi)
const GROUP_SIZE = 50;
const MAX_GROUPS = 6;
const MAX_CODE_LENGTH = 20;
/** bzip2 1.0.8 reads any selector count but keeps at most this many. */
const MAX_SELECTORS = 18002;

/** The CRC-32 table (bzip2's, MSB first), made on first use: not every command decodes bzip2. */
let crcTable: Uint32Array | undefined;
const makeCrcTable = () => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  return t;
};

class BitReader {
  private pos = 0; // in bits
  constructor(private readonly b: Uint8Array, private readonly fail: (m: string) => DiskError) {}
  bits(n: number): number {
    if (this.pos + n > this.b.length * 8) throw this.fail('bzip2 stream is truncated');
    let v = 0;
    for (let k = 0; k < n; k++) {
      const p = this.pos++;
      v = (v << 1) | ((this.b[p >>> 3]! >>> (7 - (p & 7))) & 1);
    }
    return v >>> 0;
  }
  bit(): number {
    if (this.pos >= this.b.length * 8) throw this.fail('bzip2 stream is truncated');
    const p = this.pos++;
    return (this.b[p >>> 3]! >>> (7 - (p & 7))) & 1;
  }
}

/** A canonical Huffman code (bzip2 assigns codes by length, then symbol order). */
interface HuffmanCode {
  count: Int32Array;      // codes of each length
  firstCode: Int32Array;  // first code of each length
  firstIndex: Int32Array; // index into `symbols` of that code
  symbols: Uint16Array;   // symbols ordered by code
  maxLength: number;
}

function huffmanCode(lengths: Uint8Array, alphaSize: number): HuffmanCode {
  const count = new Int32Array(MAX_CODE_LENGTH + 1);
  let maxLength = 0;
  for (let s = 0; s < alphaSize; s++) { count[lengths[s]!]!++; maxLength = Math.max(maxLength, lengths[s]!); }
  const symbols = new Uint16Array(alphaSize);
  const firstCode = new Int32Array(MAX_CODE_LENGTH + 1);
  const firstIndex = new Int32Array(MAX_CODE_LENGTH + 1);
  let code = 0, index = 0;
  for (let len = 1; len <= MAX_CODE_LENGTH; len++) {
    firstCode[len] = code;
    firstIndex[len] = index;
    for (let s = 0; s < alphaSize; s++) if (lengths[s] === len) symbols[index++] = s;
    code = (code + count[len]!) << 1;
  }
  return { count, firstCode, firstIndex, symbols, maxLength };
}

function decodeSymbol(r: BitReader, h: HuffmanCode, fail: (m: string) => DiskError): number {
  let code = 0;
  for (let len = 1; len <= h.maxLength; len++) {
    code = (code << 1) | r.bit();
    const k = code - h.firstCode[len]!;
    if (k >= 0 && k < h.count[len]!) return h.symbols[h.firstIndex[len]! + k]!;
  }
  throw fail('bzip2 data has an invalid Huffman code');
}

/**
 * Decode one bzip2 stream that must expand to exactly `expected` bytes; anything else (a
 * stream that would grow past it, ends short, fails a CRC or breaks the format) is the
 * DiskError `fail` makes. Trailing bytes after the end-of-stream marker are ignored, as
 * libbz2's one-stream decode ignores them.
 */
export function bunzip2(input: Uint8Array, expected: number, fail: (message: string) => DiskError): Uint8Array {
  const CRC_TABLE = (crcTable ??= makeCrcTable());
  const r = new BitReader(input, fail);
  if (r.bits(8) !== 0x42 || r.bits(8) !== 0x5a || r.bits(8) !== 0x68) throw fail('is not a bzip2 stream (no "BZh" header)');
  const level = r.bits(8) - 0x30;
  if (level < 1 || level > 9) throw fail(`has an invalid bzip2 block size ${level}`);
  const blockMax = level * 100000;
  const out = new Uint8Array(expected);
  let outPos = 0;
  let streamCrc = 0;
  const tt = new Uint32Array(blockMax);
  const block = new Uint8Array(blockMax);
  for (;;) {
    const hi = r.bits(24), lo = r.bits(24);
    if (hi === END_MAGIC_HI && lo === END_MAGIC_LO) {
      const stored = r.bits(32);
      if (stored !== streamCrc) throw fail('fails the bzip2 stream CRC');
      break;
    }
    if (hi !== BLOCK_MAGIC_HI || lo !== BLOCK_MAGIC_LO) throw fail('has an invalid bzip2 block header');
    const blockCrc = r.bits(32);
    if (r.bit()) throw fail('uses randomised bzip2 blocks (bzip2 0.9.0), which are not supported');
    const origPtr = r.bits(24);

    // Which byte values occur: 16 groups of 16.
    const seqToByte = new Uint8Array(256);
    let inUse = 0;
    const groupsUsed = r.bits(16);
    for (let g = 0; g < 16; g++) {
      if (!(groupsUsed & (0x8000 >>> g))) continue;
      const used = r.bits(16);
      for (let k = 0; k < 16; k++) if (used & (0x8000 >>> k)) seqToByte[inUse++] = g * 16 + k;
    }
    if (inUse === 0) throw fail('has a bzip2 block that uses no symbols');
    const alphaSize = inUse + 2;

    const nGroups = r.bits(3);
    if (nGroups < 2 || nGroups > MAX_GROUPS) throw fail(`has ${nGroups} bzip2 Huffman tables (2 to 6 allowed)`);
    const nSelectorsDeclared = r.bits(15);
    if (nSelectorsDeclared < 1) throw fail('has no bzip2 selectors');
    const nSelectors = Math.min(nSelectorsDeclared, MAX_SELECTORS);
    const selectors = new Uint8Array(nSelectors);
    const groupMtf = [0, 1, 2, 3, 4, 5];
    for (let i = 0; i < nSelectorsDeclared; i++) {
      let j = 0;
      while (r.bit()) if (++j >= nGroups) throw fail('has an invalid bzip2 selector');
      const g = groupMtf[j]!;
      groupMtf.splice(j, 1);
      groupMtf.unshift(g);
      if (i < nSelectors) selectors[i] = g;
    }

    const codes: HuffmanCode[] = [];
    const lengths = new Uint8Array(alphaSize);
    for (let t = 0; t < nGroups; t++) {
      let len = r.bits(5);
      for (let s = 0; s < alphaSize; s++) {
        for (;;) {
          if (len < 1 || len > MAX_CODE_LENGTH) throw fail('has an invalid bzip2 code length');
          if (!r.bit()) break;
          len += r.bit() ? -1 : 1;
        }
        lengths[s] = len;
      }
      codes.push(huffmanCode(lengths, alphaSize));
    }

    // Symbols: RUNA/RUNB give run lengths of the front byte, others move-to-front indexes.
    const mtf = new Uint8Array(256);
    for (let i = 0; i < 256; i++) mtf[i] = i;
    const counts = new Int32Array(256);
    const endOfBlock = inUse + 1;
    let n = 0;
    let run = 0, runBit = 1;
    let group = 0, left = 0;
    for (;;) {
      if (left === 0) {
        if (group >= nSelectors) throw fail('runs out of bzip2 selectors');
        left = GROUP_SIZE;
        group++;
      }
      left--;
      const sym = decodeSymbol(r, codes[selectors[group - 1]!]!, fail);
      if (sym <= 1) {
        // Bijective base 2: RUNA adds one unit, RUNB two, at the current weight.
        run += runBit << sym;
        runBit <<= 1;
        if (run > blockMax) throw fail('has a bzip2 run longer than the block');
        continue;
      }
      if (run > 0) {
        if (n + run > blockMax) throw fail('has a bzip2 block longer than its declared size');
        const b = seqToByte[mtf[0]!]!;
        counts[b]! += run;
        block.fill(b, n, n + run);
        n += run;
        run = 0;
        runBit = 1;
      }
      if (sym === endOfBlock) break;
      if (n >= blockMax) throw fail('has a bzip2 block longer than its declared size');
      const idx = sym - 1;
      const v = mtf[idx]!;
      mtf.copyWithin(1, 0, idx);
      mtf[0] = v;
      const b = seqToByte[v]!;
      counts[b]!++;
      block[n++] = b;
    }
    if (origPtr >= n) throw fail('has a bzip2 origin pointer outside its block');

    // Inverse BWT: tt maps each position to the next one of the original text.
    const start = new Int32Array(256);
    for (let b = 0, sum = 0; b < 256; b++) { start[b] = sum; sum += counts[b]!; }
    for (let i = 0; i < n; i++) tt[start[block[i]!]!++] = i;

    // Undo the initial run-length stage (four equal bytes, then a count of further copies) while walking.
    let crc = 0xffffffff;
    let p = tt[origPtr]!;
    let last = -1, same = 0;
    for (let k = 0; k < n; k++) {
      const b = block[p]!;
      p = tt[p]!;
      if (same === 4) {
        if (outPos + b > expected) throw fail(`expands past its ${expected} bytes`);
        for (let c = 0; c < b; c++) { out[outPos++] = last; crc = (crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ last) & 0xff]!; }
        same = 0;
        last = -1;
        continue;
      }
      if (b === last) same++;
      else { last = b; same = 1; }
      if (outPos >= expected) throw fail(`expands past its ${expected} bytes`);
      out[outPos++] = b;
      crc = (crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ b) & 0xff]!;
    }
    crc = ~crc >>> 0;
    if (crc !== blockCrc) throw fail('fails a bzip2 block CRC');
    streamCrc = (((streamCrc << 1) | (streamCrc >>> 31)) ^ crc) >>> 0;
  }
  if (outPos !== expected) throw fail(`decompresses to ${outPos} bytes, not ${expected}`);
  return out;
}
