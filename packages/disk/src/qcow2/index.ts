/**
 * The qcow2 format driver (QEMU docs/interop/qcow2.txt): probing, opening (image.ts reads,
 * write.ts writes), and the create / check / measure hooks.
 */
import { DiskError } from '../errors.js';
import type { FormatDriver, Image, OpenOptions } from '../format.js';
import type { ByteSource } from '../source.js';
import { Qcow2Image, openQcow2 } from './image.js';
import { Qcow2AmendableImage, QCOW2_AMEND_OPTIONS } from './amend.js';
import { INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, QCOW2_MAGIC } from './layout.js';
import { QCOW2_CREATE_OPTIONS, createQcow2 } from './create.js';
import { checkQcow2 } from './check.js';
import { measureQcow2 } from './measure.js';
import { inspectQcow2 } from './inspect.js';

export const qcow2Driver: FormatDriver = {
  name: 'qcow2',
  inspections: [inspectQcow2],
  probe(head: Uint8Array): number {
    if (head.length < 8) return 0;
    const v = new DataView(head.buffer, head.byteOffset, 8);
    // Version 1 is the older "qcow" format with the same magic.
    return v.getUint32(0, false) === QCOW2_MAGIC && v.getUint32(4, false) >= 2 ? 100 : 0;
  },
  createOptions: QCOW2_CREATE_OPTIONS,
  amendOptions: QCOW2_AMEND_OPTIONS,
  create: createQcow2,
  check: checkQcow2,
  measure: measureQcow2,
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.writable && options.snapshot !== undefined) throw new DiskError('EINVAL', `${source.name}: a snapshot view is read-only`);
    let opened = await openQcow2(source, options);
    const { state, view } = opened;
    if (!options.writable) return new Qcow2Image(source, opened.dataSource, state, false, view);
    if (state.header.incompatibleFeatures & INCOMPAT_DIRTY) {
      // Not closed cleanly with lazy refcounts: rebuild the refcounts from the tables, then
      // clear the dirty bit, as QEMU does when it opens such an image for writing.
      if (opened.state.header.incompatibleFeatures & INCOMPAT_DATA_FILE) await opened.dataSource.close();
      await checkQcow2(source, { repair: 'all' });
      const features = new Uint8Array(8);
      new DataView(features.buffer).setBigUint64(0, state.header.incompatibleFeatures & ~INCOMPAT_DIRTY, false);
      await source.write(features, 72);
      await source.flush();
      opened = await openQcow2(source, options);
    }
    // The writer with resize, snapshot writing and amend on top (resize.ts, snapshot.ts, amend.ts over write.ts).
    const img = new Qcow2AmendableImage(source, opened.dataSource, opened.state);
    await img.init();
    return img;
  },
};

export { Qcow2Image } from './image.js';
