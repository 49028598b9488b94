/**
 * The LUKS1 header (LUKS On-Disk Format Specification 1.2.x, §2): 592 big-endian bytes —
 * magic, version, cipher name, cipher mode ("xts-plain64", "cbc-essiv:sha256"), hash spec,
 * payload offset and key material offsets in 512-byte sectors, key size, the master key's
 * PBKDF2 digest, a UUID and eight key slots.
 *
 * Parsing validates everything a hostile header could use to make us burn CPU or memory:
 * stripes, iteration counts, key material placement, payload offset.
 */
import { DiskError } from '../errors.js';
import { LUKS_MAGIC } from '../fsid/luks.js';
import {
  CIPHER_MODES, IVGEN_ALGS, SECTOR_SIZE, checkCipherSpec, checkHash, cipherAlgName, cipherKeyBytes,
  type CipherMode, type CipherSpec, type IvGenAlg,
} from './cipher.js';

export const LUKS_HEADER_SIZE = 592;
export const KEY_SLOTS = 8;
/** The only stripe count QEMU and cryptsetup write for LUKS1 (and the only one QEMU opens). */
export const STRIPES = 4000;
export const SLOT_ENABLED = 0x00ac71f3;
export const SLOT_DISABLED = 0x0000dead;
export const DIGEST_BYTES = 20;
export const SALT_BYTES = 32;
/** Key material starts at this byte offset, and each slot's area is aligned to it. */
export const KEY_SLOT_ALIGN = 4096;

/**
 * PBKDF2 rounds we agree to run for one key slot or the master key digest. A header from an
 * untrusted source can ask for 2^32 - 1 (hours of CPU); images made with QEMU's default
 * iter-time (2 s) on a fast machine need a few million.
 */
export const MAX_KDF_ITERATIONS = 1 << 25;

export interface LuksKeySlot {
  active: boolean;
  iterations: number;
  salt: Uint8Array;
  /** Start of the slot's key material, in sectors from the start of the header. */
  keyOffset: number;
  stripes: number;
}

export interface LuksHeader {
  cipherName: string;
  /** The mode string as stored ("xts-plain64"). */
  cipherModeSpec: string;
  hashSpec: string;
  /** Start of the payload, in sectors. */
  payloadOffset: number;
  keyBytes: number;
  mkDigest: Uint8Array;
  mkDigestSalt: Uint8Array;
  mkDigestIterations: number;
  uuid: string;
  slots: LuksKeySlot[];
  /** The parsed cipher of the volume (and of its key material). */
  spec: CipherSpec;
}

function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder('latin1').decode(end < 0 ? b : b.subarray(0, end));
}

function putString(buf: Uint8Array, at: number, len: number, s: string, what: string): void {
  const bytes = new TextEncoder().encode(s);
  if (bytes.length >= len) throw new DiskError('EINVAL', `${what} '${s}' is too long for LUKS header`);
  buf.set(bytes, at);
}

export function isLuks1(head: Uint8Array): boolean {
  return head.length >= 8 && LUKS_MAGIC.every((b, i) => head[i] === b) && head[6] === 0 && head[7] === 1;
}

/** "xts-plain64", "cbc-essiv:sha256" → mode, IV generator and its hash. */
export function parseCipherMode(spec: string): { mode: CipherMode; ivgen: IvGenAlg; ivgenHash?: string } {
  const dash = spec.indexOf('-');
  if (dash < 0) throw new DiskError('EUNSUPPORTED', `Unexpected cipher mode string format ${spec}`);
  const mode = spec.slice(0, dash);
  let ivgen = spec.slice(dash + 1);
  let ivgenHash: string | undefined;
  const colon = ivgen.indexOf(':');
  if (colon >= 0) {
    ivgenHash = ivgen.slice(colon + 1);
    ivgen = ivgen.slice(0, colon);
    checkHash(ivgenHash);
  }
  if (!CIPHER_MODES.includes(mode as CipherMode)) throw new DiskError('EUNSUPPORTED', `Cipher mode ${mode} not supported`);
  if (!IVGEN_ALGS.includes(ivgen as IvGenAlg)) throw new DiskError('EUNSUPPORTED', `IV generator ${ivgen} not supported`);
  return { mode: mode as CipherMode, ivgen: ivgen as IvGenAlg, ...(ivgenHash !== undefined ? { ivgenHash } : {}) };
}

/**
 * Parse and check a LUKS1 header. `areaBytes` is how many bytes the header's area holds
 * (the file, or qcow2's crypto header extension): key material must lie inside it.
 */
export function parseLuksHeader(buf: Uint8Array, areaBytes: number, file: string): LuksHeader {
  if (buf.length < LUKS_HEADER_SIZE) throw new DiskError('ETRUNCATED', `${file}: LUKS header is truncated`);
  if (!LUKS_MAGIC.every((b, i) => buf[i] === b)) throw new DiskError('EFORMAT', `${file}: Volume is not in LUKS format`);
  const v = new DataView(buf.buffer, buf.byteOffset, LUKS_HEADER_SIZE);
  const version = v.getUint16(6, false);
  if (version !== 1) throw new DiskError('EUNSUPPORTED', `${file}: LUKS version ${version} is not supported`);
  const cipherName = cString(buf.subarray(8, 40));
  const cipherModeSpec = cString(buf.subarray(40, 72));
  const hashSpec = cString(buf.subarray(72, 104));
  const payloadOffset = v.getUint32(104, false);
  const keyBytes = v.getUint32(108, false);
  const mode = parseCipherMode(cipherModeSpec);
  checkHash(hashSpec);
  const spec: CipherSpec = { family: cipherName, keyBytes, ...mode };
  checkCipherSpec(spec);
  const h: LuksHeader = {
    cipherName, cipherModeSpec, hashSpec, payloadOffset, keyBytes, spec,
    mkDigest: buf.slice(112, 132),
    mkDigestSalt: buf.slice(132, 164),
    mkDigestIterations: v.getUint32(164, false),
    uuid: cString(buf.subarray(168, 208)),
    slots: [],
  };
  for (let i = 0; i < KEY_SLOTS; i++) {
    const at = 208 + i * 48;
    const state = v.getUint32(at, false);
    h.slots.push({
      active: state === SLOT_ENABLED,
      iterations: v.getUint32(at + 4, false),
      salt: buf.slice(at + 8, at + 40),
      keyOffset: v.getUint32(at + 40, false),
      stripes: v.getUint32(at + 44, false),
    });
  }
  checkLayout(h, areaBytes, file);
  return h;
}

/** Bytes of one slot's key material (key size times stripes). */
export function materialBytes(h: Pick<LuksHeader, 'keyBytes'>, slot: Pick<LuksKeySlot, 'stripes'>): number {
  return h.keyBytes * slot.stripes;
}

function checkLayout(h: LuksHeader, areaBytes: number, file: string): void {
  const corrupt = (msg: string) => new DiskError('ECORRUPT', `${file}: LUKS header is corrupt: ${msg}`);
  if (h.mkDigestIterations < 1 || h.mkDigestIterations > MAX_KDF_ITERATIONS) {
    throw new DiskError('ELIMIT', `${file}: LUKS master key digest asks for ${h.mkDigestIterations} PBKDF2 iterations (limit ${MAX_KDF_ITERATIONS})`);
  }
  const headerSectors = Math.ceil(LUKS_HEADER_SIZE / SECTOR_SIZE);
  const spans: Array<[number, number, number]> = [];
  h.slots.forEach((s, i) => {
    if (s.stripes !== STRIPES) throw corrupt(`key slot ${i} has ${s.stripes} stripes, not ${STRIPES}`);
    const start = s.keyOffset;
    const end = start + Math.ceil(materialBytes(h, s) / SECTOR_SIZE);
    if (start < headerSectors) throw corrupt(`key slot ${i} material overlaps the header`);
    if (h.payloadOffset !== 0 && end > h.payloadOffset) throw corrupt(`key slot ${i} material overlaps the payload`);
    if (s.active) {
      if (s.iterations < 1 || s.iterations > MAX_KDF_ITERATIONS) {
        throw new DiskError('ELIMIT', `${file}: LUKS key slot ${i} asks for ${s.iterations} PBKDF2 iterations (limit ${MAX_KDF_ITERATIONS})`);
      }
      if (end * SECTOR_SIZE > areaBytes) throw corrupt(`key slot ${i} material lies past the end of the file`);
    }
    for (const [a, b, j] of spans) if (start < b && a < end) throw corrupt(`key slots ${j} and ${i} overlap`);
    spans.push([start, end, i]);
  });
}

/** Serialise a header into its 592 bytes. */
export function serializeLuksHeader(h: LuksHeader): Uint8Array {
  const buf = new Uint8Array(LUKS_HEADER_SIZE);
  const v = new DataView(buf.buffer);
  buf.set(LUKS_MAGIC, 0);
  v.setUint16(6, 1, false);
  putString(buf, 8, 32, h.cipherName, 'Cipher name');
  putString(buf, 40, 32, h.cipherModeSpec, 'Cipher mode');
  putString(buf, 72, 32, h.hashSpec, 'Hash name');
  v.setUint32(104, h.payloadOffset, false);
  v.setUint32(108, h.keyBytes, false);
  buf.set(h.mkDigest, 112);
  buf.set(h.mkDigestSalt, 132);
  v.setUint32(164, h.mkDigestIterations, false);
  putString(buf, 168, 40, h.uuid, 'UUID');
  h.slots.forEach((s, i) => {
    const at = 208 + i * 48;
    v.setUint32(at, s.active ? SLOT_ENABLED : SLOT_DISABLED, false);
    v.setUint32(at + 4, s.iterations, false);
    buf.set(s.salt, at + 8);
    v.setUint32(at + 40, s.keyOffset, false);
    v.setUint32(at + 44, s.stripes, false);
  });
  return buf;
}

/**
 * What `qemu-img info` prints for a LUKS volume, keys in the order qemu-img prints them.
 * `format` is set for qcow2's "encrypt" block (raw LUKS images have no such key).
 */
export function luksInfo(h: LuksHeader, format?: string): Record<string, unknown> {
  const data: Record<string, unknown> = {
    'ivgen-alg': h.spec.ivgen,
    'hash-alg': h.hashSpec,
    'cipher-alg': cipherAlgName(h.cipherName, cipherKeyBytes(h.spec)),
    uuid: h.uuid,
  };
  if (h.spec.ivgen === 'essiv' && h.spec.ivgenHash) data['ivgen-hash-alg'] = h.spec.ivgenHash;
  if (format !== undefined) data.format = format;
  data['cipher-mode'] = h.spec.mode;
  data.slots = h.slots.map((s) => s.active
    ? { active: true, iters: s.iterations, 'key-offset': s.keyOffset * SECTOR_SIZE, stripes: s.stripes }
    : { active: false, 'key-offset': s.keyOffset * SECTOR_SIZE });
  data['payload-offset'] = h.payloadOffset * SECTOR_SIZE;
  data['master-key-iters'] = h.mkDigestIterations;
  return data;
}
