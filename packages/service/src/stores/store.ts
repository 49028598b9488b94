/**
 * The store contract: what the image service needs of a place that keeps image data, the
 * same for a local directory and for remote object stores (Ceph RBD, Swift, S3), in the
 * shape of glance_store's drivers (add / get / get_size / delete) with what a streaming,
 * crash-safe service adds:
 *
 * - Writes are streamed and staged: `begin` starts writing under a temporary key that the
 *   database recorded *before* the write began (the `uploads` row), `commit` makes the data
 *   visible under the image's name and returns its location, `discard` leaves nothing. A
 *   crash between the two leaves only temporary data, which `sweep` removes on the next
 *   start of the node that wrote it (the database says which keys are still live), or as soon
 *   as it can when another node takes the dead node's task over (that run's key alone is dead).
 * - Reads are ranged (`read`) and streamed (`send`): downloads with `Range`, the safety
 *   inspector and `x-diskhub/inside` read a stored image through `read` (see StoreSource),
 *   never through a full local copy.
 * - Locations are URLs in Glance's forms (`file:///…`, `rbd://<fsid>/<pool>/<image>/snap`,
 *   `swift+https://…/<container>/<object>`, `s3://<host>/<bucket>/<key>`), and never hold a
 *   credential: they are shown to admins (locations, direct_url) and written to logs.
 * - Errors are StoreError: a transient one (a timeout, a connection reset, 5xx) is retried by
 *   the store itself where that is safe (reads); what reaches the caller says what failed
 *   without credentials.
 */
import type { Writable } from 'node:stream';

/** Backend types as Glance's enabled_backends names them. */
export type StoreType = 'file' | 'rbd' | 'swift' | 's3';

export class StoreError extends Error {
  constructor(
    message: string,
    /**
     * not-found: no such object; full: out of space/quota; unavailable: the backend cannot be
     * reached; in-use: the object is used outside the service and was kept (glance_store's
     * InUseByStore: an RBD snapshot with clones); failed: anything else.
     */
    readonly kind: 'not-found' | 'full' | 'unavailable' | 'in-use' | 'failed' = 'failed',
  ) {
    super(message);
  }
}

/** The temporary keys a sweep leaves alone: the database's upload rows, or all but a dead run's. */
export type LiveKeys = Pick<ReadonlySet<string>, 'has'>;

export interface StoreWriter {
  /** The temporary key this write stages under (recorded in the database before begin). */
  readonly tempKey: string;
  /**
   * Append chunks, in order; the caller keeps at most one call in flight and passes whole
   * 64 KiB blocks except at the end (1 MiB batches). A store may skip whole zero blocks
   * (thin provisioning: the file store leaves holes, RBD does not write them).
   */
  write(chunks: Buffer[]): Promise<void>;
  /**
   * Append `length` zero bytes (same rules as write) without being given them: a store whose
   * unwritten ranges read as zeroes only moves on. Absent: the caller writes zeroes.
   */
  writeZeroes?(length: number): Promise<void>;
  /** Make the data visible as image `imageId`'s; returns its location URL. */
  commit(imageId: string): Promise<string>;
  /** Throw the partial data away (safe to call twice, or after a failed commit). */
  discard(): Promise<void>;
}

export interface Store {
  /** The backend's name in the configuration (Glance's enabled_backends key, e.g. "fast", "ceph"). */
  readonly id: string;
  readonly type: StoreType;
  /** Shown in /v2/info/stores. */
  readonly description: string;
  /** Connect, create the directory/pool/container check; throws a clear error when the backend is unusable. */
  init(): Promise<void>;
  /** A fresh temporary key for an upload of `imageId` (recorded in the database before it exists). */
  newTempKey(imageId: string): string;
  /** Start writing the temporary data named `tempKey`; `sizeHint`: the final size when known. */
  begin(tempKey: string, sizeHint?: number): Promise<StoreWriter>;
  /** Bytes [offset, offset + length) of the object; shorter only at its end. */
  read(location: string, offset: number, length: number): Promise<Buffer>;
  /** Write the data (or bytes start..end, inclusive) to `out`, and end it; stops early when `out` is destroyed. */
  send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void>;
  size(location: string): Promise<number>;
  /** Remove the object; a missing object is not an error; an object in use is kept (StoreError 'in-use'). */
  delete(location: string): Promise<void>;
  /** Remove temporary data whose key is not in `live` (left by a crash); returns the keys removed. */
  sweep(live: LiveKeys): Promise<string[]>;
  /** Whether `location` names an object of this store (the locations API validates with it). */
  owns(location: string): boolean;
  /** Properties for /v2/info/stores/detail (admin): pool, container, endpoint… never a credential. */
  detail(): Record<string, unknown>;
  close(): Promise<void>;
}
