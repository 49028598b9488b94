/**
 * Keystone v3 HTTP API on /identity: version discovery, tokens, and the admin resources the
 * `openstack` client manages (domains, projects, users, roles, role assignments). Parsing and
 * rendering only: authorization is the identity policy's (Keystone's rule names), every
 * change is the identity service's, every query its repository's.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpError, isObject, replyEmpty, replyJson, searchParams, type Authenticate } from '../http.js';
import { checkedBody, jsonschemaMessage, type SchemaError } from './validation.js';
import { AuthError, DEFAULT_DOMAIN, type AuthContext, type Identity } from '../domain/identity.js';
import { IdentityForbidden, IdentityPolicy } from '../policy/identity.js';
import type { ProjectRow, UserRow } from '../repo/identity.js';

export interface IdentityDeps {
  identity: Identity;
  /** The caller's token, validated (401 with Keystone's WWW-Authenticate otherwise). */
  auth: Authenticate;
}

const UPDATED = '2022-09-07T00:00:00Z';

// --- request schemas: Keystone's own (keystone/resource, identity, assignment and auth
// schema.py: the same types, lengths, patterns and required members), checked by Fastify.
const NAME = (max: number) => ({ type: 'string', minLength: 1, maxLength: max, pattern: '[\\S]+' });
const ID = { type: 'string', minLength: 1, maxLength: 64, pattern: '^[a-zA-Z0-9-]+$' };
const NULLABLE_ID = { type: ['string', 'null'], minLength: 1, maxLength: 64, pattern: '^[a-zA-Z0-9-]+$' };
const DESCRIPTION = { type: ['string', 'null'] };
const project = { description: DESCRIPTION, domain_id: NULLABLE_ID, enabled: { type: 'boolean' }, is_domain: { type: 'boolean' }, parent_id: NULLABLE_ID, name: NAME(64), tags: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 255 }, maxItems: 80 } };
const PROJECT_CREATE = { type: 'object', properties: project, required: ['name'] };
const PROJECT_UPDATE = { type: 'object', properties: { ...project, domain_id: undefined, is_domain: undefined }, minProperties: 1 };
const user = { default_project_id: NULLABLE_ID, description: DESCRIPTION, domain_id: ID, enabled: { type: 'boolean' }, name: NAME(255), password: { type: ['string', 'null'] }, email: { type: ['string', 'null'] } };
const USER_CREATE = { type: 'object', properties: user, required: ['name'] };
const USER_UPDATE = { type: 'object', properties: user, minProperties: 1 };
const PASSWORD_CHANGE = { type: 'object', properties: { original_password: { type: 'string' }, password: { type: 'string' } }, required: ['original_password', 'password'] };
const ROLE_CREATE = { type: 'object', properties: { name: NAME(255), description: DESCRIPTION, domain_id: NULLABLE_ID }, required: ['name'] };
const wrapped = (key: string, inner: Record<string, unknown>) => ({ type: 'object', properties: { [key]: JSON.parse(JSON.stringify(inner)) as object } });

/** POST /v3/auth/tokens: Keystone's token_issue schema (what `auth` holds). */
const NAMED = { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' } } };
const SCOPED = { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' }, domain: NAMED } };
const TOKEN_REQUEST = {
  type: 'object',
  properties: {
    auth: {
      type: 'object',
      properties: {
        identity: {
          type: 'object',
          properties: {
            methods: { type: 'array', items: { type: 'string' }, maxItems: 16 },
            password: { type: 'object', properties: { user: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' }, password: { type: 'string' }, domain: NAMED } } } },
            token: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] },
          },
          required: ['methods'],
        },
        scope: { type: ['object', 'string', 'null'], properties: { project: SCOPED, domain: NAMED, system: { type: 'object' } } },
      },
      required: ['identity'],
    },
  },
};

/**
 * Keystone's answer to a schema error (keystone.common.validation): "Invalid input for field
 * 'a/b': <jsonschema's sentence>", the path taken inside the object Keystone validates
 * (`within`: the body's member holding it), or the bare sentence at its top.
 */
function keystoneSchemaError(e: SchemaError, root: unknown, within: string): HttpError {
  const path = e.instancePath.startsWith(within) ? e.instancePath.slice(within.length).split('/').filter(Boolean).join('/') : '';
  const sentence = jsonschemaMessage(e, root);
  return new HttpError(400, path ? `Invalid input for field '${path}': ${sentence}` : sentence);
}

function versionDoc(baseUrl: string) {
  return {
    id: 'v3.14', status: 'stable', updated: UPDATED,
    links: [{ rel: 'self', href: `${baseUrl}/identity/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  };
}

export function identityRoutes(app: FastifyInstance, deps: IdentityDeps): void {
  const { identity } = deps;
  const policy = new IdentityPolicy();

  // The identity service's errors carry Keystone's status and message.
  app.setErrorHandler((err, _request, _reply) => {
    if (err instanceof AuthError) throw new HttpError(err.status, err.message, err.headers);
    if (err instanceof IdentityForbidden) throw new HttpError(403, err.message);
    throw err;
  });

  /**
   * The `key` object of a request body, valid against the route's schema ({key: inner}).
   * Keystone validates `body.get(key, {})`: a missing key answers what {} would.
   */
  const body = async (request: FastifyRequest, key: string): Promise<Record<string, any>> => {
    const { body: b, error } = await checkedBody(request);
    const inner = isObject(b) ? b[key] : undefined;
    if (inner === undefined) {
      const { properties } = request.routeOptions.schema!.body as { properties: Record<string, object> };
      const validate = request.compileValidationSchema(properties[key]!) as ((v: unknown) => boolean) & { errors?: SchemaError[] | null };
      if (!validate({})) throw keystoneSchemaError(validate.errors![0]!, {}, '');
      return {};
    }
    if (error) throw keystoneSchemaError(error, b, `/${key}`);
    return inner as Record<string, any>;
  };
  const link = (request: FastifyRequest, path: string) => ({ self: `${request.baseUrl}/identity/v3/${path}` });
  const listLinks = (request: FastifyRequest, path: string) => ({ ...link(request, path), previous: null, next: null });
  const params = (request: FastifyRequest) => request.params as Record<string, string>;

  app.get('/identity', async (request, reply) => replyJson(reply, 300, { versions: { values: [versionDoc(request.baseUrl)] } }));
  app.get('/identity/v3', async (request, reply) => replyJson(reply, 200, { version: versionDoc(request.baseUrl) }));

  // --- tokens
  app.post('/identity/v3/auth/tokens', { schema: { body: TOKEN_REQUEST }, attachValidation: true }, async (request, reply) => {
    const { body: b, error } = await checkedBody(request);
    if (!isObject(b) || !isObject(b.auth)) throw new HttpError(400, 'Expecting to find auth in request body.');
    if (error) throw keystoneSchemaError(error, b, '/auth');
    let t: AuthContext;
    try { t = await identity.authenticate(b.auth, { address: request.ip }); } catch (e) {
      if (e instanceof AuthError && e.status === 401) throw new HttpError(401, e.message, { ...e.headers, 'WWW-Authenticate': `Keystone uri="${request.baseUrl}/identity"` });
      throw e;
    }
    const out = identity.tokenBody(t, request.baseUrl) as { token: Record<string, unknown> };
    if (searchParams(request).has('nocatalog')) delete out.token.catalog;
    return replyJson(reply, 201, out, { 'X-Subject-Token': t.tokenId });
  });
  const subject = async (request: FastifyRequest): Promise<AuthContext> => {
    const s = request.headers['x-subject-token'];
    if (typeof s !== 'string' || !s) throw new HttpError(404, 'Could not find token.');
    try { return await identity.validate(s); } catch { throw new HttpError(404, `Could not find token: ${s.slice(0, 40)}.`); }
  };
  app.get('/identity/v3/auth/tokens', async (request, reply) => {
    const caller = await deps.auth(request);
    const t = await subject(request);
    policy.authorize('identity:validate_token', caller, { 'target.token.user_id': t.userId });
    const out = identity.tokenBody(t, request.baseUrl) as { token: Record<string, unknown> };
    if (searchParams(request).has('nocatalog')) delete out.token.catalog;
    return replyJson(reply, 200, out, { 'X-Subject-Token': t.tokenId });
  });
  app.delete('/identity/v3/auth/tokens', async (request, reply) => {
    const caller = await deps.auth(request);
    const t = await subject(request);
    policy.authorize('identity:revoke_token', caller, { 'target.token.user_id': t.userId });
    await identity.revoke(t);
    return replyEmpty(reply, 204);
  });
  app.get('/identity/v3/auth/catalog', async (request, reply) => {
    await deps.auth(request);
    return replyJson(reply, 200, { catalog: identity.catalog(request.baseUrl), links: link(request, 'auth/catalog') });
  });
  app.get('/identity/v3/auth/projects', async (request, reply) => {
    const a = await deps.auth(request);
    const rows = await identity.repo.projects({ memberOf: a.userId });
    return replyJson(reply, 200, { projects: rows.map((p) => projectView(request, p)), links: link(request, 'auth/projects') });
  });

  // --- domains: only Default exists (multi-domain is not offered)
  const domainView = (request: FastifyRequest, d: { id: string; name: string; enabled: number; description: string | null }) =>
    ({ id: d.id, name: d.name, enabled: !!d.enabled, description: d.description ?? '', tags: [], options: {}, links: link(request, `domains/${d.id}`) });
  app.get('/identity/v3/domains', async (request, reply) => {
    await deps.auth(request);
    const rows = await identity.repo.domains(searchParams(request).get('name') ?? undefined);
    return replyJson(reply, 200, { domains: rows.map((d) => domainView(request, d)), links: listLinks(request, 'domains') });
  });
  app.get('/identity/v3/domains/:id', async (request, reply) => {
    await deps.auth(request);
    const d = await identity.repo.domain(params(request).id!);
    if (!d) throw new HttpError(404, `Could not find domain: ${params(request).id}.`);
    return replyJson(reply, 200, { domain: domainView(request, d) });
  });

  // --- projects
  function projectView(request: FastifyRequest, p: ProjectRow) {
    return { id: p.id, name: p.name, domain_id: p.domain_id, enabled: !!p.enabled, description: p.description ?? '', is_domain: false, parent_id: p.domain_id, tags: [], options: {}, links: link(request, `projects/${p.id}`) };
  }
  app.get('/identity/v3/projects', async (request, reply) => {
    const a = await deps.auth(request);
    const sp = searchParams(request);
    // Non-admins see the projects they have a role on (what `openstack project list` shows them).
    const rows = await identity.repo.projects({ name: sp.get('name') ?? undefined, domainId: sp.get('domain_id') ?? undefined, memberOf: a.isAdmin ? undefined : a.userId });
    return replyJson(reply, 200, { projects: rows.map((p) => projectView(request, p)), links: listLinks(request, 'projects') });
  });
  app.post('/identity/v3/projects', { schema: { body: wrapped('project', PROJECT_CREATE) }, attachValidation: true }, async (request, reply) => {
    policy.authorize('identity:create_project', await deps.auth(request));
    const p = await body(request, 'project');
    const row = await identity.createProject({
      name: p.name, domainId: p.domain_id ?? DEFAULT_DOMAIN.id, enabled: p.enabled !== false, description: p.description ?? '',
    });
    return replyJson(reply, 201, { project: projectView(request, row) });
  });
  app.get('/identity/v3/projects/:id', async (request, reply) => {
    const a = await deps.auth(request);
    const p = await identity.project(params(request).id!);
    policy.authorize('identity:get_project', a, { 'target.project.id': p.id });
    return replyJson(reply, 200, { project: projectView(request, p) });
  });
  app.patch('/identity/v3/projects/:id', { schema: { body: wrapped('project', PROJECT_UPDATE) }, attachValidation: true }, async (request, reply) => {
    policy.authorize('identity:update_project', await deps.auth(request));
    const b = await body(request, 'project');
    const p = await identity.updateProject(params(request).id!, { name: b.name, description: b.description ?? undefined, enabled: b.enabled });
    return replyJson(reply, 200, { project: projectView(request, p) });
  });
  app.delete('/identity/v3/projects/:id', async (request, reply) => {
    policy.authorize('identity:delete_project', await deps.auth(request));
    await identity.deleteProject(params(request).id!);
    return replyEmpty(reply, 204);
  });

  // --- users
  const userView = (request: FastifyRequest, u: UserRow) => {
    const v: Record<string, unknown> = { id: u.id, name: u.name, domain_id: u.domain_id, enabled: !!u.enabled, password_expires_at: null, options: {}, links: link(request, `users/${u.id}`) };
    if (u.default_project_id) v.default_project_id = u.default_project_id;
    if (u.email) v.email = u.email;
    return v;
  };
  app.get('/identity/v3/users', async (request, reply) => {
    policy.authorize('identity:list_users', await deps.auth(request));
    const rows = await identity.repo.users(searchParams(request).get('name') ?? undefined);
    return replyJson(reply, 200, { users: rows.map((u) => userView(request, u)), links: listLinks(request, 'users') });
  });
  app.post('/identity/v3/users', { schema: { body: wrapped('user', USER_CREATE) }, attachValidation: true }, async (request, reply) => {
    policy.authorize('identity:create_user', await deps.auth(request));
    const u = await body(request, 'user');
    const row = await identity.createUser({
      name: u.name, domainId: u.domain_id ?? DEFAULT_DOMAIN.id, enabled: u.enabled !== false,
      password: u.password ?? null, defaultProjectId: u.default_project_id ?? null, email: u.email ?? null,
    });
    return replyJson(reply, 201, { user: userView(request, row) });
  });
  app.get('/identity/v3/users/:id', async (request, reply) => {
    const a = await deps.auth(request);
    policy.authorize('identity:get_user', a, { user_id: params(request).id });
    return replyJson(reply, 200, { user: userView(request, await identity.user(params(request).id!)) });
  });
  app.patch('/identity/v3/users/:id', { schema: { body: wrapped('user', USER_UPDATE) }, attachValidation: true }, async (request, reply) => {
    policy.authorize('identity:update_user', await deps.auth(request));
    const b = await body(request, 'user');
    const u = await identity.updateUser(params(request).id!, {
      name: b.name, enabled: b.enabled, password: b.password ?? undefined, email: b.email ?? undefined, defaultProjectId: b.default_project_id ?? undefined,
    });
    return replyJson(reply, 200, { user: userView(request, u) });
  });
  app.post('/identity/v3/users/:id/password', { schema: { body: wrapped('user', PASSWORD_CHANGE) }, attachValidation: true }, async (request, reply) => {
    const a = await deps.auth(request);
    policy.authorize('identity:change_password', a, { user_id: params(request).id });
    const b = await body(request, 'user');
    await identity.changeOwnPassword(params(request).id!, b.original_password, b.password, { address: request.ip });
    return replyEmpty(reply, 204);
  });
  app.delete('/identity/v3/users/:id', async (request, reply) => {
    policy.authorize('identity:delete_user', await deps.auth(request));
    await identity.deleteUser(params(request).id!);
    return replyEmpty(reply, 204);
  });

  // --- roles and assignments
  const roleView = (request: FastifyRequest, r: { id: string; name: string }) => ({ id: r.id, name: r.name, domain_id: null, description: null, options: {}, links: link(request, `roles/${r.id}`) });
  app.get('/identity/v3/roles', async (request, reply) => {
    await deps.auth(request);
    const rows = await identity.repo.roles(searchParams(request).get('name') ?? undefined);
    return replyJson(reply, 200, { roles: rows.map((r) => roleView(request, r)), links: listLinks(request, 'roles') });
  });
  app.post('/identity/v3/roles', { schema: { body: wrapped('role', ROLE_CREATE) }, attachValidation: true }, async (request, reply) => {
    policy.authorize('identity:create_role', await deps.auth(request));
    const r = await body(request, 'role');
    return replyJson(reply, 201, { role: roleView(request, await identity.createRole(r.name)) });
  });
  app.get('/identity/v3/roles/:id', async (request, reply) => {
    await deps.auth(request);
    return replyJson(reply, 200, { role: roleView(request, await identity.role(params(request).id!)) });
  });
  const GRANT = '/identity/v3/projects/:project/users/:user/roles/:role';
  app.put(GRANT, async (request, reply) => {
    policy.authorize('identity:create_grant', await deps.auth(request));
    const p = params(request);
    await identity.assign(p.project!, p.user!, p.role!);
    return replyEmpty(reply, 204);
  });
  app.get(GRANT, async (request, reply) => {
    policy.authorize('identity:check_grant', await deps.auth(request));
    const p = params(request);
    return replyEmpty(reply, (await identity.repo.hasAssignment(p.user!, p.project!, p.role!)) ? 204 : 404);
  });
  app.delete(GRANT, async (request, reply) => {
    policy.authorize('identity:revoke_grant', await deps.auth(request));
    const p = params(request);
    await identity.unassign(p.project!, p.user!, p.role!);
    return replyEmpty(reply, 204);
  });
  app.get('/identity/v3/projects/:project/users/:user/roles', async (request, reply) => {
    policy.authorize('identity:list_grants', await deps.auth(request));
    const p = params(request);
    const rows = await identity.repo.assignedRoles(p.user!, p.project!);
    return replyJson(reply, 200, { roles: rows.map((r) => roleView(request, r)), links: listLinks(request, 'roles') });
  });
  app.get('/identity/v3/role_assignments', async (request, reply) => {
    policy.authorize('identity:list_role_assignments', await deps.auth(request));
    const sp = searchParams(request);
    const rows = await identity.repo.assignments({ userId: sp.get('user.id') ?? undefined, projectId: sp.get('scope.project.id') ?? undefined, roleId: sp.get('role.id') ?? undefined });
    const names = sp.has('include_names') && sp.get('include_names') !== 'false';
    return replyJson(reply, 200, {
      role_assignments: rows.map((r) => ({
        role: names ? { id: r.role_id, name: r.role_name } : { id: r.role_id },
        user: names ? { id: r.user_id, name: r.user_name, domain: DEFAULT_DOMAIN } : { id: r.user_id },
        scope: { project: names ? { id: r.project_id, name: r.project_name, domain: DEFAULT_DOMAIN } : { id: r.project_id } },
        links: { assignment: `${request.baseUrl}/identity/v3/projects/${r.project_id}/users/${r.user_id}/roles/${r.role_id}` },
      })),
      links: listLinks(request, 'role_assignments'),
    });
  });
}
