/** The JSON schemas clients validate their requests against (schemas.ts). */
import type { FastifyInstance } from 'fastify';
import { replyJson, type Authenticate } from '../http.js';
import { imageSchema, imagesSchema, memberSchema, membersSchema } from '../schemas.js';

export function schemaRoutes(app: FastifyInstance, { auth }: { auth: Authenticate }): void {
  const schemas: Record<string, () => unknown> = { image: imageSchema, images: imagesSchema, member: memberSchema, members: membersSchema };
  for (const [name, schema] of Object.entries(schemas)) {
    app.get(`/v2/schemas/${name}`, async (request, reply) => {
      await auth(request);
      return replyJson(reply, 200, schema());
    });
  }
}
