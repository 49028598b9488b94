/** Image members: who an image is shared with, and each member project's answer. */
import type { FastifyInstance } from 'fastify';
import { badRequest, replyEmpty, replyJson, type Authenticate } from '../http.js';
import { MEMBER_STATUSES, memberView, type ImageService } from '../domain/images.js';
import { checkedBody } from './validation.js';

export interface MemberRouteDeps { auth: Authenticate; images: ImageService }

type MemberParams = { Params: { id: string; member: string } };

/**
 * The request bodies as JSON schemas, checked by Fastify. Validation is attached, not
 * answered, so authentication still comes first and the 400 keeps Glance's words.
 */
const ADD_MEMBER = { type: 'object', required: ['member'], properties: { member: { type: 'string', minLength: 1, maxLength: 255 } } } as const;
const SET_STATUS = { type: 'object', required: ['status'], properties: { status: { enum: MEMBER_STATUSES } } } as const;

export function memberRoutes(app: FastifyInstance, { auth, images }: MemberRouteDeps): void {
  app.get<{ Params: { id: string } }>('/v2/images/:id/members', async (request, reply) => {
    const a = await auth(request);
    const members = await images.members(a, request.params.id);
    return replyJson(reply, 200, { members: members.map(memberView), schema: '/v2/schemas/members' });
  });
  app.post<{ Params: { id: string } }>('/v2/images/:id/members', { schema: { body: ADD_MEMBER }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const { body, error } = await checkedBody(request);
    if (error?.instancePath === '' && error.keyword === 'type') throw badRequest('Expected a member in the form: {"member": "image_id"}');
    if (error?.keyword === 'minLength') throw badRequest("Member can't be empty");
    if (error?.keyword === 'maxLength') throw badRequest('Member is longer than 255 characters.');
    if (error) throw badRequest('Member to be added not specified');
    return replyJson(reply, 200, memberView(await images.addMember(a, request.params.id, (body as { member: string }).member)));
  });
  app.get<MemberParams>('/v2/images/:id/members/:member', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, memberView(await images.member(a, request.params.id, request.params.member)));
  });
  app.put<MemberParams>('/v2/images/:id/members/:member', { schema: { body: SET_STATUS }, attachValidation: true }, async (request, reply) => {
    const a = await auth(request);
    const { body, error } = await checkedBody(request);
    if (error?.keyword === 'enum') throw badRequest('Incorrect request: Status must be "pending", "accepted" or "rejected".');
    if (error) throw badRequest('Status not specified');
    const { status } = body as { status: string };
    return replyJson(reply, 200, memberView(await images.setMemberStatus(a, request.params.id, request.params.member, status)));
  });
  app.delete<MemberParams>('/v2/images/:id/members/:member', async (request, reply) => {
    const a = await auth(request);
    await images.removeMember(a, request.params.id, request.params.member);
    return replyEmpty(reply, 204);
  });
}
