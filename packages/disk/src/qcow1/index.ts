/**
 * The qcow (version 1) format driver (QEMU 7.2 block/qcow.c semantics), read-only:
 * uncompressed and compressed clusters, backing files through the chain opener. Like
 * qemu-img, it has no check; encrypted images are refused with a clear error. `create` (create.ts)
 * makes the same bytes as qemu-img.
 */
import type { FormatDriver, Image, OpenOptions } from '../format.js';
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';
import { Qcow1Image, openQcow1 } from './image.js';
import { isQcow1 } from './header.js';
import { inspectQcow1 } from './inspect.js';
import { QCOW1_CREATE_OPTIONS, createQcow1 } from './create.js';

export const qcow1Driver: FormatDriver = {
  name: 'qcow',
  probe: (head: Uint8Array) => (isQcow1(head) ? 100 : 0),
  inspections: [inspectQcow1],
  createOptions: QCOW1_CREATE_OPTIONS,
  create: createQcow1,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: qcow images have no internal snapshots`);
    if (options.writable) throw new DiskError('EUNSUPPORTED', `${source.name}: writing qcow (version 1) images is not supported`);
    return new Qcow1Image(source, await openQcow1(source));
  },
};

export { Qcow1Image } from './image.js';
