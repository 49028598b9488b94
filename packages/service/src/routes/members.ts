/** Image members: who an image is shared with, and each member project's answer. */
import type { FastifyInstance } from 'fastify';
import { badRequest, isObject, jsonBody, replyEmpty, replyJson, type Authenticate } from '../http.js';
import { MEMBER_STATUSES, memberView, type ImageService } from '../domain/images.js';

export interface MemberRouteDeps { auth: Authenticate; images: ImageService }

type MemberParams = { Params: { id: string; member: string } };

export function memberRoutes(app: FastifyInstance, { auth, images }: MemberRouteDeps): void {
  app.get<{ Params: { id: string } }>('/v2/images/:id/members', async (request, reply) => {
    const a = await auth(request);
    const members = await images.members(a, request.params.id);
    return replyJson(reply, 200, { members: members.map(memberView), schema: '/v2/schemas/members' });
  });
  app.post<{ Params: { id: string } }>('/v2/images/:id/members', async (request, reply) => {
    const a = await auth(request);
    const body = await jsonBody(request);
    if (!isObject(body) || typeof body.member !== 'string' || !body.member || body.member.length > 255) throw badRequest('Member to be added not specified');
    return replyJson(reply, 200, memberView(await images.addMember(a, request.params.id, body.member)));
  });
  app.get<MemberParams>('/v2/images/:id/members/:member', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, memberView(await images.member(a, request.params.id, request.params.member)));
  });
  app.put<MemberParams>('/v2/images/:id/members/:member', async (request, reply) => {
    const a = await auth(request);
    const body = await jsonBody(request);
    if (!isObject(body) || typeof body.status !== 'string') throw badRequest('Status not specified');
    if (!MEMBER_STATUSES.includes(body.status)) throw badRequest(`Status must be one of ${MEMBER_STATUSES.join(', ')}; got '${body.status}'.`);
    return replyJson(reply, 200, memberView(await images.setMemberStatus(a, request.params.id, request.params.member, body.status)));
  });
  app.delete<MemberParams>('/v2/images/:id/members/:member', async (request, reply) => {
    const a = await auth(request);
    await images.removeMember(a, request.params.id, request.params.member);
    return replyEmpty(reply, 204);
  });
}
