/**
 * The VirtualBox VDI format driver (QEMU 7.2 block/vdi.c semantics): dynamic and static
 * images, 1 MiB blocks, no differencing images (QEMU refuses link/parent UUIDs too).
 */
import type { CheckOptions, CheckResult, FormatDriver, Image, OpenOptions } from '../format.js';
import { CheckNotSupported, DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';
import { VDI_HEADER_SIZE, isVdi } from './header.js';
import { VdiImage, openVdi } from './image.js';
import { VDI_CREATE_OPTIONS, createVdi } from './create.js';
import { inspectVdi } from './inspect.js';

export const vdiDriver: FormatDriver = {
  name: 'vdi',
  inspections: [inspectVdi],
  // QEMU probes a zero-padded buffer, so a file cut short after the signature still probes as vdi.
  probe: (head: Uint8Array) => (isVdi(head) ? 100 : 0),
  createOptions: VDI_CREATE_OPTIONS,
  create: createVdi,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: vdi images have no internal snapshots`);
    return new VdiImage(source, await openVdi(source), !!options.writable);
  },
  async check(source: ByteSource, options: CheckOptions): Promise<CheckResult> {
    // QEMU's vdi check only reports: asked to repair, qemu-img answers as for a format without checks.
    if (options.repair) throw new CheckNotSupported();
    return new VdiImage(source, await openVdi(source), false).check();
  },
};

export { VdiImage } from './image.js';
