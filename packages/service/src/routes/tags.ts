/** Image tags: add and remove one tag. */
import type { FastifyInstance } from 'fastify';
import { replyEmpty, type Authenticate } from '../http.js';
import type { ImageService } from '../domain/images.js';

export interface TagRouteDeps { auth: Authenticate; images: ImageService }

export function tagRoutes(app: FastifyInstance, { auth, images }: TagRouteDeps): void {
  app.put<{ Params: { id: string; tag: string } }>('/v2/images/:id/tags/:tag', async (request, reply) => {
    const a = await auth(request);
    await images.addTag(a, request.params.id, request.params.tag);
    return replyEmpty(reply, 204);
  });
  app.delete<{ Params: { id: string; tag: string } }>('/v2/images/:id/tags/:tag', async (request, reply) => {
    const a = await auth(request);
    await images.removeTag(a, request.params.id, request.params.tag);
    return replyEmpty(reply, 204);
  });
}
