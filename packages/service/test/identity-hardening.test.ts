/**
 * The identity service against a hostile or careless client: tokens die at once (on every API
 * node sharing the database) when the password changes, the user is disabled or deleted, or
 * the role on the token's project is removed; login floods neither starve image downloads nor
 * reveal which users exist; failed logins are throttled and locked out as Keystone's options
 * say; scopes nobody holds are not issued; role assignments are the admin's to read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { needs, runOk } from '@diskhub/testkit';
import { ADMIN_PASSWORD, addProjectUser, api, osEnv, startTestService, token, type TestService } from './helpers.js';
import { HashingBusy, PasswordHasher } from '../src/domain/passwords.js';

const login = (url: string, user: Record<string, unknown>, password: string, scope?: unknown) => fetch(`${url}/identity/v3/auth/tokens`, {
  method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { ...user, password } } }, ...(scope ? { scope } : {}) } }),
});
const byName = (name: string) => ({ name, domain: { name: 'Default' } });

/** Two API nodes sharing one database, as a deployment behind a load balancer runs them. */
async function twoNodes(t: Parameters<typeof startTestService>[0], env: Record<string, string> = {}): Promise<[TestService, TestService]> {
  const a = await startTestService(t, env);
  const b = await startTestService(t, { DISKHUB_DATABASE_URL: `sqlite:${join(a.dataDir, 'diskhub.sqlite')}`, ...env });
  return [a, b];
}

test('revocation is immediate on every node: password change (openstack user set, self-service), disable, role removal, delete', needs('openstack'), async (t) => {
  const [a, b] = await twoNodes(t);
  const adminTok = await token(a.url);
  const admin = api(a.url, adminTok);
  const { userId, projectId } = await addProjectUser(a.url, adminTok, 'p-rev', 'u-rev', 'pw-1');
  const onB = (tok: string) => api(b.url, tok)('GET', '/v2/images');

  // openstack user set --password (PATCH /v3/users/{id}): the token validated (and cached) on B dies at once there.
  let tok = await token(a.url, 'u-rev', 'pw-1', 'p-rev');
  assert.equal((await onB(tok)).status, 200);
  await runOk('openstack', ['user', 'set', '--password', 'pw-2', 'u-rev'], { env: osEnv(a.url) });
  assert.equal((await onB(tok)).status, 401, 'a token issued before the password change is revoked on the other node');
  assert.equal((await api(a.url, tok)('GET', '/v2/images')).status, 401);
  assert.equal((await login(a.url, byName('u-rev'), 'pw-1')).status, 401, 'the old password is refused');

  // Self-service: POST /v3/users/{id}/password with the original password.
  tok = await token(a.url, 'u-rev', 'pw-2', 'p-rev');
  assert.equal((await onB(tok)).status, 200);
  const self = api(b.url, tok);
  assert.equal((await self('POST', `/identity/v3/users/${userId}/password`, { body: { user: { original_password: 'wrong', password: 'pw-3' } } })).status, 401);
  assert.equal((await onB(tok)).status, 200, 'a refused change revokes nothing');
  const other = await addProjectUser(a.url, adminTok, 'p-other', 'u-other', 'pw-o');
  assert.equal((await self('POST', `/identity/v3/users/${other.userId}/password`, { body: { user: { original_password: 'pw-o', password: 'x' } } })).status, 403, "another user's password is not yours to change");
  // The user's own change through the real client (POST /v3/users/{id}/password).
  await runOk('openstack', ['user', 'password', 'set', '--original-password', 'pw-2', '--password', 'pw-3'], { env: osEnv(a.url, 'u-rev', 'pw-2', 'p-rev') });
  assert.equal((await onB(tok)).status, 401);
  assert.equal((await api(a.url, tok)('GET', '/v2/images')).status, 401);

  // Disabling revokes; enabling again does not bring the old token back.
  tok = await token(a.url, 'u-rev', 'pw-3', 'p-rev');
  assert.equal((await onB(tok)).status, 200);
  assert.equal((await admin('PATCH', `/identity/v3/users/${userId}`, { body: { user: { enabled: false } } })).status, 200);
  assert.equal((await onB(tok)).status, 401);
  const disabled = await login(a.url, byName('u-rev'), 'pw-3');
  assert.equal(disabled.status, 401);
  assert.equal((await disabled.json() as any).error.message, `The account is disabled for user: ${userId}.`);
  assert.equal((await admin('PATCH', `/identity/v3/users/${userId}`, { body: { user: { enabled: true } } })).status, 200);
  assert.equal((await onB(tok)).status, 401, 'still revoked after re-enabling');

  // Removing the only role on the token's project.
  tok = await token(a.url, 'u-rev', 'pw-3', 'p-rev');
  assert.equal((await onB(tok)).status, 200);
  const member = (await admin('GET', '/identity/v3/roles?name=member')).json.roles[0].id;
  assert.equal((await admin('DELETE', `/identity/v3/projects/${projectId}/users/${userId}/roles/${member}`)).status, 204);
  assert.equal((await onB(tok)).status, 401);

  // Deleting the user.
  assert.equal((await admin('PUT', `/identity/v3/projects/${projectId}/users/${userId}/roles/${member}`)).status, 204);
  tok = await token(a.url, 'u-rev', 'pw-3', 'p-rev');
  assert.equal((await onB(tok)).status, 200);
  assert.equal((await admin('DELETE', `/identity/v3/users/${userId}`)).status, 204);
  assert.equal((await onB(tok)).status, 401);
});

test('a login flood does not hold up image downloads, and is bounded', async (t) => {
  const svc = await startTestService(t);
  const adminTok = await token(svc.url);
  const admin = api(svc.url, adminTok);
  const img = await admin('POST', '/v2/images', { body: { name: 'flood', disk_format: 'raw', container_format: 'bare' } });
  const data = Buffer.alloc(1 << 20, 7);
  assert.equal((await admin('PUT', `/v2/images/${img.json.id}/file`, { raw: data })).status, 204);

  // 32 concurrent wrong-password logins (the reproducer); once the first is answered
  // (hashing is under way), a download.
  let hashedAnswers = 0;
  let firstAnswered!: () => void;
  const hashing = new Promise<void>((resolve) => { firstAnswered = resolve; });
  const flood = Promise.all(Array.from({ length: 32 }, async (_, i) => {
    const r = await login(svc.url, byName(i % 2 ? 'admin' : `nobody-${i}`), 'wrong');
    await r.arrayBuffer();
    if (r.status === 401 && ++hashedAnswers === 1) firstAnswered();
    return r.status;
  }));
  await hashing;
  const download = await fetch(`${svc.url}/v2/images/${img.json.id}/file`, { headers: { 'X-Auth-Token': adminTok } });
  const body = Buffer.from(await download.arrayBuffer());
  const answeredBeforeDownload = hashedAnswers;
  const statuses = await flood;
  assert.equal(download.status, 200);
  assert.ok(body.equals(data));
  // Hashing no longer shares libuv's pool with file reads: the download is served while most
  // of the flood is still being hashed (behind scrypt on the pool it came after all of them).
  assert.ok(answeredBeforeDownload < hashedAnswers / 2, `download finished after ${answeredBeforeDownload} of ${hashedAnswers} hashed logins`);
  // The queue is bounded: what does not fit is refused at once with 503, never a 500.
  assert.ok(statuses.every((s) => s === 401 || s === 503), statuses.join(','));
  assert.ok(statuses.includes(503), 'a full hashing queue answers 503');
  assert.ok(hashedAnswers >= 2);
});

test('unknown users cost one hash like wrong passwords; the hashing queue refuses beyond its bound', async (t) => {
  const svc = await startTestService(t);
  const hasher = svc.identity.passwords;
  const before = hasher.completed;
  assert.equal((await login(svc.url, byName('no-such-user'), 'x')).status, 401);
  assert.equal(hasher.completed - before, 1, 'an unknown user is hashed against a decoy');
  assert.equal((await login(svc.url, { id: 'no-such-id' }, 'x')).status, 401);
  assert.equal((await login(svc.url, { name: 'admin', domain: { name: 'NoSuchDomain' } }, 'x')).status, 401);
  assert.equal((await login(svc.url, byName('admin'), 'wrong')).status, 401);
  assert.equal(hasher.completed - before, 4, 'every failure costs exactly one hash');

  const small = new PasswordHasher(2);
  t.after(() => small.close());
  const results = await Promise.allSettled(Array.from({ length: 6 }, () => small.hash('pw')));
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3, 'one running and two waiting');
  assert.ok(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof HashingBusy));
  assert.equal(await small.verify('pw', await small.hash('pw')), true);
  assert.equal(await small.verify('pw2', await small.hash('pw')), false);
});

test('failed logins: throttled per user and per address; Keystone lockout options', async (t) => {
  const svc = await startTestService(t, { DISKHUB_LOCKOUT_FAILURE_ATTEMPTS: '3', DISKHUB_LOCKOUT_DURATION: '2' });
  const adminTok = await token(svc.url);
  const { userId } = await addProjectUser(svc.url, adminTok, 'p-lock', 'u-lock', 'right');
  // Lockout: three failures, then even the right password is refused with Keystone's message.
  for (let i = 0; i < 3; i++) assert.equal((await login(svc.url, byName('u-lock'), 'wrong')).status, 401);
  const locked = await login(svc.url, byName('u-lock'), 'right');
  assert.equal(locked.status, 401);
  assert.equal((await locked.json() as any).error.message, `The account is locked for user: ${userId}.`);
  // Until lockout_duration has passed.
  await new Promise((r) => setTimeout(r, 2100));
  assert.equal((await login(svc.url, byName('u-lock'), 'right')).status, 201);
  // A success resets the count: two more failures do not lock.
  for (let i = 0; i < 2; i++) assert.equal((await login(svc.url, byName('u-lock'), 'wrong')).status, 401);
  assert.equal((await login(svc.url, byName('u-lock'), 'right')).status, 201);
  // An administrator enabling the user unlocks it.
  for (let i = 0; i < 3; i++) await login(svc.url, byName('u-lock'), 'wrong');
  assert.equal((await login(svc.url, byName('u-lock'), 'right')).status, 401);
  assert.equal((await api(svc.url, adminTok)('PATCH', `/identity/v3/users/${userId}`, { body: { user: { enabled: true } } })).status, 200);
  assert.equal((await login(svc.url, byName('u-lock'), 'right')).status, 201);

  // The per-user throttle (no lockout configured on this node): after 10 failures within a
  // minute the 11th attempt is refused without hashing, for a name that exists or not.
  const plain = await startTestService(t);
  for (const name of ['admin', 'ghost']) {
    for (let i = 0; i < 10; i++) assert.equal((await login(plain.url, byName(name), 'wrong')).status, 401);
    const before = plain.identity.passwords.completed;
    const r = await login(plain.url, byName(name), name === 'admin' ? ADMIN_PASSWORD : 'x');
    assert.equal(r.status, 429, name);
    assert.ok(Number(r.headers.get('retry-after')) > 0);
    assert.match((await r.json() as any).error.message, /Too many failed authentication attempts; try again in \d+ seconds\./);
    assert.equal(plain.identity.passwords.completed, before, 'a throttled attempt costs no hash');
  }
  // Per address: 50 failures from one address (spread over names) stop every name from it.
  for (let i = 0; i < 30; i++) await login(plain.url, byName(`spray-${i}`), 'wrong');
  assert.equal((await login(plain.url, byName('someone-new'), 'wrong')).status, 429);
});

test('scope: no domain- or system-scoped tokens for roles nobody has; role assignments are for admins to read', async (t) => {
  const svc = await startTestService(t);
  const adminTok = await token(svc.url);
  const { userId, projectId } = await addProjectUser(svc.url, adminTok, 'p-scope', 'u-scope', 'pw');
  for (const scope of [{ domain: { id: 'default' } }, { domain: { name: 'Default' } }, { domain: { id: 'no-such-domain' } }, { system: { all: true } }]) {
    const r = await login(svc.url, byName('u-scope'), 'pw', scope);
    assert.equal(r.status, 401, JSON.stringify(scope));
    assert.equal((await r.json() as any).error.message, 'The request you have made requires authentication.');
  }
  assert.equal((await login(svc.url, byName('admin'), ADMIN_PASSWORD, { domain: { id: 'default' } })).status, 401, 'not even the admin has a role on a domain');

  // An unscoped token (a user with no default project, no scope asked) is a Keystone token,
  // but the Images API takes only project-scoped ones: 403 as Glance answers a scope mismatch.
  const admin = api(svc.url, adminTok);
  assert.equal((await admin('POST', '/identity/v3/users', { body: { user: { name: 'drifter', password: 'pw' } } })).status, 201);
  const unscoped = await login(svc.url, byName('drifter'), 'pw');
  assert.equal(unscoped.status, 201);
  assert.equal((await unscoped.json() as any).token.project, undefined);
  const drifter = api(svc.url, unscoped.headers.get('x-subject-token')!);
  const list = await drifter('GET', '/v2/images');
  assert.equal(list.status, 403);
  assert.match(list.text, /You are not authorized to complete get_images action\./);
  assert.equal((await drifter('POST', '/v2/images', { body: { name: 'ownerless' } })).status, 403, 'no image owned by nobody');
  assert.equal((await drifter('GET', '/v2/metadefs/namespaces')).status, 403);
  assert.equal((await drifter('GET', '/identity/v3/auth/projects')).status, 200, 'the identity API still serves it');

  const memberTok = await token(svc.url, 'u-scope', 'pw', 'p-scope');
  const member = api(svc.url, memberTok);
  const adminId = (await api(svc.url, adminTok)('GET', '/identity/v3/users?name=admin')).json.users[0].id;
  const adminProject = (await api(svc.url, adminTok)('GET', '/identity/v3/projects?name=admin')).json.projects[0].id;
  const adminRole = (await api(svc.url, adminTok)('GET', '/identity/v3/roles?name=admin')).json.roles[0].id;
  for (const [method, path, rule] of [
    ['GET', `/identity/v3/role_assignments?user.id=${adminId}`, 'identity:list_role_assignments'],
    ['GET', `/identity/v3/role_assignments?scope.project.id=${projectId}`, 'identity:list_role_assignments'],
    ['GET', `/identity/v3/projects/${adminProject}/users/${adminId}/roles`, 'identity:list_grants'],
    ['GET', `/identity/v3/projects/${adminProject}/users/${adminId}/roles/${adminRole}`, 'identity:check_grant'],
    ['GET', `/identity/v3/users/${adminId}`, 'identity:get_user'],
  ] as const) {
    const r = await member(method, path);
    assert.equal(r.status, 403, path);
    assert.equal(r.json.error.message, `You are not authorized to perform the requested action: ${rule}.`);
  }
  assert.equal((await member('HEAD', `/identity/v3/projects/${adminProject}/users/${adminId}/roles/${adminRole}`)).status, 403);
  assert.equal((await member('GET', `/identity/v3/users/${userId}`)).status, 200, 'one may read oneself');
  assert.equal((await api(svc.url, adminTok)('GET', `/identity/v3/role_assignments?user.id=${userId}`)).json.role_assignments.length, 1);
});
