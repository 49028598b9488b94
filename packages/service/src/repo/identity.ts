/**
 * All SQL of the built-in identity service: domains, projects, users, roles, role
 * assignments, revoked tokens, lockout counters and the identity epoch. The same on SQLite,
 * PostgreSQL and MariaDB.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Db } from '../db/connect.js';
import { insertIgnore } from '../db/insert-ignore.js';
import { num, type DomainsTable, type ProjectsTable, type UsersTable } from '../db/schema.js';

export type DomainRow = DomainsTable;
export type ProjectRow = ProjectsTable;
export type UserRow = UsersTable;
export interface RoleRow { id: string; name: string }
export interface AssignmentRow { user_id: string; project_id: string; role_id: string; role_name: string; user_name: string; project_name: string }

export const newId = () => randomUUID().replace(/-/g, '');
/** The settings row whose value changes with every identity change (see IdentityRepository.bumpEpoch). */
const EPOCH = 'identity_epoch';

export class IdentityRepository {
  constructor(private readonly db: Db) {}
  private get k() { return this.db.kysely; }

  // --- settings
  /** The token signing key, created by whichever node starts first. */
  async signingKey(): Promise<Buffer> {
    await insertIgnore(this.db, 'settings', { name: 'token_key', value: randomBytes(32).toString('base64url') });
    const row = await this.k.selectFrom('settings').select('value').where('name', '=', 'token_key').executeTakeFirstOrThrow();
    return Buffer.from(row.value, 'base64url');
  }

  /**
   * The identity epoch: a value every node's token cache is checked against on each use, so a
   * revocation on any node takes effect everywhere at the next request. One primary-key read.
   */
  async epoch(): Promise<string> {
    const row = await this.k.selectFrom('settings').select('value').where('name', '=', EPOCH).executeTakeFirst();
    return row?.value ?? '';
  }

  async bumpEpoch(): Promise<void> {
    const value = randomBytes(9).toString('base64url');
    const r = await this.k.updateTable('settings').set({ value }).where('name', '=', EPOCH).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) await insertIgnore(this.db, 'settings', { name: EPOCH, value });
  }

  // --- domains
  ensureDomain(d: DomainRow): Promise<void> { return insertIgnore(this.db, 'domains', d); }
  domain(id: string): Promise<DomainRow | undefined> { return this.k.selectFrom('domains').selectAll().where('id', '=', id).executeTakeFirst(); }
  domainByName(name: string): Promise<DomainRow | undefined> { return this.k.selectFrom('domains').selectAll().where('name', '=', name).executeTakeFirst(); }
  domains(name?: string): Promise<DomainRow[]> {
    let q = this.k.selectFrom('domains').selectAll();
    if (name) q = q.where('name', '=', name);
    return q.orderBy('name').execute();
  }

  // --- projects
  project(id: string): Promise<ProjectRow | undefined> { return this.k.selectFrom('projects').selectAll().where('id', '=', id).executeTakeFirst(); }
  projectByName(name: string, domainId: string): Promise<ProjectRow | undefined> {
    return this.k.selectFrom('projects').selectAll().where('name', '=', name).where('domain_id', '=', domainId).executeTakeFirst();
  }
  /** Projects by name and domain; only those `memberOf` has a role on when given. */
  projects(filter: { name?: string; domainId?: string; memberOf?: string }): Promise<ProjectRow[]> {
    let q = this.k.selectFrom('projects').selectAll();
    if (filter.name) q = q.where('name', '=', filter.name);
    if (filter.domainId) q = q.where('domain_id', '=', filter.domainId);
    if (filter.memberOf) q = q.where('id', 'in', this.k.selectFrom('role_assignments').select('project_id').where('user_id', '=', filter.memberOf));
    return q.orderBy('name').execute();
  }
  async insertProject(row: ProjectRow): Promise<void> { await this.k.insertInto('projects').values(row).execute(); }
  async ensureProject(row: ProjectRow): Promise<void> { await insertIgnore(this.db, 'projects', row); }
  async updateProject(id: string, set: Partial<Pick<ProjectRow, 'name' | 'description' | 'enabled'>>): Promise<void> {
    if (Object.keys(set).length) await this.k.updateTable('projects').set(set).where('id', '=', id).execute();
  }
  async deleteProject(id: string): Promise<void> {
    await this.k.transaction().execute(async (tx) => {
      await tx.deleteFrom('role_assignments').where('project_id', '=', id).execute();
      await tx.deleteFrom('projects').where('id', '=', id).execute();
    });
  }

  // --- users
  user(id: string): Promise<UserRow | undefined> { return this.k.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst(); }
  userByName(name: string, domainId: string): Promise<UserRow | undefined> {
    return this.k.selectFrom('users').selectAll().where('name', '=', name).where('domain_id', '=', domainId).executeTakeFirst();
  }
  users(name?: string): Promise<UserRow[]> {
    let q = this.k.selectFrom('users').selectAll();
    if (name) q = q.where('name', '=', name);
    return q.orderBy('name').execute();
  }
  async insertUser(row: UserRow): Promise<void> { await this.k.insertInto('users').values(row).execute(); }
  async ensureUser(row: UserRow): Promise<void> { await insertIgnore(this.db, 'users', row); }
  async updateUser(id: string, set: Partial<Omit<UserRow, 'id' | 'created_at'>>): Promise<void> {
    if (Object.keys(set).length) await this.k.updateTable('users').set(set).where('id', '=', id).execute();
  }
  async deleteUser(id: string): Promise<void> {
    await this.k.transaction().execute(async (tx) => {
      await tx.deleteFrom('role_assignments').where('user_id', '=', id).execute();
      await tx.deleteFrom('users').where('id', '=', id).execute();
    });
  }
  /** Keystone's _record_failed_auth: one more failure, now. */
  async recordFailedAuth(id: string, at: number): Promise<void> {
    await this.k.updateTable('users').set((eb) => ({ failed_auth_count: eb('failed_auth_count', '+', 1), failed_auth_at: at })).where('id', '=', id).execute();
  }
  async resetFailedAuth(id: string): Promise<void> {
    await this.k.updateTable('users').set({ failed_auth_count: 0, failed_auth_at: null }).where('id', '=', id).execute();
  }

  // --- roles and assignments
  role(id: string): Promise<RoleRow | undefined> { return this.k.selectFrom('roles').select(['id', 'name']).where('id', '=', id).executeTakeFirst(); }
  roleByName(name: string): Promise<RoleRow | undefined> { return this.k.selectFrom('roles').select(['id', 'name']).where('name', '=', name).executeTakeFirst(); }
  roles(name?: string): Promise<RoleRow[]> {
    let q = this.k.selectFrom('roles').select(['id', 'name']);
    if (name) q = q.where('name', '=', name);
    return q.orderBy('name').execute();
  }
  rolesNamed(names: string[]): Promise<RoleRow[]> { return this.k.selectFrom('roles').select(['id', 'name']).where('name', 'in', names).execute(); }
  async insertRole(row: RoleRow): Promise<void> { await this.k.insertInto('roles').values(row).execute(); }
  async ensureRole(row: RoleRow): Promise<void> { await insertIgnore(this.db, 'roles', row); }
  /** The roles assigned to a user on a project (directly; implied roles are the service's business). */
  assignedRoles(userId: string, projectId: string): Promise<RoleRow[]> {
    return this.k.selectFrom('role_assignments').innerJoin('roles', 'roles.id', 'role_assignments.role_id')
      .select(['roles.id', 'roles.name']).where('user_id', '=', userId).where('project_id', '=', projectId).execute();
  }
  async hasAssignment(userId: string, projectId: string, roleId: string): Promise<boolean> {
    return !!(await this.k.selectFrom('role_assignments').select('role_id').where('project_id', '=', projectId)
      .where('user_id', '=', userId).where('role_id', '=', roleId).executeTakeFirst());
  }
  assign(userId: string, projectId: string, roleId: string): Promise<void> {
    return insertIgnore(this.db, 'role_assignments', { user_id: userId, project_id: projectId, role_id: roleId });
  }
  /** Removes an assignment; false when there was none. */
  async unassign(userId: string, projectId: string, roleId: string): Promise<boolean> {
    const r = await this.k.deleteFrom('role_assignments').where('project_id', '=', projectId)
      .where('user_id', '=', userId).where('role_id', '=', roleId).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
  assignments(filter: { userId?: string; projectId?: string; roleId?: string }): Promise<AssignmentRow[]> {
    let q = this.k.selectFrom('role_assignments')
      .innerJoin('roles', 'roles.id', 'role_assignments.role_id')
      .innerJoin('users', 'users.id', 'role_assignments.user_id')
      .innerJoin('projects', 'projects.id', 'role_assignments.project_id')
      .select(['user_id', 'project_id', 'role_id', 'roles.name as role_name', 'users.name as user_name', 'projects.name as project_name']);
    if (filter.userId) q = q.where('user_id', '=', filter.userId);
    if (filter.projectId) q = q.where('project_id', '=', filter.projectId);
    if (filter.roleId) q = q.where('role_id', '=', filter.roleId);
    return q.execute();
  }

  // --- revoked tokens
  async isRevoked(auditId: string): Promise<boolean> {
    return !!(await this.k.selectFrom('revoked_tokens').select('audit_id').where('audit_id', '=', auditId).executeTakeFirst());
  }
  revokeAudit(auditId: string, expiresAt: string): Promise<void> {
    return insertIgnore(this.db, 'revoked_tokens', { audit_id: auditId, expires_at: expiresAt });
  }
}

/** A user row's lockout and revocation columns as numbers (pg returns BIGINT as strings). */
export function userCounters(u: UserRow): { failedCount: number; failedAt: number | null; revokedBefore: number | null } {
  return { failedCount: num(u.failed_auth_count) ?? 0, failedAt: num(u.failed_auth_at), revokedBefore: num(u.tokens_revoked_before) };
}
