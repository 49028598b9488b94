/**
 * diskhub's extensions to the Images API, under /v2/images/{id}/x-diskhub/: signed download
 * URLs (download-urls.ts) and what is inside an image (inside.ts).
 */
import type { FastifyInstance } from 'fastify';
import { badRequest, conflict, replyJson, searchParams, type Authenticate } from '../http.js';
import type { ImageService } from '../domain/images.js';
import type { ImageDataService } from '../domain/image-data.js';
import { DEFAULT_BUCKETS, DEFAULT_INSIDE_LIMITS, InsideCache, MAX_BUCKETS, describeInside, type InsideLimits } from '../inside.js';
import { StoreSource } from '../stores/store-source.js';

export interface ExtensionRouteDeps {
  auth: Authenticate; images: ImageService; data: ImageDataService;
  /** What looking for operating systems inside an image may cost (default: DEFAULT_INSIDE_LIMITS). */
  insideLimits?: InsideLimits;
}

type IdParams = { Params: { id: string } };

export function extensionRoutes(app: FastifyInstance, { auth, images, data, insideLimits = DEFAULT_INSIDE_LIMITS }: ExtensionRouteDeps): void {
  const insideCache = new InsideCache();
  app.post<IdParams>('/v2/images/:id/x-diskhub/download-url', async (request, reply) => {
    const a = await auth(request);
    const { img, query, expires } = await data.signDownload(a, request.params.id);
    return replyJson(reply, 201, { url: `${request.baseUrl}/v2/images/${img.id}/file?${query}`, expires_at: new Date(expires * 1000).toISOString().replace(/\.\d+Z$/, 'Z') });
  });

  app.get<IdParams>('/v2/images/:id/x-diskhub/inside', async (request, reply) => {
    const a = await auth(request);
    const img = await images.get(a, request.params.id);
    if (img.locations.length === 0 || (img.status !== 'active' && img.status !== 'deactivated')) throw conflict(`Image ${img.id} has no data (status ${img.status}).`);
    const raw = searchParams(request).get('buckets');
    const buckets = raw === null ? DEFAULT_BUCKETS : Number(raw);
    if (!Number.isInteger(buckets) || buckets < 1 || buckets > MAX_BUCKETS) throw badRequest(`Invalid value for buckets: ${raw}. It must be an integer from 1 to ${MAX_BUCKETS}.`);
    // Read where the data is, through the store (no local copy): the first location that answers.
    const stored = await data.readable(img);
    if (!stored) throw conflict(`Image ${img.id} has no data in any configured store.`);
    // The image's data does not change while it has this location: the answer is cached (after
    // the policy check above, so it is only ever given to those who may read the image).
    const view = await insideCache.get(`${img.id}\n${stored.url}\n${buckets}`, () => describeInside(new StoreSource(stored.store, stored.url), buckets, insideLimits));
    return replyJson(reply, 200, { image_id: img.id, ...view });
  });
}
