/**
 * The pieces a LUKS1 volume is built from (cryptsetup's "LUKS On-Disk Format Specification"
 * 1.2, and QEMU's crypto/ layer which implements the same names): block ciphers by name and
 * key size, cipher modes, IV generators, PBKDF2 and the anti-forensic splitter. Node's
 * OpenSSL supplies AES (ECB, CBC, CTR, XTS) and the hashes; serpent, twofish and cast5 are
 * not in it, so volumes using them are refused with EUNSUPPORTED.
 */
import { crypto } from '../builtins.js';
import { promisify } from 'node:util';
import { hostio } from '@diskhub/hostio';
import { settled } from '../blockdev.js';
import { DiskError } from '../errors.js';


/** Sectors are 512 bytes in LUKS1, for the key material as for the payload. */
export const SECTOR_SIZE = 512;

/** Hash names as LUKS headers and QEMU's options spell them, with their digest sizes. */
export const HASH_DIGEST_BYTES: Readonly<Record<string, number>> = {
  md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20,
};

export type CipherMode = 'ecb' | 'cbc' | 'xts' | 'ctr';
export type IvGenAlg = 'plain' | 'plain64' | 'essiv';
export const CIPHER_MODES: readonly CipherMode[] = ['ecb', 'cbc', 'xts', 'ctr'];
export const IVGEN_ALGS: readonly IvGenAlg[] = ['plain', 'plain64', 'essiv'];

/** Cipher families LUKS names and the key sizes (bytes) QEMU accepts for each. */
export const CIPHER_KEY_SIZES: Readonly<Record<string, readonly number[]>> = {
  aes: [16, 24, 32], cast5: [16], serpent: [16, 24, 32], twofish: [16, 24, 32],
};

/** "aes-256" etc.: the cipher-alg option values, which QEMU also prints in info. */
export function cipherAlgName(family: string, keyBytes: number): string {
  return `${family}-${keyBytes * 8}`;
}

export function parseCipherAlg(name: string): { family: string; keyBytes: number } | undefined {
  const m = /^([a-z0-9]+)-(\d+)$/.exec(name);
  if (!m) return undefined;
  const keyBytes = Number(m[2]) / 8;
  return CIPHER_KEY_SIZES[m[1]!]?.includes(keyBytes) ? { family: m[1]!, keyBytes } : undefined;
}

export function checkHash(name: string): void {
  if (HASH_DIGEST_BYTES[name] === undefined) throw new DiskError('EUNSUPPORTED', `Hash algorithm ${name} not supported`);
}

/** PBKDF2 on the threadpool (RFC 8018), the KDF of LUKS1 key slots and the master key digest. */
export async function pbkdf2(hash: string, password: Uint8Array, salt: Uint8Array, iterations: number, length: number): Promise<Buffer> {
  return promisify(crypto().pbkdf2)(password, salt, iterations, length, hash);
}

/** How many PBKDF2 iterations of `hash` this machine does in one second (for `iter-time`). */
export async function pbkdf2PerSecond(hash: string, password: Uint8Array, salt: Uint8Array, length: number): Promise<number> {
  // Time growing rounds until one takes long enough to measure (QEMU counts the same way).
  for (let iterations = 1 << 14; ; iterations *= 2) {
    const start = process.hrtime.bigint();
    await pbkdf2(hash, password, salt, iterations, length);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (ms >= 100 || iterations >= 1 << 28) return Math.floor((iterations * 1000) / Math.max(ms, 1));
  }
}

/**
 * The anti-forensic diffuser of the LUKS spec (§2.4): the buffer is hashed in digest-sized
 * blocks, each block prefixed with its big-endian index; a short last block keeps only as many
 * hash bytes as it has.
 */
function diffuse(hash: string, buf: Uint8Array): void {
  const d = HASH_DIGEST_BYTES[hash]!;
  const index = new Uint8Array(4);
  for (let i = 0, at = 0; at < buf.length; i++, at += d) {
    const n = Math.min(d, buf.length - at);
    new DataView(index.buffer).setUint32(0, i, false);
    const digest = crypto().createHash(hash).update(index).update(buf.subarray(at, at + n)).digest();
    buf.set(digest.subarray(0, n), at);
  }
}

/** AF-split `key` into `stripes` stripes (random except the last). */
export function afSplit(hash: string, key: Uint8Array, stripes: number): Uint8Array {
  const n = key.length;
  const out = new Uint8Array(n * stripes);
  out.set(crypto().randomBytes(n * (stripes - 1)));
  const acc = new Uint8Array(n);
  for (let s = 0; s < stripes - 1; s++) {
    xorInto(acc, out.subarray(s * n, (s + 1) * n));
    diffuse(hash, acc);
  }
  const last = out.subarray((stripes - 1) * n);
  for (let i = 0; i < n; i++) last[i] = acc[i]! ^ key[i]!;
  return out;
}

/** Recombine AF-split material into the key it hides. */
export function afMerge(hash: string, material: Uint8Array, keyBytes: number, stripes: number): Uint8Array {
  const acc = new Uint8Array(keyBytes);
  for (let s = 0; s < stripes - 1; s++) {
    xorInto(acc, material.subarray(s * keyBytes, (s + 1) * keyBytes));
    diffuse(hash, acc);
  }
  const last = material.subarray((stripes - 1) * keyBytes, stripes * keyBytes);
  for (let i = 0; i < keyBytes; i++) acc[i]! ^= last[i]!;
  return acc;
}

function xorInto(acc: Uint8Array, b: Uint8Array): void {
  for (let i = 0; i < acc.length; i++) acc[i]! ^= b[i]!;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Bytes of sectors per threadpool call (SectorCipher.decryptAsync). */
const THREADPOOL_PIECE = 256 << 10;

function checkWholeSectors(length: number): void {
  if (length % SECTOR_SIZE !== 0) throw new DiskError('EINVAL', `encrypted I/O of ${length} bytes is not whole sectors`);
}

/** AES-ECB over a whole buffer (a multiple of 16 bytes), no padding. */
function ecb(algorithm: string, key: Uint8Array, data: Uint8Array, encrypt: boolean): Buffer {
  const c = encrypt ? crypto().createCipheriv(algorithm, key, null) : crypto().createDecipheriv(algorithm, key, null);
  c.setAutoPadding(false);
  const out = c.update(data);
  c.final();
  return out;
}

/** A Uint32 view of `b`, or of an aligned copy when it does not start on a 4-byte boundary. */
function words(b: Uint8Array): Uint32Array {
  if (b.byteOffset % 4 === 0) return new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
  return new Uint32Array(new Uint8Array(b).buffer);
}

/**
 * out = data xor T for every 16-byte block, T being the sector's first tweak `t0` multiplied
 * by x (GF(2^128), little-endian, reduction 0x87) once per block (IEEE 1619 §5.2).
 */
function xorTweaks(data: Uint32Array, out: Uint32Array, t0: Uint32Array, sectors: number): void {
  for (let s = 0, at = 0; s < sectors; s++) {
    let w0 = t0[s * 4]!, w1 = t0[s * 4 + 1]!, w2 = t0[s * 4 + 2]!, w3 = t0[s * 4 + 3]!;
    for (let b = 0; b < SECTOR_SIZE / 16; b++, at += 4) {
      out[at] = data[at]! ^ w0;
      out[at + 1] = data[at + 1]! ^ w1;
      out[at + 2] = data[at + 2]! ^ w2;
      out[at + 3] = data[at + 3]! ^ w3;
      const carry = w3 >>> 31;
      w3 = ((w3 << 1) | (w2 >>> 31)) >>> 0;
      w2 = ((w2 << 1) | (w1 >>> 31)) >>> 0;
      w1 = ((w1 << 1) | (w0 >>> 31)) >>> 0;
      w0 = ((w0 << 1) ^ (carry ? 0x87 : 0)) >>> 0;
    }
  }
}

/** `data` xor `words` (same length), as a new buffer. */
function xorWords(data: Uint8Array, words: Uint32Array): Uint8Array {
  const out = new Uint8Array(data.length);
  out.set(data);
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length / 4);
  for (let i = 0; i < o.length; i++) o[i]! ^= words[i]!;
  return out;
}

export function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && crypto().timingSafeEqual(a, b);
}

export interface CipherSpec {
  /** Cipher family as the header names it ("aes"). */
  family: string;
  mode: CipherMode;
  ivgen: IvGenAlg;
  /** The ESSIV hash (also kept, and ignored, when a plain IV generator names one). */
  ivgenHash?: string;
  /** Bytes of key the mode takes (twice the cipher's for XTS). */
  keyBytes: number;
}

/** Bytes of key of the cipher itself (XTS keys are two of them). */
export function cipherKeyBytes(spec: Pick<CipherSpec, 'mode' | 'keyBytes'>): number {
  return spec.mode === 'xts' ? spec.keyBytes / 2 : spec.keyBytes;
}

/** Check that Node can run `spec` (and that its parts fit together), as QEMU does on open. */
export function checkCipherSpec(spec: CipherSpec): void {
  const sizes = CIPHER_KEY_SIZES[spec.family];
  const keyBytes = cipherKeyBytes(spec);
  if (!sizes || !sizes.includes(keyBytes) || (spec.mode === 'xts' && spec.keyBytes % 2 !== 0)) {
    throw new DiskError('EUNSUPPORTED', `Algorithm ${spec.family} with key size ${keyBytes} bytes not supported`);
  }
  if (spec.family !== 'aes') throw new DiskError('EUNSUPPORTED', `Cipher ${cipherAlgName(spec.family, keyBytes)} is not available (only AES is)`);
  if (spec.ivgen === 'essiv') {
    if (!spec.ivgenHash) throw new DiskError('EINVAL', 'Missing IV generator hash specification');
    checkHash(spec.ivgenHash);
    if (spec.mode === 'ecb') throw new DiskError('EUNSUPPORTED', 'ESSIV needs a cipher mode with an IV');
    const d = HASH_DIGEST_BYTES[spec.ivgenHash]!;
    if (!CIPHER_KEY_SIZES.aes!.includes(d)) throw new DiskError('EUNSUPPORTED', `No AES cipher with key size ${d} available`);
  }
}

/**
 * Encrypts and decrypts whole 512-byte sectors with one key: each sector gets the IV its
 * number gives (plain: low 32 bits, plain64: 64 bits, little-endian, zero-padded; essiv: the
 * 64-bit number encrypted under the hash of the key, with an AES key as long as that hash —
 * dm-crypt's choice, which QEMU follows).
 */
export class SectorCipher {
  private readonly algorithm: string;
  private readonly essivKey?: Buffer;
  private readonly essivAlgorithm?: string;
  /**
   * The IV width (32: plain, 64: plain64) when hostio's XTS can run this cipher: XTS without
   * ESSIV, and a key whose halves differ (OpenSSL refuses equal halves, as IEEE 1619 forbids
   * them; the engine's own XTS still decrypts such a volume, as QEMU does).
   */
  private readonly threadpoolIvBits?: 32 | 64;

  constructor(readonly spec: CipherSpec, private readonly key: Uint8Array) {
    checkCipherSpec(spec);
    if (key.length !== spec.keyBytes) throw new DiskError('EINVAL', `cipher key is ${key.length} bytes, not ${spec.keyBytes}`);
    this.algorithm = `aes-${cipherKeyBytes(spec) * 8}-${spec.mode}`;
    if (spec.ivgen === 'essiv') {
      this.essivKey = crypto().createHash(spec.ivgenHash!).update(key).digest();
      this.essivAlgorithm = `aes-${this.essivKey.length * 8}-ecb`;
    }
    const half = spec.keyBytes / 2;
    if (spec.mode === 'xts' && spec.ivgen !== 'essiv' && !digestsEqual(key.subarray(0, half), key.subarray(half))) {
      this.threadpoolIvBits = spec.ivgen === 'plain' ? 32 : 64;
    }
  }

  /** The IVs of `count` sectors from `first` on, 16 bytes each, in one buffer. */
  private ivs(first: number, count: number): Buffer {
    const out = Buffer.alloc(count * 16);
    for (let i = 0; i < count; i++) {
      if (this.spec.ivgen === 'plain') out.writeUInt32LE((first + i) % 2 ** 32, i * 16);
      else out.writeBigUInt64LE(BigInt(first + i), i * 16);
    }
    return this.essivKey ? ecb(this.essivAlgorithm!, this.essivKey, out, true) : out;
  }

  /**
   * XTS (IEEE 1619) over whole sectors: T = E_K2(IV) per sector, multiplied by x in GF(2^128)
   * for each following 16-byte block; every block is E_K1(P xor T) xor T (D_K1 to decrypt).
   */
  private xtsBulk(src: Uint8Array, dst: Uint8Array, firstSector: number, encrypt: boolean): void {
    const half = this.spec.keyBytes / 2;
    const algorithm = `aes-${half * 8}-ecb`;
    const sectors = src.length / SECTOR_SIZE;
    const t0 = words(ecb(algorithm, this.key.subarray(half), this.ivs(firstSector, sectors), true));
    // Two passes over the data with the tweaks recomputed (cheaper than storing them).
    const x = new Uint32Array(src.length / 4);
    xorTweaks(words(src), x, t0, sectors);
    const y = ecb(algorithm, this.key.subarray(0, half), new Uint8Array(x.buffer), encrypt);
    const aligned = dst.byteOffset % 4 === 0;
    const out = aligned ? new Uint32Array(dst.buffer, dst.byteOffset, dst.length / 4) : new Uint32Array(dst.length / 4);
    xorTweaks(words(y), out, t0, sectors);
    if (!aligned) dst.set(new Uint8Array(out.buffer));
  }

  /** CBC decryption of whole sectors: one ECB pass, then each block xor the ciphertext before it (the IV first). */
  private cbcDecryptBulk(src: Uint8Array, dst: Uint8Array, firstSector: number): void {
    const sectors = src.length / SECTOR_SIZE;
    const ivs = this.ivs(firstSector, sectors);
    // The previous ciphertext block of every block: the sector's IV, or the block before.
    const prev = new Uint8Array(src.length);
    prev.set(src.subarray(0, src.length - 16), 16);
    for (let s = 0; s < sectors; s++) prev.set(ivs.subarray(s * 16, s * 16 + 16), s * SECTOR_SIZE);
    const y = ecb(this.algorithm.replace(/-cbc$/, '-ecb'), this.key, src, false);
    dst.set(xorWords(y, new Uint32Array(prev.buffer, prev.byteOffset, prev.length / 4)));
  }

  private iv(sector: number): Buffer | null {
    if (this.spec.mode === 'ecb') return null;
    const iv = Buffer.alloc(16);
    if (this.spec.ivgen === 'plain') iv.writeUInt32LE(sector % 2 ** 32, 0);
    else iv.writeBigUInt64LE(BigInt(sector), 0);
    if (this.essivKey) {
      const c = crypto().createCipheriv(this.essivAlgorithm!, this.essivKey, null).setAutoPadding(false);
      return Buffer.concat([c.update(iv), c.final()]);
    }
    return iv;
  }

  /** Decrypt `buf` (whole sectors) in place; its first sector is number `firstSector`. */
  decrypt(buf: Uint8Array, firstSector: number): void {
    this.run(buf, buf, firstSector, false);
  }

  /** Encrypt `src` (whole sectors) into `dst` (which may be `src`). */
  encrypt(src: Uint8Array, dst: Uint8Array, firstSector: number): void {
    this.run(src, dst, firstSector, true);
  }

  /**
   * decrypt(), on the threadpool when it can be (XTS with a plain or plain64 IV, the LUKS
   * default, through hostio): pieces of THREADPOOL_PIECE bytes, so that one large read keeps
   * both cores busy, as QEMU's thread pool does.
   */
  async decryptAsync(buf: Uint8Array, firstSector: number): Promise<void> {
    await this.runAsync(buf, buf, firstSector, false);
  }

  /** encrypt(), on the threadpool when it can be (see decryptAsync). */
  async encryptAsync(src: Uint8Array, dst: Uint8Array, firstSector: number): Promise<void> {
    await this.runAsync(src, dst, firstSector, true);
  }

  private async runAsync(src: Uint8Array, dst: Uint8Array, firstSector: number, encrypt: boolean): Promise<void> {
    const xts = hostio?.xtsSectors;
    const ivBits = this.threadpoolIvBits;
    if (!xts || !ivBits || src.length <= SECTOR_SIZE) { this.run(src, dst, firstSector, encrypt); return; }
    checkWholeSectors(src.length);
    if (dst !== src) dst.set(src);
    const pieces: Promise<void>[] = [];
    for (let at = 0; at < dst.length; at += THREADPOOL_PIECE) {
      pieces.push(xts(this.key, dst.subarray(at, Math.min(dst.length, at + THREADPOOL_PIECE)), firstSector + at / SECTOR_SIZE, ivBits, encrypt));
    }
    await settled(pieces); // (none may still be writing into dst when this returns)
  }

  private run(src: Uint8Array, dst: Uint8Array, firstSector: number, encrypt: boolean): void {
    checkWholeSectors(src.length);
    if (src.length === 0) return;
    // A cipher object per sector costs microseconds each; XTS, and CBC decryption, can instead
    // run the whole buffer through one ECB call (AES-NI speed) with the chaining done here.
    if (LITTLE_ENDIAN && this.spec.mode === 'xts') { this.xtsBulk(src, dst, firstSector, encrypt); return; }
    if (LITTLE_ENDIAN && this.spec.mode === 'cbc' && !encrypt) { this.cbcDecryptBulk(src, dst, firstSector); return; }
    if (this.spec.mode === 'ecb') {
      // No IV: the whole run in one call.
      const c = encrypt ? crypto().createCipheriv(this.algorithm, this.key, null) : crypto().createDecipheriv(this.algorithm, this.key, null);
      c.setAutoPadding(false);
      dst.set(c.update(src));
      c.final();
      return;
    }
    for (let at = 0, sector = firstSector; at < src.length; at += SECTOR_SIZE, sector++) {
      const iv = this.iv(sector);
      const c = encrypt ? crypto().createCipheriv(this.algorithm, this.key, iv) : crypto().createDecipheriv(this.algorithm, this.key, iv);
      c.setAutoPadding(false);
      const out = c.update(src.subarray(at, at + SECTOR_SIZE));
      c.final();
      dst.set(out, at);
    }
  }
}
