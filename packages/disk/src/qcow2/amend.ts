/**
 * `qemu-img amend` for qcow2, in the order QEMU 7.2's qcow2_amend_options applies changes:
 * upgrade to v3, refcount width, lazy refcounts, size, and a downgrade to v2 last. Header
 * changes go out as one rewrite of the header cluster (qcow2_update_header); a new refcount
 * width is written as a complete new refcount table and blocks at the end of the file that
 * the header switches to in that one write, so a crash leaves either the old structures or
 * the new ones (and leaked clusters at worst).
 *
 * Changing the backing file is refused as QEMU refuses it (`rebase` does it). LUKS key slots
 * (encrypt.*) are added and erased in the LUKS area the crypto header extension points at, after
 * an upgrade and before a refcount width change, as QEMU orders its amend operations.
 */
import { DiskError } from '../errors.js';
import type { AmendContext, CreateOption } from '../format.js';
import { LUKS_AMEND_OPTIONS, amendLuksKeySlots } from '../luks/keyslots.js';
import { luksAreaOf } from './crypto.js';
import {
  CRYPT_LUKS, AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_DIRTY, STANDARD_FEATURE_NAMES, refcountMax, serializeHeader, setRefcount,
} from './layout.js';
import { Qcow2SnapshotImage } from './snapshot.js';

const COMPRESSED = 0x40000000;
const ZERO_FLAG = 1;

/** What `qemu-img amend -o help` lists for qcow2 (QEMU's qcow2_amend_opts plus the common ones). */
export const QCOW2_AMEND_OPTIONS: readonly CreateOption[] = [
  { name: 'compat', type: 'string', help: 'Compatibility level (v2 [0.10] or v3 [1.1])' },
  { name: 'backing_file', type: 'string', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'Image format of the base image' },
  { name: 'data_file', type: 'string', help: 'File name of an external data file' },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
  ...LUKS_AMEND_OPTIONS.map((o) => ({ ...o, name: `encrypt.${o.name}` })),
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates' },
  { name: 'refcount_bits', type: 'number', help: 'Width of a reference count entry in bits' },
  { name: 'size', type: 'size', help: 'Virtual disk size' },
];

/** Clusters whose refcounts one amend may rewrite (a 64 MiB array): larger files are refused. */
const MAX_REWRITTEN_CLUSTERS = 16 << 20;

export class Qcow2AmendableImage extends Qcow2SnapshotImage {
  /** `options`: validated amend options (sizes in bytes, booleans on/off). True when the image changed. */
  async amend(options: Map<string, string>, context?: AmendContext): Promise<boolean> {
    return this.serial(() => this.amendNow(options, context));
  }

  private async amendNow(options: Map<string, string>, context?: AmendContext): Promise<boolean> {
    const before = serializeHeader(this.header, this.clusterSize);
    const h = this.header;
    // encrypt.* come first in QEMU's qcow2_amend_opts, so their checks come first too.
    const encryption = new Map([...options].filter(([k]) => k.startsWith('encrypt.')).map(([k, v]) => [k.slice('encrypt.'.length), v]));
    if (encryption.size) {
      if (h.cryptMethod === 0) throw new DiskError('EINVAL', "Can't amend encryption options - encryption not present");
      if (h.cryptMethod !== CRYPT_LUKS) throw new DiskError('EUNSUPPORTED', 'Only LUKS encryption options can be amended');
    }
    let version = h.version as number;
    const compat = options.get('compat');
    if (compat !== undefined) {
      if (compat === '0.10' || compat === 'v2') version = 2;
      else if (compat === '1.1' || compat === 'v3') version = 3;
      else throw new DiskError('EINVAL', `Unknown compatibility level ${compat}`);
    }
    const backingFile = options.get('backing_file'), backingFmt = options.get('backing_fmt');
    if ((backingFile !== undefined || backingFmt !== undefined) && (backingFile !== h.backingFile || backingFmt !== h.backingFormat)) {
      throw new DiskError('EINVAL', "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
    }
    const lazy = options.get('lazy_refcounts');
    let refcountOrder = h.refcountOrder;
    const bitsText = options.get('refcount_bits');
    if (bitsText !== undefined) {
      const bits = Number(bitsText);
      if (bits > 64 || bits < 1 || (bits & (bits - 1)) !== 0) throw new DiskError('EINVAL', 'Refcount width must be a power of two and may not exceed 64 bits');
      refcountOrder = Math.log2(bits);
    }
    if (options.has('data_file')) {
      if (!this.externalData) throw new DiskError('EINVAL', 'data-file can only be set for images that use an external data file');
      throw new DiskError('EUNSUPPORTED', 'Changing the name of the external data file is not supported by diskhub');
    }
    if (options.has('data_file_raw')) {
      const raw = (h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
      if ((options.get('data_file_raw') === 'on') !== raw) throw new DiskError('EINVAL', 'data-file-raw cannot be set on existing images');
    }
    const lazyNow = (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
    // Checked, like QEMU, only when the setting changes.
    if (lazy === 'on' && !lazyNow && version < 3) {
      throw new DiskError('EINVAL', 'Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
    }
    if (refcountOrder !== h.refcountOrder && refcountOrder !== 4 && version < 3) {
      throw new DiskError('EINVAL', 'Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
    }
    await this.writeBack();
    if (version > h.version) {
      h.version = 3;
      h.featureNames = STANDARD_FEATURE_NAMES;
      await this.rewriteHeader();
    }
    let slotsChanged = false;
    if (encryption.size) slotsChanged = await this.amendKeySlots(encryption, context);
    if (refcountOrder !== h.refcountOrder) await this.changeRefcountWidth(refcountOrder);
    if (lazy !== undefined && (lazy === 'on') !== lazyNow) {
      if (lazy === 'on') h.compatibleFeatures |= COMPAT_LAZY_REFCOUNTS;
      else h.compatibleFeatures &= ~COMPAT_LAZY_REFCOUNTS;
      await this.rewriteHeader();
    }
    const size = options.get('size');
    if (size !== undefined && Number(size) !== this.size) await this.truncateTo(Number(size), { preallocation: 'off' }, true);
    if (version < h.version) await this.downgrade();
    const after = serializeHeader(this.header, this.clusterSize);
    return slotsChanged || before.some((b, i) => b !== after[i]);
  }

  /** encrypt.state/keyslot/old-secret/new-secret/iter-time on the LUKS area inside the file. */
  private async amendKeySlots(options: Map<string, string>, context?: AmendContext): Promise<boolean> {
    const keys = this.luksKeys;
    if (!this.luks || !keys) throw new DiskError('EACCES', "Parameter 'encrypt.key-secret' is required for cipher");
    await amendLuksKeySlots(this.luks, luksAreaOf(this.source, keys), options, context, keys.secret, this.source.name);
    return true;
  }

  /** qcow2_update_header: the whole header cluster in one write. */
  private async rewriteHeader(): Promise<void> {
    await this.source.flush();
    await this.source.write(serializeHeader(this.header, this.clusterSize), 0);
    await this.source.flush();
  }

  /** qcow2_downgrade: v3 features gone, zero clusters turned into what v2 can say. */
  private async downgrade(): Promise<void> {
    const h = this.header;
    if (h.refcountOrder !== 4) throw new DiskError('EUNSUPPORTED', 'compat=0.10 requires refcount_bits=16');
    if (this.externalData) throw new DiskError('EUNSUPPORTED', 'Cannot downgrade an image with a data file');
    if (this.snapshotList.some((s) => s.vmStateSize || s.vmStateSizeLarge || (s.diskSize !== undefined && s.diskSize !== this.size))) {
      throw new DiskError('EUNSUPPORTED', 'Internal snapshots prevent downgrade of image');
    }
    const incompatible = h.incompatibleFeatures & ~INCOMPAT_DIRTY;
    if (incompatible) throw new DiskError('EUNSUPPORTED', `Cannot downgrade an image with incompatible features 0x${incompatible.toString(16)} set`);
    await this.expandZeroClusters();
    h.version = 2;
    h.incompatibleFeatures = 0n;
    h.compatibleFeatures = 0n;
    h.autoclearFeatures = 0n;
    h.featureNames = [];
    await this.writeBack();
    await this.rewriteHeader();
  }

  /**
   * qcow2_expand_zero_clusters, for every L1 table (active and snapshots'): a zero cluster with
   * a host cluster becomes that cluster filled with zeroes; one without becomes unallocated,
   * or, over a backing file, a new cluster of zeroes.
   */
  private async expandZeroClusters(): Promise<void> {
    const cs = this.clusterSize;
    const es = this.geo.l2EntrySize;
    const zeroes = new Uint8Array(cs);
    const tables = [{ l1: this.l1, entries: this.header.l1Size }];
    for (const s of this.snapshotList) {
      const l1 = new Uint8Array(s.l1Size * 8);
      if (l1.length) await this.source.read(l1, s.l1TableOffset);
      tables.push({ l1, entries: s.l1Size });
    }
    const seen = new Set<number>();
    for (const { l1, entries } of tables) {
      const l1View = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
      for (let i = 0; i < entries; i++) {
        const l2Offset = (l1View.getUint32(i * 8, false) & 0x00ffffff) * 2 ** 32 + ((l1View.getUint32(i * 8 + 4, false) & 0xfffffe00) >>> 0);
        if (!l2Offset || seen.has(l2Offset)) continue;
        seen.add(l2Offset);
        const table = await this.l2Table(l2Offset);
        const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
        let changed = false;
        for (let index = 0; index < this.geo.l2Entries; index++) {
          const at = index * es;
          const hi = view.getUint32(at, false), lo = view.getUint32(at + 4, false);
          if ((hi & COMPRESSED) || !(lo & ZERO_FLAG)) continue;
          const host = (hi & 0x00ffffff) * 2 ** 32 + ((lo & 0xfffffe00) >>> 0);
          if (host) {
            await this.source.write(zeroes, host);
            view.setUint32(at + 4, lo & ~ZERO_FLAG, false);
          } else if (this.backingRef) {
            const fresh = await this.allocate(1);
            await this.source.write(zeroes, fresh);
            this.setL2(view, at, fresh, 0);
          } else {
            view.setUint32(at, 0, false);
            view.setUint32(at + 4, 0, false);
          }
          changed = true;
        }
        if (changed) {
          this.cacheL2(l2Offset, table);
          this.dirtyL2.add(l2Offset);
          await this.source.flush();
          await this.writeBack();
        }
      }
    }
    await this.source.flush();
  }

  /**
   * qcow2_change_refcount_order: every cluster's refcount in a new table and new blocks of
   * the new width, placed after the end of the file (counting themselves); the header names
   * them in one write; the old table and blocks are then free.
   */
  private async changeRefcountWidth(order: number): Promise<void> {
    const cs = this.clusterSize;
    const newBits = 2 ** order;
    const fileClusters = Math.ceil(Math.max(this.fileEnd, await this.source.size()) / cs);
    if (fileClusters > MAX_REWRITTEN_CLUSTERS) throw new DiskError('ELIMIT', `${this.source.name}: too many clusters (${fileClusters}) to rewrite the refcounts of`);
    const counts = new Float64Array(fileClusters);
    for (let c = 0; c < fileClusters; c++) counts[c] = await this.refcountOf(c * cs);
    // The old structures are free once the header names the new ones.
    const oldTable = { offset: this.header.refcountTableOffset, clusters: this.header.refcountTableClusters };
    for (let k = 0; k < oldTable.clusters; k++) counts[oldTable.offset / cs + k] = 0;
    for (const rb of this.reftable) if (rb) counts[rb / cs] = 0;
    const max = refcountMax(newBits);
    for (let c = 0; c < fileClusters; c++) {
      if (counts[c]! > max) {
        throw new DiskError('EINVAL', `Cannot decrease refcount entry width to ${newBits} bits: Cluster at offset 0x${(c * cs).toString(16)} has a refcount of ${counts[c]}`);
      }
    }
    const perBlock = (cs * 8) / newBits;
    // The new structures' own clusters need refcounts too: grow until they fit.
    let blocks = 0, tableClusters = 0;
    for (;;) {
      const total = fileClusters + blocks + tableClusters;
      const needBlocks = Math.ceil(total / perBlock);
      const needTable = Math.ceil((needBlocks * 8) / cs);
      if (needBlocks === blocks && needTable === tableClusters) break;
      blocks = needBlocks;
      tableClusters = needTable;
    }
    const start = fileClusters;
    const tableAt = (start + blocks) * cs;
    const all = new Float64Array(start + blocks + tableClusters);
    all.set(counts);
    all.fill(1, start);
    const table = new Uint8Array(tableClusters * cs);
    const tv = new DataView(table.buffer);
    const newReftable: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const block = new Uint8Array(cs);
      for (let e = 0; e < perBlock && b * perBlock + e < all.length; e++) {
        const v = all[b * perBlock + e]!;
        if (v) setRefcount(block, e, newBits, v);
      }
      const at = (start + b) * cs;
      await this.source.write(block, at);
      tv.setBigUint64(b * 8, BigInt(at), false);
      newReftable.push(at);
    }
    await this.source.write(table, tableAt);
    await this.source.flush();
    const h = this.header;
    h.refcountOrder = order;
    h.refcountTableOffset = tableAt;
    h.refcountTableClusters = tableClusters;
    await this.rewriteHeader();
    this.geo.refcountBits = newBits;
    this.geo.refcountBlockEntries = perBlock;
    this.reftable = [...newReftable, ...new Array<number>(table.length / 8 - newReftable.length).fill(0)];
    this.refblocks.clear();
    this.dirtyRefblocks.clear();
    this.reftableDirty = false;
    this.fileEnd = tableAt + tableClusters * cs;
  }
}
