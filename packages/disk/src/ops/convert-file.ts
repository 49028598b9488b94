/**
 * A whole-file convert (`qemu-img convert -f FROM -O TO src dst`), as Nova's fetch_to_raw and
 * Glance's image_conversion import plugin run it: the target is created, filled and flushed,
 * and removed again on any failure.
 */
import { unlink } from '../host-fs.js';
import { closeChain, openImage } from '../open.js';
import { convertImage } from './convert.js';
import { createImage } from './dispatch.js';

/**
 * `qemu-img convert -f FROM -O TO src dst` with the engine (dst must not exist): sparse,
 * flushed. The source's backing chain is not opened: callers convert inspected standalone
 * images, or pass `backing: true` to flatten an overlay.
 */
export async function convertFile(src: string, fromFormat: string | undefined, dst: string, toFormat: string, options: { backing?: boolean; signal?: AbortSignal } = {}): Promise<void> {
  const source = await openImage(src, { ...(fromFormat ? { format: fromFormat } : {}), backing: options.backing ?? false });
  let target;
  try {
    await createImage(dst, toFormat, { size: source.size, options: {} }, { exclusive: true });
    target = await openImage(dst, { format: toFormat, writable: true });
    await convertImage(source, target, { targetIsZero: target.zeroInit ?? true, flush: true, ...(options.signal ? { signal: options.signal } : {}) });
  } catch (e) {
    await closeChain(target).catch(() => undefined);
    target = undefined;
    await unlink(dst).catch(() => undefined);
    throw e;
  } finally {
    await closeChain(target);
    await closeChain(source);
  }
}
