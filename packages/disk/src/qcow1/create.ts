/**
 * `qemu-img create -f qcow` as QEMU 7.2's block/qcow.c makes it: the 48-byte header, the
 * backing file name right after it, the L1 table at the next 8-byte boundary written as whole
 * zero sectors. 4 KiB clusters and 4 KiB L2 tables, or with a backing file 512-byte clusters
 * (no copy of unchanged sectors) and 32 KiB L2 tables. Encryption (the legacy AES method) is
 * only a header field: the key comes from the passphrase when the image is opened.
 */
import { DiskError } from '../errors.js';
import { checkEncryptionAlias, type CreateOption, type CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import { QCOW1_MAGIC, QCOW1_HEADER_BYTES } from './header.js';

export const QCOW1_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Format of the backing image' },
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
  { name: 'encrypt.format', type: 'string', help: "Encrypt the image, format choices: 'aes'" },
  { name: 'encrypt.key-secret', type: 'string', help: 'ID of the secret that provides the AES encryption key' },
];

const SECTOR = 512;
const CRYPT_AES = 1;

export async function createQcow1(target: ByteSource, request: CreateRequest): Promise<void> {
  const o = request.options;
  checkEncryptionAlias(o);
  const encrypt = o.encryption === 'on' || o['encrypt.format'] !== undefined;
  if (o['encrypt.format'] !== undefined && o['encrypt.format'] !== 'aes') throw new DiskError('EUNSUPPORTED', 'Unsupported encryption format');
  if (encrypt && !request.secret) throw new DiskError('EINVAL', "Parameter 'encrypt.key-secret' is required for cipher");
  // QEMU rounds the size up to whole sectors.
  const size = Math.ceil(request.size / SECTOR) * SECTOR;
  if (size === 0) throw new DiskError('EINVAL', 'Image size is too small, cannot be zero length');
  const name = request.backingFile !== undefined ? new TextEncoder().encode(request.backingFile) : undefined;
  const [clusterBits, l2Bits] = name ? [9, 12] : [12, 9];
  let headerSize = QCOW1_HEADER_BYTES + (name?.length ?? 0);
  headerSize = Math.ceil(headerSize / 8) * 8;
  const l1Entries = Math.ceil(size / 2 ** (clusterBits + l2Bits));
  const head = new Uint8Array(headerSize);
  const v = new DataView(head.buffer);
  v.setUint32(0, QCOW1_MAGIC, false);
  v.setUint32(4, 1, false);
  if (name) {
    v.setBigUint64(8, BigInt(QCOW1_HEADER_BYTES), false);
    v.setUint32(16, name.length, false);
    head.set(name, QCOW1_HEADER_BYTES);
  }
  v.setBigUint64(24, BigInt(size), false);
  v.setUint8(32, clusterBits);
  v.setUint8(33, l2Bits);
  v.setUint32(36, encrypt ? CRYPT_AES : 0, false);
  v.setBigUint64(40, BigInt(headerSize), false);
  await target.write(head, 0);
  // The L1 table is all zeroes, written in whole sectors: the file ends after the last one.
  await target.truncate(headerSize + Math.ceil((l1Entries * 8) / SECTOR) * SECTOR);
}
