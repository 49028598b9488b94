/**
 * The identity API's authorization: Keystone's named rules (identity:get_user,
 * identity:list_role_assignments, ...) in the oslo.policy language, enforced by the same
 * engine as the Images API's. The check strings are Keystone's classic ones (admin_required,
 * owner): the built-in identity has no system or domain scope, so its new defaults' system
 * and domain reader branches could never pass. A refusal is Keystone's 403 "You are not
 * authorized to perform the requested action: identity:<rule>.".
 */
import { Policy, type PolicyCredentials } from './policy.js';
import type { RuleDefault } from './glance-defaults.js';
import type { AuthContext } from '../domain/identity.js';

const ADMIN = 'rule:admin_required';
const rules: RuleDefault[] = [
  { name: 'admin_required', check: 'role:admin' },
  { name: 'owner', check: 'user_id:%(user_id)s' },
  { name: 'admin_or_owner', check: 'rule:admin_required or rule:owner' },
  { name: 'identity:get_user', check: 'rule:admin_or_owner' },
  { name: 'identity:list_users', check: ADMIN },
  { name: 'identity:create_user', check: ADMIN },
  { name: 'identity:update_user', check: ADMIN },
  { name: 'identity:delete_user', check: ADMIN },
  { name: 'identity:change_password', check: 'rule:owner' },
  { name: 'identity:get_project', check: 'rule:admin_required or project_id:%(target.project.id)s' },
  { name: 'identity:create_project', check: ADMIN },
  { name: 'identity:update_project', check: ADMIN },
  { name: 'identity:delete_project', check: ADMIN },
  { name: 'identity:create_role', check: ADMIN },
  { name: 'identity:list_grants', check: ADMIN },
  { name: 'identity:check_grant', check: ADMIN },
  { name: 'identity:create_grant', check: ADMIN },
  { name: 'identity:revoke_grant', check: ADMIN },
  { name: 'identity:list_role_assignments', check: ADMIN },
  { name: 'identity:validate_token', check: 'rule:admin_required or user_id:%(target.token.user_id)s' },
  { name: 'identity:revoke_token', check: 'rule:admin_required or user_id:%(target.token.user_id)s' },
];

export class IdentityForbidden extends Error {
  readonly status = 403;
  constructor(readonly rule: string) { super(`You are not authorized to perform the requested action: ${rule}.`); }
}

export class IdentityPolicy {
  private readonly policy = Policy.ofRules(rules, { enforceScope: false });

  /** Throws IdentityForbidden unless `caller` passes `rule` on `target`. */
  authorize(rule: string, caller: AuthContext, target: Record<string, unknown> = {}): void {
    const creds: PolicyCredentials = { user_id: caller.userId, project_id: caller.projectId, roles: [...caller.roleNames], is_admin: caller.isAdmin };
    if (!this.policy.enforce(rule, target, creds)) throw new IdentityForbidden(rule);
  }
}
