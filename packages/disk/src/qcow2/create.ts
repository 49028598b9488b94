/**
 * `qemu-img create -f qcow2`: the options qemu-img 7.2 offers (declared in the order its
 * "Formatting ..." line prints them), their validation with qemu-img's messages, and a new
 * image laid out as QEMU lays it out: header in cluster 0, refcount table, refcount blocks,
 * the L1 table, then (with preallocation) the L2 tables and the data clusters.
 */
import { DiskError } from '../errors.js';
import { checkEncryptionAlias, type CreateOption, type CreateRequest } from '../format.js';
import type { ByteSource } from '../source.js';
import { LUKS_OPTION_HELP, formatLuks, luksAreaBytes, luksSpecFromOptions, writeLuksArea, type LuksCreateOptions } from '../luks/volume.js';
import { luksCreateOptions } from '../luks/index.js';
import { KEY_SECRET_REQUIRED } from './crypto.js';
import {
  AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, CRYPT_LUKS, EXT_CRYPTO_HEADER, COMPRESSION_ZLIB, COMPRESSION_ZSTD, INCOMPAT_COMPRESSION, INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2, MAX_L1_SIZE_BYTES, MAX_REFTABLE_SIZE_BYTES, STANDARD_FEATURE_NAMES, geometry, serializeHeader, setRefcount, type Qcow2Header,
} from './layout.js';

export const QCOW2_CREATE_OPTIONS: readonly CreateOption[] = [
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
  { name: 'encrypt.format', type: 'string', help: "Encrypt the image, format choices: 'aes', 'luks'" },
  // The LUKS options with an "encrypt." prefix (qcow2 words key-secret's help its own way).
  ...LUKS_OPTION_HELP.map((o) => ({
    ...o,
    name: `encrypt.${o.name}`,
    ...(o.name === 'key-secret' ? { help: 'ID of secret providing qcow AES key or LUKS passphrase' } : {}),
  })),
  { name: 'cluster_size', type: 'size', help: 'qcow2 cluster size', default: '65536' },
  { name: 'extended_l2', type: 'bool', help: 'Extended L2 tables', default: 'off' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, metadata, falloc, full)' },
  { name: 'compression_type', type: 'string', help: 'Compression method used for image cluster compression', default: 'zlib' },
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'compat', type: 'string', help: 'Compatibility level (v2 [0.10] or v3 [1.1])' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Image format of the base image' },
  { name: 'data_file', type: 'string', help: 'File name of an external data file' },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates', default: 'off' },
  { name: 'refcount_bits', type: 'number', help: 'Width of a reference count entry in bits', default: '16' },
];

/** qemu-img's wording for a v3-only feature asked of a v2 image. */
const needsV3 = (what: string) => `${what} only supported with compatibility level 1.1 and above (use version=v3 or greater)`;

export interface Qcow2CreateParams {
  size: number;
  version: 2 | 3;
  clusterBits: number;
  refcountOrder: number;
  extendedL2: boolean;
  lazyRefcounts: boolean;
  compressionType: number;
  preallocation: 'off' | 'metadata' | 'falloc' | 'full';
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  dataFileRaw: boolean;
  /** encrypt.format=luks: the LUKS options (without their prefix). */
  luks?: LuksCreateOptions;
}

/** Validate `-o` options the way qemu-img does; messages are qemu-img's. */
export function createParams(request: CreateRequest): Qcow2CreateParams {
  const o = request.options;
  const bool = (k: string) => o[k] === 'on';
  const encryptFormat = bool('encryption') ? 'aes' : o['encrypt.format'];
  checkEncryptionAlias(o);
  if (encryptFormat !== undefined && encryptFormat !== 'luks') {
    if (encryptFormat === 'aes') throw new DiskError('EUNSUPPORTED', 'Creating qcow2 images with the legacy AES encryption is not supported; use encrypt.format=luks');
    throw new DiskError('EINVAL', `Parameter 'encrypt.format' does not accept value '${encryptFormat}'`);
  }
  let luks: LuksCreateOptions | undefined;
  if (encryptFormat === 'luks') {
    luks = luksCreateOptions(o, 'encrypt.');
    luksSpecFromOptions(luks); // values checked before anything is written
  } else {
    const stray = Object.keys(o).find((k) => k.startsWith('encrypt.') && k !== 'encrypt.format');
    if (stray) throw new DiskError('EINVAL', `Parameter '${stray}' is only valid with encrypt.format=luks`);
  }
  const compat = o.compat ?? '1.1';
  let version: 2 | 3;
  if (compat === '0.10' || compat === 'v2') version = 2;
  else if (compat === '1.1' || compat === 'v3') version = 3;
  else throw new DiskError('EINVAL', `Parameter 'version' does not accept value '${compat}'`);
  const clusterSize = Number(o.cluster_size ?? 65536);
  if (!Number.isInteger(clusterSize) || clusterSize < 512 || clusterSize > 2 << 20 || (clusterSize & (clusterSize - 1)) !== 0) {
    throw new DiskError('EINVAL', 'Cluster size must be a power of two between 512 and 2048k');
  }
  const prealloc = o.preallocation ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) throw new DiskError('EINVAL', `Parameter 'preallocation' does not accept value '${prealloc}'`);
  const lazyRefcounts = bool('lazy_refcounts');
  if (lazyRefcounts && version < 3) throw new DiskError('EINVAL', needsV3('Lazy refcounts'));
  const refcountBits = Number(o.refcount_bits ?? 16);
  if (!Number.isInteger(refcountBits) || refcountBits < 1 || refcountBits > 64 || (refcountBits & (refcountBits - 1)) !== 0) {
    throw new DiskError('EINVAL', 'Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw new DiskError('EINVAL', 'Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
  }
  const extendedL2 = bool('extended_l2');
  if (extendedL2 && version < 3) throw new DiskError('EINVAL', 'Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  if (extendedL2 && clusterSize < 16384) throw new DiskError('EINVAL', 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  const ct = o.compression_type ?? 'zlib';
  if (ct !== 'zlib' && ct !== 'zstd') throw new DiskError('EINVAL', `Parameter 'compression-type' does not accept value '${ct}'`);
  if (ct !== 'zlib' && version < 3) throw new DiskError('EINVAL', 'Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  const dataFile = o.data_file;
  const dataFileRaw = bool('data_file_raw');
  if (dataFileRaw && dataFile === undefined) throw new DiskError('EINVAL', 'data-file-raw requires data-file');
  if (dataFile !== undefined && version < 3) throw new DiskError('EINVAL', 'External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  if (dataFileRaw && request.backingFile !== undefined) throw new DiskError('EINVAL', 'Backing file and data-file-raw cannot be used at the same time');
  // A raw data file must be readable as the disk by itself, so every guest cluster is
  // mapped from the start (QEMU promotes preallocation=off to metadata here).
  const preallocation = (dataFileRaw && prealloc === 'off' ? 'metadata' : prealloc) as Qcow2CreateParams['preallocation'];
  return {
    size: request.size,
    version,
    clusterBits: Math.log2(clusterSize),
    refcountOrder: Math.log2(refcountBits),
    extendedL2,
    lazyRefcounts,
    compressionType: ct === 'zstd' ? COMPRESSION_ZSTD : COMPRESSION_ZLIB,
    preallocation,
    ...(request.backingFile !== undefined ? { backingFile: request.backingFile } : {}),
    ...(request.backingFormat !== undefined ? { backingFormat: request.backingFormat } : {}),
    ...(dataFile !== undefined ? { dataFile } : {}),
    dataFileRaw,
    ...(luks ? { luks } : {}),
  };
}

/** Where everything goes in a new image (offsets in clusters). */
export interface Qcow2Plan {
  header: Qcow2Header;
  reftableClusters: number;
  refblocks: number;
  l1Clusters: number;
  /** The LUKS header area (encrypt.format=luks), right after the L1 table; 0 clusters without. */
  cryptoClusters: number;
  cryptoBytes: number;
  /** Preallocated L2 tables and data clusters (0 without preallocation). */
  l2Tables: number;
  dataClusters: number;
  /** Clusters counted in the refcounts: everything above, in the image file. */
  totalClusters: number;
  /** Bytes of the image file (the L1 table is not padded to a whole cluster, as in QEMU). */
  fileSize: number;
}

/** Lay out a new image: sizes of every region, iterating until the refcounts cover themselves. */
export function planImage(p: Qcow2CreateParams): Qcow2Plan {
  const cs = 2 ** p.clusterBits;
  const probe: Qcow2Header = {
    version: p.version, backingFileOffset: 0, backingFileSize: 0, clusterBits: p.clusterBits, size: p.size, cryptMethod: 0,
    l1Size: 0, l1TableOffset: 0, refcountTableOffset: cs, refcountTableClusters: 1, nbSnapshots: 0, snapshotsOffset: 0,
    incompatibleFeatures: (p.extendedL2 ? INCOMPAT_EXTL2 : 0n) | (p.compressionType !== COMPRESSION_ZLIB ? INCOMPAT_COMPRESSION : 0n) | (p.dataFile !== undefined ? INCOMPAT_DATA_FILE : 0n),
    compatibleFeatures: p.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: p.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
    refcountOrder: p.refcountOrder, headerLength: 0, compressionType: p.compressionType,
    // QEMU 7.2 writes the feature name table only into header clusters larger than 4 KiB.
    extensions: [], featureNames: p.version >= 3 && cs > 4096 ? STANDARD_FEATURE_NAMES : [],
    ...(p.backingFile !== undefined ? { backingFile: p.backingFile } : {}),
    ...(p.backingFormat !== undefined ? { backingFormat: p.backingFormat } : {}),
    ...(p.dataFile !== undefined ? { dataFile: p.dataFile } : {}),
  };
  const geo = geometry(probe);
  const l1Size = geo.l1EntriesNeeded;
  if (l1Size * 8 > MAX_L1_SIZE_BYTES) {
    throw new DiskError('EINVAL', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const cryptoBytes = p.luks ? luksAreaBytes(luksSpecFromOptions(p.luks).spec.keyBytes) : 0;
  const cryptoClusters = Math.ceil(cryptoBytes / cs);
  const prealloc = p.preallocation !== 'off';
  const l2Tables = prealloc ? l1Size : 0;
  // With an external data file the data clusters live there, not in the image.
  const dataClusters = prealloc && p.dataFile === undefined ? Math.ceil(p.size / cs) : 0;
  const rbEntries = geo.refcountBlockEntries;
  let reftableClusters = 1;
  let refblocks = 1;
  for (;;) {
    const total = 1 + reftableClusters + refblocks + l1Clusters + cryptoClusters + l2Tables + dataClusters;
    const needBlocks = Math.ceil(total / rbEntries);
    const needTable = Math.max(1, Math.ceil((needBlocks * 8) / cs));
    if (needBlocks === refblocks && needTable === reftableClusters) break;
    refblocks = Math.max(refblocks, needBlocks);
    reftableClusters = Math.max(reftableClusters, needTable);
  }
  if (reftableClusters * cs > MAX_REFTABLE_SIZE_BYTES) {
    throw new DiskError('EINVAL', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  const l1Offset = (1 + reftableClusters + refblocks) * cs;
  const header: Qcow2Header = {
    ...probe,
    l1Size,
    l1TableOffset: l1Offset,
    refcountTableClusters: reftableClusters,
  };
  if (cryptoClusters) {
    // qcow2.txt "Full disk encryption header pointer": offset and length of the LUKS area.
    const ptr = new Uint8Array(16);
    const pv = new DataView(ptr.buffer);
    pv.setBigUint64(0, BigInt(l1Offset + l1Clusters * cs), false);
    pv.setBigUint64(8, BigInt(cryptoBytes), false);
    header.cryptMethod = CRYPT_LUKS;
    header.extensions = [{ type: EXT_CRYPTO_HEADER, offset: 0, data: ptr }];
  }
  const totalClusters = 1 + reftableClusters + refblocks + l1Clusters + cryptoClusters + l2Tables + dataClusters;
  const fileSize = prealloc || cryptoClusters ? totalClusters * cs : l1Offset + Math.max(l1Size * 8, 0);
  return { header, reftableClusters, refblocks, l1Clusters, cryptoClusters, cryptoBytes, l2Tables, dataClusters, totalClusters, fileSize };
}

/** Write a new, empty (or preallocated) image into `target`. */
export async function createQcow2(target: ByteSource, request: CreateRequest): Promise<void> {
  const params = createParams(request);
  if (params.luks && request.secret === undefined) throw new DiskError('EACCES', KEY_SECRET_REQUIRED);
  const plan = planImage(params);
  const h = plan.header;
  const cs = 2 ** h.clusterBits;
  const geo = geometry(h);
  await target.truncate(0);
  await target.write(serializeHeader(h, cs), 0);

  // Refcount table: one entry per refcount block, the blocks right after the table.
  const firstBlock = 1 + plan.reftableClusters;
  const reftable = new Uint8Array(plan.reftableClusters * cs);
  const rt = new DataView(reftable.buffer);
  for (let i = 0; i < plan.refblocks; i++) rt.setBigUint64(i * 8, BigInt((firstBlock + i) * cs), false);
  await target.write(reftable, cs);

  // Refcount blocks: every cluster of the plan has refcount 1.
  const bits = geo.refcountBits;
  for (let b = 0; b < plan.refblocks; b++) {
    const block = new Uint8Array(cs);
    const from = b * geo.refcountBlockEntries;
    const count = Math.max(0, Math.min(geo.refcountBlockEntries, plan.totalClusters - from));
    for (let i = 0; i < count; i++) setRefcount(block, i, bits, 1);
    await target.write(block, (firstBlock + b) * cs);
  }

  // L1 table, then (preallocated) L2 tables pointing at contiguous data clusters.
  const l1 = new Uint8Array(h.l1Size * 8);
  const l1v = new DataView(l1.buffer);
  const cryptoStart = (h.l1TableOffset / cs) + plan.l1Clusters;
  const l2Start = cryptoStart + plan.cryptoClusters;
  const dataStart = l2Start + plan.l2Tables;
  const COPIED = 1n << 63n;
  if (plan.l2Tables) {
    let dataCluster = dataStart;
    const guestClusters = Math.ceil(h.size / cs);
    for (let t = 0; t < plan.l2Tables; t++) {
      const l2Offset = (l2Start + t) * cs;
      l1v.setBigUint64(t * 8, COPIED | BigInt(l2Offset), false);
      const table = new Uint8Array(cs);
      const tv = new DataView(table.buffer);
      for (let i = 0; i < geo.l2Entries; i++) {
        const guest = t * geo.l2Entries + i;
        if (guest >= guestClusters) break;
        // An external data file keeps guest offset = host offset (qcow2.txt "data_file").
        const host = params.dataFile !== undefined ? guest * cs : dataCluster++ * cs;
        tv.setBigUint64(i * geo.l2EntrySize, COPIED | BigInt(host), false);
        if (geo.extendedL2) tv.setUint32(i * geo.l2EntrySize + 12, 0xffffffff, false);
      }
      await target.write(table, l2Offset);
    }
  }
  await target.write(l1, h.l1TableOffset);
  if (plan.fileSize > h.l1TableOffset + l1.length) await target.truncate(plan.fileSize);
  if (params.luks) {
    const volume = await formatLuks(params.luks, request.secret!);
    await writeLuksArea(volume, (buf, offset) => target.write(buf, cryptoStart * cs + offset));
  }
  const dataBytes = plan.dataClusters * cs;
  if (dataBytes) await preallocate(target, dataStart * cs, dataBytes, params.preallocation);
  if (params.dataFile !== undefined) {
    if (!request.createRelated) throw new DiskError('EINVAL', `cannot create the external data file '${params.dataFile}'`);
    const df = await request.createRelated(params.dataFile);
    try {
      await df.truncate(0);
      // A raw data file is the guest disk itself, so it has the virtual size from the start.
      if (params.dataFileRaw || params.preallocation !== 'off') await df.truncate(h.size);
      await preallocate(df, 0, h.size, params.preallocation);
      await df.flush();
    } finally {
      await df.close();
    }
  }
}

/** falloc reserves the blocks, full writes zeroes; metadata leaves the data region sparse. */
export async function preallocate(target: ByteSource, offset: number, length: number, mode: Qcow2CreateParams['preallocation']): Promise<void> {
  if (mode === 'falloc') await target.allocate(offset, length);
  else if (mode === 'full') {
    const zero = new Uint8Array(Math.min(length, 4 << 20));
    for (let done = 0; done < length; done += zero.length) await target.write(zero.subarray(0, Math.min(zero.length, length - done)), offset + done);
  }
}
