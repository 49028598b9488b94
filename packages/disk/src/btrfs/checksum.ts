/**
 * btrfs's metadata checksums (the superblock's csum_type): CRC-32C, xxHash64 (seed 0), SHA-256
 * and BLAKE2b-256, each over a block after its 32-byte csum field and stored at its start
 * (little-endian for the integer ones). Node has CRC-32C here (crc32c.ts) and SHA-256; xxHash64
 * and BLAKE2b with a 256-bit digest (Node's blake2b512 is another parameter block) are written
 * from their specifications.
 */
import { crypto } from '../builtins.js';
import { crc32c } from '../crc32c.js';
import { DiskError } from '../errors.js';
import { BTRFS_CSUM_SIZE, BTRFS_CSUM_TYPE_BLAKE2, BTRFS_CSUM_TYPE_CRC32, BTRFS_CSUM_TYPE_SHA256, BTRFS_CSUM_TYPE_XXHASH } from './layout.js';

const corrupt = (m: string) => new DiskError('ECORRUPT', `btrfs: ${m}`);
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

export function checksumSize(type: number): number {
  switch (type) {
    case BTRFS_CSUM_TYPE_CRC32: return 4;
    case BTRFS_CSUM_TYPE_XXHASH: return 8;
    case BTRFS_CSUM_TYPE_SHA256: return 32;
    case BTRFS_CSUM_TYPE_BLAKE2: return 32;
    default: throw new DiskError('EUNSUPPORTED', `btrfs: checksum type ${type}`);
  }
}

/** The checksum of a superblock or tree block: over everything after the 32-byte csum field, stored at its start. */
export function verifyChecksum(type: number, b: Uint8Array, size: number, what: string): void {
  const body = b.subarray(BTRFS_CSUM_SIZE);
  let computed: Uint8Array;
  if (type === BTRFS_CSUM_TYPE_CRC32) {
    computed = new Uint8Array(4);
    new DataView(computed.buffer).setUint32(0, crc32c(body), true);
  } else if (type === BTRFS_CSUM_TYPE_SHA256) computed = crypto().createHash('sha256').update(body).digest();
  else if (type === BTRFS_CSUM_TYPE_BLAKE2) computed = blake2b(body, 32);
  else {
    computed = new Uint8Array(8);
    new DataView(computed.buffer).setBigUint64(0, xxhash64(body), true);
  }
  if (!sameBytes(b.subarray(0, size), computed)) throw corrupt(`checksum mismatch in ${what}`);
}

// xxHash64 (the algorithm's specification, github.com/Cyan4973/xxHash doc/xxhash_spec.md), seed 0.
const P1 = 11400714785074694791n;
const P2 = 14029467366897019727n;
const P3 = 1609587929392839161n;
const P4 = 9650029242287828579n;
const P5 = 2870177450012600261n;
const M64 = 0xffffffffffffffffn;
const rotl = (x: bigint, r: bigint) => ((x << r) | (x >> (64n - r))) & M64;
const round = (acc: bigint, lane: bigint) => (rotl((acc + lane * P2) & M64, 31n) * P1) & M64;
const mergeRound = (acc: bigint, v: bigint) => (((acc ^ round(0n, v)) * P1) & M64) + P4 & M64;

export function xxhash64(b: Uint8Array): bigint {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const len = b.length;
  let at = 0;
  let acc: bigint;
  if (len >= 32) {
    let a1 = (P1 + P2) & M64, a2 = P2, a3 = 0n, a4 = (M64 + 1n - P1) & M64;
    for (; at + 32 <= len; at += 32) {
      a1 = round(a1, v.getBigUint64(at, true));
      a2 = round(a2, v.getBigUint64(at + 8, true));
      a3 = round(a3, v.getBigUint64(at + 16, true));
      a4 = round(a4, v.getBigUint64(at + 24, true));
    }
    acc = (rotl(a1, 1n) + rotl(a2, 7n) + rotl(a3, 12n) + rotl(a4, 18n)) & M64;
    acc = mergeRound(mergeRound(mergeRound(mergeRound(acc, a1), a2), a3), a4);
  } else acc = P5;
  acc = (acc + BigInt(len)) & M64;
  for (; at + 8 <= len; at += 8) acc = ((rotl(acc ^ round(0n, v.getBigUint64(at, true)), 27n) * P1) & M64) + P4 & M64;
  if (at + 4 <= len) {
    acc = ((rotl(acc ^ ((BigInt(v.getUint32(at, true)) * P1) & M64), 23n) * P2) & M64) + P3 & M64;
    at += 4;
  }
  for (; at < len; at++) acc = (rotl(acc ^ ((BigInt(b[at]!) * P5) & M64), 11n) * P1) & M64;
  acc ^= acc >> 33n;
  acc = (acc * P2) & M64;
  acc ^= acc >> 29n;
  acc = (acc * P3) & M64;
  return acc ^ (acc >> 32n);
}

// BLAKE2b (RFC 7693), without a key, for any digest length up to 64 bytes.
const BLAKE2B_IV = [0x6a09e667f3bcc908n, 0xbb67ae8584caa73bn, 0x3c6ef372fe94f82bn, 0xa54ff53a5f1d36f1n, 0x510e527fade682d1n, 0x9b05688c2b3e6c1fn, 0x1f83d9abfb41bd6bn, 0x5be0cd19137e2179n];
const SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4], [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13], [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11], [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5], [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];
const rotr = (x: bigint, r: bigint) => ((x >> r) | (x << (64n - r))) & M64;

export function blake2b(data: Uint8Array, outLength: number): Uint8Array {
  const h = BLAKE2B_IV.slice();
  h[0] = h[0]! ^ 0x01010000n ^ BigInt(outLength);
  const v = new Array<bigint>(16);
  const m = new Array<bigint>(16);
  const block = new Uint8Array(128);
  const view = new DataView(block.buffer);
  const g = (a: number, b: number, c: number, d: number, x: bigint, y: bigint) => {
    v[a] = (v[a]! + v[b]! + x) & M64;
    v[d] = rotr(v[d]! ^ v[a]!, 32n);
    v[c] = (v[c]! + v[d]!) & M64;
    v[b] = rotr(v[b]! ^ v[c]!, 24n);
    v[a] = (v[a]! + v[b]! + y) & M64;
    v[d] = rotr(v[d]! ^ v[a]!, 16n);
    v[c] = (v[c]! + v[d]!) & M64;
    v[b] = rotr(v[b]! ^ v[c]!, 63n);
  };
  // Every full block but the last is compressed as it comes; the last (or an empty message's zero block) with the final flag.
  const blocks = Math.max(1, Math.ceil(data.length / 128));
  for (let i = 0; i < blocks; i++) {
    const last = i === blocks - 1;
    const chunk = data.subarray(i * 128, (i + 1) * 128);
    block.fill(0);
    block.set(chunk);
    const t = BigInt(i * 128 + chunk.length);
    for (let k = 0; k < 16; k++) m[k] = view.getBigUint64(k * 8, true);
    for (let k = 0; k < 8; k++) { v[k] = h[k]!; v[k + 8] = BLAKE2B_IV[k]!; }
    v[12] = v[12]! ^ (t & M64);
    v[13] = v[13]! ^ (t >> 64n);
    if (last) v[14] = v[14]! ^ M64;
    for (let r = 0; r < 12; r++) {
      const s = SIGMA[r % 10]!;
      g(0, 4, 8, 12, m[s[0]!]!, m[s[1]!]!);
      g(1, 5, 9, 13, m[s[2]!]!, m[s[3]!]!);
      g(2, 6, 10, 14, m[s[4]!]!, m[s[5]!]!);
      g(3, 7, 11, 15, m[s[6]!]!, m[s[7]!]!);
      g(0, 5, 10, 15, m[s[8]!]!, m[s[9]!]!);
      g(1, 6, 11, 12, m[s[10]!]!, m[s[11]!]!);
      g(2, 7, 8, 13, m[s[12]!]!, m[s[13]!]!);
      g(3, 4, 9, 14, m[s[14]!]!, m[s[15]!]!);
    }
    for (let k = 0; k < 8; k++) h[k] = h[k]! ^ v[k]! ^ v[k + 8]!;
  }
  const out = new Uint8Array(64);
  const ov = new DataView(out.buffer);
  for (let k = 0; k < 8; k++) ov.setBigUint64(k * 8, h[k]!, true);
  return out.slice(0, outLength);
}
