/**
 * Multi-store: the stores this deployment has (/v2/info/stores, /v2/info/stores/detail) and
 * removing an image's data from one of them (DELETE /v2/stores/{store_id}/{image_id}, Glance's
 * delete_from_store). Uploads choose a store with X-Image-Meta-Store (image-data.ts).
 */
import type { FastifyInstance } from 'fastify';
import { replyEmpty, replyJson, type Authenticate } from '../http.js';
import type { ImageService } from '../domain/images.js';
import type { StoreInfo } from '../domain/stores.js';

export interface StoreRouteDeps { auth: Authenticate; images: ImageService; stores: StoreInfo }

export function storeRoutes(app: FastifyInstance, { auth, images, stores }: StoreRouteDeps): void {
  app.get('/v2/info/stores', async (request, reply) => {
    await auth(request);
    return replyJson(reply, 200, stores.list());
  });

  app.get('/v2/info/stores/detail', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, stores.detail(a));
  });

  app.delete<{ Params: { store_id: string; image_id: string } }>('/v2/stores/:store_id/:image_id', async (request, reply) => {
    const a = await auth(request);
    await images.locations.deleteFromStore(a, request.params.store_id, request.params.image_id);
    return replyEmpty(reply, 204);
  });
}
