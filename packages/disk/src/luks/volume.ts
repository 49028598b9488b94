/**
 * Unlocking and formatting LUKS1 volumes: a passphrase runs through PBKDF2 to a slot key,
 * which decrypts the slot's AF-split key material; merged, that is a candidate master key,
 * right when its PBKDF2 digest matches the header's (LUKS spec §3.2). Formatting does the
 * reverse for key slot 0 with a fresh random master key, the way QEMU lays volumes out.
 */
import { crypto } from '../builtins.js';
import { DiskError } from '../errors.js';
import {
  HASH_DIGEST_BYTES, SECTOR_SIZE, SectorCipher, afMerge, afSplit, checkCipherSpec, digestsEqual, parseCipherAlg,
  pbkdf2, pbkdf2PerSecond, CIPHER_MODES, IVGEN_ALGS, type CipherMode, type CipherSpec, type IvGenAlg,
} from './cipher.js';
import {
  DIGEST_BYTES, KEY_SLOTS, KEY_SLOT_ALIGN, LUKS_HEADER_SIZE, MAX_KDF_ITERATIONS, SALT_BYTES, STRIPES, materialBytes, serializeLuksHeader,
  type LuksHeader,
} from './header.js';

/** QEMU's words when no key slot opens with the passphrase. */
export const INVALID_PASSWORD = 'Invalid password, cannot unlock any keyslot';

/** Reads bytes of the LUKS area (offsets relative to the header's first byte). */
export type AreaReader = (buf: Uint8Array, offset: number) => Promise<number>;

/**
 * The master key in key slot `index` when `passphrase` opens it, else null (an inactive slot
 * opens with nothing). QEMU's qcrypto_block_luks_load_key.
 */
export async function loadKeySlot(h: LuksHeader, index: number, read: AreaReader, passphrase: Uint8Array, file: string): Promise<Uint8Array | null> {
  const slot = h.slots[index]!;
  if (!slot.active) return null;
  const slotKey = await pbkdf2(h.hashSpec, passphrase, slot.salt, slot.iterations, h.keyBytes);
  const bytes = materialBytes(h, slot);
  const material = new Uint8Array(Math.ceil(bytes / SECTOR_SIZE) * SECTOR_SIZE);
  const n = await read(material, slot.keyOffset * SECTOR_SIZE);
  if (n < bytes) throw new DiskError('ETRUNCATED', `${file}: LUKS key material lies past the end of the file`);
  // The material is encrypted like payload sectors, numbered from 0 at its start.
  new SectorCipher(h.spec, slotKey).decrypt(material, 0);
  const candidate = afMerge(h.hashSpec, material, h.keyBytes, slot.stripes);
  const digest = await pbkdf2(h.hashSpec, candidate, h.mkDigestSalt, h.mkDigestIterations, DIGEST_BYTES);
  return digestsEqual(digest, h.mkDigest) ? candidate : null;
}

/** The master key from the first key slot `passphrase` opens (QEMU's qcrypto_block_luks_find_key). */
export async function findMasterKey(h: LuksHeader, read: AreaReader, passphrase: Uint8Array, file: string): Promise<Uint8Array> {
  for (let i = 0; i < h.slots.length; i++) {
    const key = await loadKeySlot(h, i, read, passphrase, file);
    if (key) return key;
  }
  throw new DiskError('EACCES', INVALID_PASSWORD);
}

/** Unlock the volume with `passphrase`: the payload cipher, keyed with the master key. */
export async function unlockLuks(h: LuksHeader, read: AreaReader, passphrase: Uint8Array, file: string): Promise<SectorCipher> {
  return new SectorCipher(h.spec, await findMasterKey(h, read, passphrase, file));
}

/**
 * Seal `masterKey` into key slot `index` under `passphrase` (QEMU's qcrypto_block_luks_store_key):
 * a fresh salt, PBKDF2 iterations for `iterTime` ms, the AF-split key encrypted with the slot
 * key. Marks the slot active in `h` and returns the slot's key material to write at its offset.
 */
export async function sealKeySlot(h: LuksHeader, index: number, passphrase: Uint8Array, masterKey: Uint8Array, iterTime: number): Promise<Uint8Array> {
  const slot = h.slots[index]!;
  const salt = crypto().randomBytes(SALT_BYTES);
  const rate = await pbkdf2PerSecond(h.hashSpec, passphrase, salt, h.keyBytes);
  const iterations = clampIterations(Math.floor((rate * iterTime) / 1000));
  const slotKey = await pbkdf2(h.hashSpec, passphrase, salt, iterations, h.keyBytes);
  const material = afSplit(h.hashSpec, masterKey, slot.stripes);
  const padded = new Uint8Array(Math.ceil(material.length / SECTOR_SIZE) * SECTOR_SIZE);
  padded.set(material);
  new SectorCipher(h.spec, slotKey).encrypt(padded, padded, 0);
  Object.assign(slot, { active: true, iterations, salt });
  return padded.subarray(0, materialBytes(h, slot));
}

/** The encrypt.* / luks create options (names as qemu-img spells them, without a prefix). */
export interface LuksCreateOptions {
  'cipher-alg'?: string;
  'cipher-mode'?: string;
  'ivgen-alg'?: string;
  'ivgen-hash-alg'?: string;
  'hash-alg'?: string;
  'iter-time'?: string;
}

export const LUKS_OPTION_HELP: ReadonlyArray<{ name: keyof LuksCreateOptions | 'key-secret'; type: 'string' | 'number'; help: string }> = [
  { name: 'key-secret', type: 'string', help: 'ID of the secret that provides the keyslot passphrase' },
  { name: 'cipher-alg', type: 'string', help: 'Name of encryption cipher algorithm' },
  { name: 'cipher-mode', type: 'string', help: 'Name of encryption cipher mode' },
  { name: 'ivgen-alg', type: 'string', help: 'Name of IV generator algorithm' },
  { name: 'ivgen-hash-alg', type: 'string', help: 'Name of IV generator hash algorithm' },
  { name: 'hash-alg', type: 'string', help: 'Name of encryption hash algorithm' },
  { name: 'iter-time', type: 'number', help: 'Time to spend in PBKDF in milliseconds' },
];

/** The cipher a set of create options describes (QEMU's defaults: aes-256, xts, plain64, sha256). */
export function luksSpecFromOptions(o: LuksCreateOptions): { spec: CipherSpec; hash: string; iterTime: number } {
  const alg = o['cipher-alg'] ?? 'aes-256';
  const parsed = parseCipherAlg(alg);
  const refuse = (name: string, v: string) => new DiskError('EINVAL', `Parameter '${name}' does not accept value '${v}'`);
  if (!parsed) throw refuse('cipher-alg', alg);
  const mode = o['cipher-mode'] ?? 'xts';
  if (!CIPHER_MODES.includes(mode as CipherMode)) throw refuse('cipher-mode', mode);
  const ivgen = o['ivgen-alg'] ?? 'plain64';
  if (!IVGEN_ALGS.includes(ivgen as IvGenAlg)) throw refuse('ivgen-alg', ivgen);
  let ivgenHash = o['ivgen-hash-alg'];
  if (ivgen === 'essiv' && ivgenHash === undefined) ivgenHash = 'sha256';
  if (ivgenHash !== undefined && HASH_DIGEST_BYTES[ivgenHash] === undefined) throw refuse('ivgen-hash-alg', ivgenHash);
  const hash = o['hash-alg'] ?? 'sha256';
  if (HASH_DIGEST_BYTES[hash] === undefined) throw refuse('hash-alg', hash);
  const iterTime = Number(o['iter-time'] ?? 2000);
  const spec: CipherSpec = {
    family: parsed.family,
    mode: mode as CipherMode,
    ivgen: ivgen as IvGenAlg,
    ...(ivgenHash !== undefined ? { ivgenHash } : {}),
    keyBytes: mode === 'xts' ? parsed.keyBytes * 2 : parsed.keyBytes,
  };
  checkCipherSpec(spec);
  return { spec, hash, iterTime };
}

/** Bytes of the header area (payload offset) a volume with these options gets: header, then 8 key slots. */
export function luksAreaBytes(keyBytes: number): number {
  const slotBytes = Math.ceil((keyBytes * STRIPES) / KEY_SLOT_ALIGN) * KEY_SLOT_ALIGN;
  return KEY_SLOT_ALIGN + slotBytes * KEY_SLOTS;
}

export interface FormattedLuks {
  header: LuksHeader;
  /** The header area: the header, then slot 0's key material; `payloadOffset` sectors long. */
  area: Uint8Array;
  cipher: SectorCipher;
}

/** A new LUKS1 volume with one key slot opened by `passphrase`. */
export async function formatLuks(options: LuksCreateOptions, passphrase: Uint8Array): Promise<FormattedLuks> {
  const { spec, hash, iterTime } = luksSpecFromOptions(options);
  const masterKey = crypto().randomBytes(spec.keyBytes);
  const mkDigestSalt = crypto().randomBytes(SALT_BYTES);
  // iter-time is the time one slot's PBKDF2 takes; the master key digest gets an eighth of it.
  const mkRate = await pbkdf2PerSecond(hash, masterKey, mkDigestSalt, DIGEST_BYTES);
  const mkDigestIterations = clampIterations(Math.floor(Math.floor((mkRate * iterTime) / 1000) / 8));
  const mkDigest = await pbkdf2(hash, masterKey, mkDigestSalt, mkDigestIterations, DIGEST_BYTES);
  const splitBytes = spec.keyBytes * STRIPES;
  const slotSectors = Math.ceil(Math.ceil(splitBytes / SECTOR_SIZE) / (KEY_SLOT_ALIGN / SECTOR_SIZE)) * (KEY_SLOT_ALIGN / SECTOR_SIZE);
  const firstSlot = KEY_SLOT_ALIGN / SECTOR_SIZE;
  const header: LuksHeader = {
    cipherName: spec.family,
    cipherModeSpec: `${spec.mode}-${spec.ivgen}${spec.ivgenHash !== undefined ? `:${spec.ivgenHash}` : ''}`,
    hashSpec: hash,
    payloadOffset: firstSlot + slotSectors * KEY_SLOTS,
    keyBytes: spec.keyBytes,
    mkDigest, mkDigestSalt, mkDigestIterations,
    uuid: crypto().randomUUID(),
    slots: Array.from({ length: KEY_SLOTS }, (_, i) => ({
      active: false,
      iterations: 0,
      salt: new Uint8Array(SALT_BYTES),
      keyOffset: firstSlot + slotSectors * i,
      stripes: STRIPES,
    })),
    spec,
  };
  const material = await sealKeySlot(header, 0, passphrase, masterKey, iterTime);
  const area = new Uint8Array(header.payloadOffset * SECTOR_SIZE);
  area.set(serializeLuksHeader(header), 0);
  area.set(material, firstSlot * SECTOR_SIZE);
  return { header, area, cipher: new SectorCipher(spec, masterKey) };
}

function clampIterations(n: number): number {
  // QEMU's floor is 1000 for both; our ceiling is the one we accept on open.
  return Math.min(MAX_KDF_ITERATIONS, Math.max(1000, n));
}

/**
 * Write a formatted volume's header and slot 0's key material (relative offsets); the rest of
 * the area stays unwritten (QEMU leaves it sparse too).
 */
export async function writeLuksArea(volume: FormattedLuks, write: (buf: Uint8Array, offset: number) => Promise<void>): Promise<void> {
  const slot = volume.header.slots[0]!;
  const start = slot.keyOffset * SECTOR_SIZE;
  await write(volume.area.subarray(0, LUKS_HEADER_SIZE), 0);
  await write(volume.area.subarray(start, start + materialBytes(volume.header, slot)), start);
}
