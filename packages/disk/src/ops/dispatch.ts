/**
 * create / check / measure: thin dispatch to the format driver's hooks (format.ts), with
 * the file handling and the errors qemu-img gives when a format lacks the hook.
 */
import { unlink } from '../host-fs.js';
import { CheckNotSupported, DiskError } from '../errors.js';
import { checkEncryptionAlias, type CheckResult, type CreateRequest, type MeasureRequest, type MeasureResult, type FormatDriver } from '../format.js';
import { formats } from '../formats.js';
import { resolveBackingPath } from '../backing.js';
import { FileSource, readHead, type ByteSource } from '../source.js';

/** Create an image file of `format` at `path` (replacing what is there, as qemu-img does). */
export async function createImage(path: string, format: string | FormatDriver, request: CreateRequest, options: { exclusive?: boolean } = {}): Promise<void> {
  const driver = typeof format === 'string' ? formats.get(format) : format;
  if (!driver.create) throw new DiskError('EUNSUPPORTED', `Format driver '${driver.name}' does not support image creation`);
  checkEncryptionAlias(request.options);
  const target = await FileSource.open(path, { create: true, exclusive: options.exclusive });
  try {
    await driver.create(target, {
      createRelated: (name) => FileSource.open(resolveBackingPath(path, name), { create: true }),
      formats,
      ...request,
    });
    await target.flush();
  } catch (e) {
    await target.close().catch(() => undefined);
    if (options.exclusive) await unlink(path).catch(() => undefined);
    throw e;
  }
  await target.close();
}

/**
 * `qemu-img check` of an image's host file (the caller opens it writable only when
 * repairing). The format is probed unless given.
 */
export async function checkSource(source: ByteSource, options: { format?: string; repair?: 'leaks' | 'all'; signal?: AbortSignal } = {}): Promise<CheckResult> {
  const driver = options.format ? formats.get(options.format) : formats.probe(await readHead(source), source.name);
  if (!driver.check) throw new CheckNotSupported();
  return driver.check(source, { repair: options.repair, signal: options.signal });
}

/** `qemu-img measure -O format`. */
export async function measureImage(format: string, request: MeasureRequest): Promise<MeasureResult> {
  const driver = formats.get(format);
  if (!driver.measure) throw new DiskError('EUNSUPPORTED', `Block driver '${driver.name}' does not support size measurement`);
  return driver.measure(request);
}
