/**
 * The VHD ("vpc") format driver (QEMU 7.2 block/vpc.c semantics): fixed and dynamic disks
 * read and written, differencing disks read through their parent (opened by the chain opener
 * from the parent locator). Like qemu-img, fixed disks (footer only at the end) are not probed:
 * they need `-f vpc`.
 */
import type { FormatDriver, Image, OpenOptions } from '../format.js';
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';
import { isFooter } from './header.js';
import { VpcImage, openVpc } from './image.js';
import { VPC_CREATE_OPTIONS, createVpc } from './create.js';
import { inspectVpc } from './inspect.js';

export const vpcDriver: FormatDriver = {
  name: 'vpc',
  inspections: [inspectVpc],
  probe: (head: Uint8Array) => (isFooter(head) ? 100 : 0),
  createOptions: VPC_CREATE_OPTIONS,
  create: createVpc,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: vhd images have no internal snapshots`);
    const opened = await openVpc(source);
    if (options.writable && opened.parent) throw new DiskError('EUNSUPPORTED', `${source.name}: writing differencing vhd images is not supported`);
    return new VpcImage(source, opened, !!options.writable);
  },
};

export { VpcImage } from './image.js';
