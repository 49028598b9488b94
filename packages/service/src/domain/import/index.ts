/**
 * Image import (POST /v2/images/{id}/import) as Glance 25's api_image_import task: the request
 * checks what Glance's images controller checks, then commits — in one transaction — the
 * image's move to `importing`, its os_glance_* properties (the task lock
 * os_glance_import_task, os_glance_importing_to_stores) and the pending task row. A worker
 * on any API node runs the task (domain/tasks.ts): it opens the source (the staged data for
 * glance-direct, the URL for web-download), passes it through the enabled plugins
 * (plugins.ts), and feeds the result to the one data ingest the uploads use
 * (ImageDataService.ingest: hashing, the size cap and quota, the safety inspector, the
 * store). The task's end and the image's properties commit together.
 */
import { createReadStream } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { randomUUID } from 'node:crypto';
import { HttpError, badRequest, conflict, isObject } from '../../http.js';
import type { AuthContext } from '../../identity.js';
import type { ImageRecord } from '../../images-model.js';
import type { Logger } from '../../log.js';
import type { ImageRepo } from '../../repo/images.js';
import type { ImageChange, TaskRecord, TaskRepo } from '../../repo/tasks.js';
import { joinTempKeys } from '../../repo/images.js';
import type { ImageDataService } from '../image-data.js';
import { UploadHasher } from '../../hashing.js';
import type { ImageService } from '../images.js';
import { TaskFailure, type TaskOutcome, type TaskRun, type TaskRunner, type TaskService } from '../tasks.js';
import { filteringRefusal, openWebSource, passesImportFiltering, type ImportFilteringOptions } from './web-download.js';
import { applyPlugins, closeData, type ImportPluginOptions, type PluginContext } from './plugins.js';
import { checkGlanceDownloadRequest, openRemoteImage, type ImageEndpointLookup } from './glance-download.js';
import { STAGE_HOST_PROPERTY, otherStageHost, proxyToStageHost } from './stage-host.js';

/** The methods this service can run (Glance's enabled_import_methods chooses among them). */
export const KNOWN_IMPORT_METHODS = ['glance-direct', 'web-download', 'copy-image', 'glance-download'];
export const IMPORT_TASK = 'api_image_import';
export const IMPORT_TASK_PROPERTY = 'os_glance_import_task';
export const IMPORTING_TO_STORES = 'os_glance_importing_to_stores';
export const FAILED_IMPORT = 'os_glance_failed_import';
/** Task input key (not shown by the API) keeping the requester's roles for the plugins that look at them. */
export const REQUESTER_ROLES = 'diskhub_requester_roles';
/**
 * Task input key (not shown by the API) keeping the image's disk and container formats when the
 * import started: glance-download and image_conversion change them mid-run, and a failed import
 * puts them back (Glance's _ImportMetadata revert) — also when the run that changed them died
 * and another node ends or restarts the task.
 */
export const IMAGE_FORMATS = 'diskhub_image_formats';

export interface ImportOptions {
  /** Glance's enabled_import_methods. */
  enabledMethods: string[];
  filtering: ImportFilteringOptions;
  plugins: ImportPluginOptions;
  stagingDir: string;
  /** The default store (imports go there), and every configured store (copy-image's targets). */
  storeId: string;
  allStoreIds: string[];
  /** glance-download: the image endpoint of a region in the user's Keystone catalog. */
  imageEndpoint?: ImageEndpointLookup;
  /** The project quotas /v2/info/usage reports (0: unlimited). */
  imageQuota?: number;
  storageQuota?: number;
  /** This node's worker_self_reference_url, known once it listens (unset: staged data is not tied to a node). */
  stageHost?: () => string | undefined;
}

/** One counter of GET /v2/info/usage. */
export interface Usage { usage: number; limit: number }

export class ImportService implements TaskRunner {
  private tasks!: TaskService;
  /** glance-download: the requester's token by task, kept in this process only (as Glance keeps its request context). */
  private readonly tokens = new Map<string, string>();

  constructor(
    private readonly images: ImageService,
    private readonly repo: ImageRepo,
    private readonly taskRepo: TaskRepo,
    private readonly data: ImageDataService,
    private readonly opts: ImportOptions,
    private readonly log: Logger,
  ) {}

  /** The task service that runs imports (it is built with this runner). */
  attach(tasks: TaskService): void { this.tasks = tasks; }

  get methods(): string[] { return this.opts.enabledMethods; }

  /** POST /v2/images/{id}/import: the checks of Glance's import_image, then the task, committed with the image's move to importing. */
  async start(a: AuthContext, requestId: string, id: string, body: unknown, storeHeader?: string, token?: string, proxiedBy?: string): Promise<void> {
    if (!isObject(body) || !('method' in body)) throw badRequest("Import request requires a 'method' field.");
    const method = body.method;
    if (!isObject(method) || !('name' in method)) throw badRequest("Import request requires a 'name' field.");
    const name = method.name;
    if (typeof name !== 'string' || !this.opts.enabledMethods.includes(name)) throw badRequest(`Unknown import method name '${String(name)}'.`);
    for (const key of ['all_stores_must_succeed', 'all_stores']) {
      if (key in body && typeof body[key] !== 'boolean') throw badRequest(`'${key}' must be boolean value only`);
    }
    const img = await this.images.get(a, id);
    if (name === 'copy-image') return this.startCopy(a, requestId, img, body, storeHeader);
    if (img.status === 'active') throw conflict('Image with status active cannot be target for import');
    if (img.status !== 'queued' && (name === 'web-download' || name === 'glance-download')) throw conflict(`Image needs to be in 'queued' state to use '${name}' method`);
    if (img.status !== 'uploading' && name === 'glance-direct') throw conflict("Image needs to be staged before 'glance-direct' method can be used");
    if (!img.container_format) throw conflict("'container_format' needs to be set before import");
    if (!img.disk_format) throw conflict("'disk_format' needs to be set before import");
    if (name === 'glance-download') checkGlanceDownloadRequest(method);
    this.images.imagePolicy(a, img).modifyImage();
    const stale = await this.enforceImportLock(img);
    const stores = this.requestedStores(body, storeHeader);
    if (name === 'web-download') {
      const uri = typeof method.uri === 'string' ? method.uri : '';
      if (!passesImportFiltering(uri, this.opts.filtering)) throw filteringRefusal(typeof method.uri === 'string' ? uri : 'None');
    }
    const self = this.opts.stageHost?.();
    if (name === 'glance-direct') {
      // Staged on another node: the import is that node's (Glance's _proxy_request_to_host).
      const host = otherStageHost(img.properties, self, proxiedBy);
      if (host) {
        this.log.info('import proxied to the stage host', { image: img.id, stage_host: host });
        return proxyToStageHost(host, self, 'POST', `/v2/images/${img.id}/import`, token, body, storeHeader === undefined ? {} : { 'X-Image-Meta-Store': storeHeader });
      }
    }
    // The task of data staged here is this node's alone (os_glance_stage_host is taken off the image, as Glance does).
    const stageHost = name === 'glance-direct' && self && img.properties[STAGE_HOST_PROPERTY] === self ? self : null;
    const taskId = randomUUID();
    const input = {
      image_id: img.id, import_req: body, backend: stores, [REQUESTER_ROLES]: [...a.roleNames],
      [IMAGE_FORMATS]: { disk_format: img.disk_format ?? '', container_format: img.container_format ?? '' },
    };
    if (name === 'glance-download' && token) this.tokens.set(taskId, token);
    const created = await this.tasks.create(a, requestId, IMPORT_TASK, input, {
      id: img.id, revision: img.revision, status: { from: [img.status], to: 'importing' },
      properties: { ...this.startProperties(img, taskId, stores, stale), ...(img.properties[STAGE_HOST_PROPERTY] !== undefined ? { [STAGE_HOST_PROPERTY]: null } : {}) },
      upload: 'release',
    }, taskId, stageHost);
    if (!created) {
      this.tokens.delete(taskId);
      const cur = await this.repo.load(img.id);
      throw conflict(cur && cur.properties[IMPORT_TASK_PROPERTY]
        ? `New operation on image '${img.id}' is not permitted as prior operation is still in progress`
        : `Image status transition from ${cur?.status ?? 'deleted'} to importing is not allowed`);
    }
  }

  /**
   * The stores an import writes to, as Glance's get_stores_from_request picks them: `all_stores`
   * (every store), the body's `stores`, else the X-Image-Meta-Store header, else the default
   * store. Glance's 400s for the combinations it refuses and 409 for a store it does not have.
   */
  private requestedStores(body: Record<string, unknown>, header: string | undefined): string[] {
    if (body.all_stores === true) {
      if ('stores' in body || header !== undefined) throw badRequest("All_stores parameter can't be used with x-image-meta-store header or stores parameter");
      return [...this.opts.allStoreIds];
    }
    let stores: string[];
    if ('stores' in body) {
      if (header !== undefined) throw badRequest("Stores parameter and x-image-meta-store header can't be both specified");
      // (Glance iterates whatever it is given; a list of store ids is what it means)
      if (!Array.isArray(body.stores) || body.stores.length === 0 || body.stores.some((s) => typeof s !== 'string')) throw badRequest("'stores' must be a non-empty list of store identifiers");
      stores = body.stores as string[];
    } else {
      stores = [header ?? this.opts.storeId];
    }
    for (const s of stores) if (!this.opts.allStoreIds.includes(s)) throw conflict(`Store for identifier ${s} not found`);
    return [...new Set(stores)];
  }

  /**
   * The import's properties as Glance's get_flow sets them: the task lock, the stores added to
   * importing and taken out of failed — after, when the lock was taken from an ended task
   * (`stale`), that task's stores were taken out of both (Glance's _cleanup_stale_task_progress).
   */
  private startProperties(img: ImageRecord, taskId: string, stores: string[], stale: string[] = []): Record<string, string> {
    return {
      [IMPORT_TASK_PROPERTY]: taskId,
      [IMPORTING_TO_STORES]: mergeStores(mergeStores(img.properties[IMPORTING_TO_STORES], [], stale), stores, []),
      [FAILED_IMPORT]: mergeStores(img.properties[FAILED_IMPORT], [], [...stale, ...stores]),
    };
  }

  /**
   * Glance's _enforce_import_lock: an image whose import lock (os_glance_import_task) names a
   * task still pending or processing is 409 `Image has active task`. A lock whose task ended,
   * or is gone, is stale: the new task takes it (the create's compare-and-set on the image's
   * revision settles a race), and the stores of the stale task are returned for the clean-up.
   * Glance also breaks the lock of a task not updated for 60 minutes (120 pending), a run its
   * API process lost; here such a task is never left so — its node's lease (or, for a stage
   * host, its heartbeat) runs out and another node takes it over or fails it.
   */
  private async enforceImportLock(img: ImageRecord): Promise<string[]> {
    const other = img.properties[IMPORT_TASK_PROPERTY];
    if (!other) return [];
    const task = await this.taskRepo.get(other);
    if (task && (task.status === 'pending' || task.status === 'processing')) throw conflict('Image has active task');
    this.log.warn('image had a stale import lock; taken over', { image: img.id, task: other, status: task?.status ?? 'missing' });
    return task ? this.targets(task) : [];
  }

  /**
   * GET /v2/info/usage: Glance 25's counters for the caller's project (quota/keystone.py
   * get_usage; sizes in MiB, rounded down), with this service's quotas as the limits
   * (-1: unlimited, as oslo.limit says it). Staging is the staged data of the project's images
   * being uploaded or imported; image_count_uploading counts those saving, uploading or importing.
   */
  async usage(a: AuthContext): Promise<Record<string, Usage>> {
    const project = a.projectId ?? '';
    const u = await this.taskRepo.usage(project);
    let staged = 0;
    for (const img of u.writing) staged += await stat(join(this.opts.stagingDir, img.id)).then((s) => s.size, () => 0);
    const MiB = 1 << 20;
    const storage = this.opts.storageQuota ? Math.floor(this.opts.storageQuota / MiB) : -1;
    return {
      image_size_total: { usage: Math.floor(u.stored / MiB), limit: storage },
      image_stage_total: { usage: Math.floor(staged / MiB), limit: storage },
      image_count_total: { usage: u.images, limit: this.opts.imageQuota || -1 },
      image_count_uploading: { usage: u.writing.length, limit: -1 },
    };
  }

  /**
   * At start: conversion files a crashed run left in the staging area (image_conversion's
   * `<image>.convert-*`) are removed, unless their image is importing (another node sharing
   * the data directory may be converting it now).
   */
  async recover(): Promise<void> {
    const names = await readdir(this.opts.stagingDir).catch(() => [] as string[]);
    for (const name of names) {
      const m = /^([0-9a-f-]{36})\.convert-/.exec(name);
      if (!m) continue;
      const img = await this.repo.load(m[1]!);
      if (img?.status === 'importing') continue;
      await rm(join(this.opts.stagingDir, name), { force: true });
      this.log.info('removed a conversion file left by an interrupted import', { file: name });
    }
  }

  /**
   * copy-image (Glance's checks, images.py import_image): an active image, the copy_image rule
   * (admin by default), the stores chosen as for any import that do not hold the image yet — or
   * with `all_stores`, those that do not; nothing to copy answers 202 without a task, as Glance
   * does. The image stays active; os_glance_importing_to_stores lists the stores still to copy to.
   */
  private async startCopy(a: AuthContext, requestId: string, img: ImageRecord, body: Record<string, unknown>, storeHeader: string | undefined): Promise<void> {
    if (img.status !== 'active') throw conflict('Only images with status active can be targeted for copying');
    this.images.imagePolicy(a, img).copyImage();
    const stale = await this.enforceImportLock(img);
    const stores = this.requestedStores(body, storeHeader);
    const have = new Set(img.locations.map((l) => String(l.metadata.store ?? l.store_id)));
    let targets: string[];
    if (body.all_stores === true) {
      targets = stores.filter((s) => !have.has(s));
    } else {
      for (const s of stores) if (have.has(s)) throw badRequest(`Image is already present at store '${s}'`);
      targets = stores;
    }
    if (targets.length === 0) return;
    const taskId = randomUUID();
    const input = { image_id: img.id, import_req: body, backend: targets, [REQUESTER_ROLES]: [...a.roleNames] };
    const created = await this.tasks.create(a, requestId, IMPORT_TASK, input, {
      id: img.id, revision: img.revision, status: { from: ['active'], to: 'active' },
      properties: this.startProperties(img, taskId, targets, stale),
    }, taskId);
    if (!created) throw conflict(`New operation on image '${img.id}' is not permitted as prior operation is still in progress`);
  }

  /**
   * Run copy-image: the data read from the image's first readable location into each store
   * still importing, in turn, each copy a new location, written under the temporary key the
   * claim recorded for that store (so a crash leaves nothing a sweep would not remove). A store
   * that fails goes to os_glance_failed_import; when all stores must succeed it ends the task
   * and, as Glance's revert does, the copies this run made are removed again.
   */
  private async copy(task: TaskRecord, img: ImageRecord, keys: Map<string, string>, signal: AbortSignal, progress: (n: number) => void): Promise<TaskOutcome> {
    const mustSucceed = allStoresMustSucceed(task);
    let importing = storeList(img.properties[IMPORTING_TO_STORES]);
    let failed = storeList(img.properties[FAILED_IMPORT]);
    const copied: string[] = [];
    const end = (): ImageChange => ({
      id: img.id, upload: 'release',
      properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: importing.join(','), [FAILED_IMPORT]: failed.join(',') },
    });
    for (const storeId of [...importing]) {
      try {
        const key = keys.get(storeId);
        if (!key) throw conflict(`Store for identifier ${storeId} not found`);
        // (progress per store, as Glance's message counts each store's copy)
        await this.copyTo(img.id, storeId, key, signal, progress);
        copied.push(storeId);
        importing = storeList(mergeStores(importing.join(','), [], [storeId]));
        await this.taskRepo.updateImage({ id: img.id, properties: { [IMPORTING_TO_STORES]: importing.join(',') } });
      } catch (e) {
        if (signal.aborted) throw e;
        failed = storeList(mergeStores(failed.join(','), [storeId], []));
        const message = `Copying image ${img.id} to store '${storeId}' failed: ${(e as Error).message}`;
        this.log.warn('copy-image failed', { image: img.id, store: storeId, error: (e as Error).message });
        if (mustSucceed) {
          // (the stores not tried yet leave the importing list too: nothing copies to them any more)
          importing = [];
          await this.removeCopies(img.id, copied);
          throw new TaskFailure(message, end());
        }
        importing = storeList(mergeStores(importing.join(','), [], [storeId]));
        await this.taskRepo.updateImage({ id: img.id, properties: { [IMPORTING_TO_STORES]: importing.join(','), [FAILED_IMPORT]: failed.join(',') } });
      }
    }
    return { result: { image_id: img.id }, image: end() };
  }

  /** Glance's revert of a failed copy: the locations this run added go, and their data. */
  private async removeCopies(imageId: string, stores: string[]): Promise<void> {
    if (stores.length === 0) return;
    const cur = await this.repo.load(imageId);
    if (!cur) return;
    const gone = cur.locations.filter((l) => l.store_id !== null && stores.includes(l.store_id));
    const kept = cur.locations.filter((l) => !gone.includes(l)).map((l) => ({ id: l.id, url: l.url, store_id: l.store_id, metadata: l.metadata }));
    if (!(await this.repo.setLocations(cur, kept))) return;
    for (const l of gone) await this.data.store(l.store_id!).delete(l.url).catch((e) => this.log.warn('copy-image revert: data left in store', { image: imageId, store: l.store_id, error: (e as Error).message }));
  }

  /**
   * One copy: the source store sends into a sink that takes each chunk only once it is copied
   * into the hasher's batches (a store may reuse its send buffers as soon as a write is taken),
   * the batches go to the target's writer, and the copy is committed only when its size and
   * digests are the image's (a copy is never a location with other data).
   */
  private async copyTo(imageId: string, storeId: string, tempKey: string, signal: AbortSignal, progress: (n: number) => void): Promise<void> {
    const img = await this.repo.load(imageId);
    if (!img || img.status !== 'active') throw conflict(`Image ${imageId} is no longer active.`);
    const source = await this.data.readable(img);
    if (!source) throw conflict(`Image ${imageId} has no readable data.`);
    const target = this.data.store(storeId);
    const writer = await target.begin(tempKey, source.size);
    const hasher = new UploadHasher((batch) => writer.write([Buffer.from(batch.buffer, batch.byteOffset, batch.length)]));
    let url: string | null = null;
    try {
      let n = 0;
      const sink = new Writable({
        highWaterMark: 1 << 20,
        write(chunk: Buffer, _encoding, cb) {
          n += chunk.length;
          progress(n);
          hasher.update(chunk).then(() => cb(), cb);
        },
      });
      const copied = finished(sink);
      const stop = () => sink.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', stop, { once: true });
      try {
        await source.store.send(source.url, sink).catch((e) => { sink.destroy(e); });
        await copied;
      } finally { signal.removeEventListener('abort', stop); }
      await hasher.finish();
      const digests = await hasher.digest();
      if (n !== source.size) throw badRequest(`read ${n} of ${source.size} bytes`);
      if ((img.checksum && digests.md5 !== img.checksum) || (img.os_hash_algo === 'sha512' && img.os_hash_value && digests.sha512 !== img.os_hash_value)) {
        throw conflict(`The data read from store '${source.store.id}' does not match the image's checksum; the copy was discarded.`);
      }
      url = await writer.commit(imageId);
      const cur = (await this.repo.load(imageId))!;
      const next = [...cur.locations.map((l) => ({ id: l.id, url: l.url, store_id: l.store_id, metadata: l.metadata })), { url, store_id: storeId, metadata: { store: storeId } }];
      if (!(await this.repo.setLocations(cur, next))) throw conflict(`Image ${imageId} changed while it was copied.`);
    } catch (e) {
      await hasher.drop();
      if (url) await target.delete(url).catch(() => {});
      else await writer.discard().catch(() => {});
      throw e;
    }
  }

  // --- the task runner

  /**
   * The image change ending an import that failed (Glance's reverts): back to queued, the lock
   * dropped, nothing importing any more, `failed` (the stores that failed, or all of them when
   * the source did) added to os_glance_failed_import.
   */
  private failedChange(img: ImageRecord, failed: string[]): ImageChange {
    return {
      id: img.id, status: { from: ['importing', 'queued', 'uploading'], to: 'queued' }, upload: 'release',
      properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: mergeStores(img.properties[FAILED_IMPORT], failed, []) },
    };
  }

  async abandoned(task: TaskRecord): Promise<ImageChange | undefined> {
    this.tokens.delete(task.id);
    if (!task.image_id) return undefined;
    await this.dropStaged(task);
    const img = await this.repo.load(task.image_id);
    if (!img) return undefined;
    const remaining = storeList(img.properties[IMPORTING_TO_STORES]);
    if (importMethod(task) === 'copy-image') {
      // (the image stays active with the copies made; those not made are failed)
      return { id: img.id, upload: 'release', properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: mergeStores(img.properties[FAILED_IMPORT], remaining, []) } };
    }
    return { ...this.failedChange(img, this.targets(task)), ...formatsChange(task, img) };
  }

  /** The stores a task writes to (its input's `backend`; an import recorded before imports chose stores: the default store), those configured. */
  private targets(task: TaskRecord): string[] {
    const backend = task.input?.backend;
    const ids = Array.isArray(backend) ? backend.map((b) => (typeof b === 'string' ? b : this.opts.storeId)) : [this.opts.storeId];
    return ids.filter((id) => this.opts.allStoreIds.includes(id));
  }

  /** One fresh temporary key per target store (the claim records them before the run writes). */
  tempKeys(task: TaskRecord): string[] {
    if (!task.image_id) return [];
    const imageId = task.image_id;
    return this.targets(task).map((id) => this.data.store(id).newTempKey(imageId));
  }

  private async dropStaged(task: TaskRecord): Promise<void> {
    if (task.image_id && importMethod(task) === 'glance-direct') await rm(join(this.opts.stagingDir, task.image_id), { force: true });
  }

  async run({ task, tempKeys, signal, progress }: TaskRun): Promise<TaskOutcome> {
    const imageId = task.image_id;
    if (!imageId) throw new TaskFailure(`Task ${task.id} names no image.`);
    let img = await this.repo.load(imageId);
    if (!img) throw new TaskFailure(`Image ${imageId} could not be found.`);
    const targets = this.targets(task);
    const keys = new Map(targets.map((id, i) => [id, tempKeys[i]!]));
    if (importMethod(task) === 'copy-image') {
      if (img.properties[IMPORT_TASK_PROPERTY] !== task.id) throw new TaskFailure(`Image ${imageId} is no longer copied by task ${task.id}.`);
      return this.copy(task, img, keys, signal, progress);
    }
    const failedBefore = img.properties[FAILED_IMPORT];
    const done = (failed: string[]): ImageChange => ({
      id: imageId, upload: 'release',
      properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: mergeStores(failedBefore, failed, []) },
    });
    // An earlier run activated the image and its node died before ending the task.
    if (img.status === 'active' && img.properties[IMPORT_TASK_PROPERTY] === task.id) {
      return { result: { image_id: imageId }, image: done(targets.filter((t) => !img!.locations.some((l) => l.store_id === t))) };
    }
    const opened: Readable[] = [];
    /** The streamed conversion's chunks, when they go to the ingest directly. */
    let converted: AsyncGenerator<Uint8Array> | null = null;
    const temporary: string[] = [];
    /** The stores that failed (with all_stores_must_succeed=false, the import goes on without them). */
    const storesFailed: string[] = [];
    // A run that died may have changed the formats (glance-download, image_conversion): this
    // run starts from those the import started with, and a failure puts them back.
    let restoreFormats = formatsChange(task, img).formats;
    const originalFormats = restoreFormats ?? { disk_format: img.disk_format ?? '', container_format: img.container_format ?? '' };
    /** glance-download: the remote image's properties the import copies. */
    let remoteProperties: Record<string, string> = {};
    try {
      const missing = (Array.isArray(task.input?.backend) ? task.input!.backend as unknown[] : []).filter((b) => typeof b === 'string' && !targets.includes(b));
      if (missing.length) throw conflict(`Store for identifier ${String(missing[0])} not found`);
      img = await this.importing(img, task, joinTempKeys(tempKeys));
      if (restoreFormats) {
        if (!(await this.taskRepo.updateImage({ id: imageId, status: { from: ['importing'], to: 'importing' }, formats: restoreFormats }))) throw conflict(`Image ${imageId} changed during its import.`);
        this.log.info('formats an earlier run of the import set are put back', { task: task.id, image: imageId, ...restoreFormats });
        img = { ...img, ...restoreFormats };
        restoreFormats = undefined;
      }
      const method = importMethod(task);
      let source: Readable;
      let length: number | null;
      if (method === 'glance-direct') {
        const path = join(this.opts.stagingDir, imageId);
        length = await stat(path).then((s) => s.size, () => {
          // A task tied to its stage host reaches another node only when that node is not running (its heartbeat ran out).
          throw badRequest(task.stage_host && task.stage_host !== this.opts.stageHost?.()
            ? `The staged data of image ${imageId} is on its stage host ${task.stage_host}, which is not running (its heartbeat ran out before it finished this import); stage the data again and import it.`
            : `The staged data of image ${imageId} is not on this node (${path}).`);
        });
        source = createReadStream(path, { highWaterMark: 1 << 20 });
      } else if (method === 'web-download') {
        const web = await openWebSource(String(importRequest(task).method.uri ?? ''), this.opts.filtering, signal);
        source = web.body;
        length = web.length;
      } else if (method === 'glance-download') {
        const token = this.tokens.get(task.id);
        // (as Glance, which runs the task in the API process that took the request; a bearer token is never written to the database)
        if (!token) throw badRequest(`The glance-download of image ${imageId} lost the requester's token: it is kept only in the memory of the API node that took the request, which stopped before the import ended; import the image again.`);
        if (!this.opts.imageEndpoint) throw badRequest('glance-download is not available: no Keystone catalog to find the remote region in.');
        const remote = await openRemoteImage(importRequest(task).method, token, this.opts.imageEndpoint, this.opts.filtering, signal);
        opened.push(remote.data.body);
        source = remote.data.body;
        length = remote.size;
        remoteProperties = remote.properties;
        // (Glance's _ImportMetadata: the remote image's formats become the image's, put back if the import fails)
        const formats = { disk_format: remote.diskFormat, container_format: remote.containerFormat };
        if (!(await this.taskRepo.updateImage({ id: imageId, status: { from: ['importing'], to: 'importing' }, formats }))) throw conflict(`Image ${imageId} changed during its import.`);
        restoreFormats = originalFormats;
        img = { ...img, ...formats };
      } else {
        throw badRequest(`Import method ${method} is not available.`);
      }
      opened.push(source);
      const stop = () => { for (const s of opened) s.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted')); };
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
      const ctx: PluginContext = { image: img, roles: (task.input?.[REQUESTER_ROLES] as string[] | undefined) ?? [], log: this.log, signal };
      const staged = await applyPlugins(source, length, ctx, this.opts.plugins);
      temporary.push(...staged.temporary);
      if (staged.image.disk_format !== img.disk_format || staged.image.container_format !== img.container_format) {
        // As Glance's image_conversion sets them; put back if the import fails.
        const formats = { disk_format: staged.image.disk_format ?? '', container_format: staged.image.container_format ?? '' };
        if (!(await this.taskRepo.updateImage({ id: imageId, status: { from: ['importing'], to: 'importing' }, formats }))) throw conflict(`Image ${imageId} changed during its import.`);
        restoreFormats = originalFormats;
      }
      const data = staged.stream;
      if (data instanceof Readable) opened.push(data);
      else converted = data;
      // (a generator, not a stream: each chunk goes on as it came, which the converter's reused chunks need)
      const counted = (async function* () {
        let bytes = 0;
        for await (const chunk of data as AsyncIterable<Uint8Array>) {
          bytes += chunk.length;
          progress(bytes);
          yield chunk;
        }
      })();
      // Every store written from the one pass over the data; os_glance_importing_to_stores
      // shrinks as each store's data is committed, a failed store moves to os_glance_failed_import.
      const mustSucceed = allStoresMustSucceed(task);
      let importing = [...targets].sort();
      const shown = () => ({ [IMPORTING_TO_STORES]: importing.join(','), [FAILED_IMPORT]: mergeStores(failedBefore, storesFailed, []) });
      const result = await this.data.ingest(staged.image, targets.map((id) => ({ store: this.data.store(id), tempKey: keys.get(id)! })), counted, staged.length, null, () => true, {
        allMustSucceed: mustSucceed,
        // (with the activation, not the task's end: an active image is never shown without them)
        properties: { ...remoteProperties, ...staged.properties },
        storeFailed: async (storeId) => {
          storesFailed.push(storeId);
          if (mustSucceed) return;
          importing = importing.filter((s) => s !== storeId);
          await this.taskRepo.updateImage({ id: imageId, properties: shown() });
        },
        storeCommitted: async (storeId) => {
          importing = importing.filter((s) => s !== storeId);
          await this.taskRepo.updateImage({ id: imageId, properties: shown() });
        },
      });
      await this.dropStaged(task);
      return { result: { image_id: imageId }, image: done(result.failed) };
    } catch (e) {
      if (signal.aborted) throw e;
      await this.dropStaged(task);
      const message = e instanceof HttpError ? e.message : `Import failed: ${(e as Error).message}`;
      // (a failure of the source, a plugin or the inspection fails every store, as Glance's download revert does)
      const failed = storesFailed.length ? storesFailed : targets;
      throw new TaskFailure(message, { ...this.failedChange(img, failed), ...(restoreFormats ? { formats: restoreFormats } : {}) });
    } finally {
      this.tokens.delete(task.id);
      // The ingest stops reading early on a refusal (size cap, quota) without destroying its
      // input: the download, a decompressor, must not run on.
      for (const s of opened) s.destroy();
      if (converted) closeData(converted);
      for (const f of temporary) await rm(f, { force: true });
    }
  }

  /** The image in `importing` under this task: it is, or a dead run's cleanup put it back to queued/uploading with the lock still naming this task. */
  private async importing(img: ImageRecord, task: TaskRecord, tempKey: string): Promise<ImageRecord> {
    if (img.properties[IMPORT_TASK_PROPERTY] !== task.id) throw conflict(`Image ${img.id} is no longer imported by task ${task.id}.`);
    if (img.status === 'importing') return img;
    if (img.status !== 'queued' && img.status !== 'uploading') throw conflict(`Image ${img.id} is ${img.status}; it cannot be imported.`);
    const moved = await this.repo.setStatus(img, 'importing', { claim: { node: task.node ?? '', tempKey } });
    if (!moved) throw conflict(`Image ${img.id} changed while its import was resumed.`);
    return { ...img, status: 'importing', revision: img.revision + 1 };
  }
}

/** A comma-separated store list (os_glance_importing_to_stores, os_glance_failed_import) as its stores. */
function storeList(value: string | undefined): string[] {
  return (value ?? '').split(',').filter(Boolean);
}

/** Glance's merge_store_list: the list with `add` added and `remove` taken out, sorted, comma-separated ('' when empty). */
export function mergeStores(value: string | undefined, add: string[], remove: string[]): string {
  const merged = new Set([...storeList(value), ...add]);
  for (const s of remove) merged.delete(s);
  return [...merged].sort().join(',');
}

/** The import's all_stores_must_succeed (Glance's default: true). */
function allStoresMustSucceed(task: TaskRecord): boolean {
  const req = task.input?.import_req;
  return !(isObject(req) && req.all_stores_must_succeed === false);
}

function importRequest(task: TaskRecord): { method: Record<string, unknown> } {
  const req = task.input?.import_req;
  return isObject(req) && isObject(req.method) ? { method: req.method } : { method: {} };
}

/** The formats the import started with (task input), as an image change — none when the image still has them, or the task did not record them. */
function formatsChange(task: TaskRecord, img: ImageRecord): Pick<ImageChange, 'formats'> {
  const started = task.input?.[IMAGE_FORMATS];
  if (!isObject(started) || typeof started.disk_format !== 'string' || typeof started.container_format !== 'string') return {};
  if (started.disk_format === (img.disk_format ?? '') && started.container_format === (img.container_format ?? '')) return {};
  return { formats: { disk_format: started.disk_format, container_format: started.container_format } };
}

function importMethod(task: TaskRecord): string {
  return String(importRequest(task).method.name ?? '');
}
