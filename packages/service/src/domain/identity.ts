/**
 * The built-in identity service: enough of Keystone v3 for the OpenStack clients — password
 * and token authentication with project scope, the service catalog, token validation and
 * revocation, and the admin operations on projects, users, roles and role assignments.
 *
 * Tokens are signed (HMAC-SHA256 with a key kept in the database), so any API node sharing
 * the database validates any node's tokens. A token stops working, on every node at its next
 * request, when it is revoked (its audit id), when its user's password changes or the user is
 * disabled or deleted (tokens issued before are revoked, as Keystone's revocation events do),
 * or when its project is disabled or the user keeps no role on it (roles are read at each
 * validation, as Keystone does for Fernet tokens). The validation cache is checked against
 * the identity epoch, which every identity change moves.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/connect.js';
import { HashingBusy, PasswordHasher } from './passwords.js';
import { LoginThrottle } from './login-throttle.js';
import { IdentityRepository, newId, userCounters, type ProjectRow, type RoleRow, type UserRow } from '../repo/identity.js';

export const DEFAULT_DOMAIN = { id: 'default', name: 'Default' };
/** Keystone's default role hierarchy: admin implies member implies reader. */
export const IMPLIED_ROLES: Record<string, string[]> = { admin: ['member', 'reader'], member: ['reader'] };
/** Keystone's message for every authentication failure it does not explain. */
export const UNAUTHENTICATED = 'The request you have made requires authentication.';

export interface AuthContext {
  tokenId: string;
  userId: string;
  userName: string;
  projectId: string | null;
  projectName: string | null;
  /** The domain a domain-scoped token is for (only an external Keystone issues those). */
  domainScope: string | null;
  roles: { id: string; name: string }[];
  roleNames: Set<string>;
  isAdmin: boolean;
  methods: string[];
  issuedAt: string;
  expiresAt: string;
  auditId: string;
}

/** An identity failure with the status and message Keystone answers. */
export class AuthError extends Error {
  constructor(readonly status: 400 | 401 | 403 | 404 | 409 | 429 | 503, message: string, readonly headers: Record<string, string> = {}) { super(message); }
}

interface TokenPayload { u: string; p: string | null; d: string | null; m: string[]; i: number; e: number; a: string }

export const now = () => new Date().toISOString();
/** Keystone spells times with microseconds: 2015-11-05T22:00:11.000000Z. */
export const keystoneTime = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
const b64u = (b: Buffer) => b.toString('base64url');

export interface IdentityOptions {
  tokenTtlSeconds: number;
  region: string;
  /** Image endpoints of other regions listed in the catalog (region → URL). */
  otherImageEndpoints?: Record<string, string>;
  /** Keystone's [security_compliance] lockout_failure_attempts (0: no lockout, Keystone's default). */
  lockoutFailureAttempts?: number;
  /** Keystone's lockout_duration in seconds (0: locked until an administrator unlocks; Keystone's default 1800). */
  lockoutDurationSeconds?: number;
}

/** Who is logging in from where, for the failed-login throttle. */
export interface LoginSource { address: string }

export class Identity {
  private key: Buffer | null = null;
  private readonly cache = new Map<string, { ctx: AuthContext; epoch: string; until: number }>();
  /**
   * The identity epoch last read, with the database's data version at that read and this
   * node's change generation: while neither moved, nothing can have changed the epoch, so
   * it is not read again (SQLite only; see currentEpoch).
   */
  private epochSeen: { epoch: string; version: number; generation: number } | null = null;
  /** Moved by every identity change made on this node (its own commits do not move the data version). */
  private generation = 0;
  private readonly dataVersion: (() => number) | undefined;
  readonly repo: IdentityRepository;
  readonly passwords = new PasswordHasher();
  readonly throttle = new LoginThrottle();

  constructor(db: Db, readonly options: IdentityOptions) {
    this.repo = new IdentityRepository(db);
    this.dataVersion = db.dataVersion;
  }

  /** First start: the signing key, the Default domain, the three roles, the admin user in the admin project. */
  async bootstrap(adminPassword: string | undefined): Promise<{ generatedPassword?: string }> {
    const repo = this.repo;
    this.key = await repo.signingKey();
    await repo.ensureDomain({ id: DEFAULT_DOMAIN.id, name: DEFAULT_DOMAIN.name, enabled: 1, description: 'The default domain' });
    for (const name of ['admin', 'member', 'reader']) {
      if (!(await repo.roleByName(name))) await repo.ensureRole({ id: newId(), name });
    }
    if (!(await repo.projectByName('admin', DEFAULT_DOMAIN.id))) {
      await repo.ensureProject({ id: newId(), name: 'admin', domain_id: DEFAULT_DOMAIN.id, enabled: 1, description: 'Bootstrap project for initializing the cloud.', created_at: now() });
    }
    const project = (await repo.projectByName('admin', DEFAULT_DOMAIN.id))!;
    const existing = await repo.userByName('admin', DEFAULT_DOMAIN.id);
    let generatedPassword: string | undefined;
    if (!existing) {
      let password = adminPassword;
      if (!password) { password = b64u(randomBytes(12)); generatedPassword = password; }
      await repo.ensureUser({
        id: newId(), name: 'admin', domain_id: DEFAULT_DOMAIN.id, enabled: 1,
        password_hash: await this.passwords.hash(password), default_project_id: project.id, email: null, created_at: now(),
      });
    } else if (adminPassword && !(await this.passwords.verify(adminPassword, existing.password_hash))) {
      // The environment is the source of truth for the bootstrap password (as keystone-manage bootstrap).
      await this.changePassword(existing.id, adminPassword);
    }
    const admin = (await repo.userByName('admin', DEFAULT_DOMAIN.id))!;
    const adminRole = (await repo.roleByName('admin'))!;
    await repo.assign(admin.id, project.id, adminRole.id);
    return { generatedPassword };
  }

  async close(): Promise<void> { await this.passwords.close(); }

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
      return typeof p.u === 'string' && typeof p.e === 'number' && typeof p.i === 'number' ? p : null;
    } catch { return null; }
  }

  /** POST /v3/auth/tokens: authenticate, resolve the scope, issue a token. */
  async authenticate(auth: unknown, source: LoginSource): Promise<AuthContext> {
    const a = (auth ?? {}) as any;
    const identity = a.identity;
    if (!identity || !Array.isArray(identity.methods) || identity.methods.length === 0) {
      throw new AuthError(400, 'Expecting to find identity in auth - the server could not comply with the request since it is either malformed or otherwise incorrect.');
    }
    let userId: string;
    let methods: string[];
    let expires = Date.now() + this.options.tokenTtlSeconds * 1000;
    let auditId = b64u(randomBytes(16));
    if (identity.methods.includes('password')) {
      userId = await this.checkPassword(identity.password?.user, source);
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
    const scope = a.scope;
    if (scope && typeof scope === 'object' && scope.project) {
      const p = scope.project;
      let project: ProjectRow | undefined;
      if (typeof p.id === 'string') project = await this.repo.project(p.id);
      else if (typeof p.name === 'string') project = await this.repo.projectByName(p.name, await this.domainIdOf(p.domain));
      else throw new AuthError(400, 'Invalid project scope: id or name is required.');
      if (!project || !project.enabled) throw new AuthError(401, UNAUTHENTICATED);
      if ((await this.rolesOn(userId, project.id)).length === 0) throw new AuthError(401, `User ${userId} has no access to project ${project.id}`);
      projectId = project.id;
    } else if (scope && typeof scope === 'object' && scope.domain) {
      // Keystone issues a domain-scoped token only to a user with a role on that domain. The
      // built-in identity assigns roles on projects only, so nobody has one: refused, for a
      // domain that exists or not alike (Keystone's message hides which).
      const domainId = await this.domainIdOf(scope.domain);
      const domain = await this.repo.domain(domainId);
      if (!domain || !domain.enabled) throw new AuthError(401, UNAUTHENTICATED);
      throw new AuthError(401, UNAUTHENTICATED);
    } else if (scope && typeof scope === 'object' && scope.system) {
      throw new AuthError(401, UNAUTHENTICATED);
    } else if (!scope) {
      const user = await this.repo.user(userId);
      if (user?.default_project_id && (await this.rolesOn(userId, user.default_project_id)).length) projectId = user.default_project_id;
    }
    const token = this.sign({ u: userId, p: projectId, d: null, m: methods, i: Date.now(), e: expires, a: auditId });
    return this.validate(token);
  }

  /**
   * The password method: the user (by id, or name and domain), throttled, locked out as
   * Keystone's lockout options say, one hash whether the user exists or not.
   */
  private async checkPassword(u: any, source: LoginSource): Promise<string> {
    if (!u || typeof u.password !== 'string') throw new AuthError(400, 'Invalid password authentication request: a user and password are required.');
    let user: UserRow | undefined;
    let who: string;
    if (typeof u.id === 'string') { who = `id:${u.id}`; user = await this.repo.user(u.id); }
    else if (typeof u.name === 'string') {
      const domainId = await this.domainIdOf(u.domain, true);
      who = `name:${domainId ?? ''}/${u.name}`;
      user = domainId === null ? undefined : await this.repo.userByName(u.name, domainId);
    } else throw new AuthError(400, 'Invalid password authentication request: user id or name is required.');
    this.notThrottled(who, source);
    if (user && this.isLocked(user)) throw new AuthError(401, `The account is locked for user: ${user.id}.`);
    const ok = await this.busyAsAuthError(this.passwords.verify(u.password, user?.password_hash));
    if (!ok || !user) {
      this.throttle.failed(who, source.address);
      if (user) await this.repo.recordFailedAuth(user.id, Date.now());
      throw new AuthError(401, UNAUTHENTICATED);
    }
    if (!user.enabled) throw new AuthError(401, `The account is disabled for user: ${user.id}.`);
    this.throttle.succeeded(who);
    if (userCounters(user).failedCount) await this.repo.resetFailedAuth(user.id);
    return user.id;
  }

  /** Keystone's _is_account_locked: too many failures, and (with a duration) the last one recent. */
  private isLocked(user: UserRow): boolean {
    const max = this.options.lockoutFailureAttempts ?? 0;
    if (!max) return false;
    const { failedCount, failedAt } = userCounters(user);
    if (failedCount < max) return false;
    const duration = this.options.lockoutDurationSeconds ?? 0;
    return !(duration && failedAt !== null && Date.now() >= failedAt + duration * 1000);
  }

  /** A domain reference's id; null for a name that names no domain when `lenient` (else 401). */
  private async domainIdOf(d: any, lenient?: false): Promise<string>;
  private async domainIdOf(d: any, lenient: true): Promise<string | null>;
  private async domainIdOf(d: any, lenient = false): Promise<string | null> {
    if (!d) return DEFAULT_DOMAIN.id;
    if (typeof d.id === 'string') return d.id;
    if (typeof d.name === 'string') {
      const row = await this.repo.domainByName(d.name);
      if (!row) { if (lenient) return null; throw new AuthError(401, UNAUTHENTICATED); }
      return row.id;
    }
    return DEFAULT_DOMAIN.id;
  }

  /** Roles a user holds on a project, implied roles included, by name order. */
  async rolesOn(userId: string, projectId: string): Promise<RoleRow[]> {
    const direct = await this.repo.assignedRoles(userId, projectId);
    if (direct.length === 0) return [];
    const names = new Set(direct.map((r) => r.name));
    for (const r of direct) for (const implied of IMPLIED_ROLES[r.name] ?? []) names.add(implied);
    const all = await this.repo.rolesNamed([...names]);
    return all.sort((x, y) => x.name.localeCompare(y.name));
  }

  /** Validate a token (signature, expiry, revocation, the user and project still enabled, a role left). */
  async validate(token: string): Promise<AuthContext> {
    const epoch = await this.currentEpoch();
    const cached = this.cache.get(token);
    if (cached && cached.epoch === epoch && cached.until > Date.now()) return cached.ctx;
    const p = this.decode(token);
    if (!p) throw new AuthError(401, UNAUTHENTICATED);
    if (p.e <= Date.now()) throw new AuthError(404, 'Could not find token.');
    if (await this.repo.isRevoked(p.a)) throw new AuthError(404, 'Could not find token.');
    const user = await this.repo.user(p.u);
    if (!user || !user.enabled) throw new AuthError(404, 'Could not find token.');
    const { revokedBefore } = userCounters(user);
    if (revokedBefore !== null && p.i <= revokedBefore) throw new AuthError(404, 'Could not find token.');
    let projectName: string | null = null;
    let roles: RoleRow[] = [];
    if (p.p) {
      const project = await this.repo.project(p.p);
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
    if (this.cache.size > 10_000) this.cache.clear();
    // Valid until the identity epoch moves (any identity change, on any node) or 5 s pass.
    this.cache.set(token, { ctx, epoch, until: Math.min(Date.now() + 5_000, p.e) });
    return ctx;
  }

  async revoke(ctx: AuthContext): Promise<void> {
    await this.repo.revokeAudit(ctx.auditId, ctx.expiresAt);
    await this.changed();
  }

  /**
   * The identity epoch, as of now. On SQLite it is read again only when the data version
   * says another connection committed since the last read, or this node changed identity
   * data itself: a revocation on any node is seen by the next request on every node, and a
   * request whose token is cached costs no query. (The version comes from the WAL index in
   * shared memory: no statement planning, no page read.) PostgreSQL and MariaDB have no such
   * counter: there every validation reads the epoch row.
   */
  private async currentEpoch(): Promise<string> {
    const version = this.dataVersion?.();
    const generation = this.generation;
    const seen = this.epochSeen;
    if (version !== undefined && seen && seen.version === version && seen.generation === generation) return seen.epoch;
    const epoch = await this.repo.epoch();
    // A change made on this node while the epoch was read may not be in what was read.
    if (version !== undefined && generation === this.generation) this.epochSeen = { epoch, version, generation };
    return epoch;
  }

  /** After any identity change: every node's cached validations are checked again. */
  private async changed(): Promise<void> {
    this.generation++;
    this.cache.clear();
    await this.repo.bumpEpoch();
    this.generation++;
  }

  // --- projects
  async createProject(p: { name: string; domainId: string; enabled: boolean; description: string }): Promise<ProjectRow> {
    if (!(await this.repo.domain(p.domainId))) throw new AuthError(400, `Could not find domain: ${p.domainId}.`);
    if (await this.repo.projectByName(p.name, p.domainId)) {
      throw new AuthError(409, `Conflict occurred attempting to store project - it is not permitted to have two projects with the same name in the same domain : ${p.name}.`);
    }
    const row = { id: newId(), name: p.name, domain_id: p.domainId, enabled: p.enabled ? 1 : 0, description: p.description, created_at: now() };
    await this.repo.insertProject(row);
    return row;
  }

  async project(id: string): Promise<ProjectRow> {
    const p = await this.repo.project(id);
    if (!p) throw new AuthError(404, `Could not find project: ${id}.`);
    return p;
  }

  async updateProject(id: string, set: { name?: string; description?: string; enabled?: boolean }): Promise<ProjectRow> {
    await this.project(id);
    await this.repo.updateProject(id, { ...(set.name ? { name: set.name } : {}), ...(set.description !== undefined ? { description: set.description } : {}), ...(set.enabled !== undefined ? { enabled: set.enabled ? 1 : 0 } : {}) });
    await this.changed();
    return this.project(id);
  }

  async deleteProject(id: string): Promise<void> {
    await this.project(id);
    await this.repo.deleteProject(id);
    await this.changed();
  }

  // --- users
  async user(id: string): Promise<UserRow> {
    const u = await this.repo.user(id);
    if (!u) throw new AuthError(404, `Could not find user: ${id}.`);
    return u;
  }

  async createUser(u: { name: string; domainId: string; enabled: boolean; password: string | null; defaultProjectId: string | null; email: string | null }): Promise<UserRow> {
    if (await this.repo.userByName(u.name, u.domainId)) {
      throw new AuthError(409, `Conflict occurred attempting to store user - Duplicate entry found with name ${u.name} at domain ID ${u.domainId}.`);
    }
    if (u.defaultProjectId !== null) await this.project(u.defaultProjectId);
    const row: UserRow = {
      id: newId(), name: u.name, domain_id: u.domainId, enabled: u.enabled ? 1 : 0,
      password_hash: u.password === null ? null : await this.hashOrBusy(u.password),
      default_project_id: u.defaultProjectId, email: u.email, created_at: now(),
    };
    await this.repo.insertUser(row);
    return row;
  }

  /**
   * PATCH /v3/users/{id}. A new password or disabling revokes the user's tokens (Keystone
   * persists a revocation event for the user in both cases); enabling clears a lockout.
   */
  async updateUser(id: string, set: { name?: string; enabled?: boolean; password?: string; email?: string; defaultProjectId?: string }): Promise<UserRow> {
    const user = await this.user(id);
    const row: Partial<UserRow> = {};
    if (set.name) row.name = set.name;
    if (set.email !== undefined) row.email = set.email;
    if (set.defaultProjectId !== undefined) row.default_project_id = (await this.project(set.defaultProjectId)).id;
    if (set.enabled !== undefined) {
      row.enabled = set.enabled ? 1 : 0;
      if (set.enabled) Object.assign(row, { failed_auth_count: 0, failed_auth_at: null });
      else if (user.enabled) row.tokens_revoked_before = Date.now();
    }
    if (set.password !== undefined) Object.assign(row, { password_hash: await this.hashOrBusy(set.password), tokens_revoked_before: Date.now(), failed_auth_count: 0, failed_auth_at: null });
    await this.repo.updateUser(id, row);
    await this.changed();
    return this.user(id);
  }

  /** POST /v3/users/{id}/password: the user's own change, proving the current password. */
  async changeOwnPassword(id: string, original: string, password: string, source: LoginSource): Promise<void> {
    const user = await this.user(id);
    this.notThrottled(`id:${id}`, source);
    if (!(await this.busyAsAuthError(this.passwords.verify(original, user.password_hash)))) {
      this.throttle.failed(`id:${id}`, source.address);
      throw new AuthError(401, UNAUTHENTICATED);
    }
    await this.changePassword(id, password);
  }

  private async changePassword(id: string, password: string): Promise<void> {
    await this.repo.updateUser(id, { password_hash: await this.hashOrBusy(password), tokens_revoked_before: Date.now(), failed_auth_count: 0, failed_auth_at: null });
    await this.changed();
  }

  private hashOrBusy(password: string): Promise<string> {
    return this.busyAsAuthError(this.passwords.hash(password));
  }

  /** A full hashing queue is Keystone's answer to overload: 503, try again shortly. */
  private async busyAsAuthError<T>(work: Promise<T>): Promise<T> {
    try { return await work; } catch (e) {
      if (e instanceof HashingBusy) throw new AuthError(503, e.message, { 'Retry-After': '1' });
      throw e;
    }
  }

  /** 429 with Retry-After while `who` or the address has too many recent failures. */
  private notThrottled(who: string, source: LoginSource): void {
    const wait = this.throttle.retryAfter(who, source.address);
    if (wait > 0) throw new AuthError(429, `Too many failed authentication attempts; try again in ${wait} seconds.`, { 'Retry-After': String(wait) });
  }

  async deleteUser(id: string): Promise<void> {
    await this.user(id);
    await this.repo.deleteUser(id);
    await this.changed();
  }

  // --- roles and assignments
  async role(id: string): Promise<RoleRow> {
    const r = await this.repo.role(id);
    if (!r) throw new AuthError(404, `Could not find role: ${id}.`);
    return r;
  }

  async createRole(name: string): Promise<RoleRow> {
    if (await this.repo.roleByName(name)) throw new AuthError(409, `Conflict occurred attempting to store role - Duplicate entry found with name ${name}.`);
    const row = { id: newId(), name };
    await this.repo.insertRole(row);
    return row;
  }

  async assign(projectId: string, userId: string, roleId: string): Promise<void> {
    await this.project(projectId);
    await this.user(userId);
    await this.role(roleId);
    await this.repo.assign(userId, projectId, roleId);
    await this.changed();
  }

  /** Removing a role takes effect on the user's tokens for that project at once, on every node. */
  async unassign(projectId: string, userId: string, roleId: string): Promise<void> {
    if (!(await this.repo.unassign(userId, projectId, roleId))) throw new AuthError(404, 'Could not find role assignment.');
    await this.changed();
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
    const image = entry('image0000000000000000000000000001', 'image', 'glance', baseUrl);
    for (const [other, url] of Object.entries(this.options.otherImageEndpoints ?? {})) {
      image.endpoints.push(...['public', 'internal', 'admin'].map((iface) => ({ id: `image-${other}-${iface}`, interface: iface, region_id: other, region: other, url })));
    }
    return [image, entry('identity00000000000000000000001', 'identity', 'keystone', `${baseUrl}/identity`)];
  }
}

