/**
 * Tasks and import: POST /v2/images/{id}/import, GET /v2/images/{id}/tasks (Image API 2.12),
 * the tasks API (GET /v2/tasks, GET /v2/tasks/{id}; POST is Glance's deprecated task create,
 * DELETE its 405) and the task schemas. Renders as glance/api/v2/tasks.py's ResponseSerializer
 * (key order, ISO times without fractions) and images.py's get_task_info (the database's dicts
 * as oslo's JSON gives them).
 */
import type { FastifyInstance } from 'fastify';
import { HttpError, badRequest, isObject, jsonBody, replyEmpty, replyJson, searchParams, type Authenticate } from '../http.js';
import { apiTime } from '../images-model.js';
import type { ImageService } from '../domain/images.js';
import type { TaskService } from '../domain/tasks.js';
import { IMAGE_FORMATS, REQUESTER_ROLES, type ImportService } from '../domain/import/index.js';
import type { TaskRecord } from '../repo/tasks.js';
import { UUID_PATTERN } from '../schemas.js';
import { PROXIED_HEADER } from '../domain/import/stage-host.js';

export interface TaskRouteDeps {
  auth: Authenticate;
  tasks: TaskService;
  imports: ImportService;
  images: ImageService;
  /** The configured stores' ids, comma-separated (OpenStack-image-store-ids). */
  storeIds: string;
  limitMax: number;
  limitDefault: number;
}

type IdParams = { Params: { id: string } };

/** The task input as shown (without what the service keeps for itself). */
function shownInput(t: TaskRecord): Record<string, unknown> | null {
  if (!t.input) return null;
  const { [REQUESTER_ROLES]: _roles, [IMAGE_FORMATS]: _formats, ...shown } = t.input;
  return shown;
}

/** glance/api/v2/tasks.py _format_task. */
function taskView(t: TaskRecord): Record<string, unknown> {
  const v: Record<string, unknown> = {
    id: t.id, input: shownInput(t), type: t.type, status: t.status, owner: t.owner, message: t.message, result: t.result,
    created_at: apiTime(t.created_at), updated_at: apiTime(t.updated_at), self: `/v2/tasks/${t.id}`, schema: '/v2/schemas/task',
  };
  if (t.image_id) v.image_id = t.image_id;
  if (t.request_id) v.request_id = t.request_id;
  if (t.user_id) v.user_id = t.user_id;
  if (t.expires_at) v.expires_at = apiTime(t.expires_at);
  return v;
}

/** glance/api/v2/tasks.py _format_task_stub (the list's entries). */
function taskStub(t: TaskRecord): Record<string, unknown> {
  const v: Record<string, unknown> = {
    id: t.id, type: t.type, status: t.status, owner: t.owner,
    created_at: apiTime(t.created_at), updated_at: apiTime(t.updated_at), self: `/v2/tasks/${t.id}`, schema: '/v2/schemas/task',
  };
  if (t.expires_at) v.expires_at = apiTime(t.expires_at);
  return v;
}

/** The database's task dict as oslo's to_primitive prints datetimes (GET /v2/images/{id}/tasks). */
function taskRow(t: TaskRecord): Record<string, unknown> {
  const dt = (iso: string | null) => (iso === null ? null : `${iso.slice(0, 19)}.${iso.slice(20, 23)}000`);
  return {
    id: t.id, type: t.type, status: t.status, owner: t.owner, expires_at: dt(t.expires_at), created_at: dt(t.created_at),
    updated_at: dt(t.updated_at), deleted_at: null, deleted: false, image_id: t.image_id, request_id: t.request_id,
    user_id: t.user_id, input: shownInput(t), result: t.result, message: t.message,
  };
}

const TASK_PROPERTIES: Record<string, Record<string, unknown>> = {
  id: { description: 'An identifier for the task', pattern: UUID_PATTERN, type: 'string' },
  type: { description: 'The type of task represented by this content', enum: ['import', 'api_image_import'], type: 'string' },
  status: { description: 'The current status of this task', enum: ['pending', 'processing', 'success', 'failure'], type: 'string' },
  input: { description: 'The parameters required by task, JSON blob', type: ['null', 'object'] },
  result: { description: 'The result of current task, JSON blob', type: ['null', 'object'] },
  owner: { description: 'An identifier for the owner of this task', type: 'string' },
  message: { description: 'Human-readable informative message only included when appropriate (usually on failure)', type: 'string' },
  image_id: { description: 'Image associated with the task', type: 'string' },
  request_id: { description: 'Human-readable informative request-id', type: 'string' },
  user_id: { description: 'User associated with the task', type: 'string' },
  expires_at: { description: 'Datetime when this resource would be subject to removal', type: ['null', 'string'] },
  created_at: { description: 'Datetime when this resource was created', type: 'string' },
  updated_at: { description: 'Datetime when this resource was updated', type: 'string' },
  self: { readOnly: true, type: 'string' },
  schema: { readOnly: true, type: 'string' },
};

/** Glance's /v2/schemas/task (glance.schema.Schema('task', …) with its default links). */
export function taskSchema(): Record<string, unknown> {
  return { name: 'task', properties: TASK_PROPERTIES, additionalProperties: false };
}

/** Glance's /v2/schemas/tasks: the collection of partial tasks (no input, result, message). */
export function tasksSchema(): Record<string, unknown> {
  const { input: _i, result: _r, message: _m, ...partial } = TASK_PROPERTIES;
  return {
    name: 'tasks',
    properties: {
      tasks: { type: 'array', items: { name: 'task', properties: partial, additionalProperties: false } },
      first: { type: 'string' }, next: { type: 'string' }, schema: { type: 'string' },
    },
    links: [{ rel: 'first', href: '{first}' }, { rel: 'next', href: '{next}' }, { rel: 'describedby', href: '{schema}' }],
  };
}

export function taskRoutes(app: FastifyInstance, deps: TaskRouteDeps): void {
  const { auth, tasks, imports, images } = deps;

  app.post<IdParams>('/v2/images/:id/import', async (request, reply) => {
    const a = await auth(request);
    // X-Image-Meta-Store: the store to import into when the body names none (Glance's get_stores_from_request).
    const store = request.headers['x-image-meta-store'];
    // (the token: glance-download reads the remote region's image with it, as Glance does with its request context)
    const token = request.headers['x-auth-token'];
    // (replayed here by another node: this node is the stage host, it never replays it again)
    const proxiedBy = request.headers[PROXIED_HEADER];
    await imports.start(a, request.id, request.params.id, await jsonBody(request), Array.isArray(store) ? store[0] : store, typeof token === 'string' ? token : undefined, typeof proxiedBy === 'string' ? proxiedBy : undefined);
    return replyEmpty(reply, 202, { 'OpenStack-image-import-methods': imports.methods.join(','), 'OpenStack-image-store-ids': deps.storeIds });
  });

  app.get<IdParams>('/v2/images/:id/tasks', async (request, reply) => {
    const a = await auth(request);
    await images.get(a, request.params.id);
    return replyJson(reply, 200, { tasks: (await tasks.ofImage(a, request.params.id)).map(taskRow) });
  });

  app.get('/v2/tasks', async (request, reply) => {
    const a = await auth(request);
    const sp = searchParams(request);
    let limit = deps.limitDefault;
    if (sp.has('limit')) {
      const raw = sp.get('limit')!;
      if (!/^-?\d+$/.test(raw.trim())) throw badRequest('limit param must be an integer');
      limit = Number(raw);
      if (limit < 0) throw badRequest('limit param must be positive');
    }
    limit = Math.min(limit, deps.limitMax);
    const marker = sp.get('marker') ?? undefined;
    // (oslo's is_uuid_like: hyphens optional, any case)
    if (marker && !/^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(marker)) throw badRequest('Invalid marker format');
    const list = await tasks.list(a, {
      status: sp.get('status') || undefined, type: sp.get('type') || undefined,
      sortKey: sp.get('sort_key') ?? 'created_at', sortDir: sp.get('sort_dir') ?? 'desc', marker: marker || undefined, limit,
    });
    const params = new URLSearchParams(sp);
    params.delete('marker');
    const query = params.toString();
    const body: Record<string, unknown> = { tasks: list.map(taskStub), first: query ? `/v2/tasks?${query}` : '/v2/tasks', schema: '/v2/schemas/tasks' };
    if (list.length !== 0 && list.length === limit) {
      params.set('marker', list[list.length - 1]!.id);
      body.next = `/v2/tasks?${params.toString()}`;
    }
    return replyJson(reply, 200, body);
  });

  app.get<IdParams>('/v2/tasks/:id', async (request, reply) => {
    const a = await auth(request);
    return replyJson(reply, 200, taskView(await tasks.get(a, request.params.id)));
  });

  // Glance's deprecated task create: tasks_api_access (admin by default) first, then the body.
  app.post('/v2/tasks', async (request, reply) => {
    const a = await auth(request);
    tasks.authorizeAccess(a);
    const body = await jsonBody(request);
    if (!isObject(body)) throw badRequest('Body expected in request.');
    for (const key of ['type', 'input']) if (!(key in body)) throw badRequest(`Task '${key}' is required`);
    if (typeof body.type !== 'string' || !['import', 'api_image_import'].includes(body.type)) throw badRequest(`Failed validating 'enum' in schema['properties']['type']: ${JSON.stringify(body.type)} is not one of ['import', 'api_image_import']`);
    if (body.input !== null && !isObject(body.input)) throw badRequest("Failed validating 'type' in schema['properties']['input']: the input must be an object or null");
    const task = await tasks.createLegacy(a, request.id, body.type, body.input as Record<string, unknown> | null);
    return replyJson(reply, 201, taskView(task), { Location: `/v2/tasks/${task.id}` });
  });

  app.delete<IdParams>('/v2/tasks/:id', async (request) => {
    const a = await auth(request);
    tasks.authorizeAccess(a);
    throw new HttpError(405, 'This operation is currently not permitted on Glance Tasks. They are auto deleted after reaching the time based on their expires_at property.', { Allow: 'GET' });
  });

  for (const [name, schema] of Object.entries({ task: taskSchema, tasks: tasksSchema })) {
    app.get(`/v2/schemas/${name}`, async (request, reply) => {
      await auth(request);
      return replyJson(reply, 200, schema());
    });
  }
}
