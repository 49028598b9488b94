/**
 * The cache management API's rules (glance/api/v2/cached_images.py, Glance 25): who may
 * list, queue, delete and clear (the policy's cache_list, cache_image, cache_delete; admin
 * by default), what an image must be to be queued, and the prefetcher — the background
 * worker of each node that fills queued images (Glance's CacheWorker). The cache and its
 * queue are this node's: like Glance's, the API answers for the node that gets the request.
 */
import { HttpError, badRequest, notFound } from '../http.js';
import type { AuthContext } from '../identity.js';
import type { ImageRecord } from '../images-model.js';
import type { Policy } from '../policy/index.js';
import type { ImageRepo } from '../repo/images.js';
import type { Logger } from '../log.js';
import type { CachedImageInfo, ImageCache } from '../cache/image-cache.js';
import type { ImageDataService } from './image-data.js';
import { credentials, type ImageService } from './images.js';

/** x-image-cache-clear-target: what DELETE /v2/cache clears (empty: both). */
export type ClearTarget = '' | 'cache' | 'queue';

export class ImageCacheService {
  private prefetching: Promise<void> | null = null;
  private again = false;
  private closed = false;

  constructor(
    /** Null when this node has no cache (the API then answers 404, as Glance without image_cache_dir). */
    private readonly cache: ImageCache | null,
    private readonly images: ImageService,
    private readonly repo: ImageRepo,
    private readonly policy: Policy,
    /** Where an image's data can be read (its first readable location). */
    private readonly data: Pick<ImageDataService, 'readable'>,
    private readonly log: Logger,
  ) {}

  /** Glance's CacheController._enforce: the rule on the image (or on nothing), then whether there is a cache at all. */
  private enforce(a: AuthContext, rule: 'cache_list' | 'cache_image' | 'cache_delete', img?: ImageRecord): ImageCache {
    const target = img ? this.images.imagePolicy(a, img).target : {};
    // (webob's bare HTTPForbidden, as Glance raises it)
    if (!this.policy.enforce(rule, target, credentials(a))) throw new HttpError(403, 'Access was denied to this resource.');
    if (!this.cache) throw notFound('Caching via API is not supported at this site.');
    return this.cache;
  }

  /** The image as the caller's image repository gets it (null when it does not exist for them). */
  private async visible(a: AuthContext, id: string): Promise<ImageRecord | null> {
    const img = await this.repo.load(id);
    return img && (await this.repo.canSee(a, img)) ? img : null;
  }

  /** GET /v2/cache */
  async state(a: AuthContext): Promise<{ cached_images: CachedImageInfo[]; queued_images: string[] }> {
    const cache = this.enforce(a, 'cache_list');
    return { cached_images: cache.list(), queued_images: await cache.queued() };
  }

  /** PUT /v2/cache/{id}: queue an active image for the prefetcher. */
  async queue(a: AuthContext, id: string): Promise<void> {
    const img = await this.visible(a, id);
    if (!img) throw notFound(`Image ${id} not found.`);
    const cache = this.enforce(a, 'cache_image', img);
    if (img.status !== 'active') throw badRequest('Only images with status active can be targeted for queueing');
    await cache.queue(img.id);
    this.kick();
  }

  /** DELETE /v2/cache/{id}: out of the cache and the queue. */
  async deleteEntry(a: AuthContext, id: string): Promise<void> {
    const img = await this.visible(a, id);
    // An image deleted since it was cached can still be removed from the cache.
    if (!img && !(this.cache && (this.cache.isCached(id) || (await this.cache.queued()).includes(id)))) throw notFound(`Image ${id} not found.`);
    const cache = this.enforce(a, 'cache_delete', img ?? undefined);
    await cache.delete(id);
    await cache.dequeue(id);
  }

  /** An image was deleted: out of this node's cache (Glance's cache middleware does the same). */
  async forget(id: string): Promise<void> {
    await this.cache?.delete(id).catch(() => false);
  }

  /** DELETE /v2/cache: clear the cache, the queue, or both. */
  async clear(a: AuthContext, target: string): Promise<{ cache_deleted?: number; queue_deleted?: number }> {
    const cache = this.enforce(a, 'cache_delete');
    const t = target.toLowerCase();
    if (t === '') return { cache_deleted: await cache.clear(), queue_deleted: await cache.clearQueue() };
    if (t === 'cache') return { cache_deleted: await cache.clear() };
    if (t === 'queue') return { queue_deleted: await cache.clearQueue() };
    throw badRequest("If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.");
  }

  /**
   * The prefetcher: fill every queued image, oldest first, one at a time. Runs when an image
   * is queued and when the node starts (what was queued before a restart).
   */
  kick(): void {
    if (!this.cache || this.closed) return;
    if (this.prefetching) { this.again = true; return; }
    const cache = this.cache;
    this.prefetching = (async () => {
      do {
        this.again = false;
        for (const id of await cache.queued()) {
          if (this.closed) return;
          const img = await this.repo.load(id);
          try {
            const source = img && img.status === 'active' ? await this.data.readable(img) : null;
            const cacheable = img && source ? { ...img, location: source.url } : null;
            if (cacheable && source && cache.cacheable(cacheable)) {
              if (await cache.prefetch(cacheable, source.store)) this.log.info('image prefetched into the cache', { image: id });
            } else {
              this.log.warn('queued image not cached: not an active image with data within the cache size', { image: id });
            }
          } catch (e) {
            this.log.warn('image prefetch failed', { image: id, error: (e as Error).message });
          }
          await cache.dequeue(id);
        }
      } while (this.again && !this.closed);
    })().catch((e) => this.log.error('prefetcher failed', { error: (e as Error).message })).finally(() => { this.prefetching = null; });
  }

  /** Stop prefetching; resolves when the image being filled (if any) is done. */
  async close(): Promise<void> {
    this.closed = true;
    await this.prefetching;
  }
}
