/**
 * The policy layer without HTTP: the oslo.policy rule language, Glance 25's defaults (checked
 * case by case against the real oslo.policy enforcing Glance 25's registered rules), the
 * Images API's legacy ownership checks, and an operator's policy file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir } from '@diskhub/testkit';
import { GLANCE_DEFAULTS, ImageApiPolicy, MemberApiPolicy, Policy, PolicyFileError, PolicyForbidden, PolicyHidesImage, PolicyNotAuthorized, PolicySyntaxError, parseRule, type PolicyCredentials, type PolicyImage } from '../src/policy/index.js';
import { evaluate, ruleText } from '../src/policy/language.js';

const creds = (roles: string[], project: string | null, extra: Record<string, unknown> = {}): PolicyCredentials =>
  ({ user_id: `u-${project}`, project_id: project, roles, is_admin: roles.includes('admin'), ...extra });
const ADMIN = creds(['admin', 'member', 'reader'], 'p1');
const MEMBER = creds(['member', 'reader'], 'p1');
const READER = creds(['reader'], 'p1');
const OTHER = creds(['member', 'reader'], 'p2');

/** Evaluate a lone check string (rule:x resolves to `rules`). */
function check(rule: string, target: Record<string, unknown>, c: Record<string, unknown>, rules: Record<string, string> = {}): boolean {
  return evaluate(parseRule(rule), { target, creds: c, rule: (n) => (n in rules ? parseRule(rules[n]!) : undefined) });
}

test('parser: every element of the rule language', () => {
  const c = { roles: ['Member', 'reader'], project_id: 'p1', user: { domain_id: 'd1', groups: [{ id: 'g1' }, { id: 'g2' }] }, enabled: true };
  assert.equal(check('', {}, c), true, 'the empty rule always passes');
  assert.equal(check('   ', {}, c), true);
  assert.equal(check('@', {}, c), true);
  assert.equal(check('!', {}, c), false);
  assert.equal(check('role:member', {}, c), true, 'roles compare case-insensitively');
  assert.equal(check('role:admin', {}, c), false);
  assert.equal(check('role:%(want)s', { want: 'READER' }, c), true);
  assert.equal(check('project_id:%(project_id)s', { project_id: 'p1' }, c), true);
  assert.equal(check('project_id:%(project_id)s', { project_id: 'p2' }, c), false);
  assert.equal(check('project_id:%(project_id)s', {}, c), false, 'a key the target lacks fails the check');
  assert.equal(check('project_id:p1', {}, c), true, 'a match without substitution is literal');
  assert.equal(check("'public':%(visibility)s", { visibility: 'public' }, c), true);
  assert.equal(check('"public":%(visibility)s', { visibility: 'shared' }, c), false);
  assert.equal(check('True:%(protected)s', { protected: true }, c), true, "Python's str(True)");
  assert.equal(check('True:%(protected)s', { protected: false }, c), false);
  assert.equal(check('None:%(owner)s', { owner: null }, c), true, "Python's str(None)");
  assert.equal(check('42:%(n)s', { n: 42 }, c), true);
  assert.equal(check('enabled:True', {}, c), true);
  assert.equal(check('user.domain_id:%(domain)s', { domain: 'd1' }, c), true, 'dotted paths walk the credentials');
  assert.equal(check('user.groups.id:g2', {}, c), true, 'lists pass when any element matches');
  assert.equal(check('user.groups.id:g3', {}, c), false);
  assert.equal(check('user.missing:x', {}, c), false);
  assert.equal(check('rule:a', {}, c, { a: 'role:member' }), true);
  assert.equal(check('rule:nope', {}, c), false, 'an unknown rule fails (a loaded policy refuses it earlier)');
  assert.equal(check('not role:admin', {}, c), true);
  assert.equal(check('NOT role:member', {}, c), false, 'keywords are case-insensitive');
  assert.equal(check('role:member and role:admin', {}, c), false);
  assert.equal(check('role:member AND role:reader', {}, c), true);
  assert.equal(check('role:admin or role:reader', {}, c), true);
  assert.equal(check('role:admin Or !', {}, c), false);
  // and binds tighter than or; not tighter than and
  assert.equal(check('role:admin and role:x or role:member', {}, c), true);
  assert.equal(check('role:member or role:x and role:admin', {}, c), true);
  assert.equal(check('(role:member or role:x) and role:admin', {}, c), false);
  assert.equal(check('not role:admin and role:member', {}, c), true);
  assert.equal(check('not (role:member and role:reader)', {}, c), false);
  assert.equal(check('((role:member))', {}, c), true);
  assert.equal(check('((role:admin) or (not (role:x)))', {}, c), true);
  assert.equal(check('project_id:%%(literal)s', {}, { project_id: '%(literal)s' }), true, '%% is a literal percent');
  // the old list-of-lists syntax
  assert.equal(evaluate(parseRule([['role:member', 'role:admin'], ['role:reader']]), { target: {}, creds: c, rule: () => undefined }), true);
  assert.equal(evaluate(parseRule([['role:member', 'role:admin']]), { target: {}, creds: c, rule: () => undefined }), false);
  assert.equal(evaluate(parseRule([]), { target: {}, creds: c, rule: () => undefined }), true);
  assert.equal(evaluate(parseRule([[]]), { target: {}, creds: c, rule: () => undefined }), false);
  assert.equal(ruleText(parseRule("role:admin or (role:member and 'public':%(visibility)s)")), "(role:admin or (role:member and 'public':%(visibility)s))");
});

test('parser: what does not parse is refused with a reason', () => {
  const bad: [string, RegExp][] = [
    ['role:admin or', /expected a check but found end of rule/],
    ['or role:admin', /expected a check but found 'or'/],
    ['role:admin role:member', /unexpected 'role:member'/],
    ['(role:admin', /expected '\)' but found end of rule/],
    ['role:admin)', /unexpected '\)'/],
    ['admin', /'admin' is not a check/],
    [':admin', /':admin' is not a check/],
    ['rule:', /rule name missing/],
    ['project_id:%(project_id)d', /only %\(name\)s substitutions/],
    ['project_id:100%', /only %\(name\)s substitutions/],
    ["'quoted'", /unexpected string 'quoted'/],
    ['http://policy.example/check:x', /remote http checks are not supported/],
    ['not', /expected a check but found end of rule/],
  ];
  for (const [rule, why] of bad) assert.throws(() => parseRule(rule), (e: unknown) => e instanceof PolicySyntaxError && why.test(e.message), rule);
  assert.throws(() => parseRule([['role:a', 5]] as unknown[]), PolicySyntaxError);
});

/** Glance 25's registered rules as the real oslo.policy enforces them, asked through Debian's python3-glance. */
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
const oracleAvailable = spawnSync(PYTHON, ['-c', 'import glance.policies, oslo_policy.policy'], { stdio: 'ignore' }).status === 0;
const oracleOpts = oracleAvailable || process.env.CI === 'true' ? {} : { skip: 'python3-glance (the real oslo.policy and Glance 25 rules) is not installed' };
const ORACLE = `
import json, sys
from oslo_config import cfg
from oslo_policy import policy
from glance import policies
req = json.load(sys.stdin)
conf = cfg.ConfigOpts()
conf([], project='glance', default_config_files=[])
enforcer = policy.Enforcer(conf, policy_file=req.get('policy_file') or '/nonexistent/policy.yaml', use_conf=True)
conf.set_override('enforce_new_defaults', req['enforce_new_defaults'], group='oslo_policy')
enforcer.suppress_default_change_warnings = True
enforcer.suppress_deprecation_warnings = True
enforcer.register_defaults(policies.list_rules())
enforcer.load_rules()
print(json.dumps([bool(enforcer.enforce(c['rule'], c['target'], c['creds'])) for c in req['cases']]))
`;
interface Case { rule: string; target: Record<string, unknown>; creds: PolicyCredentials }
function oracle(cases: Case[], enforceNewDefaults: boolean, policyFile?: string): boolean[] {
  const r = spawnSync(PYTHON, ['-c', ORACLE], { input: JSON.stringify({ cases, enforce_new_defaults: enforceNewDefaults, policy_file: policyFile }), encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as boolean[];
}

const CALLERS: Record<string, PolicyCredentials> = {
  admin: ADMIN, member: MEMBER, reader: READER, otherMember: OTHER, otherReader: creds(['reader'], 'p2'),
  noRoles: creds([], 'p1'), unscoped: creds(['member', 'reader'], null), auditor: creds(['auditor'], 'p3'),
  creator: creds(['image_creator', 'reader'], 'p1'), creatorMember: creds(['image_creator', 'member'], 'p2'),
};
const TARGETS: Record<string, unknown>[] = [];
for (const visibility of ['private', 'shared', 'public', 'community']) {
  for (const member of [null, 'p2']) TARGETS.push({ project_id: 'p1', owner: 'p1', visibility, member_id: member, member, status: 'active' });
}
TARGETS.push({ project_id: 'p2', owner: 'p2', visibility: 'private' }, { project_id: null, owner: null, visibility: 'public' }, { project_id: 'p1', owner: 'p1', visibility: 'private' });

function matrix(policy: Policy, enforceNewDefaults: boolean, policyFile?: string): void {
  const cases: Case[] = [];
  for (const rule of GLANCE_DEFAULTS.map((d) => d.name)) for (const target of TARGETS) for (const c of Object.values(CALLERS)) cases.push({ rule, target, creds: c });
  const want = oracle(cases, enforceNewDefaults, policyFile);
  const wrong = cases.filter((c, i) => policy.enforce(c.rule, c.target, c.creds) !== want[i])
    .map((c) => `${c.rule} ${JSON.stringify(c.target)} ${JSON.stringify(c.creds.roles)}@${c.creds.project_id}: oslo.policy says ${want[cases.indexOf(c)]}`);
  assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of ${cases.length} decisions differ from oslo.policy`);
}

test('Glance 25 defaults decide as the real oslo.policy does (enforce_new_defaults off, as Zed ships)', oracleOpts, () => {
  matrix(Policy.defaults({ enforceScope: false }), false);
});

test('Glance 25 defaults with enforce_new_defaults on decide as the real oslo.policy does', oracleOpts, () => {
  matrix(Policy.defaults({ enforceNewDefaults: true, enforceScope: false }), true);
});

const image = (over: Partial<PolicyImage> = {}): PolicyImage => ({ id: 'img-1', owner: 'p1', visibility: 'private', status: 'active', ...over });

test("Glance 25's defaults through the Images API: admin, member, reader, another project", () => {
  const policy = Policy.defaults();
  const api = (c: PolicyCredentials, img: PolicyImage | { owner?: string | null; visibility?: string } = image()) => new ImageApiPolicy(policy, c, img);
  // A member who owns an image may deactivate and reactivate it (the rule is admin-or-project-member).
  for (const c of [ADMIN, MEMBER]) { api(c).deactivate(); api(c).reactivate(); api(c).modifyImage(); api(c).deleteImage(); api(c).uploadImage(); }
  // Glance 25 leaves enforce_secure_rbac off: ownership, not the role, decides (verified against glance-api 25.1: 204 for a reader's deactivate).
  api(READER).deactivate();
  api(READER).modifyImage();
  // Another project that can see the image may not change it: Glance's legacy message.
  const community = image({ visibility: 'community' });
  for (const act of ['deactivate', 'reactivate', 'modifyImage', 'deleteImage', 'uploadImage'] as const) {
    assert.throws(() => api(OTHER, community)[act](), (e: unknown) => e instanceof PolicyForbidden && e.message === 'You do not own this image' && e.status === 403, act);
  }
  api(OTHER, community).downloadImage();
  api(OTHER, community).getImage();
  // Only admins publicize; members may communitize their own.
  assert.throws(() => api(MEMBER).updateProperty('visibility', 'public'), (e: unknown) => e instanceof PolicyNotAuthorized && e.rule === 'publicize_image' && e.message === 'You are not authorized to complete publicize_image action.');
  api(ADMIN).updateProperty('visibility', 'public');
  api(MEMBER).updateProperty('visibility', 'community');
  // Creating: for one's own project, not for another unless admin; public only as admin.
  api(MEMBER, { visibility: 'shared' }).addImage();
  api(READER, {}).addImage();
  assert.throws(() => api(MEMBER, { owner: 'p9' }).addImage(), (e: unknown) => e instanceof PolicyForbidden && e.message === "You are not permitted to create images owned by 'p9'.");
  api(ADMIN, { owner: 'p9' }).addImage();
  assert.throws(() => api(MEMBER, { visibility: 'public' }).addImage(), /publicize_image/);
  // Admin-only rules.
  for (const rule of ['copy_image', 'manage_image_cache', 'stores_info_detail', 'tasks_api_access', 'add_metadef_namespace', 'cache_image']) {
    assert.equal(policy.enforce(rule, {}, ADMIN), true, rule);
    for (const c of [MEMBER, READER, OTHER]) assert.equal(policy.enforce(rule, {}, c), false, rule);
  }
  assert.equal(policy.isAdmin(ADMIN), true);
  assert.equal(policy.isAdmin(MEMBER), false);
  // Members: the owner shares, the member project accepts, nobody else.
  const shared = image({ visibility: 'shared' });
  new MemberApiPolicy(policy, MEMBER, shared).addMember();
  new MemberApiPolicy(policy, MEMBER, shared).deleteMember();
  new MemberApiPolicy(policy, OTHER, shared).modifyMember();
  assert.throws(() => new MemberApiPolicy(policy, MEMBER, shared).modifyMember(), /not permitted to modify 'status'/);
  assert.throws(() => new MemberApiPolicy(policy, OTHER, shared).addMember(), /not permitted to create image members/);
  assert.throws(() => new MemberApiPolicy(policy, MEMBER, image()).getMembers(), /Only shared images have members/);
  assert.throws(() => policy.enforce('no_such_rule', {}, ADMIN), /not registered/);
});

test('only project-scoped tokens pass the API rules: domain-scoped and unscoped callers are refused', () => {
  const policy = Policy.defaults();
  const unscoped = creds(['admin', 'member', 'reader'], null);
  const domainScoped = creds(['admin', 'member', 'reader'], null, { domain_id: 'default' });
  for (const c of [unscoped, domainScoped]) {
    for (const rule of ['get_images', 'get_image', 'add_image', 'download_image', 'get_metadef_namespaces', 'publicize_image']) assert.equal(policy.enforce(rule, { project_id: 'p1', owner: 'p1', visibility: 'public' }, c), false, rule);
    assert.throws(() => new ImageApiPolicy(policy, c, {}).addImage(), (e: unknown) => e instanceof PolicyNotAuthorized && e.message === 'You are not authorized to complete add_image action.');
  }
  assert.equal(policy.enforce('get_images', { project_id: 'p1' }, ADMIN), true);
  // Glance 25 itself (enforce_scope off) lets them through.
  assert.equal(Policy.defaults({ enforceScope: false }).enforce('get_images', {}, unscoped), true);
});

test('enforce_new_defaults: the secure-RBAC defaults hide and refuse by role', () => {
  const policy = Policy.defaults({ enforceNewDefaults: true });
  const api = (c: PolicyCredentials, img: PolicyImage = image()) => new ImageApiPolicy(policy, c, img);
  api(MEMBER).deactivate();
  assert.throws(() => api(READER).deactivate(), (e: unknown) => e instanceof PolicyNotAuthorized && e.rule === 'deactivate' && !(e instanceof PolicyHidesImage));
  // Another project's private image: refused as not found, never as forbidden.
  assert.throws(() => api(OTHER).getImage(), (e: unknown) => e instanceof PolicyHidesImage && e.status === 404);
  assert.throws(() => api(OTHER).deleteImage(), PolicyHidesImage);
  assert.throws(() => api(creds(['reader'], 'p1'), image()).downloadImage(), PolicyNotAuthorized);
});

/** An operator's file: auditors see and download every image and change nothing; only image_creator creates. */
const OPERATOR_POLICY = `# diskhub / glance-api policy overrides
# Auditors are admins for visibility (context_is_admin) but every write rule excludes them.
"auditor": "role:auditor"
"context_is_admin": "role:admin or rule:auditor"
"not_auditor": "not rule:auditor"
"add_image": "rule:not_auditor and (role:admin or (role:image_creator and project_id:%(owner)s))"
"modify_image": "rule:not_auditor"
"delete_image": "rule:not_auditor"
"upload_image": "rule:not_auditor"
"deactivate": "rule:not_auditor"
"reactivate": "rule:not_auditor"
"publicize_image": "role:admin and rule:not_auditor"
"communitize_image": "rule:not_auditor"
"add_member": "rule:not_auditor"
"delete_member": "rule:not_auditor"
"modify_member": "rule:not_auditor"
"copy_image": "role:admin and rule:not_auditor"
"get_images": ""
"get_image": "@"
"download_image":
  - ["role:admin"]
  - ["rule:auditor"]
  - ["role:reader"]
`;

test('an operator policy file: a read-only auditor, image creation only for image_creator', oracleOpts, async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'policy.yaml');
  await writeFile(file, OPERATOR_POLICY);
  const policy = await Policy.load(file);
  assert.equal(policy.source, file);
  const withAdmin = (c: PolicyCredentials) => ({ ...c, is_admin: policy.isAdmin(c) });
  const auditor = withAdmin(CALLERS.auditor!);
  assert.equal(auditor.is_admin, true, 'the auditor sees every image as an admin would');
  const api = (c: PolicyCredentials, img: PolicyImage | { owner?: string | null; visibility?: string }) => new ImageApiPolicy(policy, withAdmin(c), img);
  for (const vis of ['private', 'shared', 'public', 'community']) {
    const img = image({ visibility: vis, owner: 'p1' });
    api(auditor, img).getImage();
    api(auditor, img).downloadImage();
    for (const act of ['modifyImage', 'deleteImage', 'uploadImage', 'deactivate', 'reactivate'] as const) {
      assert.throws(() => api(auditor, img)[act](), PolicyNotAuthorized, `${act} on ${vis}`);
    }
  }
  api(auditor, {}).getImages();
  assert.throws(() => api(auditor, {}).addImage(), PolicyNotAuthorized);
  assert.throws(() => api(auditor, image({ visibility: 'shared' })).updateProperty('visibility', 'community'), /communitize_image/);
  assert.throws(() => new MemberApiPolicy(policy, auditor, image({ visibility: 'shared' })).modifyMember(), PolicyNotAuthorized);
  // Creation needs image_creator in the owning project; member alone no longer suffices.
  api(CALLERS.creator!, {}).addImage();
  assert.throws(() => api(MEMBER, {}).addImage(), (e: unknown) => e instanceof PolicyNotAuthorized && e.rule === 'add_image');
  assert.throws(() => api(CALLERS.creatorMember!, { owner: 'p1' }).addImage(), /not permitted to create images owned by 'p1'/);
  // Everything else keeps Glance's defaults: the owner still deactivates, admins still publicize.
  api(MEMBER, image()).deactivate();
  api(ADMIN, image()).updateProperty('visibility', 'public');
  assert.equal(policy.enforce('manage_image_cache', {}, MEMBER), false);
  // Every rule decides as oslo.policy does with the same file.
  if (oracleAvailable || process.env.CI === 'true') matrix(await Policy.load(file, { enforceScope: false }), false, file);
  // The same rules as JSON.
  const json = join(dir, 'policy.json');
  await writeFile(json, JSON.stringify({ auditor: 'role:auditor', add_image: 'not rule:auditor and role:image_creator' }));
  const fromJson = await Policy.load(json);
  assert.equal(fromJson.enforce('add_image', { project_id: 'p1', owner: 'p1' }, CALLERS.creator!), true);
  assert.equal(fromJson.enforce('add_image', { project_id: 'p1', owner: 'p1' }, MEMBER), false);
});

test('a policy file that cannot be used stops the start, naming the rule', async (t) => {
  const dir = await tempDir(t);
  const load = async (text: string) => { const f = join(dir, `p${Math.random()}.yaml`); await writeFile(f, text); return Policy.load(f); };
  await assert.rejects(load('"add_image": "role:admin or"\n'), (e: unknown) => e instanceof PolicyFileError && e.rule === 'add_image' && /rule 'add_image' does not parse: expected a check but found end of rule/.test(e.message));
  await assert.rejects(load('"modify_image": "rule:is_owner"\n'), (e: unknown) => e instanceof PolicyFileError && e.rule === 'modify_image' && /rule 'modify_image' refers to rule:is_owner, which is not defined/.test(e.message));
  await assert.rejects(load('"a": "rule:b"\n"b": "role:x or rule:a"\n'), (e: unknown) => e instanceof PolicyFileError && /rule 'a' refers to itself through rule:a -> rule:b -> rule:a/.test(e.message));
  await assert.rejects(load('"add_image": [1, 2]\n'), (e: unknown) => e instanceof PolicyFileError && e.rule === 'add_image');
  await assert.rejects(load('add_image: "role:admin\n  bad: [\n'), (e: unknown) => e instanceof PolicyFileError && /neither valid YAML nor JSON/.test(e.message));
  await assert.rejects(load('{"add_image": "role:admin",}'), (e: unknown) => e instanceof PolicyFileError && /neither valid YAML nor JSON/.test(e.message));
  await assert.rejects(load('- role:admin\n'), (e: unknown) => e instanceof PolicyFileError && /expected a mapping/.test(e.message));
  await assert.rejects(Policy.load(join(dir, 'missing.yaml')), (e: unknown) => e instanceof PolicyFileError && /cannot read policy file/.test(e.message));
  // An empty or commented-out file (oslopolicy-sample-generator's output) overrides nothing.
  const sample = await load('# "add_image": "role:admin"\n');
  assert.equal(sample.ruleText('publicize_image'), 'role:admin');
  // A null value is the empty rule: always.
  assert.equal((await load('"publicize_image":\n')).enforce('publicize_image', {}, READER), true);
});
