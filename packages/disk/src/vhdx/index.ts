/**
 * The VHDX format driver (QEMU 7.2 block/vhdx.c + vhdx-log.c semantics, [MS-VHDX]): dynamic
 * and fixed images read and written, the log replayed on a writable open (a read-only open
 * of an image with a pending log is refused, as in QEMU; `check -r all` replays it), and
 * differencing images read through their parent — which QEMU 7.2 refuses to open at all
 * (ENOTSUP): diskhub reads them, read-only.
 */
import type { CheckOptions, CheckResult, FormatDriver, Image, OpenOptions } from '../format.js';
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';
import { isVhdx } from './header.js';
import { VhdxImage, openVhdx } from './image.js';
import { VHDX_CREATE_OPTIONS, createVhdx } from './create.js';
import { inspectVhdx } from './inspect.js';

export const vhdxDriver: FormatDriver = {
  name: 'vhdx',
  inspections: [inspectVhdx],
  probe: (head: Uint8Array) => (isVhdx(head) ? 100 : 0),
  createOptions: VHDX_CREATE_OPTIONS,
  create: createVhdx,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: vhdx images have no internal snapshots`);
    const writable = !!options.writable;
    const opened = await openVhdx(source, { writable });
    if (writable && opened.hasParent) throw new DiskError('EUNSUPPORTED', `${source.name}: writing differencing vhdx images is not supported`);
    return new VhdxImage(source, opened, writable);
  },
  async check(source: ByteSource, options: CheckOptions): Promise<CheckResult> {
    // As qemu-img: a repairing check opens the image writable, which replays a pending log.
    const writable = !!options.repair;
    return new VhdxImage(source, await openVhdx(source, { writable, forCheck: true }), writable).check();
  },
};

export { VhdxImage } from './image.js';
