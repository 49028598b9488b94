/**
 * Loader for the librbd addon (native/rbd.c, built by build.mjs against Debian's librbd-dev).
 * `loadLibrbd()` gives null when the addon could not be built or loaded, and why; the RBD store
 * then refuses to start with that reason.
 *
 * Every call that reaches the cluster runs on a libuv worker thread and returns a promise; a
 * failure rejects with an Error whose `code` is the errno name (ENOENT, EBUSY, EACCES,
 * ETIMEDOUT, ...) and `errno` its number.
 */
import { fileURLToPath } from 'node:url';

/** Opaque handles. */
export type Cluster = { readonly __rbdCluster: unique symbol };
export type Pool = { readonly __rbdPool: unique symbol };
export type Image = { readonly __rbdImage: unique symbol };

export interface Librbd {
  /**
   * Connect as cephx user `id` (without "client."; "" for the configuration's default) with
   * `conf` ("" for librados's search path) and `keyring` ("" for the one ceph.conf names).
   * `timeoutSeconds` (> 0) bounds the connection and every later monitor and OSD operation.
   */
  connect(conf: string, id: string, keyring: string, timeoutSeconds: number): Promise<Cluster>;
  /** The cluster's fsid (read at connect). */
  fsid(cluster: Cluster): string;
  /** Disconnect (after every pool handle is closed). */
  shutdown(cluster: Cluster): Promise<void>;
  openPool(cluster: Cluster, pool: string): Promise<Pool>;
  closePool(pool: Pool): void;
  /** Create an image of `size` bytes with objects of 2^order bytes and the cluster's default features. */
  create(pool: Pool, name: string, size: number, order: number): Promise<void>;
  remove(pool: Pool, name: string): Promise<void>;
  rename(pool: Pool, from: string, to: string): Promise<void>;
  list(pool: Pool): Promise<string[]>;
  /**
   * A copy-on-write clone `child` in `childPool` of `parent@snapshot` in `parentPool` (the
   * snapshot protected), with the cluster's default features: Nova's rbd image backend.
   */
  clone(parentPool: Pool, parent: string, snapshot: string, childPool: Pool, child: string): Promise<void>;
  /** Open an image's head (`snapshot` "") or one of its snapshots (read-only then). */
  open(pool: Pool, name: string, snapshot: string, readOnly: boolean): Promise<Image>;
  /** Waits for the image's writes in flight, then closes it. */
  close(image: Image): Promise<void>;
  size(image: Image): number;
  resize(image: Image, size: number): Promise<void>;
  /**
   * Send `views` to offset `offset`: resolves once they are copied and sent (the views may then
   * be reused), not once stored — `drain` says that. Whole blocks of `zeroBlock` bytes (aligned
   * to the image offset) that are all zero are not written (0: write everything). Rejects with
   * the error of an earlier write that failed.
   */
  write(image: Image, offset: number, views: Uint8Array[], zeroBlock: number): Promise<void>;
  /**
   * Whether a write() now copies and sends its data on the calling thread without waiting for
   * writes in flight (or would report an earlier failure). Otherwise write() waits for room on
   * a libuv worker thread, which a caller that would rather not occupy one can avoid by
   * waiting until room() says so.
   */
  room(image: Image): boolean;
  /** Resolves when every write sent so far is stored; rejects with the first that failed. */
  drain(image: Image): Promise<void>;
  /** Read into `buffer` from `offset`; resolves with the bytes read (fewer only at the end). */
  read(image: Image, offset: number, buffer: Uint8Array): Promise<number>;
  snapCreate(image: Image, name: string): Promise<void>;
  snapProtect(image: Image, name: string): Promise<void>;
  snapUnprotect(image: Image, name: string): Promise<void>;
  snapRemove(image: Image, name: string): Promise<void>;
  /** The clones of the snapshot the image was opened at, as "pool/image". */
  children(image: Image): Promise<string[]>;
  /** How many clients watch the image (have it open read-write), this handle included if it does. */
  watchers(image: Image): Promise<number>;
}

/** The errors the addon rejects with. */
export interface RbdError extends Error {
  code: string;
  errno: number;
}

function load(): { librbd: Librbd | null; loadError?: string } {
  if (process.platform !== 'linux') return { librbd: null, loadError: `not supported on ${process.platform}` };
  try {
    const addon = { exports: {} as Librbd };
    process.dlopen(addon, fileURLToPath(new URL('../../build/rbd.node', import.meta.url)));
    return { librbd: addon.exports };
  } catch (e) {
    return { librbd: null, loadError: (e as Error).message };
  }
}

let loaded: { librbd: Librbd | null; loadError?: string } | undefined;

/**
 * The addon, loaded on first use (librbd and librados are large libraries: a service that has
 * no RBD store does not load them); `error` says why it is unavailable.
 */
export function loadLibrbd(): { librbd: Librbd | null; error?: string } {
  loaded ??= load();
  return { librbd: loaded.librbd, error: loaded.loadError };
}
