/**
 * The VMware vmdk format driver (QEMU 7.2 block/vmdk.c semantics; the format reference is
 * VMware's "Virtual Disk Format 5.0"): monolithicSparse, monolithicFlat, twoGbMaxExtentSparse,
 * twoGbMaxExtentFlat, streamOptimized, vmfs and vmfsSparse, parents by parentFileNameHint.
 */
import { DiskError } from '../errors.js';
import type { CheckOptions, CheckResult, FormatDriver, Image, OpenOptions } from '../format.js';
import { CheckNotSupported } from '../ops/dispatch.js';
import { FileSource, type ByteSource } from '../source.js';
import { resolveBackingPath } from '../open.js';
import { COWD_MAGIC, SPARSE_MAGIC, looksLikeDescriptor } from './header.js';
import { VmdkImage } from './image.js';
import { openVmdk } from './open.js';

export const vmdkDriver: FormatDriver = {
  name: 'vmdk',
  probe(head: Uint8Array): number {
    if (head.length >= 4) {
      const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
      if (magic === SPARSE_MAGIC || magic === COWD_MAGIC) return 100;
    }
    return looksLikeDescriptor(head) ? 100 : 0;
  },
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: vmdk images have no internal snapshots`);
    return new VmdkImage(await openVmdk(source, options), !!options.writable);
  },
  async check(source: ByteSource, options: CheckOptions): Promise<CheckResult> {
    if (options.repair) throw new CheckNotSupported();
    // check runs on a local file: extents in the image's own folder are opened, read-only.
    const openRelated = (name: string) => FileSource.open(resolveBackingPath(source.name, name), { readOnly: true });
    const img = new VmdkImage(await openVmdk(source, { openRelated }), false);
    try {
      return await img.check();
    } finally {
      await img.closeExtents();
    }
  },
};

export { VmdkImage } from './image.js';
