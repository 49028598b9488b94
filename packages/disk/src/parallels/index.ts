/**
 * The Parallels format driver (QEMU 7.2 block/parallels.c semantics), read-only: both header
 * magics, `info`, `map` and a report-only `check`; and `create` (create.ts), as qemu-img makes them.
 */
import type { CheckOptions, CheckResult, FormatDriver, Image, OpenOptions } from '../format.js';
import { DiskError } from '../errors.js';
import type { ByteSource } from '../source.js';
import { ParallelsImage, openParallels } from './image.js';
import { isParallels } from './header.js';
import { inspectParallels } from './inspect.js';
import { PARALLELS_CREATE_OPTIONS, createParallels } from './create.js';

export const parallelsDriver: FormatDriver = {
  name: 'parallels',
  probe: (head: Uint8Array) => (isParallels(head) ? 100 : 0),
  inspections: [inspectParallels],
  createOptions: PARALLELS_CREATE_OPTIONS,
  create: createParallels,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.snapshot !== undefined) throw new DiskError('EUNSUPPORTED', `${source.name}: parallels images have no internal snapshots`);
    if (options.writable) throw new DiskError('EUNSUPPORTED', `${source.name}: writing parallels images is not supported`);
    return new ParallelsImage(source, await openParallels(source));
  },
  async check(source: ByteSource, options: CheckOptions): Promise<CheckResult> {
    if (options.repair) throw new DiskError('EUNSUPPORTED', `${source.name}: repairing parallels images is not supported`);
    return new ParallelsImage(source, await openParallels(source)).check();
  },
};

export { ParallelsImage } from './image.js';
