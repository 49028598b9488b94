/**
 * Backing file names as QEMU resolves them: relative names against the directory of the image
 * that names them, protocol names (`nbd:`, `http:`) left alone. A leaf module, so that format
 * drivers can use it without importing the opener (open.ts imports the drivers).
 */
import { dirname, isAbsolute, join } from 'node:path';
import type { BackingRef } from './format.js';

/** Resolve a backing file name found in `imagePath` the way QEMU does. */
export function resolveBackingPath(imagePath: string, backing: string): string {
  if (isAbsolute(backing) || /^[a-z][a-z0-9+.-]*:/i.test(backing)) return backing;
  return join(dirname(imagePath), backing);
}

/** The `info` keys naming an image's backing file, in qemu-img's order. */
export function backingInfo(imagePath: string, ref: BackingRef | undefined): Record<string, string> {
  if (!ref) return {};
  const fields: Record<string, string> = { 'backing-filename': ref.filename, 'full-backing-filename': resolveBackingPath(imagePath, ref.filename) };
  if (ref.format) fields['backing-filename-format'] = ref.format;
  return fields;
}
