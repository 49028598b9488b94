/**
 * Image data: direct upload, staging, the ingest imports feed (domain/import/), download,
 * and recovery after a crash. Every status change here goes through the status table and is one
 * transaction with the `uploads` rows recovery works from (the repository's setStatus with
 * a claim or a release), so no path can leave an image saving, uploading or importing
 * without a row that says which node was writing what.
 */
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HttpError, badRequest, conflict, forbidden, notFound } from '../http.js';
import type { AuthContext } from '../identity.js';
import type { ImageRecord } from '../images-model.js';
import { UploadInspection } from '../inspect.js';
import { UploadHasher } from '../hashing.js';
import type { DownloadUrls } from '../download-urls.js';
import { StoreError, type Store, type StoreWriter } from '../stores/store.js';
import type { StoreSet } from '../stores/registry.js';
import { storeFailure } from './store-failures.js';
import type { Logger } from '../log.js';
import { splitTempKeys, type ImageRepo } from '../repo/images.js';
import type { ImageService } from './images.js';
import { assertTransition, sourcesOf, type ImageStatus } from './status.js';
import { STAGE_HOST_PROPERTY } from './import/stage-host.js';

export interface ImageDataOptions {
  /** Largest image accepted, in bytes (Glance's image_size_cap). */
  imageSizeCap: number;
  /** Bytes of image data a project may store; 0 = unlimited. */
  projectStorageQuota: number;
  stagingDir: string;
  /** Identifies this API node in upload records (crash recovery). */
  node: string;
  /** Signs and checks the x-diskhub download URLs. */
  downloadUrls: DownloadUrls;
  /** This node's worker_self_reference_url, known once it listens: staging records it on the image (os_glance_stage_host). */
  stageHost?: () => string | undefined;
}

/** Suffix of staging files still being written. */
const PARTIAL_SUFFIX = '.partial';
/** temp_key of an `uploads` row that records staging in progress. */
const STAGE_KEY = 'stage';

const DEACTIVATED = 'The requested image has been deactivated. Image data download is forbidden.';
const INTERRUPTED = 'Image upload was interrupted; no data was kept.';

/** The storage under the staging area is full: Glance's 413 (HTTPRequestEntityTooLarge, "Image storage media is full"). */
const storageFull = () => new HttpError(413, 'Image storage media is full: there is no space left on the device for this image; no data was kept.');
const isNoSpace = (e: unknown) => (e as NodeJS.ErrnoException | null)?.code === 'ENOSPC' || (e as NodeJS.ErrnoException | null)?.code === 'EDQUOT';

/** A store an ingest writes to, and the temporary key its image's upload row records. */
export interface IngestTarget { store: Store; tempKey: string }

/** How an ingest into several stores treats one store's failure (Glance's all_stores_must_succeed). */
export interface IngestPolicy {
  /** true: any store's failure fails the ingest; false: that store is dropped and the others go on. */
  allMustSucceed: boolean;
  /** A store failed (it is dropped, or the ingest fails with `error`). */
  storeFailed?(storeId: string, error: HttpError): Promise<void>;
  /** A store's data is committed (the image becomes active once every remaining store's is). */
  storeCommitted?(storeId: string): Promise<void>;
  /** Properties the image takes in the transaction that makes it active (never shown active without them). */
  properties?: Record<string, string>;
}

/** The stores an ingest wrote the data to, and those that failed and were dropped. */
export interface IngestResult { stored: string[]; failed: string[] }

/** One target while the data is written: its writer until committed (or dropped), then its location. */
interface Writing { target: IngestTarget; writer: StoreWriter | null; location: string | null }

/** A stored copy of an image's data that answers: where downloads and inspection read. */
export interface ReadableData { store: Store; url: string; size: number }

export class ImageDataService {
  /** Uploads and imports in progress (shutdown waits for them). */
  readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly images: ImageService,
    private readonly repo: ImageRepo,
    private readonly stores: StoreSet,
    private readonly opts: ImageDataOptions,
    private readonly log: Logger,
  ) {}

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p)).catch(() => {});
    return p;
  }

  /**
   * Move the image to `to` as the status table allows, in one transaction with its upload
   * rows: `claim` records this node writing `tempKey`; `release` drops the rows. Glance's
   * 409 when the image is not in a status `to` may follow, or changed meanwhile.
   */
  private async transition(img: ImageRecord, to: ImageStatus, rows: { claim?: string; release?: boolean } = {}): Promise<ImageRecord> {
    assertTransition(img.status, to);
    const moved = await this.repo.setStatus(img, to, { claim: rows.claim === undefined ? undefined : { node: this.opts.node, tempKey: rows.claim }, release: rows.release });
    if (!moved) {
      const cur = await this.repo.load(img.id);
      if (!cur) throw notFound(`No image found with ID ${img.id}`);
      throw conflict(`Image status transition from ${cur.status} to ${to} is not allowed`);
    }
    return { ...img, status: to, revision: img.revision + 1 };
  }

  /** An upload that will not complete: the image goes back to `revertTo`, its upload rows away. */
  private async abandon(id: string, revertTo: ImageStatus): Promise<void> {
    await this.repo.revertStatus(id, sourcesOf(revertTo).filter((s) => s === 'saving' || s === 'importing' || s === 'uploading'), revertTo).catch(() => {});
  }

  /**
   * The most an upload for `owner` may write: the image size cap, and what is left of the
   * project's storage quota (bytes of its images that hold data).
   */
  private async uploadLimit(owner: string | null): Promise<{ cap: number; tooBig: (n: number) => HttpError }> {
    const sizeCap = this.opts.imageSizeCap;
    const capped = { cap: sizeCap, tooBig: () => new HttpError(413, `Image exceeds the storage quota: the image size cap is ${sizeCap} bytes.`) };
    if (!this.opts.projectStorageQuota || owner === null) return capped;
    const quota = this.opts.projectStorageQuota;
    const remaining = Math.max(0, quota - await this.repo.storageUsed(owner));
    if (remaining >= sizeCap) return capped;
    return {
      cap: remaining,
      tooBig: (n) => new HttpError(413, `Denying attempt to upload image because it exceeds the quota: the project may store ${quota} bytes and has ${remaining} bytes left; this upload reached ${n} bytes.`),
    };
  }

  /**
   * A configured store by id (X-Image-Meta-Store), or the default one: Glance's 400 for a
   * store it does not have (glance_store's UnknownScheme).
   */
  store(id: string | undefined): Store {
    if (id === undefined) return this.stores.default;
    const store = this.stores.get(id);
    if (!store) throw badRequest(`Store for identifier ${id} not found`);
    return store;
  }

  /**
   * PUT /file: queued → saving → active, the data streamed into `storeId` (the default store
   * when absent). `complete` says whether the body arrived whole.
   */
  async upload(a: AuthContext, id: string, input: Readable, declaredLength: number | null, complete: () => boolean, storeId?: string): Promise<void> {
    const store = this.store(storeId);
    const img = await this.images.get(a, id);
    this.images.imagePolicy(a, img).uploadImage();
    const tempKey = store.newTempKey(img.id);
    const saving = await this.transition(img, 'saving', { claim: tempKey });
    await this.track(this.ingest(saving, [{ store, tempKey }], input, declaredLength, 'queued', complete));
  }

  /**
   * Stream `input` into the targets' stores while hashing, counting and inspecting (once,
   * whatever the number of stores: the data is read once and written to each); verify; make
   * the image active with one location per store written. `tempKey`s: the temporary data the
   * status transition claimed. Uploads and every import source (domain/import/) feed their
   * data through here as a Readable. With several targets, `policy` says whether one store's
   * failure fails the whole (Glance's all_stores_must_succeed, the default) or only drops that
   * store; the ingest fails when no store is left.
   */
  async ingest(img: ImageRecord, targets: IngestTarget[], input: Readable | AsyncIterable<Uint8Array>, declaredLength: number | null, revertTo: ImageStatus | null, complete: () => boolean, policy: IngestPolicy = { allMustSucceed: true }): Promise<IngestResult> {
    const inspection = new UploadInspection(img.id, img.container_format);
    let size = 0;
    const { cap, tooBig } = await this.uploadLimit(img.owner);
    // A length known to pass the cap is refused before any store is asked for anything (an RBD
    // image of that size, a file).
    if (declaredLength !== null && declaredLength > cap) {
      if (revertTo) await this.abandon(img.id, revertTo);
      throw tooBig(declaredLength);
    }
    const writing: Writing[] = targets.map((target) => ({ target, writer: null, location: null }));
    const failed: string[] = [];
    let hasher: UploadHasher | null = null;
    /**
     * Nothing is kept: partial data discarded, committed data deleted, the image back to
     * `revertTo` (null: the caller moves it, with what else its failure changes — an import task's end).
     */
    const fail = async (e: unknown): Promise<never> => {
      await hasher?.drop();
      for (const w of writing) {
        if (w.location) await w.target.store.delete(w.location).catch(() => {});
        else await w.writer?.discard().catch(() => {});
      }
      if (revertTo) await this.abandon(img.id, revertTo);
      throw e;
    };
    /** One store failed: the ingest's failure (all must succeed, or none is left), else that store is dropped. */
    const storeFailed = async (w: Writing, e: unknown, what: string): Promise<void> => {
      const failure = storeFailure(e, w.target.store.id, what);
      if (!failure) throw e;
      this.log.warn('upload failed: store', { image: img.id, store: w.target.store.id, bytes: size, error: failure.message });
      failed.push(w.target.store.id);
      const writer = w.writer;
      w.writer = null;
      await writer?.discard().catch(() => {});
      await policy.storeFailed?.(w.target.store.id, failure);
      if (policy.allMustSucceed || failed.length === writing.length) throw failure;
    };
    try {
      for (const w of writing) {
        try {
          w.writer = await w.target.store.begin(w.target.tempKey, declaredLength ?? undefined);
        } catch (e) {
          await storeFailed(w, e, 'starting the upload');
        }
      }
    } catch (e) {
      return fail(e);
    }
    // Hashing batches the data into 1 MiB page-aligned buffers; each store is written from those.
    hasher = new UploadHasher(async (batch, zero) => {
      const buf = Buffer.from(batch.buffer, batch.byteOffset, batch.length);
      const writes = await Promise.allSettled(writing.map(async (w) => {
        if (!w.writer) return;
        try {
          if (zero && w.writer.writeZeroes) await w.writer.writeZeroes(buf.length);
          else await w.writer.write([buf]);
        } catch (e) {
          await storeFailed(w, e, 'writing the data');
        }
      }));
      const refused = writes.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (refused) throw refused.reason;
    });
    try {
      // (leaving the loop early must not destroy a request body: the error answer is sent
      // after the rest of it is drained, so the client reads the answer instead of a reset)
      // (an iterable's chunk may be valid only until the next is asked for: inspection and hashing copy what they keep)
      for await (const chunk of input instanceof Readable ? input.iterator({ destroyOnReturn: false }) as AsyncIterable<Uint8Array> : input) {
        size += chunk.length;
        if (size > cap) throw tooBig(size);
        await inspection.write(chunk);
        await hasher.update(chunk);
      }
      await hasher.finish();
      // A client that hangs up may end the stream without an error: a request body is whole only when complete.
      if (!complete()) throw new Error('request body ended early');
      if (declaredLength !== null && size !== declaredLength) throw badRequest(`Image data ended after ${size} of ${declaredLength} bytes.`);
    } catch (e) {
      if (e instanceof HttpError) return fail(e);
      this.log.warn('upload interrupted', { image: img.id, bytes: size, error: (e as Error).message });
      return fail(new HttpError(400, INTERRUPTED));
    }
    const digests = await hasher.digest();
    const verdict = await inspection.finish(img.disk_format, img.container_format)
      .catch((e): { virtualSize: null; refusal: string } => ({ virtualSize: null, refusal: `Image data could not be inspected: ${(e as Error).message}` }));
    if (verdict.refusal) return fail(badRequest(verdict.refusal));
    for (const w of writing) {
      if (!w.writer) continue;
      try {
        w.location = await w.writer.commit(img.id);
      } catch (e) {
        try {
          await storeFailed(w, e, 'committing the data');
        } catch (f) {
          return fail(f);
        }
        continue;
      }
      await policy.storeCommitted?.(w.target.store.id).catch(fail);
    }
    const locations = writing.filter((w) => w.location !== null).map((w) => ({ url: w.location!, store_id: w.target.store.id }));
    assertTransition(img.status, 'active');
    let activated: boolean;
    try {
      activated = await this.repo.activate(img.id, [img.status], {
        size, virtual_size: verdict.virtualSize, checksum: digests.md5,
        os_hash_algo: 'sha512', os_hash_value: digests.sha512, locations, properties: policy.properties,
      });
    } catch (e) {
      // The database refused the new locations: the committed data must not stay behind unnamed.
      return fail(e);
    }
    if (!activated) {
      // Deleted (or otherwise changed) while we were writing: keep nothing.
      for (const l of locations) await this.stores.get(l.store_id)!.delete(l.url).catch(() => {});
      throw conflict('Image was deleted or changed during the upload; the data was discarded.');
    }
    return { stored: locations.map((l) => l.store_id), failed };
  }

  /** PUT /stage: queued → uploading, the data written to the staging area for a later import. */
  async stage(a: AuthContext, id: string, input: Readable, complete: () => boolean): Promise<void> {
    const img = await this.images.get(a, id);
    this.images.imagePolicy(a, img).uploadImage();
    // The status change and the row that tells recovery this node is staging are one step.
    await this.transition(img, 'uploading', { claim: STAGE_KEY });
    const path = join(this.opts.stagingDir, img.id);
    // Written under a partial name and renamed when whole: a crash leaves only a .partial
    // file, which the next start removes (and puts the image back to queued).
    const partial = `${path}${PARTIAL_SUFFIX}`;
    let size = 0;
    const { cap, tooBig } = await this.uploadLimit(img.owner);
    try {
      await mkdir(this.opts.stagingDir, { recursive: true });
      await this.track(pipeline(input, new Transform({
        transform(chunk: Buffer, _e, cb) { size += chunk.length; cb(size > cap ? tooBig(size) : null, chunk); },
      }), createWriteStream(partial)));
      if (!complete()) throw new Error('request body ended early');
      await rename(partial, path);
      // Where the staged data is, for an import that reaches another node (Glance's image_data.stage).
      const self = this.opts.stageHost?.();
      if (self) await this.repo.setProperty(img.id, STAGE_HOST_PROPERTY, self);
      // Staged whole: the row's work is done (the image stays uploading, ready for import).
      await this.repo.dropUploads(img.id);
    } catch (e) {
      await rm(partial, { force: true });
      await this.repo.revertStatus(img.id, ['uploading'], 'queued').catch(() => {});
      if (e instanceof HttpError) throw e;
      if (isNoSpace(e)) throw storageFull();
      throw badRequest(INTERRUPTED);
    }
  }

  /** The image whose data a download sends: by token (visible, download_image) or by a signed URL. */
  async downloadable(a: AuthContext | null, id: string, signed: URLSearchParams | null): Promise<ImageRecord> {
    let img: ImageRecord;
    if (signed) {
      // A signed URL (x-diskhub/download-url) stands in for the token.
      if (!this.opts.downloadUrls.verify(id, signed)) throw new HttpError(401, 'The download URL is not valid or has expired.');
      const found = await this.repo.load(id);
      if (!found) throw notFound(`No image found with ID ${id}`);
      if (found.status === 'deactivated') throw forbidden(DEACTIVATED);
      img = found;
    } else {
      img = await this.images.get(a!, id);
      this.images.imagePolicy(a!, img).downloadImage();
      if (img.status === 'deactivated' && !a!.isAdmin) throw forbidden(DEACTIVATED);
    }
    return img;
  }

  /** A signed, short-lived download URL's query for an image the caller may download. */
  async signDownload(a: AuthContext, id: string): Promise<{ img: ImageRecord; query: string; expires: number }> {
    const img = await this.downloadable(a, id, null);
    if (img.locations.length === 0 || img.status !== 'active') throw conflict(`Image ${img.id} has no data to download (status ${img.status}).`);
    return { img, ...this.opts.downloadUrls.sign(img.id) };
  }

  /**
   * The first of the image's locations whose store answers (as Glance's get_data tries each
   * location in turn): a store that is down, or lost the data, falls through to the next.
   * When none answers: null when the data is gone everywhere (Glance's 204), 503 when a store failed.
   */
  async readable(img: ImageRecord): Promise<ReadableData | null> {
    let failure: unknown = null;
    for (const loc of img.locations) {
      const store = this.stores.locate(loc.store_id, loc.url);
      if (!store) { this.log.warn('image location in no configured store', { image: img.id, store: loc.store_id }); continue; }
      try {
        return { store, url: loc.url, size: await store.size(loc.url) };
      } catch (e) {
        this.log.warn('image data not readable from store', { image: img.id, store: store.id, error: storeFailure(e, store.id, 'reading')?.message ?? String(e) });
        if (!(e instanceof StoreError && e.kind === 'not-found')) failure = storeFailure(e, store.id, 'reading') ?? e;
      }
    }
    if (failure) throw failure instanceof HttpError ? failure : new HttpError(503, 'The image data could not be read from any of its stores; try again later.');
    return null;
  }

  /**
   * Remove the temporary data named `keys` (runs that died mid-write, whose upload rows are
   * gone) from every store, as the sweep at start would; returns the keys removed. The sweep
   * is told every other key is live, so it touches nothing else.
   */
  async dropTempData(keys: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const store of this.stores.all) removed.push(...await store.sweep({ has: (key) => !keys.has(key) }));
    return removed;
  }

  /**
   * Put back what dead nodes were writing (any node runs this, at each task poll): an upload or
   * a staging whose node's heartbeat ran out goes back to queued — Glance leaves such an image
   * saving for good — and the upload's partial data is removed from the shared store (the
   * staging's partial file is on the dead node's disk: its next start removes it).
   */
  async reapDeadUploads(): Promise<void> {
    for (const row of await this.repo.deadUploads(Date.now(), this.opts.node)) {
      if (!(await this.repo.revertDeadUpload(row))) continue;
      this.log.warn('an upload whose node stopped is put back to queued', { image: row.image_id, node: row.node });
      if (row.temp_key === STAGE_KEY) continue;
      const keys = new Set(splitTempKeys(row.temp_key));
      const removed = await this.dropTempData(keys).catch((e) => {
        this.log.warn('removing the partial data of an upload whose node stopped failed', { image: row.image_id, error: (e as Error).message });
        return [] as string[];
      });
      // (an RBD image its dead client still watches cannot be removed for 30 s: the next start's sweep takes it)
      if (removed.length < keys.size) this.log.warn('partial data of an upload whose node stopped is still in a store; the next start\'s sweep removes it', { image: row.image_id });
    }
  }

  /** After a crash: uploads this node had in flight are gone; put their images back and drop partial data. */
  async recover(): Promise<void> {
    const rows = await this.repo.uploadsOf(this.opts.node);
    for (const u of rows.filter((r) => r.temp_key !== STAGE_KEY)) {
      await this.repo.revertStatus(u.image_id, ['saving', 'importing'], 'queued');
      this.log.info('recovered interrupted upload', { image: u.image_id });
    }
    // Every store: a crash may have cut off uploads to any of them.
    const live = await this.repo.liveTempKeys();
    for (const store of this.stores.all) {
      const removed = await store.sweep(live).catch((e) => {
        this.log.warn('store sweep failed', { store: store.id, error: storeFailure(e, store.id, 'sweeping')?.message ?? String(e) });
        return [];
      });
      if (removed.length) this.log.info('removed partial data', { store: store.id, count: removed.length });
    }
    // Staging cut off by a crash: drop the partial file; an image whose staged data is not
    // whole goes back to queued (one whose staging completed keeps it, ready for import).
    await mkdir(this.opts.stagingDir, { recursive: true });
    const staged = new Set<string>();
    for (const name of await readdir(this.opts.stagingDir)) {
      if (name.endsWith(PARTIAL_SUFFIX)) await rm(join(this.opts.stagingDir, name), { force: true });
      else staged.add(name);
    }
    for (const { image_id: id } of rows.filter((r) => r.temp_key === STAGE_KEY)) {
      if (!staged.has(id)) {
        await this.repo.revertStatus(id, ['uploading'], 'queued');
        this.log.info('recovered interrupted staging', { image: id });
      } else {
        await this.repo.dropUploads(id);
      }
    }
    // Staged data no import will read: its image was deleted, or its import failed meanwhile
    // (another node fails the imports of a stage host that was down) — the image is neither
    // staged (uploading) nor importing any more.
    for (const id of staged) {
      // (only an image's staged data: image_conversion's work files are the import recovery's)
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) continue;
      const img = await this.repo.load(id);
      if (img && (img.status === 'uploading' || img.status === 'importing')) continue;
      await rm(join(this.opts.stagingDir, id), { force: true });
      this.log.info('removed staged data no import will read', { image: id, status: img?.status ?? 'gone' });
    }
  }
}
