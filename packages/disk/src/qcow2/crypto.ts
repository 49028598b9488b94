/**
 * Encrypted qcow2 (qcow2.txt "Full disk encryption header pointer", crypt_method 2): the
 * header extension 0x0537be77 points at clusters holding a LUKS1 header and its key
 * material. Data clusters are encrypted in 512-byte sectors whose IVs come from the host
 * offset (QEMU sets crypt_physical_offset for LUKS), so an EncryptedSource over the data file
 * serves the read and write paths unchanged. Metadata (L1/L2, refcounts) stays in clear.
 *
 * crypt_method 1 (legacy "aes": AES-128-CBC keyed with the passphrase itself, zero-padded or
 * cut to 16 bytes, plain64 IVs from the guest offset) is read, as qemu-img still reads it;
 * writing it is refused.
 */
import { DiskError } from '../errors.js';
import type { OpenOptions } from '../format.js';
import type { ByteSource } from '../source.js';
import { LUKS_HEADER_SIZE, parseLuksHeader, type LuksHeader } from '../luks/header.js';
import { unlockLuks } from '../luks/volume.js';
import { EncryptedSource } from '../luks/source.js';
import { SectorCipher } from '../luks/cipher.js';
import { CRYPT_AES, CRYPT_LUKS, EXT_CRYPTO_HEADER, QCOW2_MAGIC, type Qcow2Header } from './layout.js';
import { isLuks1 } from '../luks/header.js';
import type { LuksArea } from '../luks/keyslots.js';

/** QEMU's words when an encrypted image is opened for I/O without its secret. */
export const KEY_SECRET_REQUIRED = "Parameter 'encrypt.key-secret' is required for cipher";

/** The crypto header extension: where the LUKS area starts in the file, and its length. */
export function cryptoHeaderPointer(h: Qcow2Header, fileSize: number, file: string): { offset: number; length: number } {
  const ext = h.extensions.find((e) => e.type === EXT_CRYPTO_HEADER);
  if (!ext) throw new DiskError('ECORRUPT', `${file}: qcow2 encrypt.format=luks image has no crypto header extension`);
  if (ext.data.length !== 16) throw new DiskError('ECORRUPT', `${file}: qcow2 crypto header extension is ${ext.data.length} bytes, not 16`);
  const v = new DataView(ext.data.buffer, ext.data.byteOffset, 16);
  const offset = v.getBigUint64(0, false), length = v.getBigUint64(8, false);
  const clusterSize = 2 ** h.clusterBits;
  if (offset === 0n || offset % BigInt(clusterSize) !== 0n || offset + length > BigInt(fileSize) || length < BigInt(LUKS_HEADER_SIZE)) {
    throw new DiskError('ECORRUPT', `${file}: qcow2 crypto header (offset 0x${offset.toString(16)}, length ${length}) lies outside the file`);
  }
  return { offset: Number(offset), length: Number(length) };
}

export interface Qcow2Crypto {
  luks?: LuksHeader;
  /** Where the LUKS area lies in the file (key slot amends write there). */
  luksArea?: { offset: number; length: number };
  /** The passphrase the image was opened with. */
  secret?: Uint8Array;
  /** Wrap the data file so that data clusters are encrypted and decrypted (absent: header only). */
  wrap?: (data: ByteSource) => ByteSource;
  /** Legacy AES: the cipher whose IVs come from guest offsets (the reader decrypts per run). */
  guestCipher?: SectorCipher;
}

export async function openQcow2Crypto(source: ByteSource, h: Qcow2Header, options: OpenOptions): Promise<Qcow2Crypto> {
  if (h.cryptMethod === CRYPT_AES) {
    if (options.headerOnly) return {};
    if (options.secret === undefined) throw new DiskError('EACCES', KEY_SECRET_REQUIRED);
    if (options.writable) {
      throw new DiskError('EUNSUPPORTED', `${source.name}: writing qcow2 images with the legacy AES encryption is not supported; convert them to encrypt.format=luks`);
    }
    const key = new Uint8Array(16);
    key.set(options.secret.subarray(0, 16));
    return { guestCipher: new SectorCipher({ family: 'aes', mode: 'cbc', ivgen: 'plain64', keyBytes: 16 }, key) };
  }
  if (h.cryptMethod !== CRYPT_LUKS) throw new DiskError('EUNSUPPORTED', `${source.name}: unknown qcow2 encryption method ${h.cryptMethod}`);
  const fileSize = await source.size();
  const area = cryptoHeaderPointer(h, fileSize, source.name);
  const head = new Uint8Array(LUKS_HEADER_SIZE);
  if (await source.read(head, area.offset) !== head.length) throw new DiskError('ETRUNCATED', `${source.name}: LUKS header lies past the end of the file`);
  const luks = parseLuksHeader(head, area.length, source.name);
  // Like QEMU's BDRV_O_NO_IO opens, a header-only open does not even look at the secret.
  if (options.headerOnly) return { luks };
  if (options.secret === undefined) throw new DiskError('EACCES', KEY_SECRET_REQUIRED);
  const cipher = await unlockLuks(luks, luksAreaOf(source, area).read, options.secret, source.name);
  return { luks, luksArea: area, secret: options.secret, wrap: (data) => new EncryptedSource(data, cipher, 0) };
}

/** The LUKS area inside the file, addressed from the LUKS header's first byte and kept inside it. */
export function luksAreaOf(source: ByteSource, area: { offset: number; length: number }): LuksArea {
  return {
    read: async (buf, offset) => offset >= area.length ? 0 : source.read(buf.subarray(0, Math.min(buf.length, area.length - offset)), area.offset + offset),
    write: async (buf, offset) => {
      if (offset + buf.length > area.length) throw new DiskError('ECORRUPT', `${source.name}: LUKS key material lies past the crypto header area`);
      await source.write(buf, area.offset + offset);
    },
    flush: () => source.flush(),
  };
}

/** Whether the first bytes of a file are a LUKS1 container or a qcow2 image with crypt_method set. */
export function isEncryptedHead(head: Uint8Array): boolean {
  if (isLuks1(head)) return true;
  if (head.length < 36) return false;
  const v = new DataView(head.buffer, head.byteOffset, head.length);
  return v.getUint32(0, false) === QCOW2_MAGIC && v.getUint32(32, false) !== 0;
}
