/**
 * Glance 25 (Zed)'s registered policy rules and their defaults (glance/policies/*.py).
 *
 * Each rule has its new (secure-RBAC) check string and, for most, the deprecated one it
 * replaced. Zed ships with oslo.policy's `enforce_new_defaults = False` and
 * `enforce_scope = False`, and in that mode oslo.policy enforces `new OR deprecated` for every
 * rule whose check string changed and that the policy file does not override. The deprecated
 * checks are `rule:default` (images) and `rule:metadef_default` (metadefs), and `default`
 * itself is `'' OR role:admin`: so out of the box only the admin-only rules (publicize_image,
 * copy_image, the cache, stores detail, tasks and metadef writes) refuse anybody; ownership is
 * enforced by the API layer's legacy checks (see image-api.ts), as in Glance.
 */

export interface RuleDefault {
  name: string;
  /** The secure-RBAC default. */
  check: string;
  /** The pre-Wallaby/Xena default it replaced, OR'd in while enforce_new_defaults is off. */
  deprecated?: string;
  /** What the rule guards, as METHOD path. */
  operations?: string[];
  /** Token scopes the rule accepts (oslo.policy scope_types); absent: any. Glance's API rules are all ['project']. */
  scopeTypes?: readonly string[];
}

// Building blocks, as glance/policies/base.py composes them.
const PROJECT_MEMBER = 'role:member and project_id:%(project_id)s';
const PROJECT_READER = 'role:reader and project_id:%(project_id)s';
const IMAGE_MEMBER = 'project_id:%(member_id)s';
const COMMUNITY = "'community':%(visibility)s";
const PUBLIC = "'public':%(visibility)s";
const SHARED = "'shared':%(visibility)s";
const ANY_VISIBLE = `project_id:%(project_id)s or ${IMAGE_MEMBER} or ${COMMUNITY} or ${PUBLIC} or ${SHARED}`;

const ADMIN_OR_PROJECT_MEMBER = `role:admin or (${PROJECT_MEMBER})`;
const ADMIN_OR_PROJECT_READER = `role:admin or (${PROJECT_READER})`;
const ADMIN_OR_PROJECT_READER_GET_IMAGE = `role:admin or (role:reader and (${ANY_VISIBLE}))`;
const ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE = `role:admin or (role:member and (${ANY_VISIBLE}))`;
const ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE = `role:admin or (${PROJECT_MEMBER} and project_id:%(owner)s)`;
const ADMIN_OR_PROJECT_READER_GET_NAMESPACE = `role:admin or (role:reader and (project_id:%(project_id)s or ${PUBLIC}))`;
const ADMIN_OR_SHARED_MEMBER = `role:admin or (role:member and ${IMAGE_MEMBER})`;
// Glance writes this one without parentheses, so `and` binds first: admin, or a reader who owns or is a member.
const ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER = `role:admin or role:reader and (project_id:%(project_id)s or ${IMAGE_MEMBER})`;

/** An image rule; `deprecated` null for the rules Glance gives no deprecated default. */
const image = (name: string, check: string, operations: string[], deprecated: string | null = 'rule:default'): RuleDefault =>
  (deprecated === null ? { name, check, operations } : { name, check, deprecated, operations });
const metadefRead = (name: string, operations: string[]): RuleDefault =>
  ({ name, check: ADMIN_OR_PROJECT_READER_GET_NAMESPACE, deprecated: 'rule:metadef_default', operations });
const metadefAdmin = (name: string, operations: string[]): RuleDefault => ({ name, check: 'rule:metadef_admin', operations });
const NS = '/v2/metadefs/namespaces/{namespace_name}';

const BASE_RULES = new Set(['default', 'context_is_admin', 'metadef_default', 'metadef_admin']);

export const GLANCE_DEFAULTS: readonly RuleDefault[] = ([
  // base.py
  { name: 'default', check: '', deprecated: 'role:admin' },
  { name: 'context_is_admin', check: 'role:admin' },
  // image.py
  image('add_image', ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE, ['POST /v2/images']),
  image('delete_image', ADMIN_OR_PROJECT_MEMBER, ['DELETE /v2/images/{image_id}']),
  image('get_image', ADMIN_OR_PROJECT_READER_GET_IMAGE, ['GET /v2/images/{image_id}']),
  image('get_images', ADMIN_OR_PROJECT_READER, ['GET /v2/images']),
  image('modify_image', ADMIN_OR_PROJECT_MEMBER, ['PATCH /v2/images/{image_id}']),
  image('publicize_image', 'role:admin', ['PATCH /v2/images/{image_id}'], null),
  image('communitize_image', ADMIN_OR_PROJECT_MEMBER, ['PATCH /v2/images/{image_id}']),
  image('download_image', ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE, ['GET /v2/images/{image_id}/file']),
  image('upload_image', ADMIN_OR_PROJECT_MEMBER, ['PUT /v2/images/{image_id}/file']),
  image('delete_image_location', 'role:admin', ['PATCH /v2/images/{image_id}']),
  image('get_image_location', ADMIN_OR_PROJECT_READER, ['GET /v2/images/{image_id}']),
  image('set_image_location', ADMIN_OR_PROJECT_MEMBER, ['PATCH /v2/images/{image_id}']),
  image('add_member', ADMIN_OR_PROJECT_MEMBER, ['POST /v2/images/{image_id}/members']),
  image('delete_member', ADMIN_OR_PROJECT_MEMBER, ['DELETE /v2/images/{image_id}/members/{member_id}']),
  image('get_member', ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER, ['GET /v2/images/{image_id}/members/{member_id}']),
  image('get_members', ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER, ['GET /v2/images/{image_id}/members']),
  image('modify_member', ADMIN_OR_SHARED_MEMBER, ['PUT /v2/images/{image_id}/members/{member_id}']),
  image('manage_image_cache', 'role:admin', [], null),
  image('deactivate', ADMIN_OR_PROJECT_MEMBER, ['POST /v2/images/{image_id}/actions/deactivate']),
  image('reactivate', ADMIN_OR_PROJECT_MEMBER, ['POST /v2/images/{image_id}/actions/reactivate']),
  image('copy_image', 'role:admin', ['POST /v2/images/{image_id}/import'], null),
  // tasks.py: the new and deprecated strings are equal, so nothing is OR'd in.
  image('get_task', 'rule:default', ['GET /v2/tasks/{task_id}'], null),
  image('get_tasks', 'rule:default', ['GET /v2/tasks'], null),
  image('add_task', 'rule:default', ['POST /v2/tasks'], null),
  image('modify_task', 'rule:default', ['DELETE /v2/tasks/{task_id}'], null),
  image('tasks_api_access', 'role:admin', ['GET /v2/tasks/{task_id}', 'GET /v2/tasks', 'POST /v2/tasks', 'DELETE /v2/tasks/{task_id}'], null),
  // metadef.py
  { name: 'metadef_default', check: '' },
  { name: 'metadef_admin', check: 'role:admin' },
  metadefRead('get_metadef_namespace', [`GET ${NS}`]),
  { name: 'get_metadef_namespaces', check: ADMIN_OR_PROJECT_READER, deprecated: 'rule:metadef_default', operations: ['GET /v2/metadefs/namespaces'] },
  metadefAdmin('modify_metadef_namespace', [`PUT ${NS}`]),
  metadefAdmin('add_metadef_namespace', ['POST /v2/metadefs/namespaces']),
  metadefAdmin('delete_metadef_namespace', [`DELETE ${NS}`]),
  metadefRead('get_metadef_object', [`GET ${NS}/objects/{object_name}`]),
  metadefRead('get_metadef_objects', [`GET ${NS}/objects`]),
  metadefAdmin('modify_metadef_object', [`PUT ${NS}/objects/{object_name}`]),
  metadefAdmin('add_metadef_object', [`POST ${NS}/objects`]),
  metadefAdmin('delete_metadef_object', [`DELETE ${NS}/objects/{object_name}`]),
  metadefRead('list_metadef_resource_types', ['GET /v2/metadefs/resource_types']),
  metadefRead('get_metadef_resource_type', [`GET ${NS}/resource_types`]),
  metadefAdmin('add_metadef_resource_type_association', [`POST ${NS}/resource_types`]),
  metadefAdmin('remove_metadef_resource_type_association', [`DELETE ${NS}/resource_types/{name}`]),
  metadefRead('get_metadef_property', [`GET ${NS}/properties/{property_name}`]),
  metadefRead('get_metadef_properties', [`GET ${NS}/properties`]),
  metadefAdmin('modify_metadef_property', [`PUT ${NS}/properties/{property_name}`]),
  metadefAdmin('add_metadef_property', [`POST ${NS}/properties`]),
  metadefAdmin('remove_metadef_property', [`DELETE ${NS}/properties/{property_name}`]),
  metadefRead('get_metadef_tag', [`GET ${NS}/tags/{tag_name}`]),
  metadefRead('get_metadef_tags', [`GET ${NS}/tags`]),
  metadefAdmin('modify_metadef_tag', [`PUT ${NS}/tags/{tag_name}`]),
  metadefAdmin('add_metadef_tag', [`POST ${NS}/tags/{tag_name}`]),
  metadefAdmin('add_metadef_tags', [`POST ${NS}/tags`]),
  metadefAdmin('delete_metadef_tag', [`DELETE ${NS}/tags/{tag_name}`]),
  metadefAdmin('delete_metadef_tags', [`DELETE ${NS}/tags`]),
  // cache.py
  image('cache_image', 'role:admin', ['PUT /v2/cache/{image_id}'], 'rule:manage_image_cache'),
  image('cache_list', 'role:admin', ['GET /v2/cache'], 'rule:manage_image_cache'),
  image('cache_delete', 'role:admin', ['DELETE /v2/cache', 'DELETE /v2/cache/{image_id}'], 'rule:manage_image_cache'),
  // discovery.py
  image('stores_info_detail', 'role:admin', ['GET /v2/info/stores/detail'], null),
] as RuleDefault[]).map((r) => (BASE_RULES.has(r.name) ? r : { ...r, scopeTypes: ['project'] }));
