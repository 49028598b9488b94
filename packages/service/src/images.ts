/**
 * The Images API v2 (Glance compatible): images, image data, staging and import, tags,
 * members, schemas and discovery.
 */
import { randomUUID } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Db } from './db/connect.js';
import { HttpError, badRequest, conflict, forbidden, isObject, mediaType, notFound, readJson, sendEmpty, sendJson, type Ctx, type Router } from './http.js';
import { insertIgnore, now, type AuthContext } from './identity.js';
import { BASE_ATTRS, MAX_PROPERTIES, checkWritable, imageView, isReserved, validateAttr, validateTag, type ImageRecord } from './images-model.js';
import { canSee, hydrate, listImages, loadImage } from './images-repo.js';
import { UploadInspection } from './inspect.js';
import { DEFAULT_BUCKETS, MAX_BUCKETS, describeInside } from './inside.js';
import { SIGNATURE_PARAM, type DownloadUrls } from './download-urls.js';
import { UploadHasher } from './hashing.js';
import { imageSchema, imagesSchema, memberSchema, membersSchema } from './schemas.js';
import type { StagedWrite, Store } from './store.js';
import type { Logger } from './log.js';

export interface ImagesOptions {
  /** Largest image accepted, in bytes (Glance's image_size_cap). */
  imageSizeCap: number;
  /** Per-project limits; 0 = unlimited. */
  projectImageQuota: number;
  projectStorageQuota: number;
  /** Largest page a list returns (Glance's api_limit_max) and the default page size. */
  limitMax: number;
  limitDefault: number;
  stagingDir: string;
  /** Identifies this API node in upload records (crash recovery). */
  node: string;
  /** Signs and checks the x-diskhub download URLs. */
  downloadUrls: DownloadUrls;
}

/** Suffix of staging files still being written. */
const PARTIAL_SUFFIX = '.partial';
/** temp_key of an `uploads` row that records staging in progress. */
const STAGE_KEY = 'stage';

const PATCH_TYPES = ['application/openstack-images-v2.0-json-patch', 'application/openstack-images-v2.1-json-patch'];
const IMPORT_METHODS = ['glance-direct'];

type Auth = (ctx: Ctx) => Promise<AuthContext>;

export function imageRoutes(router: Router, db: Db, store: Store, auth: Auth, opts: ImagesOptions, log: Logger): { recover(): Promise<void>; inFlight: Set<Promise<unknown>> } {
  const k = db.kysely;
  const inFlight = new Set<Promise<unknown>>();
  const importHeaders = { 'OpenStack-image-import-methods': IMPORT_METHODS.join(','), 'OpenStack-image-store-ids': store.id };

  const mayWrite = (a: AuthContext, action: string) => {
    if (!a.isAdmin && !a.roleNames.has('member')) throw forbidden(`You are not authorized to complete ${action} action.`);
  };
  /** Load a visible image or 404 (invisible images are not admitted to exist). */
  const visibleImage = async (a: AuthContext, id: string): Promise<ImageRecord> => {
    const img = await loadImage(db, id);
    if (!img || !(await canSee(db, a, img))) throw notFound(`No image found with ID ${id}`);
    return img;
  };
  /** Owner or admin; others who can see it get 403. */
  const ownedImage = async (a: AuthContext, id: string, action: string): Promise<ImageRecord> => {
    const img = await visibleImage(a, id);
    mayWrite(a, action);
    if (!a.isAdmin && img.owner !== a.projectId) throw forbidden(`You are not authorized to complete ${action} action.`);
    return img;
  };
  const touch = () => now();

  // --- schemas and discovery
  router.add('GET', '/v2/schemas/image', async (ctx) => { await auth(ctx); sendJson(ctx, 200, imageSchema()); });
  router.add('GET', '/v2/schemas/images', async (ctx) => { await auth(ctx); sendJson(ctx, 200, imagesSchema()); });
  router.add('GET', '/v2/schemas/member', async (ctx) => { await auth(ctx); sendJson(ctx, 200, memberSchema()); });
  router.add('GET', '/v2/schemas/members', async (ctx) => { await auth(ctx); sendJson(ctx, 200, membersSchema()); });
  router.add('GET', '/v2/info/import', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, { 'import-methods': { description: 'Import methods available.', type: 'array', value: IMPORT_METHODS } });
  });
  router.add('GET', '/v2/info/stores', async (ctx) => {
    await auth(ctx);
    sendJson(ctx, 200, { stores: [{ id: store.id, default: 'true', description: 'Local file store' }] });
  });

  // --- create
  router.add('POST', '/v2/images', async (ctx) => {
    const a = await auth(ctx);
    if (mediaType(ctx.req) !== 'application/json') throw new HttpError(415, `The request media type ${mediaType(ctx.req) || '(none)'} is not supported by this server.`);
    const body = await readJson(ctx);
    if (!isObject(body)) throw badRequest('Body must be a JSON object describing the image.');
    mayWrite(a, 'add_image');
    for (const [key, v] of Object.entries(body)) { checkWritable(key, true); validateAttr(key, v); }
    if (opts.projectImageQuota && a.projectId) {
      const n = await k.selectFrom('images').select((eb) => eb.fn.countAll().as('n')).where('owner', '=', a.projectId).where('deleted', '=', 0).executeTakeFirstOrThrow();
      if (Number(n.n) >= opts.projectImageQuota) throw new HttpError(413, `Maximum number of images exceeded: the project may have ${opts.projectImageQuota} images.`);
    }
    const props: Record<string, string> = {};
    for (const [key, v] of Object.entries(body)) if (!BASE_ATTRS.has(key)) props[key] = v as string;
    if (Object.keys(props).length > MAX_PROPERTIES) throw new HttpError(413, `Maximum number of image properties exceeded (${MAX_PROPERTIES}).`);
    const owner = body.owner === undefined ? a.projectId : (body.owner as string | null);
    if (!a.isAdmin && owner !== a.projectId) throw forbidden(`You are not permitted to create images owned by '${owner}'.`);
    const visibility = (body.visibility as string | undefined) ?? 'shared';
    if (visibility === 'public' && !a.isAdmin) throw forbidden('You are not authorized to complete publicize_image action.');
    const id = (body.id as string | undefined)?.toLowerCase() ?? randomUUID();
    const ts = touch();
    const row = {
      id, name: (body.name as string | null | undefined) ?? null, disk_format: (body.disk_format as string | null | undefined) ?? null,
      container_format: (body.container_format as string | null | undefined) ?? null, size: null, virtual_size: null,
      status: 'queued', visibility, protected: body.protected ? 1 : 0, os_hidden: body.os_hidden ? 1 : 0,
      checksum: null, os_hash_algo: null, os_hash_value: null, min_disk: (body.min_disk as number | undefined) ?? 0,
      min_ram: (body.min_ram as number | undefined) ?? 0, owner, location: null, store: null,
      created_at: ts, updated_at: ts, revision: 0, deleted: 0, deleted_at: null,
    };
    const tags = [...new Set((body.tags as string[] | undefined) ?? [])];
    try {
      await k.transaction().execute(async (tx) => {
        await tx.insertInto('images').values(row).execute();
        if (Object.keys(props).length) await tx.insertInto('image_properties').values(Object.entries(props).map(([name, value]) => ({ image_id: id, name, value }))).execute();
        if (tags.length) await tx.insertInto('image_tags').values(tags.map((value) => ({ image_id: id, value }))).execute();
      });
    } catch (e) {
      if (await k.selectFrom('images').select('id').where('id', '=', id).executeTakeFirst()) throw conflict(`Image ID ${id} already exists!`);
      throw e;
    }
    const img = (await loadImage(db, id))!;
    sendJson(ctx, 201, imageView(img, store.id), { Location: `${ctx.baseUrl}/v2/images/${id}`, ...importHeaders });
  });

  // --- list / show
  router.add('GET', '/v2/images', async (ctx) => {
    const a = await auth(ctx);
    const sp = ctx.url.searchParams;
    let limit = opts.limitDefault;
    if (sp.has('limit')) {
      const raw = sp.get('limit')!;
      if (!/^-?\d+$/.test(raw)) throw badRequest('limit param must be an integer');
      limit = Number(raw);
      if (limit < 0) throw badRequest('limit param must be positive');
      limit = Math.min(limit, opts.limitMax);
    }
    const { rows, more } = await listImages(db, a, sp, limit);
    const images = (await hydrate(db, rows)).map((i) => imageView(i, store.id));
    const body: Record<string, unknown> = { images, first: `/v2/images${sp.toString() ? `?${sp}` : ''}`, schema: '/v2/schemas/images' };
    if (more && rows.length) {
      const next = new URLSearchParams(sp);
      next.delete('marker');
      next.set('marker', rows[rows.length - 1]!.id);
      body.next = `/v2/images?${next}`;
    }
    sendJson(ctx, 200, body);
  });
  router.add('GET', '/v2/images/:id', async (ctx) => {
    const a = await auth(ctx);
    sendJson(ctx, 200, imageView(await visibleImage(a, ctx.params.id!), store.id));
  });

  // --- update (JSON patch)
  router.add('PATCH', '/v2/images/:id', async (ctx) => {
    const a = await auth(ctx);
    const type = mediaType(ctx.req);
    if (!PATCH_TYPES.includes(type)) {
      throw new HttpError(415, `The request media type ${type || '(none)'} is not supported by this server.`, { 'Accept-Patch': PATCH_TYPES.join(', ') });
    }
    const ops = await readJson(ctx);
    if (!Array.isArray(ops)) throw badRequest('Request body must be a JSON array of operation objects.');
    const img = await ownedImage(a, ctx.params.id!, 'modify_image');
    const base: Record<string, unknown> = {
      name: img.name, visibility: img.visibility, protected: !!img.protected, os_hidden: !!img.os_hidden,
      owner: img.owner, container_format: img.container_format, disk_format: img.disk_format,
      min_ram: img.min_ram, min_disk: img.min_disk, tags: [...img.tags],
    };
    const props: Record<string, string> = { ...img.properties };
    for (const raw of ops) {
      const { op, path, value, hasValue } = parseOp(raw, type);
      const key = path.slice(1).replace(/~1/g, '/').replace(/~0/g, '~');
      if (!path.startsWith('/') || key.includes('/') || key === '') throw badRequest(`Invalid JSON pointer for this resource: '${path}'`);
      checkWritable(key, false);
      if (op === 'remove') {
        if (BASE_ATTRS.has(key)) throw forbidden(`Property ${key} may not be removed.`);
        if (!(key in props)) throw conflict(`Property ${key} does not exist.`);
        delete props[key];
        continue;
      }
      if (!hasValue) throw badRequest(`Operation objects must contain exactly one member named "value".`);
      validateAttr(key, value);
      if (BASE_ATTRS.has(key)) {
        if (op === 'add' && key !== 'tags' && !(key in base)) throw badRequest(`Invalid JSON pointer for this resource: '${path}'`);
        base[key] = key === 'tags' ? [...new Set(value as string[])] : value;
      } else {
        if (op === 'replace' && !(key in props)) throw conflict(`Property ${key} does not exist.`);
        props[key] = value as string;
      }
    }
    if (Object.keys(props).length > MAX_PROPERTIES) throw new HttpError(413, `Maximum number of image properties exceeded (${MAX_PROPERTIES}).`);
    if (base.visibility !== img.visibility && base.visibility === 'public' && !a.isAdmin) throw forbidden('You are not authorized to complete publicize_image action.');
    if (base.owner !== img.owner && !a.isAdmin) throw forbidden("You are not permitted to modify 'owner' on this image.");
    for (const f of ['disk_format', 'container_format'] as const) {
      if (base[f] !== img[f] && img.status !== 'queued') throw forbidden(`Attribute ${f} can be only replaced for a queued image.`);
    }
    const ts = touch();
    const changed = await k.transaction().execute(async (tx) => {
      const r = await tx.updateTable('images').set({
        name: base.name as string | null, visibility: base.visibility as string, protected: base.protected ? 1 : 0,
        os_hidden: base.os_hidden ? 1 : 0, owner: base.owner as string | null, container_format: base.container_format as string | null,
        disk_format: base.disk_format as string | null, min_ram: base.min_ram as number, min_disk: base.min_disk as number,
        updated_at: ts, revision: img.revision + 1,
      }).where('id', '=', img.id).where('revision', '=', img.revision).where('deleted', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      await tx.deleteFrom('image_properties').where('image_id', '=', img.id).execute();
      if (Object.keys(props).length) await tx.insertInto('image_properties').values(Object.entries(props).map(([name, value]) => ({ image_id: img.id, name, value }))).execute();
      await tx.deleteFrom('image_tags').where('image_id', '=', img.id).execute();
      const tags = base.tags as string[];
      if (tags.length) await tx.insertInto('image_tags').values(tags.map((value) => ({ image_id: img.id, value }))).execute();
      return true;
    });
    if (!changed) throw conflict(`Image ${img.id} was changed by another request; retry.`);
    sendJson(ctx, 200, imageView((await loadImage(db, img.id))!, store.id));
  });

  // --- delete
  router.add('DELETE', '/v2/images/:id', async (ctx) => {
    const a = await auth(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'delete_image');
    if (img.protected) throw forbidden(`Image ${img.id} is protected and cannot be deleted.`);
    const ts = touch();
    const r = await k.updateTable('images').set({ status: 'deleted', deleted: 1, deleted_at: ts, updated_at: ts, revision: img.revision + 1 })
      .where('id', '=', img.id).where('deleted', '=', 0).where('protected', '=', 0).executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) throw notFound(`No image found with ID ${img.id}`);
    await k.deleteFrom('image_members').where('image_id', '=', img.id).execute();
    await k.deleteFrom('image_tags').where('image_id', '=', img.id).execute();
    await k.deleteFrom('image_properties').where('image_id', '=', img.id).execute();
    if (img.location) await store.delete(img.location).catch((e) => log.warn('store delete failed', { image: img.id, error: String(e) }));
    await rm(join(opts.stagingDir, img.id), { force: true });
    sendEmpty(ctx, 204);
  });

  // --- deactivate / reactivate (admin)
  const setActivation = (action: 'deactivate' | 'reactivate') => async (ctx: Ctx) => {
    const a = await auth(ctx);
    const img = await visibleImage(a, ctx.params.id!);
    if (!a.isAdmin) throw forbidden(`You are not authorized to complete ${action} action.`);
    const [from, to] = action === 'deactivate' ? ['active', 'deactivated'] : ['deactivated', 'active'];
    if (img.status === to) { sendEmpty(ctx, 204); return; }
    if (img.status !== from) throw forbidden(`Not allowed to ${action} image in status '${img.status}'`);
    await k.updateTable('images').set({ status: to, updated_at: touch(), revision: img.revision + 1 })
      .where('id', '=', img.id).where('status', '=', from).execute();
    sendEmpty(ctx, 204);
  };
  router.add('POST', '/v2/images/:id/actions/deactivate', setActivation('deactivate'));
  router.add('POST', '/v2/images/:id/actions/reactivate', setActivation('reactivate'));

  // --- tags
  router.add('PUT', '/v2/images/:id/tags/:tag', async (ctx) => {
    const a = await auth(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'modify_image');
    const tag = ctx.params.tag!;
    validateTag(tag);
    if (!img.tags.includes(tag) && img.tags.length >= 128) throw new HttpError(413, 'Maximum number of tags exceeded (128).');
    await insertIgnore(db, 'image_tags', { image_id: img.id, value: tag });
    await k.updateTable('images').set({ updated_at: touch() }).where('id', '=', img.id).execute();
    sendEmpty(ctx, 204);
  });
  router.add('DELETE', '/v2/images/:id/tags/:tag', async (ctx) => {
    const a = await auth(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'modify_image');
    const r = await k.deleteFrom('image_tags').where('image_id', '=', img.id).where('value', '=', ctx.params.tag!).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw notFound(`Tag ${ctx.params.tag} not found`);
    await k.updateTable('images').set({ updated_at: touch() }).where('id', '=', img.id).execute();
    sendEmpty(ctx, 204);
  });

  // --- data: upload, stage, import, download
  /**
   * Move `status` from one of `from` to `to` atomically, or answer Glance's 409. Returns the revision after.
   * `uploadKey`: the same transaction records this node's upload of the image (its temporary data
   * `uploadKey`), so that a crash at any point after it leaves a row recover() finds — an image
   * moved to saving before its row existed stayed saving forever when the process died between.
   */
  const transition = async (img: ImageRecord, from: string[], to: string, uploadKey?: string): Promise<number> => {
    if (!from.includes(img.status)) throw conflict(`Image status transition from ${img.status} to ${to} is not allowed`);
    const moved = await k.transaction().execute(async (tx) => {
      const r = await tx.updateTable('images').set({ status: to, updated_at: touch(), revision: img.revision + 1 })
        .where('id', '=', img.id).where('revision', '=', img.revision).where('deleted', '=', 0).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      if (uploadKey !== undefined) {
        // (replaces a staging row: the import now owns the image's upload)
        await tx.deleteFrom('uploads').where('image_id', '=', img.id).execute();
        await tx.insertInto('uploads').values({ image_id: img.id, node: opts.node, temp_key: uploadKey, started_at: now() }).execute();
      }
      return true;
    });
    if (!moved) {
      const cur = await loadImage(db, img.id);
      if (!cur) throw notFound(`No image found with ID ${img.id}`);
      throw conflict(`Image status transition from ${cur.status} to ${to} is not allowed`);
    }
    return img.revision + 1;
  };

  /**
   * The most an upload for `owner` may write: the image size cap, and what is left of the
   * project's storage quota (bytes of its images that hold data).
   */
  async function uploadLimit(owner: string | null): Promise<{ cap: number; tooBig: (n: number) => HttpError }> {
    const sizeCap = opts.imageSizeCap;
    if (!opts.projectStorageQuota || owner === null) {
      return { cap: sizeCap, tooBig: () => new HttpError(413, `Image exceeds the storage quota: the image size cap is ${sizeCap} bytes.`) };
    }
    const used = await k.selectFrom('images').select((eb) => eb.fn.sum<number | string | null>('size').as('used'))
      .where('owner', '=', owner).where('deleted', '=', 0).executeTakeFirstOrThrow();
    const remaining = Math.max(0, opts.projectStorageQuota - Number(used.used ?? 0));
    if (remaining >= sizeCap) return uploadLimit(null);
    return {
      cap: remaining,
      tooBig: (n) => new HttpError(413, `Denying attempt to upload image because it exceeds the quota: the project may store ${opts.projectStorageQuota} bytes and has ${remaining} bytes left; this upload reached ${n} bytes.`),
    };
  }

  /** An upload that will not complete: the image goes back to `revertTo`, its upload row away. */
  async function abandonUpload(id: string, revertTo: string): Promise<void> {
    await k.updateTable('images').set({ status: revertTo, updated_at: touch() }).where('id', '=', id).where('status', 'in', ['saving', 'importing']).execute().catch(() => {});
    await k.deleteFrom('uploads').where('image_id', '=', id).execute().catch(() => {});
  }

  /**
   * Stream `input` into the store while hashing and counting; verify; make the image active.
   * `tempKey`: the temporary data the status transition recorded (transition's uploadKey).
   */
  async function ingest(img: ImageRecord, tempKey: string, input: Readable, declaredLength: number | null, revertTo: string): Promise<void> {
    const inspection = new UploadInspection(img.id);
    let size = 0;
    let staged: StagedWrite;
    try {
      staged = await store.begin(tempKey);
    } catch (e) {
      await abandonUpload(img.id, revertTo);
      throw e;
    }
    const { cap, tooBig } = await uploadLimit(img.owner);
    // Hashing batches the data into 1 MiB page-aligned buffers; the file is written from those.
    const hasher = new UploadHasher((batch) => staged.write([Buffer.from(batch.buffer, batch.byteOffset, batch.length)]));
    const receive = async () => {
      for await (const chunk of input as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > cap) throw tooBig(size);
        await inspection.write(chunk);
        await hasher.update(chunk);
      }
      await hasher.finish();
      // A client that hangs up may end the stream without an error: a request body is whole only when complete.
      if ('complete' in input && !(input as { complete: boolean }).complete) throw new Error('request body ended early');
    };
    const fail = async (e: unknown) => {
      await hasher.drop();
      await staged.discard().catch(() => {});
      await abandonUpload(img.id, revertTo);
      throw e;
    };
    try {
      if (declaredLength !== null && declaredLength > cap) throw tooBig(declaredLength);
      await receive();
      if (declaredLength !== null && size !== declaredLength) throw badRequest(`Image data ended after ${size} of ${declaredLength} bytes.`);
    } catch (e) {
      if (e instanceof HttpError) return fail(e);
      log.warn('upload interrupted', { image: img.id, bytes: size, error: (e as Error).message });
      return fail(new HttpError(400, 'Image upload was interrupted; no data was kept.'));
    }
    const digests = await hasher.digest();
    const verdict = await inspection.finish(img.disk_format, img.container_format)
      .catch((e): { virtualSize: null; refusal: string } => ({ virtualSize: null, refusal: `Image data could not be inspected: ${(e as Error).message}` }));
    if (verdict.refusal) return fail(badRequest(verdict.refusal));
    const location = img.id;
    await staged.commit(location);
    const ts = touch();
    const r = await k.updateTable('images').set({
      status: 'active', size, virtual_size: verdict.virtualSize, checksum: digests.md5,
      os_hash_algo: 'sha512', os_hash_value: digests.sha512, location, store: store.id, updated_at: ts,
    }).where('id', '=', img.id).where('deleted', '=', 0).where('status', 'in', ['saving', 'importing']).executeTakeFirst();
    await k.deleteFrom('uploads').where('image_id', '=', img.id).execute();
    if (Number(r.numUpdatedRows) !== 1) {
      // Deleted (or otherwise changed) while we were writing: keep nothing.
      await store.delete(location).catch(() => {});
      throw conflict('Image was deleted or changed during the upload; the data was discarded.');
    }
  }

  const contentLength = (ctx: Ctx): number | null => {
    const cl = ctx.req.headers['content-length'];
    return cl === undefined ? null : Number(cl);
  };
  const requireOctets = (ctx: Ctx) => {
    const t = mediaType(ctx.req);
    if (t !== 'application/octet-stream') throw new HttpError(415, `The request media type ${t || '(none)'} is not supported by this server.`);
  };
  const track = <T>(p: Promise<T>): Promise<T> => { inFlight.add(p); void p.finally(() => inFlight.delete(p)).catch(() => {}); return p; };

  router.add('PUT', '/v2/images/:id/file', async (ctx) => {
    const a = await auth(ctx);
    requireOctets(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'upload_image');
    const tempKey = store.newTempKey(img.id);
    const revision = await transition(img, ['queued'], 'saving', tempKey);
    await track(ingest({ ...img, revision, status: 'saving' }, tempKey, ctx.req, contentLength(ctx), 'queued'));
    sendEmpty(ctx, 204);
  });

  router.add('PUT', '/v2/images/:id/stage', async (ctx) => {
    const a = await auth(ctx);
    requireOctets(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'upload_image');
    await transition(img, ['queued'], 'uploading');
    const path = join(opts.stagingDir, img.id);
    // Written under a partial name and renamed when whole: a crash leaves only a .partial
    // file, which the next start removes (and puts the image back to queued).
    const partial = `${path}${PARTIAL_SUFFIX}`;
    await mkdir(opts.stagingDir, { recursive: true });
    let size = 0;
    const { cap, tooBig } = await uploadLimit(img.owner);
    // Recorded so that a restart after a crash knows this node's staging was cut off.
    await insertIgnore(db, 'uploads', { image_id: img.id, node: opts.node, temp_key: STAGE_KEY, started_at: now() });
    const done = () => k.deleteFrom('uploads').where('image_id', '=', img.id).where('temp_key', '=', STAGE_KEY).execute().catch(() => {});
    try {
      await track(pipeline(ctx.req, new Transform({
        transform(chunk: Buffer, _e, cb) { size += chunk.length; cb(size > cap ? tooBig(size) : null, chunk); },
      }), createWriteStream(partial)));
      if (!ctx.req.complete) throw new Error('request body ended early');
      await rename(partial, path);
      await done();
    } catch (e) {
      await done();
      await rm(partial, { force: true });
      await k.updateTable('images').set({ status: 'queued', updated_at: touch() }).where('id', '=', img.id).where('status', '=', 'uploading').execute();
      throw e instanceof HttpError ? e : badRequest('Image upload was interrupted; no data was kept.');
    }
    sendEmpty(ctx, 204);
  });

  router.add('POST', '/v2/images/:id/import', async (ctx) => {
    const a = await auth(ctx);
    const body = await readJson(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'import_image');
    const method = isObject(body) && isObject(body.method) ? body.method.name : undefined;
    if (typeof method !== 'string') throw badRequest('Import request requires a "method" object with a "name".');
    if (!IMPORT_METHODS.includes(method)) throw badRequest(`Import method ${method} is not valid for this image; available: ${IMPORT_METHODS.join(', ')}.`);
    if (img.status !== 'uploading') throw conflict(`Image status transition from ${img.status} to importing is not allowed`);
    if (!img.container_format || !img.disk_format) throw conflict("'disk_format' and 'container_format' must be set before import.");
    const path = join(opts.stagingDir, img.id);
    const tempKey = store.newTempKey(img.id);
    const revision = await transition(img, ['uploading'], 'importing', tempKey);
    // The import runs after the 202, as Glance's task does; its outcome shows in the image status.
    void track((async () => {
      try {
        const length = (await stat(path)).size;
        await ingest({ ...img, revision, status: 'importing' }, tempKey, createReadStream(path, { highWaterMark: 1 << 20 }), length, 'queued');
        await rm(path, { force: true });
      } catch (e) {
        log.warn('import failed', { image: img.id, error: (e as Error).message });
        await abandonUpload(img.id, 'queued'); // (when the staged data was gone before ingest began)
        await rm(path, { force: true });
      }
    })());
    sendEmpty(ctx, 202, importHeaders);
  });

  const DEACTIVATED = 'The requested image has been deactivated. Image data download is forbidden.';
  router.add('GET', '/v2/images/:id/file', async (ctx) => {
    const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
    let img: ImageRecord;
    if (ctx.url.searchParams.has(SIGNATURE_PARAM)) {
      // A signed URL (x-diskhub/download-url) stands in for the token; a browser saves the file.
      if (!opts.downloadUrls.verify(ctx.params.id!, ctx.url.searchParams)) throw new HttpError(401, 'The download URL is not valid or has expired.');
      const found = await loadImage(db, ctx.params.id!);
      if (!found) throw notFound(`No image found with ID ${ctx.params.id}`);
      if (found.status === 'deactivated') throw forbidden(DEACTIVATED);
      img = found;
      headers['Content-Disposition'] = `attachment; filename="${downloadName(img)}"`;
    } else {
      const a = await auth(ctx);
      img = await visibleImage(a, ctx.params.id!);
      if (img.status === 'deactivated' && !a.isAdmin) throw forbidden(DEACTIVATED);
    }
    if (!img.location || img.status !== 'active' && img.status !== 'deactivated') { sendEmpty(ctx, 204); return; }
    const size = Number(img.size);
    if (img.checksum) headers['Content-MD5'] = img.checksum;
    const range = parseRange(ctx.req.headers.range, size);
    if (range) {
      headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
      headers['Content-Length'] = String(range.end - range.start + 1);
      ctx.res.writeHead(206, headers);
    } else {
      headers['Content-Length'] = String(size);
      ctx.res.writeHead(200, headers);
    }
    if (ctx.req.method === 'HEAD') { ctx.res.end(); return; }
    await store.send(img.location, ctx.res, range ?? undefined).catch(() => { ctx.res.destroy(); });
  });

  // --- diskhub extension: signed download URLs (download-urls.ts)
  router.add('POST', '/v2/images/:id/x-diskhub/download-url', async (ctx) => {
    const a = await auth(ctx);
    const img = await visibleImage(a, ctx.params.id!);
    if (img.status === 'deactivated' && !a.isAdmin) throw forbidden(DEACTIVATED);
    if (!img.location || img.status !== 'active') throw conflict(`Image ${img.id} has no data to download (status ${img.status}).`);
    const { query, expires } = opts.downloadUrls.sign(img.id);
    sendJson(ctx, 201, { url: `${ctx.baseUrl}/v2/images/${img.id}/file?${query}`, expires_at: new Date(expires * 1000).toISOString().replace(/\.\d+Z$/, 'Z') });
  });

  // --- diskhub extension: what is inside the image (inside.ts)
  router.add('GET', '/v2/images/:id/x-diskhub/inside', async (ctx) => {
    const a = await auth(ctx);
    const img = await visibleImage(a, ctx.params.id!);
    if (!img.location || (img.status !== 'active' && img.status !== 'deactivated')) throw conflict(`Image ${img.id} has no data (status ${img.status}).`);
    const raw = ctx.url.searchParams.get('buckets');
    const buckets = raw === null ? DEFAULT_BUCKETS : Number(raw);
    if (!Number.isInteger(buckets) || buckets < 1 || buckets > MAX_BUCKETS) throw badRequest(`Invalid value for buckets: ${raw}. It must be an integer from 1 to ${MAX_BUCKETS}.`);
    sendJson(ctx, 200, { image_id: img.id, ...await describeInside(store.pathOf(img.location), buckets) });
  });

  // --- members
  const memberView = (m: { image_id: string; member: string; status: string; created_at: string; updated_at: string }) => ({
    member_id: m.member, image_id: m.image_id, status: m.status,
    created_at: m.created_at.replace(/\.\d+Z$/, 'Z'), updated_at: m.updated_at.replace(/\.\d+Z$/, 'Z'), schema: '/v2/schemas/member',
  });
  router.add('GET', '/v2/images/:id/members', async (ctx) => {
    const a = await auth(ctx);
    const img = await visibleImage(a, ctx.params.id!);
    let q = k.selectFrom('image_members').selectAll().where('image_id', '=', img.id);
    if (!a.isAdmin && img.owner !== a.projectId) q = q.where('member', '=', a.projectId ?? '');
    if (img.visibility !== 'shared') throw forbidden('Only shared images have members.');
    sendJson(ctx, 200, { members: (await q.orderBy('created_at').execute()).map(memberView), schema: '/v2/schemas/members' });
  });
  router.add('POST', '/v2/images/:id/members', async (ctx) => {
    const a = await auth(ctx);
    const body = await readJson(ctx);
    const img = await ownedImage(a, ctx.params.id!, 'add_member');
    if (!isObject(body) || typeof body.member !== 'string' || !body.member || body.member.length > 255) throw badRequest('Member to be added not specified');
    if (img.visibility !== 'shared') throw forbidden('Only shared images have members.');
    if (body.member === img.owner) throw forbidden('The owner of an image cannot be added as its member.');
    if (await k.selectFrom('image_members').select('member').where('image_id', '=', img.id).where('member', '=', body.member).executeTakeFirst()) {
      throw conflict(`Member ${body.member} already exists on image ${img.id}.`);
    }
    const count = await k.selectFrom('image_members').select((eb) => eb.fn.countAll().as('n')).where('image_id', '=', img.id).executeTakeFirstOrThrow();
    if (Number(count.n) >= 128) throw new HttpError(413, 'Maximum number of image members exceeded (128).');
    const ts = touch();
    const row = { image_id: img.id, member: body.member, status: 'pending', created_at: ts, updated_at: ts };
    await k.insertInto('image_members').values(row).execute();
    sendJson(ctx, 200, memberView(row));
  });
  const findMember = async (a: AuthContext, ctx: Ctx) => {
    const img = await visibleImage(a, ctx.params.id!);
    const m = await k.selectFrom('image_members').selectAll().where('image_id', '=', img.id).where('member', '=', ctx.params.member!).executeTakeFirst();
    // Only the owner, the member itself and admins may see a membership.
    if (!m || (!a.isAdmin && img.owner !== a.projectId && m.member !== a.projectId)) throw notFound(`Member ${ctx.params.member} not found`);
    return { img, m };
  };
  router.add('GET', '/v2/images/:id/members/:member', async (ctx) => {
    const a = await auth(ctx);
    const { m } = await findMember(a, ctx);
    sendJson(ctx, 200, memberView(m));
  });
  router.add('PUT', '/v2/images/:id/members/:member', async (ctx) => {
    const a = await auth(ctx);
    const body = await readJson(ctx);
    const { m } = await findMember(a, ctx);
    if (!isObject(body) || typeof body.status !== 'string') throw badRequest('Status not specified');
    if (!['pending', 'accepted', 'rejected'].includes(body.status)) throw badRequest(`Status must be one of pending, accepted, rejected; got '${body.status}'.`);
    if (m.member !== a.projectId) throw forbidden('You are not permitted to modify the status of this member: only the member project may.');
    mayWrite(a, 'modify_member');
    const ts = touch();
    await k.updateTable('image_members').set({ status: body.status, updated_at: ts }).where('image_id', '=', m.image_id).where('member', '=', m.member).execute();
    sendJson(ctx, 200, memberView({ ...m, status: body.status, updated_at: ts }));
  });
  router.add('DELETE', '/v2/images/:id/members/:member', async (ctx) => {
    const a = await auth(ctx);
    const { img, m } = await findMember(a, ctx);
    mayWrite(a, 'delete_member');
    if (!a.isAdmin && img.owner !== a.projectId) throw forbidden('You are not authorized to complete delete_member action.');
    await k.deleteFrom('image_members').where('image_id', '=', m.image_id).where('member', '=', m.member).execute();
    sendEmpty(ctx, 204);
  });

  /** After a crash: uploads this node had in flight are gone; put their images back and drop partial data. */
  async function recover(): Promise<void> {
    const stale = await k.selectFrom('uploads').selectAll().where('node', '=', opts.node).where('temp_key', '<>', STAGE_KEY).execute();
    for (const u of stale) {
      await k.updateTable('images').set({ status: 'queued', updated_at: now() }).where('id', '=', u.image_id).where('status', 'in', ['saving', 'importing']).execute();
      await k.deleteFrom('uploads').where('image_id', '=', u.image_id).execute();
      log.info('recovered interrupted upload', { image: u.image_id });
    }
    const live = new Set((await k.selectFrom('uploads').select('temp_key').execute()).map((r) => r.temp_key));
    const removed = await store.sweep(live);
    if (removed.length) log.info('removed partial data files', { count: removed.length });
    // Staging cut off by a crash: drop the partial file; an image whose staged data is not
    // whole goes back to queued (one whose staging completed keeps it, ready for import).
    await mkdir(opts.stagingDir, { recursive: true });
    const staged = new Set<string>();
    for (const name of await readdir(opts.stagingDir)) {
      if (name.endsWith(PARTIAL_SUFFIX)) await rm(join(opts.stagingDir, name), { force: true });
      else staged.add(name);
    }
    const stages = await k.selectFrom('uploads').select('image_id').where('node', '=', opts.node).where('temp_key', '=', STAGE_KEY).execute();
    for (const { image_id: id } of stages) {
      if (!staged.has(id)) {
        await k.updateTable('images').set({ status: 'queued', updated_at: now() }).where('id', '=', id).where('status', '=', 'uploading').execute();
        log.info('recovered interrupted staging', { image: id });
      }
      await k.deleteFrom('uploads').where('image_id', '=', id).execute();
    }
  }

  return { recover, inFlight };
}

function parseOp(raw: unknown, type: string): { op: 'add' | 'replace' | 'remove'; path: string; value: unknown; hasValue: boolean } {
  if (!isObject(raw)) throw badRequest('Operations must be JSON objects.');
  let op: unknown;
  let path: unknown;
  if (type.endsWith('v2.0-json-patch') && !('op' in raw)) {
    // The v2.0 media type spells an operation as {"replace": "/name", "value": ...}.
    op = ['add', 'replace', 'remove'].find((o) => o in raw);
    path = op ? raw[op as string] : undefined;
    if (!op) throw badRequest('Operation objects must contain exactly one member named "add", "remove", or "replace".');
  } else {
    op = raw.op;
    path = raw.path;
    if (typeof op !== 'string') throw badRequest('Operation objects must contain a string member named "op".');
    if (!['add', 'replace', 'remove'].includes(op)) throw badRequest(`Invalid operation: \`${op}\`. It must be one of the following: add, remove, replace.`);
  }
  if (typeof path !== 'string') throw badRequest('Unable to find `path` in operation.');
  return { op: op as 'add', path, value: raw.value, hasValue: 'value' in raw };
}

/** A single byte range (bytes=a-b, a-, -n), or null for the whole body; 416 when unsatisfiable. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  const unsatisfiable = () => new HttpError(416, `The Range requested is not available: valid byte positions are 0 to ${size - 1}.`, { 'Content-Range': `bytes */${size}` });
  if (!m || (m[1] === '' && m[2] === '')) throw unsatisfiable();
  let start: number;
  let end: number;
  if (m[1] === '') { const n = Number(m[2]); start = Math.max(0, size - n); end = size - 1; if (n === 0) throw unsatisfiable(); }
  else { start = Number(m[1]); end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1); }
  if (start >= size || start > end) throw unsatisfiable();
  return { start, end };
}

/** A file name for a download: the image name (or id) with the disk format as extension, safe in a header. */
function downloadName(img: ImageRecord): string {
  const base = (img.name || img.id).replace(/[^A-Za-z0-9._ -]+/g, '_').slice(0, 200);
  const ext = img.disk_format && !base.toLowerCase().endsWith(`.${img.disk_format}`) ? `.${img.disk_format}` : '';
  return base + ext;
}
