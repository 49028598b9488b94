/**
 * The VMware vmdk format driver (QEMU 7.2 block/vmdk.c semantics; the format reference is
 * VMware's "Virtual Disk Format 5.0"): monolithicSparse, monolithicFlat, twoGbMaxExtentSparse,
 * twoGbMaxExtentFlat, streamOptimized, vmfs and vmfsSparse, parents by parentFileNameHint.
 */
import { CheckNotSupported, DiskError } from '../errors.js';
import type { CheckOptions, CheckResult, FormatDriver, FormatRegistry, Image, OpenOptions } from '../format.js';
import { FileSource, readHead, type ByteSource } from '../source.js';
import { resolveBackingPath } from '../backing.js';
import { VMDK_CREATE_OPTIONS, createVmdk } from './create.js';
import { COWD_MAGIC, SPARSE_MAGIC, looksLikeDescriptor } from './header.js';
import { VmdkImage } from './image.js';
import { openVmdk } from './open.js';
import { inspectVmdk } from './inspect.js';

export const vmdkDriver: FormatDriver = {
  name: 'vmdk',
  inspections: [inspectVmdk],
  probe(head: Uint8Array): number {
    if (head.length >= 4) {
      const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
      if (magic === SPARSE_MAGIC || magic === COWD_MAGIC) return 100;
    }
    return looksLikeDescriptor(head) ? 100 : 0;
  },
  createOptions: VMDK_CREATE_OPTIONS,
  create: (target, request) => createVmdk(target, request, (backing) => parentCid(target.name, backing, request.formats)),
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

/** The CID of the parent a new delta disk names (qemu-img opens it, and refuses a parent that is not vmdk). */
async function parentCid(imagePath: string, backing: string, formats: FormatRegistry | undefined): Promise<number> {
  if (!formats) throw new DiskError('EINVAL', `${imagePath}: creating a delta disk needs the format registry to probe its parent (create it through createImage)`);
  const path = resolveBackingPath(imagePath, backing);
  const source = await FileSource.open(path, { readOnly: true });
  try {
    const format = formats.probe(await readHead(source), path);
    if (format.name !== 'vmdk') throw new DiskError('EINVAL', `Invalid backing file format: ${format.name}. Must be vmdk`);
    const opened = await openVmdk(source, { openRelated: (name) => FileSource.open(resolveBackingPath(path, name), { readOnly: true }) });
    for (const e of opened.extents) if (e.ownFile) await e.file.close();
    return opened.cid;
  } finally {
    await source.close();
  }
}

export { VmdkImage } from './image.js';
