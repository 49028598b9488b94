/**
 * The built-in identity service: enough of Keystone v3 for the OpenStack clients: password
 * and token authentication with project scope, the service catalog, token validation and
 * revocation, and the admin API for projects, users, roles and role assignments.
 *
 * Tokens are signed (HMAC-SHA256 with a key kept in the database), so any API node sharing
 * the database validates any node's tokens; revocation is a table of audit ids.
 */
import { createHmac, randomBytes, randomUUID, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import type { Db } from './db/connect.js';

const scrypt = promisify(scryptCb) as (pw: string, salt: Buffer, len: number, opts: { N: number; r: number; p: number; maxmem: number }) => Promise<Buffer>;

export const DEFAULT_DOMAIN = { id: 'default', name: 'Default' };
/** Keystone's default role hierarchy: admin implies member implies reader. */
export const IMPLIED_ROLES: Record<string, string[]> = { admin: ['member', 'reader'], member: ['reader'] };

export interface AuthContext {
  tokenId: string;
  userId: string;
  userName: string;
  projectId: string | null;
  projectName: string | null;
  domainScope: string | null;
  roles: { id: string; name: string }[];
  roleNames: Set<string>;
  isAdmin: boolean;
  methods: string[];
  issuedAt: string;
  expiresAt: string;
  auditId: string;
}

export class AuthError extends Error {
  constructor(readonly status: 401 | 403 | 404 | 400 | 409, message: string) { super(message); }
}

interface TokenPayload { u: string; p: string | null; d: string | null; m: string[]; i: number; e: number; a: string }

export const now = () => new Date().toISOString();
/** Keystone spells times with microseconds: 2015-11-05T22:00:11.000000Z. */
export const keystoneTime = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

const b64u = (b: Buffer) => b.toString('base64url');

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const N = 1 << 14, r = 8, p = 1;
  const hash = await scrypt(password, salt, 32, { N, r, p, maxmem: 64 << 20 });
  return `scrypt$${N}$${r}$${p}$${b64u(salt)}$${b64u(hash)}`;
}

export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  if (!stored) return false;
  const [kind, N, r, p, salt, hash] = stored.split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const expect = Buffer.from(hash, 'base64url');
  const got = await scrypt(password, Buffer.from(salt, 'base64url'), expect.length, { N: Number(N), r: Number(r), p: Number(p), maxmem: 64 << 20 });
  return timingSafeEqual(expect, got);
}

export interface IdentityOptions {
  tokenTtlSeconds: number;
  region: string;
}

export class Identity {
  private key: Buffer | null = null;
  private readonly cache = new Map<string, { ctx: AuthContext; until: number }>();

  constructor(private readonly db: Db, readonly options: IdentityOptions) {}

  /** First start: the signing key, the Default domain, the three roles, the admin user in the admin project. */
  async bootstrap(adminPassword: string | undefined): Promise<{ generatedPassword?: string }> {
    const k = this.db.kysely;
    await insertIgnore(this.db, 'settings', { name: 'token_key', value: b64u(randomBytes(32)) });
    const row = await k.selectFrom('settings').select('value').where('name', '=', 'token_key').executeTakeFirstOrThrow();
    this.key = Buffer.from(row.value, 'base64url');
    await insertIgnore(this.db, 'domains', { id: DEFAULT_DOMAIN.id, name: DEFAULT_DOMAIN.name, enabled: 1, description: 'The default domain' });
    for (const name of ['admin', 'member', 'reader']) {
      if (!(await k.selectFrom('roles').select('id').where('name', '=', name).executeTakeFirst())) {
        await insertIgnore(this.db, 'roles', { id: randomUUID().replace(/-/g, ''), name });
      }
    }
    let project = await k.selectFrom('projects').select('id').where('name', '=', 'admin').where('domain_id', '=', 'default').executeTakeFirst();
    if (!project) {
      await insertIgnore(this.db, 'projects', { id: randomUUID().replace(/-/g, ''), name: 'admin', domain_id: 'default', enabled: 1, description: 'Bootstrap project for initializing the cloud.', created_at: now() });
      project = await k.selectFrom('projects').select('id').where('name', '=', 'admin').where('domain_id', '=', 'default').executeTakeFirstOrThrow();
    }
    const existing = await k.selectFrom('users').select(['id', 'password_hash']).where('name', '=', 'admin').where('domain_id', '=', 'default').executeTakeFirst();
    let generatedPassword: string | undefined;
    if (!existing) {
      let password = adminPassword;
      if (!password) { password = b64u(randomBytes(12)); generatedPassword = password; }
      await insertIgnore(this.db, 'users', {
        id: randomUUID().replace(/-/g, ''), name: 'admin', domain_id: 'default', enabled: 1,
        password_hash: await hashPassword(password), default_project_id: project.id, email: null, created_at: now(),
      });
    } else if (adminPassword && !(await verifyPassword(adminPassword, existing.password_hash))) {
      // The environment is the source of truth for the bootstrap password (as keystone-manage bootstrap).
      await k.updateTable('users').set({ password_hash: await hashPassword(adminPassword) }).where('id', '=', existing.id).execute();
    }
    const admin = await k.selectFrom('users').select('id').where('name', '=', 'admin').where('domain_id', '=', 'default').executeTakeFirstOrThrow();
    const adminRole = await k.selectFrom('roles').select('id').where('name', '=', 'admin').executeTakeFirstOrThrow();
    await insertIgnore(this.db, 'role_assignments', { user_id: admin.id, project_id: project.id, role_id: adminRole.id });
    return { generatedPassword };
  }

  private sign(payload: TokenPayload): string {
    const body = b64u(Buffer.from(JSON.stringify(payload)));
    return `dh1.${body}.${b64u(createHmac('sha256', this.key!).update(body).digest())}`;
  }

  private decode(token: string): TokenPayload | null {
    const parts = token.split('.');
    if (parts.length !== 3 || parts[0] !== 'dh1' || token.length > 2048) return null;
    const want = createHmac('sha256', this.key!).update(parts[1]!).digest();
    const got = Buffer.from(parts[2]!, 'base64url');
    if (got.length !== want.length || !timingSafeEqual(got, want)) return null;
    try {
      const p = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as TokenPayload;
      return typeof p.u === 'string' && typeof p.e === 'number' ? p : null;
    } catch { return null; }
  }

  /** POST /v3/auth/tokens: authenticate, resolve the scope, issue a token. */
  async authenticate(auth: unknown): Promise<AuthContext> {
    const a = (auth ?? {}) as any;
    const identity = a.identity;
    if (!identity || !Array.isArray(identity.methods) || identity.methods.length === 0) {
      throw new AuthError(400, 'Expecting to find identity in auth - the server could not comply with the request since it is either malformed or otherwise incorrect.');
    }
    const k = this.db.kysely;
    let userId: string;
    let methods: string[];
    let expires = Date.now() + this.options.tokenTtlSeconds * 1000;
    let auditId = b64u(randomBytes(16));
    if (identity.methods.includes('password')) {
      const u = identity.password?.user;
      if (!u || typeof u.password !== 'string') throw new AuthError(400, 'Invalid password authentication request: a user and password are required.');
      let q = k.selectFrom('users').selectAll();
      if (typeof u.id === 'string') q = q.where('id', '=', u.id);
      else if (typeof u.name === 'string') q = q.where('name', '=', u.name).where('domain_id', '=', await this.domainIdOf(u.domain));
      else throw new AuthError(400, 'Invalid password authentication request: user id or name is required.');
      const user = await q.executeTakeFirst();
      if (!user || !user.enabled || !(await verifyPassword(u.password, user.password_hash))) {
        throw new AuthError(401, 'The request you have made requires authentication.');
      }
      userId = user.id;
      methods = ['password'];
    } else if (identity.methods.includes('token')) {
      const t = await this.validate(String(identity.token?.id ?? ''));
      userId = t.userId;
      methods = t.methods.includes('token') ? t.methods : [...t.methods, 'token'];
      // A token from a token keeps the original expiry (Keystone does not extend lifetimes).
      expires = Date.parse(t.expiresAt);
      auditId = t.auditId;
    } else {
      throw new AuthError(401, `Unsupported authentication method: ${identity.methods.join(', ')}`);
    }
    let projectId: string | null = null;
    let domainScope: string | null = null;
    const scope = a.scope;
    if (scope && typeof scope === 'object' && scope.project) {
      const p = scope.project;
      let q = k.selectFrom('projects').selectAll();
      if (typeof p.id === 'string') q = q.where('id', '=', p.id);
      else if (typeof p.name === 'string') q = q.where('name', '=', p.name).where('domain_id', '=', await this.domainIdOf(p.domain));
      else throw new AuthError(400, 'Invalid project scope: id or name is required.');
      const project = await q.executeTakeFirst();
      if (!project || !project.enabled) throw new AuthError(401, 'The request you have made requires authentication.');
      const roles = await this.rolesOn(userId, project.id);
      if (roles.length === 0) throw new AuthError(401, `User ${userId} has no access to project ${project.id}`);
      projectId = project.id;
    } else if (scope && typeof scope === 'object' && scope.domain) {
      domainScope = await this.domainIdOf(scope.domain);
    } else if (!scope) {
      const user = await k.selectFrom('users').select('default_project_id').where('id', '=', userId).executeTakeFirst();
      if (user?.default_project_id && (await this.rolesOn(userId, user.default_project_id)).length) projectId = user.default_project_id;
    }
    const issued = Date.now();
    const token = this.sign({ u: userId, p: projectId, d: domainScope, m: methods, i: issued, e: expires, a: auditId });
    return this.validate(token);
  }

  private async domainIdOf(d: any): Promise<string> {
    if (!d) return DEFAULT_DOMAIN.id;
    if (typeof d.id === 'string') return d.id;
    if (typeof d.name === 'string') {
      const row = await this.db.kysely.selectFrom('domains').select('id').where('name', '=', d.name).executeTakeFirst();
      if (!row) throw new AuthError(401, 'The request you have made requires authentication.');
      return row.id;
    }
    return DEFAULT_DOMAIN.id;
  }

  /** Roles a user holds on a project, implied roles included, by name order. */
  async rolesOn(userId: string, projectId: string): Promise<{ id: string; name: string }[]> {
    const k = this.db.kysely;
    const direct = await k.selectFrom('role_assignments').innerJoin('roles', 'roles.id', 'role_assignments.role_id')
      .select(['roles.id', 'roles.name']).where('user_id', '=', userId).where('project_id', '=', projectId).execute();
    if (direct.length === 0) return [];
    const names = new Set(direct.map((r) => r.name));
    for (const r of direct) for (const implied of IMPLIED_ROLES[r.name] ?? []) names.add(implied);
    const all = await k.selectFrom('roles').select(['id', 'name']).where('name', 'in', [...names]).execute();
    return all.sort((x, y) => x.name.localeCompare(y.name));
  }

  /** Validate a token (signature, expiry, revocation, the user and project still enabled). */
  async validate(token: string): Promise<AuthContext> {
    const cached = this.cache.get(token);
    if (cached && cached.until > Date.now()) return cached.ctx;
    const p = this.decode(token);
    if (!p) throw new AuthError(401, 'The request you have made requires authentication.');
    if (p.e <= Date.now()) throw new AuthError(404, 'Could not find token.');
    const k = this.db.kysely;
    if (await k.selectFrom('revoked_tokens').select('audit_id').where('audit_id', '=', p.a).executeTakeFirst()) {
      throw new AuthError(404, 'Could not find token.');
    }
    const user = await k.selectFrom('users').select(['id', 'name', 'enabled']).where('id', '=', p.u).executeTakeFirst();
    if (!user || !user.enabled) throw new AuthError(404, 'Could not find token.');
    let projectName: string | null = null;
    let roles: { id: string; name: string }[] = [];
    if (p.p) {
      const project = await k.selectFrom('projects').select(['name', 'enabled']).where('id', '=', p.p).executeTakeFirst();
      if (!project || !project.enabled) throw new AuthError(404, 'Could not find token.');
      projectName = project.name;
      roles = await this.rolesOn(p.u, p.p);
      if (roles.length === 0) throw new AuthError(404, 'Could not find token.');
    }
    const roleNames = new Set(roles.map((r) => r.name));
    const ctx: AuthContext = {
      tokenId: token, userId: user.id, userName: user.name, projectId: p.p, projectName, domainScope: p.d,
      roles, roleNames, isAdmin: roleNames.has('admin'), methods: p.m,
      issuedAt: keystoneTime(p.i), expiresAt: keystoneTime(p.e), auditId: p.a,
    };
    // Like keystonemiddleware's token cache, but short: a revocation elsewhere is seen within seconds.
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(token, { ctx, until: Math.min(Date.now() + 5_000, p.e) });
    return ctx;
  }

  async revoke(ctx: AuthContext): Promise<void> {
    await insertIgnore(this.db, 'revoked_tokens', { audit_id: ctx.auditId, expires_at: ctx.expiresAt });
    for (const [t, c] of this.cache) if (c.ctx.auditId === ctx.auditId) this.cache.delete(t);
  }

  /** The Keystone v3 token body. */
  tokenBody(ctx: AuthContext, baseUrl: string): unknown {
    const token: Record<string, unknown> = {
      methods: ctx.methods,
      user: { domain: DEFAULT_DOMAIN, id: ctx.userId, name: ctx.userName, password_expires_at: null },
      audit_ids: [ctx.auditId],
      expires_at: ctx.expiresAt,
      issued_at: ctx.issuedAt,
    };
    if (ctx.projectId) {
      token.project = { domain: DEFAULT_DOMAIN, id: ctx.projectId, name: ctx.projectName };
      token.is_domain = false;
      token.roles = ctx.roles;
      token.catalog = this.catalog(baseUrl);
    } else if (ctx.domainScope) {
      token.domain = DEFAULT_DOMAIN;
      token.roles = [];
      token.catalog = this.catalog(baseUrl);
    }
    return { token };
  }

  catalog(baseUrl: string): unknown[] {
    const region = this.options.region;
    const entry = (id: string, type: string, name: string, url: string) => ({
      id, type, name,
      endpoints: ['public', 'internal', 'admin'].map((iface) => ({
        id: `${id}-${iface}`, interface: iface, region_id: region, region, url,
      })),
    });
    return [
      entry('image0000000000000000000000000001', 'image', 'glance', baseUrl),
      entry('identity00000000000000000000001', 'identity', 'keystone', `${baseUrl}/identity`),
    ];
  }
}

/** INSERT that does nothing when the row's key already exists (another node got there first). */
export async function insertIgnore(db: Db, table: any, row: Record<string, unknown>): Promise<void> {
  const q = (db.kysely as any).insertInto(table).values(row);
  if (db.dialect === 'mysql') await q.ignore().execute();
  else await q.onConflict((oc: any) => oc.doNothing()).execute();
}
