/**
 * Keystone v3 HTTP API on /identity: version discovery, tokens, and the admin resources the
 * `openstack` client manages (domains, projects, users, roles, role assignments). Parsing and
 * rendering only: authorization is the identity policy's (Keystone's rule names), every
 * change is the identity service's, every query its repository's.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HttpError, isObject, jsonBody, replyEmpty, replyJson, searchParams, type Authenticate } from '../http.js';
import { AuthError, DEFAULT_DOMAIN, type AuthContext, type Identity } from '../domain/identity.js';
import { IdentityForbidden, IdentityPolicy } from '../policy/identity.js';
import type { ProjectRow, UserRow } from '../repo/identity.js';

export interface IdentityDeps {
  identity: Identity;
  /** The caller's token, validated (401 with Keystone's WWW-Authenticate otherwise). */
  auth: Authenticate;
}

const UPDATED = '2022-09-07T00:00:00Z';

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

  const body = async (request: FastifyRequest, key: string): Promise<Record<string, any>> => {
    const b = await jsonBody(request);
    if (!isObject(b) || !isObject(b[key])) throw new HttpError(400, `Invalid input for field '${key}': the request body must contain an object '${key}'.`);
    return b[key] as Record<string, any>;
  };
  const link = (request: FastifyRequest, path: string) => ({ self: `${request.baseUrl}/identity/v3/${path}` });
  const listLinks = (request: FastifyRequest, path: string) => ({ ...link(request, path), previous: null, next: null });
  const params = (request: FastifyRequest) => request.params as Record<string, string>;

  app.get('/identity', async (request, reply) => replyJson(reply, 300, { versions: { values: [versionDoc(request.baseUrl)] } }));
  app.get('/identity/v3', async (request, reply) => replyJson(reply, 200, { version: versionDoc(request.baseUrl) }));

  // --- tokens
  app.post('/identity/v3/auth/tokens', async (request, reply) => {
    const b = await jsonBody(request);
    if (!isObject(b) || !isObject(b.auth)) throw new HttpError(400, 'Expecting to find auth in request body.');
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
  app.post('/identity/v3/projects', async (request, reply) => {
    policy.authorize('identity:create_project', await deps.auth(request));
    const p = await body(request, 'project');
    if (typeof p.name !== 'string' || !p.name || p.name.length > 64) throw new HttpError(400, "Invalid input for field 'name': a project name of 1 to 64 characters is required.");
    const row = await identity.createProject({
      name: p.name, domainId: typeof p.domain_id === 'string' ? p.domain_id : DEFAULT_DOMAIN.id,
      enabled: p.enabled !== false, description: typeof p.description === 'string' ? p.description : '',
    });
    return replyJson(reply, 201, { project: projectView(request, row) });
  });
  app.get('/identity/v3/projects/:id', async (request, reply) => {
    const a = await deps.auth(request);
    const p = await identity.project(params(request).id!);
    policy.authorize('identity:get_project', a, { 'target.project.id': p.id });
    return replyJson(reply, 200, { project: projectView(request, p) });
  });
  app.patch('/identity/v3/projects/:id', async (request, reply) => {
    policy.authorize('identity:update_project', await deps.auth(request));
    const b = await body(request, 'project');
    const p = await identity.updateProject(params(request).id!, {
      name: typeof b.name === 'string' && b.name ? b.name : undefined,
      description: typeof b.description === 'string' ? b.description : undefined,
      enabled: typeof b.enabled === 'boolean' ? b.enabled : undefined,
    });
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
  app.post('/identity/v3/users', async (request, reply) => {
    policy.authorize('identity:create_user', await deps.auth(request));
    const u = await body(request, 'user');
    if (typeof u.name !== 'string' || !u.name || u.name.length > 255) throw new HttpError(400, "Invalid input for field 'name': a user name of 1 to 255 characters is required.");
    const row = await identity.createUser({
      name: u.name, domainId: typeof u.domain_id === 'string' ? u.domain_id : DEFAULT_DOMAIN.id, enabled: u.enabled !== false,
      password: typeof u.password === 'string' ? u.password : null,
      defaultProjectId: u.default_project_id == null ? null : String(u.default_project_id),
      email: typeof u.email === 'string' ? u.email : null,
    });
    return replyJson(reply, 201, { user: userView(request, row) });
  });
  app.get('/identity/v3/users/:id', async (request, reply) => {
    const a = await deps.auth(request);
    policy.authorize('identity:get_user', a, { user_id: params(request).id });
    return replyJson(reply, 200, { user: userView(request, await identity.user(params(request).id!)) });
  });
  app.patch('/identity/v3/users/:id', async (request, reply) => {
    policy.authorize('identity:update_user', await deps.auth(request));
    const b = await body(request, 'user');
    const u = await identity.updateUser(params(request).id!, {
      name: typeof b.name === 'string' && b.name ? b.name : undefined,
      enabled: typeof b.enabled === 'boolean' ? b.enabled : undefined,
      password: typeof b.password === 'string' ? b.password : undefined,
      email: typeof b.email === 'string' ? b.email : undefined,
      defaultProjectId: typeof b.default_project_id === 'string' ? b.default_project_id : undefined,
    });
    return replyJson(reply, 200, { user: userView(request, u) });
  });
  app.post('/identity/v3/users/:id/password', async (request, reply) => {
    const a = await deps.auth(request);
    policy.authorize('identity:change_password', a, { user_id: params(request).id });
    const b = await body(request, 'user');
    if (typeof b.password !== 'string' || typeof b.original_password !== 'string') {
      throw new HttpError(400, "Invalid input for field 'user': 'password' and 'original_password' are required.");
    }
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
  app.post('/identity/v3/roles', async (request, reply) => {
    policy.authorize('identity:create_role', await deps.auth(request));
    const r = await body(request, 'role');
    if (typeof r.name !== 'string' || !r.name) throw new HttpError(400, "Invalid input for field 'name'.");
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
