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
import { PassThrough, Transform, type Readable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { HttpError, badRequest, conflict, isObject } from '../../http.js';
import type { AuthContext } from '../../identity.js';
import type { ImageRecord } from '../../images-model.js';
import type { Logger } from '../../log.js';
import type { ImageRepo } from '../../repo/images.js';
import type { ImageChange, TaskRecord, TaskRepo } from '../../repo/tasks.js';
import type { ImageDataService } from '../image-data.js';
import type { ImageService } from '../images.js';
import { TaskFailure, type TaskOutcome, type TaskRun, type TaskRunner, type TaskService } from '../tasks.js';
import { filteringRefusal, openWebSource, passesImportFiltering, type ImportFilteringOptions } from './web-download.js';
import { applyPlugins, type ImportPluginOptions, type PluginContext } from './plugins.js';

/** The methods this service can run (Glance's enabled_import_methods chooses among them). */
export const KNOWN_IMPORT_METHODS = ['glance-direct', 'web-download', 'copy-image'];
export const IMPORT_TASK = 'api_image_import';
export const IMPORT_TASK_PROPERTY = 'os_glance_import_task';
export const IMPORTING_TO_STORES = 'os_glance_importing_to_stores';
export const FAILED_IMPORT = 'os_glance_failed_import';
/** Task input key (not shown by the API) keeping the requester's roles for the plugins that look at them. */
export const REQUESTER_ROLES = 'diskhub_requester_roles';

export interface ImportOptions {
  /** Glance's enabled_import_methods. */
  enabledMethods: string[];
  filtering: ImportFilteringOptions;
  plugins: ImportPluginOptions;
  stagingDir: string;
  /** The default store (imports go there), and every configured store (copy-image's targets). */
  storeId: string;
  allStoreIds: string[];
  /** The project quotas /v2/info/usage reports (0: unlimited). */
  imageQuota?: number;
  storageQuota?: number;
}

/** One counter of GET /v2/info/usage. */
export interface Usage { usage: number; limit: number }

export class ImportService implements TaskRunner {
  private tasks!: TaskService;

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
  async start(a: AuthContext, requestId: string, id: string, body: unknown): Promise<void> {
    if (!isObject(body) || !('method' in body)) throw badRequest("Import request requires a 'method' field.");
    const method = body.method;
    if (!isObject(method) || !('name' in method)) throw badRequest("Import request requires a 'name' field.");
    const name = method.name;
    if (typeof name !== 'string' || !this.opts.enabledMethods.includes(name)) throw badRequest(`Unknown import method name '${String(name)}'.`);
    for (const key of ['all_stores_must_succeed', 'all_stores']) {
      if (key in body && typeof body[key] !== 'boolean') throw badRequest(`'${key}' must be boolean value only`);
    }
    const img = await this.images.get(a, id);
    if (name === 'copy-image') return this.startCopy(a, requestId, img, body);
    if (img.status === 'active') throw conflict('Image with status active cannot be target for import');
    if (img.status !== 'queued' && name === 'web-download') throw conflict(`Image needs to be in 'queued' state to use '${name}' method`);
    if (img.status !== 'uploading' && name === 'glance-direct') throw conflict("Image needs to be staged before 'glance-direct' method can be used");
    if (!img.container_format) throw conflict("'container_format' needs to be set before import");
    if (!img.disk_format) throw conflict("'disk_format' needs to be set before import");
    this.images.imagePolicy(a, img).modifyImage();
    // Imports go to the default store only (for now): a request for other stores is refused
    // rather than quietly imported elsewhere. (all_stores_must_succeed then says nothing more.)
    const stores = 'stores' in body ? body.stores : undefined;
    if (stores !== undefined && (!Array.isArray(stores) || stores.some((s) => s !== this.opts.storeId))) {
      throw badRequest(`Importing into stores other than the default store '${this.opts.storeId}' is not supported by this service yet.`);
    }
    if (body.all_stores === true) throw badRequest(`Importing into all stores is not supported by this service yet; imports go to the default store '${this.opts.storeId}'.`);
    if (name === 'web-download') {
      const uri = typeof method.uri === 'string' ? method.uri : '';
      if (!passesImportFiltering(uri, this.opts.filtering)) throw filteringRefusal(typeof method.uri === 'string' ? uri : 'None');
    }
    const taskId = randomUUID();
    const input = { image_id: img.id, import_req: body, backend: [null], [REQUESTER_ROLES]: [...a.roleNames] };
    const created = await this.tasks.create(a, requestId, IMPORT_TASK, input, {
      id: img.id, revision: img.revision, status: { from: [img.status], to: 'importing' },
      properties: { [IMPORT_TASK_PROPERTY]: taskId, [IMPORTING_TO_STORES]: this.opts.storeId, [FAILED_IMPORT]: null },
      upload: 'release',
    }, taskId);
    if (!created) {
      const cur = await this.repo.load(img.id);
      throw conflict(cur && cur.properties[IMPORT_TASK_PROPERTY]
        ? `New operation on image '${img.id}' is not permitted as prior operation is still in progress`
        : `Image status transition from ${cur?.status ?? 'deleted'} to importing is not allowed`);
    }
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
   * (admin by default), `stores` that exist and do not hold the image yet, or `all_stores`
   * (those that do not); nothing to copy answers 202 without a task, as Glance does. The
   * image stays active; os_glance_importing_to_stores lists the stores still to copy to.
   */
  private async startCopy(a: AuthContext, requestId: string, img: ImageRecord, body: Record<string, unknown>): Promise<void> {
    if (img.status !== 'active') throw conflict('Only images with status active can be targeted for copying');
    this.images.imagePolicy(a, img).copyImage();
    const have = new Set(img.locations.map((l) => l.store_id));
    let targets: string[];
    if (body.all_stores === true) {
      targets = this.opts.allStoreIds.filter((s) => !have.has(s));
    } else {
      const stores = body.stores;
      if (!Array.isArray(stores) || stores.length === 0 || stores.some((s) => typeof s !== 'string')) throw badRequest("copy-image needs 'stores' (a list of store ids) or 'all_stores'.");
      for (const s of stores as string[]) {
        if (!this.opts.allStoreIds.includes(s)) throw conflict(`Unknown scheme '${s}' found in URI`);
        if (have.has(s)) throw badRequest(`Image is already present at store '${s}'`);
      }
      targets = [...new Set(stores as string[])];
    }
    if (targets.length === 0) return;
    const taskId = randomUUID();
    const input = { image_id: img.id, import_req: body, backend: targets, [REQUESTER_ROLES]: [...a.roleNames] };
    const created = await this.tasks.create(a, requestId, IMPORT_TASK, input, {
      id: img.id, revision: img.revision, status: { from: ['active'], to: 'active' },
      properties: { [IMPORT_TASK_PROPERTY]: taskId, [IMPORTING_TO_STORES]: targets.join(','), [FAILED_IMPORT]: null },
    }, taskId);
    if (!created) throw conflict(`New operation on image '${img.id}' is not permitted as prior operation is still in progress`);
  }

  /** Run copy-image: the data read from the image's first readable location into each store still listed, each copy a new location. */
  private async copy(task: TaskRecord, img: ImageRecord, signal: AbortSignal, progress: (n: number) => void): Promise<TaskOutcome> {
    const req = task.input?.import_req;
    const mustSucceed = !(isObject(req) && req.all_stores_must_succeed === false);
    const remaining = (img.properties[IMPORTING_TO_STORES] ?? '').split(',').filter(Boolean);
    const failed: string[] = [];
    const end = (extra: Record<string, string | null> = {}): ImageChange => ({ id: img.id, properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: '', ...extra } });
    for (const storeId of [...remaining]) {
      try {
        await this.copyTo(img.id, storeId, signal, progress);
        remaining.splice(remaining.indexOf(storeId), 1);
        await this.taskRepo.updateImage({ id: img.id, properties: { [IMPORTING_TO_STORES]: remaining.join(',') } });
      } catch (e) {
        if (signal.aborted) throw e;
        failed.push(storeId);
        const message = `Copying image ${img.id} to store '${storeId}' failed: ${(e as Error).message}`;
        this.log.warn('copy-image failed', { image: img.id, store: storeId, error: (e as Error).message });
        if (mustSucceed) throw new TaskFailure(message, end({ [FAILED_IMPORT]: failed.join(',') }));
      }
    }
    return { result: { image_id: img.id }, image: end(failed.length ? { [FAILED_IMPORT]: failed.join(',') } : {}) };
  }

  private async copyTo(imageId: string, storeId: string, signal: AbortSignal, progress: (n: number) => void): Promise<void> {
    const img = await this.repo.load(imageId);
    if (!img || img.status !== 'active') throw conflict(`Image ${imageId} is no longer active.`);
    const source = await this.data.readable(img);
    if (!source) throw conflict(`Image ${imageId} has no readable data.`);
    const target = this.data.store(storeId);
    const writer = await target.begin(target.newTempKey(imageId), source.size);
    let url: string | null = null;
    try {
      const pass = new PassThrough({ highWaterMark: 1 << 20 });
      const stop = () => pass.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', stop, { once: true });
      const sending = source.store.send(source.url, pass).catch((e) => { pass.destroy(e); });
      let n = 0;
      try {
        for await (const chunk of pass) { n += (chunk as Buffer).length; progress(n); await writer.write([chunk as Buffer]); }
      } finally { signal.removeEventListener('abort', stop); }
      await sending;
      if (n !== source.size) throw badRequest(`read ${n} of ${source.size} bytes`);
      url = await writer.commit(imageId);
      const cur = (await this.repo.load(imageId))!;
      const next = [...cur.locations.map((l) => ({ id: l.id, url: l.url, store_id: l.store_id, metadata: l.metadata })), { url, store_id: storeId, metadata: { store: storeId } }];
      if (!(await this.repo.setLocations(cur, next))) throw conflict(`Image ${imageId} changed while it was copied.`);
    } catch (e) {
      if (url) await target.delete(url).catch(() => {});
      else await writer.discard().catch(() => {});
      throw e;
    }
  }

  // --- the task runner

  /** The image change ending an import that failed: back to queued, the store in os_glance_failed_import, the lock dropped. */
  private failedChange(imageId: string): ImageChange {
    return {
      id: imageId, status: { from: ['importing', 'queued', 'uploading'], to: 'queued' }, upload: 'release',
      properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: '', [FAILED_IMPORT]: this.opts.storeId },
    };
  }

  async abandoned(task: TaskRecord): Promise<ImageChange | undefined> {
    if (!task.image_id) return undefined;
    await this.dropStaged(task);
    return this.failedChange(task.image_id);
  }

  private async dropStaged(task: TaskRecord): Promise<void> {
    if (task.image_id && importMethod(task) === 'glance-direct') await rm(join(this.opts.stagingDir, task.image_id), { force: true });
  }

  async run({ task, tempKey, signal, progress }: TaskRun): Promise<TaskOutcome> {
    const imageId = task.image_id;
    if (!imageId || !tempKey) throw new TaskFailure(`Task ${task.id} names no image.`);
    const done: ImageChange = { id: imageId, properties: { [IMPORT_TASK_PROPERTY]: null, [IMPORTING_TO_STORES]: '' } };
    let img = await this.repo.load(imageId);
    if (!img) throw new TaskFailure(`Image ${imageId} could not be found.`);
    if (importMethod(task) === 'copy-image') {
      if (img.properties[IMPORT_TASK_PROPERTY] !== task.id) throw new TaskFailure(`Image ${imageId} is no longer copied by task ${task.id}.`);
      return this.copy(task, img, signal, progress);
    }
    // An earlier run activated the image and its node died before ending the task.
    if (img.status === 'active' && img.properties[IMPORT_TASK_PROPERTY] === task.id) return { result: { image_id: imageId }, image: done };
    const opened: Readable[] = [];
    const temporary: string[] = [];
    let restoreFormats: ImageChange['formats'];
    try {
      img = await this.importing(img, task, tempKey);
      const method = importMethod(task);
      let source: Readable;
      let length: number | null;
      if (method === 'glance-direct') {
        const path = join(this.opts.stagingDir, imageId);
        length = await stat(path).then((s) => s.size, () => { throw badRequest(`The staged data of image ${imageId} is not on this node (${path}).`); });
        source = createReadStream(path, { highWaterMark: 1 << 20 });
      } else if (method === 'web-download') {
        const web = await openWebSource(String(importRequest(task).method.uri ?? ''), this.opts.filtering, signal);
        source = web.body;
        length = web.length;
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
        restoreFormats = { disk_format: img.disk_format ?? '', container_format: img.container_format ?? '' };
      }
      let bytes = 0;
      const counted = staged.stream.pipe(new Transform({
        transform(chunk: Buffer, _e, cb) { bytes += chunk.length; progress(bytes); cb(null, chunk); },
      }));
      staged.stream.on('error', (e) => counted.destroy(e));
      opened.push(staged.stream, counted);
      // (the default store: its id is what os_glance_importing_to_stores names, and it made the claim's temporary key)
      await this.data.ingest(staged.image, this.data.store(undefined), tempKey, counted, staged.length, 'queued', () => true);
      await this.dropStaged(task);
      return { result: { image_id: imageId }, image: { ...done, properties: { ...done.properties, ...staged.properties } } };
    } catch (e) {
      if (signal.aborted) throw e;
      await this.dropStaged(task);
      const message = e instanceof HttpError ? e.message : `Import failed: ${(e as Error).message}`;
      throw new TaskFailure(message, { ...this.failedChange(imageId), ...(restoreFormats ? { formats: restoreFormats } : {}) });
    } finally {
      // The ingest stops reading early on a refusal (size cap, quota) without destroying its
      // input: the download, a decompressor, must not run on.
      for (const s of opened) s.destroy();
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

function importRequest(task: TaskRecord): { method: Record<string, unknown> } {
  const req = task.input?.import_req;
  return isObject(req) && isObject(req.method) ? { method: req.method } : { method: {} };
}

function importMethod(task: TaskRecord): string {
  return String(importRequest(task).method.name ?? '');
}
