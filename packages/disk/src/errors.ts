/**
 * Every failure the engine reports is a DiskError with a stable `code`, so callers
 * (the CLI, the NBD server, the image service) can map it to an exit code, an NBD
 * errno or an HTTP status without parsing messages.
 */
export type DiskErrorCode =
  | 'EINVAL'        // bad argument from the caller (size, option, offset)
  | 'ENOENT'        // file not found
  | 'EIO'           // I/O error from the byte source
  | 'EROFS'         // write to a read-only device
  | 'ENOSPC'        // image (or its metadata) would grow past a limit
  | 'EFORMAT'       // unknown or unrecognised format
  | 'ECORRUPT'      // image metadata is inconsistent / points outside the file
  | 'ETRUNCATED'    // file ends before a structure it declares
  | 'EUNSUPPORTED'  // valid image using a feature we do not implement
  | 'EUNSAFE'       // feature refused without an explicit opt-in (external data file, ...)
  | 'ELIMIT'        // a header field asks for more than the engine's safety limits
  | 'ELOOP'         // backing chain loop or too deep
  | 'ELOCKED'       // image is in use by another process
  | 'EACCES'        // an encrypted image's secret is missing or does not unlock it
  | 'EABORTED';     // operation cancelled through an AbortSignal

export class DiskError extends Error {
  readonly code: DiskErrorCode;
  constructor(code: DiskErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DiskError';
    this.code = code;
  }
}

/** `qemu-img check` of a format (or a mode of it) that has no check: exit 63 with QEMU's message. */
export class CheckNotSupported extends DiskError {
  constructor() { super('EUNSUPPORTED', 'This image format does not support checks'); }
}

export function isDiskError(e: unknown, code?: DiskErrorCode): e is DiskError {
  return e instanceof DiskError && (code === undefined || e.code === code);
}

/** Wrap a Node fs error (ENOENT, EACCES, ...) into a DiskError with the path in the message. */
export function fromNodeError(e: unknown, what: string): DiskError {
  if (e instanceof DiskError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT') return new DiskError('ENOENT', `Could not open '${what}': No such file or directory`, { cause: e });
  if (err?.code === 'EACCES' || err?.code === 'EPERM') return new DiskError('EIO', `Could not open '${what}': Permission denied`, { cause: e });
  if (err?.code === 'EISDIR') return new DiskError('EINVAL', `Could not open '${what}': Is a directory`, { cause: e });
  return new DiskError('EIO', `${what}: ${err?.message ?? String(e)}`, { cause: e });
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new DiskError('EABORTED', 'Operation cancelled');
}
