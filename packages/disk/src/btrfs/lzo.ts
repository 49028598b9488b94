/**
 * LZO1X decompression and btrfs's framing of it (fs/btrfs/lzo.c): Node has no LZO, and the
 * stream format is small. Every length is checked against the input and the output, so a
 * hostile stream is ECORRUPT, never a read outside the buffers or an unbounded output.
 *
 * LZO1X instructions (the format as the LZO library and the kernel's lzo1x_decompress_safe
 * read it): a byte t, then
 *   t >= 64   2-byte match: length (t >> 5) + 1, distance 1 + ((t >> 2) & 7) + (next byte << 3)
 *   t >= 32   match: length (t & 31) + 2 (0: extended by zero bytes), distance 1 + (le16 >> 2)
 *   t >= 16   far match: length (t & 7) + 2 (extended likewise), distance 0x4000 + ((t & 8) << 11) + (le16 >> 2);
 *             distance 0x4000 exactly ends the stream
 *   t < 16    after a match with no trailing literals: a literal run of t + 3 (0: extended, + 15);
 *             after a match with 1-3 trailing literals: a 2-byte match, distance 1 + (t >> 2) + (next << 2);
 *             after a literal run: a 3-byte match, distance 0x801 + (t >> 2) + (next << 2)
 * and each match carries 0-3 literals after it in the low two bits of its last instruction byte.
 * A first byte above 17 starts with a literal run of t - 17 bytes.
 */
import { DiskError } from '../errors.js';

const corrupt = (m: string) => new DiskError('ECORRUPT', `btrfs: lzo: ${m}`);

/** Decompress one LZO1X stream into `out` (its length is the most it may produce); the bytes produced. */
export function lzo1xDecompress(input: Uint8Array, out: Uint8Array): number {
  let ip = 0;
  let op = 0;
  const byte = (): number => {
    if (ip >= input.length) throw corrupt('input ends inside an instruction');
    return input[ip++]!;
  };
  /** A length extended by zero bytes (255 each) and a final non-zero byte. */
  const extended = (base: number): number => {
    let n = 0;
    while (input[ip] === 0) {
      ip++;
      n += 255;
      if (n > out.length) throw corrupt('run longer than the output');
    }
    return n + base + byte();
  };
  const literals = (n: number) => {
    if (ip + n > input.length) throw corrupt('literal run past the end of the input');
    if (op + n > out.length) throw corrupt('literal run past the end of the output');
    out.set(input.subarray(ip, ip + n), op);
    ip += n;
    op += n;
  };
  const match = (distance: number, length: number) => {
    if (distance > op || distance <= 0) throw corrupt(`match distance ${distance} before the start of the output`);
    if (op + length > out.length) throw corrupt('match past the end of the output');
    // Byte by byte: a match may overlap what it produces.
    for (let from = op - distance, end = op + length; op < end; ) out[op++] = out[from++]!;
  };
  /** 0: after a match without literals; 1-3: after a match with that many; 4: after a literal run. */
  let state = 0;
  if (input.length > 0 && input[0]! > 17) {
    const t = byte() - 17;
    literals(t);
    state = t < 4 ? t : 4;
  }
  for (;;) {
    const t = byte();
    let next: number;
    if (t < 16) {
      if (state === 0) {
        literals((t === 0 ? extended(15) : t) + 3);
        state = 4;
        continue;
      }
      next = t & 3;
      const d = (t >> 2) + (byte() << 2);
      if (state === 4) match(d + 1 + 0x800, 3);
      else match(d + 1, 2);
    } else if (t >= 64) {
      next = t & 3;
      match(1 + ((t >> 2) & 7) + (byte() << 3), (t >> 5) + 1);
    } else if (t >= 32) {
      const length = ((t & 31) === 0 ? extended(31) : t & 31) + 2;
      const le = byte() | (byte() << 8);
      next = le & 3;
      match(1 + (le >> 2), length);
    } else {
      const length = ((t & 7) === 0 ? extended(7) : t & 7) + 2;
      const le = byte() | (byte() << 8);
      const distance = ((t & 8) << 11) + (le >> 2);
      if (distance === 0) {
        if (length !== 3) throw corrupt('malformed end of stream');
        return op;
      }
      next = le & 3;
      match(distance + 0x4000, length);
    }
    literals(next);
    state = next;
  }
}

/**
 * btrfs's LZO framing of a compressed extent (fs/btrfs/lzo.c): a 4-byte total length, then
 * segments, each a 4-byte length and an LZO1X stream of at most one sector's output; a
 * segment header never straddles a sector boundary (the sector's last bytes are padding
 * then). Decompresses into `out` (the extent's ram_bytes); the bytes produced.
 */
export function btrfsLzoDecompress(input: Uint8Array, out: Uint8Array, sectorSize: number): number {
  const le32 = (at: number) => {
    if (at + 4 > input.length) throw corrupt('a length runs past the compressed data');
    return (input[at]! | (input[at + 1]! << 8) | (input[at + 2]! << 16) | (input[at + 3]! << 24)) >>> 0;
  };
  const total = le32(0);
  if (total > input.length || total < 4) throw corrupt(`total length ${total} of ${input.length} compressed bytes`);
  let at = 4;
  let produced = 0;
  while (at < total && produced < out.length) {
    if (sectorSize - (at % sectorSize) < 4) at += sectorSize - (at % sectorSize);
    if (at >= total) break;
    const length = le32(at);
    at += 4;
    if (length === 0 || at + length > total) throw corrupt(`segment of ${length} bytes at ${at} past the total ${total}`);
    produced += lzo1xDecompress(input.subarray(at, at + length), out.subarray(produced, Math.min(out.length, produced + sectorSize)));
    at += length;
  }
  return produced;
}
