/**
 * Keystone v3 HTTP API on /identity: version discovery, tokens, and the admin resources the
 * `openstack` client manages (domains, projects, users, roles, role assignments).
 */
import { randomUUID } from 'node:crypto';
import type { Db } from './db/connect.js';
import { HttpError, isObject, readJson, sendEmpty, sendJson, type Ctx, type Router } from './http.js';
import { AuthError, DEFAULT_DOMAIN, hashPassword, insertIgnore, now, type AuthContext, type Identity } from './identity.js';

const UPDATED = '2022-09-07T00:00:00Z';

function versionDoc(baseUrl: string) {
  return {
    id: 'v3.14', status: 'stable', updated: UPDATED,
    links: [{ rel: 'self', href: `${baseUrl}/identity/v3/` }],
    'media-types': [{ base: 'application/json', type: 'application/vnd.openstack.identity-v3+json' }],
  };
}

const newId = () => randomUUID().replace(/-/g, '');

export function identityRoutes(router: Router, db: Db, identity: Identity): void {
  const k = db.kysely;

  const authed = async (ctx: Ctx): Promise<AuthContext> => {
    const token = ctx.req.headers['x-auth-token'];
    if (typeof token !== 'string' || !token) throw new HttpError(401, 'The request you have made requires authentication.');
    try { return await identity.validate(token); } catch { throw new HttpError(401, 'The request you have made requires authentication.'); }
  };
  const admin = async (ctx: Ctx): Promise<AuthContext> => {
    const a = await authed(ctx);
    if (!a.isAdmin) throw new HttpError(403, 'You are not authorized to perform the requested action: identity admin role required.');
    return a;
  };
  const body = async (ctx: Ctx, key: string): Promise<Record<string, any>> => {
    const b = await readJson(ctx);
    if (!isObject(b) || !isObject(b[key])) throw new HttpError(400, `Invalid input for field '${key}': the request body must contain an object '${key}'.`);
    return b[key] as Record<string, any>;
  };
  const link = (ctx: Ctx, path: string) => ({ self: `${ctx.baseUrl}/identity/v3/${path}` });

  router.add('GET', '/identity', (ctx) => sendJson(ctx, 300, { versions: { values: [versionDoc(ctx.baseUrl)] } }));
  router.add('GET', '/identity/v3', (ctx) => sendJson(ctx, 200, { version: versionDoc(ctx.baseUrl) }));

  router.add('POST', '/identity/v3/auth/tokens', async (ctx) => {
    const b = await readJson(ctx);
    if (!isObject(b) || !isObject(b.auth)) throw new HttpError(400, "Expecting to find auth in request body.");
    let t: AuthContext;
    try { t = await identity.authenticate(b.auth); } catch (e) {
      if (e instanceof AuthError) throw new HttpError(e.status, e.message, e.status === 401 ? { 'WWW-Authenticate': `Keystone uri="${ctx.baseUrl}/identity"` } : {});
      throw e;
    }
    const nocatalog = ctx.url.searchParams.has('nocatalog');
    const out = identity.tokenBody(t, ctx.baseUrl) as { token: Record<string, unknown> };
    if (nocatalog) delete out.token.catalog;
    sendJson(ctx, 201, out, { 'X-Subject-Token': t.tokenId });
  });
  const subject = async (ctx: Ctx): Promise<AuthContext> => {
    const s = ctx.req.headers['x-subject-token'];
    if (typeof s !== 'string' || !s) throw new HttpError(404, 'Could not find token.');
    try { return await identity.validate(s); } catch { throw new HttpError(404, `Could not find token: ${s.slice(0, 40)}.`); }
  };
  router.add('GET', '/identity/v3/auth/tokens', async (ctx) => {
    const caller = await authed(ctx);
    const t = await subject(ctx);
    if (!caller.isAdmin && caller.userId !== t.userId) throw new HttpError(403, 'You are not authorized to perform the requested action.');
    const out = identity.tokenBody(t, ctx.baseUrl) as { token: Record<string, unknown> };
    if (ctx.url.searchParams.has('nocatalog')) delete out.token.catalog;
    sendJson(ctx, 200, out, { 'X-Subject-Token': t.tokenId });
  });
  router.add('DELETE', '/identity/v3/auth/tokens', async (ctx) => {
    const caller = await authed(ctx);
    const t = await subject(ctx);
    if (!caller.isAdmin && caller.userId !== t.userId) throw new HttpError(403, 'You are not authorized to perform the requested action.');
    await identity.revoke(t);
    sendEmpty(ctx, 204);
  });
  router.add('GET', '/identity/v3/auth/catalog', async (ctx) => {
    await authed(ctx);
    sendJson(ctx, 200, { catalog: identity.catalog(ctx.baseUrl), links: link(ctx, 'auth/catalog') });
  });
  router.add('GET', '/identity/v3/auth/projects', async (ctx) => {
    const a = await authed(ctx);
    const rows = await k.selectFrom('projects').selectAll().where('id', 'in',
      k.selectFrom('role_assignments').select('project_id').where('user_id', '=', a.userId)).execute();
    sendJson(ctx, 200, { projects: rows.map((p) => projectView(ctx, p)), links: link(ctx, 'auth/projects') });
  });

  // Domains: only Default exists (multi-domain is not offered).
  const domainView = (ctx: Ctx, d: { id: string; name: string; enabled: number; description: string | null }) =>
    ({ id: d.id, name: d.name, enabled: !!d.enabled, description: d.description ?? '', tags: [], options: {}, links: link(ctx, `domains/${d.id}`) });
  router.add('GET', '/identity/v3/domains', async (ctx) => {
    await authed(ctx);
    let q = k.selectFrom('domains').selectAll();
    const name = ctx.url.searchParams.get('name');
    if (name) q = q.where('name', '=', name);
    sendJson(ctx, 200, { domains: (await q.execute()).map((d) => domainView(ctx, d)), links: { ...link(ctx, 'domains'), previous: null, next: null } });
  });
  router.add('GET', '/identity/v3/domains/:id', async (ctx) => {
    await authed(ctx);
    const d = await k.selectFrom('domains').selectAll().where('id', '=', ctx.params.id!).executeTakeFirst();
    if (!d) throw new HttpError(404, `Could not find domain: ${ctx.params.id}.`);
    sendJson(ctx, 200, { domain: domainView(ctx, d) });
  });

  // Projects
  function projectView(ctx: Ctx, p: { id: string; name: string; domain_id: string; enabled: number; description: string | null }) {
    return { id: p.id, name: p.name, domain_id: p.domain_id, enabled: !!p.enabled, description: p.description ?? '', is_domain: false, parent_id: p.domain_id, tags: [], options: {}, links: link(ctx, `projects/${p.id}`) };
  }
  router.add('GET', '/identity/v3/projects', async (ctx) => {
    const a = await authed(ctx);
    let q = k.selectFrom('projects').selectAll();
    const name = ctx.url.searchParams.get('name');
    if (name) q = q.where('name', '=', name);
    const dom = ctx.url.searchParams.get('domain_id');
    if (dom) q = q.where('domain_id', '=', dom);
    if (!a.isAdmin) q = q.where('id', 'in', k.selectFrom('role_assignments').select('project_id').where('user_id', '=', a.userId));
    sendJson(ctx, 200, { projects: (await q.orderBy('name').execute()).map((p) => projectView(ctx, p)), links: { ...link(ctx, 'projects'), previous: null, next: null } });
  });
  router.add('POST', '/identity/v3/projects', async (ctx) => {
    await admin(ctx);
    const p = await body(ctx, 'project');
    if (typeof p.name !== 'string' || !p.name || p.name.length > 64) throw new HttpError(400, "Invalid input for field 'name': a project name of 1 to 64 characters is required.");
    const domainId = typeof p.domain_id === 'string' ? p.domain_id : DEFAULT_DOMAIN.id;
    if (!(await k.selectFrom('domains').select('id').where('id', '=', domainId).executeTakeFirst())) throw new HttpError(400, `Could not find domain: ${domainId}.`);
    if (await k.selectFrom('projects').select('id').where('name', '=', p.name).where('domain_id', '=', domainId).executeTakeFirst()) {
      throw new HttpError(409, `Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : ${p.name}.`);
    }
    const row = { id: newId(), name: p.name, domain_id: domainId, enabled: p.enabled === false ? 0 : 1, description: typeof p.description === 'string' ? p.description : '', created_at: now() };
    await k.insertInto('projects').values(row).execute();
    sendJson(ctx, 201, { project: projectView(ctx, row) });
  });
  const findProject = async (id: string) => {
    const p = await k.selectFrom('projects').selectAll().where('id', '=', id).executeTakeFirst();
    if (!p) throw new HttpError(404, `Could not find project: ${id}.`);
    return p;
  };
  router.add('GET', '/identity/v3/projects/:id', async (ctx) => {
    const a = await authed(ctx);
    const p = await findProject(ctx.params.id!);
    if (!a.isAdmin && a.projectId !== p.id) throw new HttpError(403, 'You are not authorized to perform the requested action.');
    sendJson(ctx, 200, { project: projectView(ctx, p) });
  });
  router.add('PATCH', '/identity/v3/projects/:id', async (ctx) => {
    await admin(ctx);
    const p = await findProject(ctx.params.id!);
    const b = await body(ctx, 'project');
    const set: Record<string, unknown> = {};
    if (typeof b.name === 'string' && b.name) set.name = b.name;
    if (typeof b.description === 'string') set.description = b.description;
    if (typeof b.enabled === 'boolean') set.enabled = b.enabled ? 1 : 0;
    if (Object.keys(set).length) await k.updateTable('projects').set(set).where('id', '=', p.id).execute();
    sendJson(ctx, 200, { project: projectView(ctx, await findProject(p.id)) });
  });
  router.add('DELETE', '/identity/v3/projects/:id', async (ctx) => {
    await admin(ctx);
    const p = await findProject(ctx.params.id!);
    await k.deleteFrom('role_assignments').where('project_id', '=', p.id).execute();
    await k.deleteFrom('projects').where('id', '=', p.id).execute();
    sendEmpty(ctx, 204);
  });

  // Users
  const userView = (ctx: Ctx, u: { id: string; name: string; domain_id: string; enabled: number; default_project_id: string | null; email: string | null }) => {
    const v: Record<string, unknown> = { id: u.id, name: u.name, domain_id: u.domain_id, enabled: !!u.enabled, password_expires_at: null, options: {}, links: link(ctx, `users/${u.id}`) };
    if (u.default_project_id) v.default_project_id = u.default_project_id;
    if (u.email) v.email = u.email;
    return v;
  };
  const findUser = async (id: string) => {
    const u = await k.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
    if (!u) throw new HttpError(404, `Could not find user: ${id}.`);
    return u;
  };
  router.add('GET', '/identity/v3/users', async (ctx) => {
    await admin(ctx);
    let q = k.selectFrom('users').selectAll();
    const name = ctx.url.searchParams.get('name');
    if (name) q = q.where('name', '=', name);
    sendJson(ctx, 200, { users: (await q.orderBy('name').execute()).map((u) => userView(ctx, u)), links: { ...link(ctx, 'users'), previous: null, next: null } });
  });
  router.add('POST', '/identity/v3/users', async (ctx) => {
    await admin(ctx);
    const u = await body(ctx, 'user');
    if (typeof u.name !== 'string' || !u.name || u.name.length > 255) throw new HttpError(400, "Invalid input for field 'name': a user name of 1 to 255 characters is required.");
    const domainId = typeof u.domain_id === 'string' ? u.domain_id : DEFAULT_DOMAIN.id;
    if (await k.selectFrom('users').select('id').where('name', '=', u.name).where('domain_id', '=', domainId).executeTakeFirst()) {
      throw new HttpError(409, `Conflict occurred attempting to store user - Duplicate entry found with name ${u.name} at domain ID ${domainId}.`);
    }
    if (u.default_project_id != null) await findProject(String(u.default_project_id));
    const row = {
      id: newId(), name: u.name, domain_id: domainId, enabled: u.enabled === false ? 0 : 1,
      password_hash: typeof u.password === 'string' ? await hashPassword(u.password) : null,
      default_project_id: typeof u.default_project_id === 'string' ? u.default_project_id : null,
      email: typeof u.email === 'string' ? u.email : null, created_at: now(),
    };
    await k.insertInto('users').values(row).execute();
    sendJson(ctx, 201, { user: userView(ctx, row) });
  });
  router.add('GET', '/identity/v3/users/:id', async (ctx) => {
    const a = await authed(ctx);
    if (!a.isAdmin && a.userId !== ctx.params.id) throw new HttpError(403, 'You are not authorized to perform the requested action.');
    sendJson(ctx, 200, { user: userView(ctx, await findUser(ctx.params.id!)) });
  });
  router.add('PATCH', '/identity/v3/users/:id', async (ctx) => {
    await admin(ctx);
    const u = await findUser(ctx.params.id!);
    const b = await body(ctx, 'user');
    const set: Record<string, unknown> = {};
    if (typeof b.name === 'string' && b.name) set.name = b.name;
    if (typeof b.enabled === 'boolean') set.enabled = b.enabled ? 1 : 0;
    if (typeof b.password === 'string') set.password_hash = await hashPassword(b.password);
    if (typeof b.email === 'string') set.email = b.email;
    if (typeof b.default_project_id === 'string') set.default_project_id = (await findProject(b.default_project_id)).id;
    if (Object.keys(set).length) await k.updateTable('users').set(set).where('id', '=', u.id).execute();
    sendJson(ctx, 200, { user: userView(ctx, await findUser(u.id)) });
  });
  router.add('DELETE', '/identity/v3/users/:id', async (ctx) => {
    await admin(ctx);
    const u = await findUser(ctx.params.id!);
    await k.deleteFrom('role_assignments').where('user_id', '=', u.id).execute();
    await k.deleteFrom('users').where('id', '=', u.id).execute();
    sendEmpty(ctx, 204);
  });

  // Roles and assignments
  const roleView = (ctx: Ctx, r: { id: string; name: string }) => ({ id: r.id, name: r.name, domain_id: null, description: null, options: {}, links: link(ctx, `roles/${r.id}`) });
  const findRole = async (id: string) => {
    const r = await k.selectFrom('roles').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) throw new HttpError(404, `Could not find role: ${id}.`);
    return r;
  };
  router.add('GET', '/identity/v3/roles', async (ctx) => {
    await authed(ctx);
    let q = k.selectFrom('roles').selectAll();
    const name = ctx.url.searchParams.get('name');
    if (name) q = q.where('name', '=', name);
    sendJson(ctx, 200, { roles: (await q.orderBy('name').execute()).map((r) => roleView(ctx, r)), links: { ...link(ctx, 'roles'), previous: null, next: null } });
  });
  router.add('POST', '/identity/v3/roles', async (ctx) => {
    await admin(ctx);
    const r = await body(ctx, 'role');
    if (typeof r.name !== 'string' || !r.name) throw new HttpError(400, "Invalid input for field 'name'.");
    if (await k.selectFrom('roles').select('id').where('name', '=', r.name).executeTakeFirst()) throw new HttpError(409, `Conflict occurred attempting to store role - Duplicate entry found with name ${r.name}.`);
    const row = { id: newId(), name: r.name };
    await k.insertInto('roles').values(row).execute();
    sendJson(ctx, 201, { role: roleView(ctx, row) });
  });
  router.add('GET', '/identity/v3/roles/:id', async (ctx) => {
    await authed(ctx);
    sendJson(ctx, 200, { role: roleView(ctx, await findRole(ctx.params.id!)) });
  });
  router.add('PUT', '/identity/v3/projects/:project/users/:user/roles/:role', async (ctx) => {
    await admin(ctx);
    const p = await findProject(ctx.params.project!);
    const u = await findUser(ctx.params.user!);
    const r = await findRole(ctx.params.role!);
    await insertIgnore(db, 'role_assignments', { user_id: u.id, project_id: p.id, role_id: r.id });
    sendEmpty(ctx, 204);
  });
  router.add('HEAD', '/identity/v3/projects/:project/users/:user/roles/:role', async (ctx) => {
    await authed(ctx);
    const row = await k.selectFrom('role_assignments').select('role_id').where('project_id', '=', ctx.params.project!)
      .where('user_id', '=', ctx.params.user!).where('role_id', '=', ctx.params.role!).executeTakeFirst();
    sendEmpty(ctx, row ? 204 : 404);
  });
  router.add('DELETE', '/identity/v3/projects/:project/users/:user/roles/:role', async (ctx) => {
    await admin(ctx);
    const r = await k.deleteFrom('role_assignments').where('project_id', '=', ctx.params.project!)
      .where('user_id', '=', ctx.params.user!).where('role_id', '=', ctx.params.role!).executeTakeFirst();
    if (Number(r.numDeletedRows) === 0) throw new HttpError(404, 'Could not find role assignment.');
    sendEmpty(ctx, 204);
  });
  router.add('GET', '/identity/v3/projects/:project/users/:user/roles', async (ctx) => {
    await authed(ctx);
    const rows = await k.selectFrom('role_assignments').innerJoin('roles', 'roles.id', 'role_assignments.role_id')
      .select(['roles.id', 'roles.name']).where('project_id', '=', ctx.params.project!).where('user_id', '=', ctx.params.user!).execute();
    sendJson(ctx, 200, { roles: rows.map((r) => roleView(ctx, r)), links: { ...link(ctx, 'roles'), previous: null, next: null } });
  });
  router.add('GET', '/identity/v3/role_assignments', async (ctx) => {
    await admin(ctx);
    let q = k.selectFrom('role_assignments')
      .innerJoin('roles', 'roles.id', 'role_assignments.role_id')
      .innerJoin('users', 'users.id', 'role_assignments.user_id')
      .innerJoin('projects', 'projects.id', 'role_assignments.project_id')
      .select(['user_id', 'project_id', 'role_id', 'roles.name as role_name', 'users.name as user_name', 'projects.name as project_name']);
    const sp = ctx.url.searchParams;
    if (sp.get('user.id')) q = q.where('user_id', '=', sp.get('user.id')!);
    if (sp.get('scope.project.id')) q = q.where('project_id', '=', sp.get('scope.project.id')!);
    if (sp.get('role.id')) q = q.where('role_id', '=', sp.get('role.id')!);
    const names = sp.has('include_names') && sp.get('include_names') !== 'false';
    const rows = await q.execute();
    sendJson(ctx, 200, {
      role_assignments: rows.map((r) => ({
        role: names ? { id: r.role_id, name: r.role_name } : { id: r.role_id },
        user: names ? { id: r.user_id, name: r.user_name, domain: DEFAULT_DOMAIN } : { id: r.user_id },
        scope: { project: names ? { id: r.project_id, name: r.project_name, domain: DEFAULT_DOMAIN } : { id: r.project_id } },
        links: { assignment: `${ctx.baseUrl}/identity/v3/projects/${r.project_id}/users/${r.user_id}/roles/${r.role_id}` },
      })),
      links: { ...link(ctx, 'role_assignments'), previous: null, next: null },
    });
  });
}
