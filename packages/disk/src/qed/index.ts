/** The QED format driver (QEMU 7.2 block/qed.c semantics): read, write, create, check; backing files. */
import type { CheckOptions, CheckResult, FormatDriver, Image, OpenOptions } from '../format.js';
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';
import { isQed } from './header.js';
import { QedImage, openQed } from './image.js';
import { QED_CREATE_OPTIONS, createQed } from './create.js';
import { inspectQed } from './inspect.js';

export const qedDriver: FormatDriver = {
  name: 'qed',
  inspections: [inspectQed],
  probe: (head: Uint8Array) => (isQed(head) ? 100 : 0),
  createOptions: QED_CREATE_OPTIONS,
  create: createQed,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: qed images have no internal snapshots`);
    const image = new QedImage(source, await openQed(source), !!options.writable);
    await image.recover();
    return image;
  },
  async check(source: ByteSource, options: CheckOptions): Promise<CheckResult> {
    return new QedImage(source, await openQed(source), !!options.repair).check(!!options.repair);
  },
};

export { QedImage } from './image.js';
