/** Image tags: add and remove one tag. */
import type { FastifyInstance } from 'fastify';
import { replyEmpty, type Authenticate } from '../http.js';
import type { ImageService } from '../domain/images.js';
import { imageSchema } from '../schemas.js';
import { imageSchemaError } from './images.js';
import { firstError } from './validation.js';

/** A tag is checked as Glance checks it: against the image schema's tag items. */
const TAG_PARAMS = { type: 'object', properties: { tag: (imageSchema().properties as { tags: { items: object } }).tags.items } };

export interface TagRouteDeps { auth: Authenticate; images: ImageService }

export function tagRoutes(app: FastifyInstance, { auth, images }: TagRouteDeps): void {
  app.put<{ Params: { id: string; tag: string } }>('/v2/images/:id/tags/:tag', { schema: { params: TAG_PARAMS }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const invalid = firstError(request, 'params');
    if (invalid) throw imageSchemaError(invalid, request.params);
    await images.addTag(a, request.params.id, request.params.tag);
    return replyEmpty(reply, 204);
  });
  app.delete<{ Params: { id: string; tag: string } }>('/v2/images/:id/tags/:tag', async (request, reply) => {
    const a = await auth(request);
    await images.removeTag(a, request.params.id, request.params.tag);
    return replyEmpty(reply, 204);
  });
}
