/**
 * The cache management API (Glance 25's /v2/cache, API version 2.14): list the node's cached
 * and queued images, queue one for prefetching, remove one, clear the cache and/or queue.
 */
import type { FastifyInstance } from 'fastify';
import { replyEmpty, replyJson, type Authenticate } from '../http.js';
import type { ImageCacheService } from '../domain/image-cache.js';

export interface CacheRouteDeps { auth: Authenticate; cache: ImageCacheService }

export function cacheRoutes(app: FastifyInstance, { auth, cache }: CacheRouteDeps): void {
  // Glance's cache middleware (_process_DELETE_response): a deleted image leaves this node's cache.
  app.addHook('onResponse', async (request, reply) => {
    if (request.method === 'DELETE' && reply.statusCode === 204 && request.routeOptions.url === '/v2/images/:id') {
      await cache.forget((request.params as { id: string }).id);
    }
  });
  app.get('/v2/cache', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, await cache.state(a));
  });
  app.delete('/v2/cache', async (request, reply) => {
    const a = await auth(request);
    const target = request.headers['x-image-cache-clear-target'];
    await cache.clear(a, typeof target === 'string' ? target : '');
    return replyEmpty(reply, 204);
  });
  app.put<{ Params: { id: string } }>('/v2/cache/:id', async (request, reply) => {
    const a = await auth(request);
    await cache.queue(a, request.params.id);
    return replyEmpty(reply, 202);
  });
  app.delete<{ Params: { id: string } }>('/v2/cache/:id', async (request, reply) => {
    const a = await auth(request);
    await cache.deleteEntry(a, request.params.id);
    return replyEmpty(reply, 204);
  });
}
