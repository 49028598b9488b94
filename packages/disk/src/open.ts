/**
 * Opening images by path: format probing, backing-chain resolution (relative names resolved
 * against the directory of the image that names them, as QEMU does), a depth cap and loop
 * detection by (device, inode).
 */
import { stat } from './host-fs.js';
import { DiskError } from './errors.js';
import type { Image, OpenOptions } from './format.js';
import { formats } from './formats.js';
import { FileSource, readHead, type ByteSource } from './source.js';
import { resolveBackingPath } from './backing.js';

export { backingInfo, resolveBackingPath } from './backing.js';

/** Deepest backing chain we open; QEMU has no fixed cap, but a chain this deep is hostile or broken. */
export const MAX_BACKING_DEPTH = 256;

export interface OpenImageOptions extends OpenOptions {
  /** Format name; probed from content when absent. */
  format?: string;
  /** Open the backing chain (default true). `qemu-img info` without --backing-chain passes false. */
  backing?: boolean;
  /** Override the top image's backing file (convert -B, rebase). */
  backingOverride?: { filename: string; format?: string } | null;
  /**
   * cache=unsafe (qemu-img convert's default for its target): flushes of the image's files are
   * no-ops, including those a driver makes between metadata steps (the vhdx log). A crash may
   * then lose the image, which is what the mode promises; nothing is lost without one.
   */
  noFlush?: boolean;
  /** Reserve the blocks of large writes before making them (FileSourceOptions.reserveWrites; convert targets). */
  reserveWrites?: boolean;
  /** Write each file one write at a time, in order, on a thread of its own (FileSourceOptions.serialWrites; convert targets). */
  serialWrites?: boolean;
  /** Make reads of at most this many bytes on the calling thread (FileSourceOptions.blockingReadMax; filesystem walks of a CLI). */
  blockingReadMax?: number;
}

export async function openSource(source: ByteSource, options: OpenImageOptions = {}): Promise<Image> {
  const driver = options.format ? formats.get(options.format) : formats.probe(await readHead(source), source.name);
  return driver.open(source, { formats, ...options });
}

/** Open an image file and (unless options.backing === false) its whole backing chain. */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<Image> {
  const seen = new Set<string>();
  const top = await openOne(path, options, seen);
  if (options.backing === false) return top;
  try {
    let cur = top;
    for (let depth = 1; ; depth++) {
      const ref = depth === 1 && options.backingOverride !== undefined ? options.backingOverride : cur.backingRef;
      if (!ref) break;
      if (depth > MAX_BACKING_DEPTH) {
        throw new DiskError('ELOOP', `${path}: backing chain is deeper than ${MAX_BACKING_DEPTH} images`);
      }
      const backingPath = resolveBackingPath(cur.source.name, ref.filename);
      cur.backing = await openOne(backingPath, { format: ref.format, allowExternalData: options.allowExternalData }, seen, cur.source.name);
      cur = cur.backing;
    }
  } catch (e) {
    await closeChain(top);
    throw e;
  }
  return top;
}

/** `appliance.ova:2`: a disk of an OVA, named by its index, when no file has that very name. */
async function splitDiskIndex(path: string): Promise<{ path: string; disk: number } | undefined> {
  const m = /^(.+):(\d{1,4})$/.exec(path);
  if (!m) return undefined;
  try {
    await stat(path);
    return undefined;
  } catch {
    try {
      await stat(m[1]!);
      return { path: m[1]!, disk: Number(m[2]) };
    } catch {
      return undefined;
    }
  }
}

async function openOne(path: string, options: OpenImageOptions, seen: Set<string>, namedBy?: string): Promise<Image> {
  const indexed = namedBy ? undefined : await splitDiskIndex(path);
  if (indexed) {
    path = indexed.path;
    options = { ...options, ovaDisk: indexed.disk };
  }
  let id: string;
  try {
    const st = await stat(path);
    id = `${st.dev}:${st.ino}`;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (namedBy && err.code === 'ENOENT') {
      throw new DiskError('ENOENT', `Could not open backing file '${path}' of '${namedBy}': No such file or directory`);
    }
    throw new DiskError(err.code === 'ENOENT' ? 'ENOENT' : 'EIO', `Could not open '${path}': ${err.code === 'ENOENT' ? 'No such file or directory' : err.message}`);
  }
  if (seen.has(id)) throw new DiskError('ELOOP', `Backing file loop: '${path}' appears twice in the chain of images`);
  seen.add(id);
  const fileOptions = { noFlush: options.noFlush, reserveWrites: options.reserveWrites, serialWrites: options.serialWrites, blockingReadMax: options.blockingReadMax };
  const source = await FileSource.open(path, { readOnly: !options.writable, ...fileOptions });
  try {
    const image = await openSource(source, {
      ...options,
      openRelated: options.openRelated ?? ((name, writable) => FileSource.open(resolveBackingPath(path, name), { readOnly: !writable, ...fileOptions })),
    });
    if (indexed && image.format !== 'ova') {
      // Only an appliance has numbered disks: "file:N" of anything else is a missing file.
      await image.close();
      throw new DiskError('ENOENT', `Could not open '${path}:${indexed.disk}': No such file or directory`);
    }
    return image;
  } catch (e) {
    await source.close().catch(() => {});
    throw e;
  }
}

export async function closeChain(image: Image | undefined): Promise<void> {
  while (image) {
    const next = image.backing;
    await image.close();
    image = next;
  }
}

/** The images of a chain, top first. */
export function chainOf(image: Image): Image[] {
  const out: Image[] = [];
  for (let cur: Image | undefined = image; cur; cur = cur.backing) out.push(cur);
  return out;
}
