/**
 * Who may do what: each visibility × each kind of caller × list, show, download, update,
 * delete — Glance's rules, cell by cell.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addProjectUser, api, startTestService, token, type Api } from './helpers.js';

type Op = 'list' | 'show' | 'download' | 'update' | 'delete';
type Actor = 'owner' | 'ownerReader' | 'accepted' | 'pending' | 'rejected' | 'other' | 'admin' | 'anonymous';
const VISIBILITIES = ['public', 'community', 'shared', 'private'] as const;
const ACTORS: Actor[] = ['owner', 'ownerReader', 'accepted', 'pending', 'rejected', 'other', 'admin', 'anonymous'];

/** The expected answer: for list, whether the image is in the default listing; otherwise the status. */
function expected(vis: typeof VISIBILITIES[number], actor: Actor, op: Op): number | boolean {
  if (actor === 'anonymous') return op === 'list' ? false : 401;
  const owner = actor === 'owner' || actor === 'ownerReader';
  const member = actor === 'accepted' || actor === 'pending' || actor === 'rejected';
  const sees = actor === 'admin' || owner || vis === 'public' || vis === 'community' || (vis === 'shared' && member);
  const ok = { show: 200, download: 200, update: 200, delete: 204 } as const;
  if (op === 'list') {
    if (actor === 'admin') return vis !== 'community';
    if (owner) return true;
    if (vis === 'public') return true;
    return vis === 'shared' && actor === 'accepted';
  }
  if (!sees) return 404;
  if (op === 'show' || op === 'download') return ok[op];
  // Writes: admins and the owning project, whatever its role there (Glance 25's default policy:
  // enforce_new_defaults off, so modify_image and delete_image fall back to their deprecated
  // defaults and only the ownership check refuses); everyone else who can see it gets 403.
  return actor === 'admin' || owner ? ok[op] : 403;
}

test('visibility and permission matrix', async (t) => {
  const svc = await startTestService(t);
  const adminTok = await token(svc.url);
  const admin = api(svc.url, adminTok);
  const owner = await addProjectUser(svc.url, adminTok, 'owner-p', 'owner-u', 'pw');
  await addProjectUser(svc.url, adminTok, 'acc-p', 'acc-u', 'pw');
  await addProjectUser(svc.url, adminTok, 'pend-p', 'pend-u', 'pw');
  await addProjectUser(svc.url, adminTok, 'rej-p', 'rej-u', 'pw');
  await addProjectUser(svc.url, adminTok, 'other-p', 'other-u', 'pw');
  // A reader in the owner's project.
  const reader = await admin('POST', '/identity/v3/users', { body: { user: { name: 'reader-u', password: 'pw', default_project_id: owner.projectId } } });
  const readerRole = (await admin('GET', '/identity/v3/roles?name=reader')).json.roles[0].id;
  assert.equal((await admin('PUT', `/identity/v3/projects/${owner.projectId}/users/${reader.json.user.id}/roles/${readerRole}`)).status, 204);

  const projects: Record<string, string> = {};
  for (const p of ['acc-p', 'pend-p', 'rej-p']) projects[p] = (await admin('GET', `/identity/v3/projects?name=${p}`)).json.projects[0].id;
  const clients: Record<Actor, Api> = {
    owner: api(svc.url, await token(svc.url, 'owner-u', 'pw', 'owner-p')),
    ownerReader: api(svc.url, await token(svc.url, 'reader-u', 'pw', 'owner-p')),
    accepted: api(svc.url, await token(svc.url, 'acc-u', 'pw', 'acc-p')),
    pending: api(svc.url, await token(svc.url, 'pend-u', 'pw', 'pend-p')),
    rejected: api(svc.url, await token(svc.url, 'rej-u', 'pw', 'rej-p')),
    other: api(svc.url, await token(svc.url, 'other-u', 'pw', 'other-p')),
    admin,
    anonymous: api(svc.url, null),
  };

  /** An image owned by owner-p with data and the three memberships, then given `vis`. */
  const makeImage = async (vis: string, name: string): Promise<string> => {
    const own = clients.owner;
    const img = await own('POST', '/v2/images', { body: { name, disk_format: 'raw', container_format: 'bare', visibility: 'shared' } });
    assert.equal(img.status, 201, img.text);
    const id = img.json.id;
    assert.equal((await own('PUT', `/v2/images/${id}/file`, { raw: Buffer.from('data') })).status, 204);
    for (const [p, client, status] of [['acc-p', clients.accepted, 'accepted'], ['pend-p', clients.pending, 'pending'], ['rej-p', clients.rejected, 'rejected']] as const) {
      assert.equal((await own('POST', `/v2/images/${id}/members`, { body: { member: projects[p] } })).status, 200);
      if (status !== 'pending') assert.equal((await client('PUT', `/v2/images/${id}/members/${projects[p]}`, { body: { status } })).status, 200);
    }
    if (vis !== 'shared') {
      // Publicizing takes an admin; the owner may make it private or community.
      const who = vis === 'public' ? admin : own;
      const r = await who('PATCH', `/v2/images/${id}`, { body: [{ op: 'replace', path: '/visibility', value: vis }], type: 'application/openstack-images-v2.1-json-patch' });
      assert.equal(r.status, 200, r.text);
    }
    return id;
  };

  const failures: string[] = [];
  for (const vis of VISIBILITIES) {
    const shared = await makeImage(vis, `m-${vis}`);
    for (const actor of ACTORS) {
      const c = clients[actor];
      const listed = ((await c('GET', '/v2/images')).json?.images ?? []).some((i: any) => i.id === shared);
      const got: Record<Op, number | boolean> = {
        list: listed,
        show: (await c('GET', `/v2/images/${shared}`)).status,
        download: (await c('GET', `/v2/images/${shared}/file`)).status,
        update: 0, delete: 0,
      };
      // Writes each get their own image so one cell's success does not change the next.
      const victim = await makeImage(vis, `w-${vis}-${actor}`);
      got.update = (await c('PATCH', `/v2/images/${victim}`, { body: [{ op: 'replace', path: '/name', value: 'x' }], type: 'application/openstack-images-v2.1-json-patch' })).status;
      got.delete = (await c('DELETE', `/v2/images/${victim}`)).status;
      for (const op of ['list', 'show', 'download', 'update', 'delete'] as Op[]) {
        const want = expected(vis, actor, op);
        if (got[op] !== want) failures.push(`${vis} × ${actor} × ${op}: got ${got[op]}, want ${want}`);
      }
    }
  }
  assert.deepEqual(failures, []);

  // Members: only shared images take them; only the member answers; the owner cannot accept for it.
  const priv = (await clients.owner('POST', '/v2/images', { body: { name: 'p', visibility: 'private' } })).json.id;
  assert.equal((await clients.owner('POST', `/v2/images/${priv}/members`, { body: { member: projects['acc-p'] } })).status, 403);
  const sh = (await clients.owner('POST', '/v2/images', { body: { name: 's' } })).json.id;
  assert.equal((await clients.accepted('POST', `/v2/images/${sh}/members`, { body: { member: projects['acc-p'] } })).status, 404, 'cannot see it yet');
  assert.equal((await clients.owner('POST', `/v2/images/${sh}/members`, { body: { member: projects['acc-p'] } })).status, 200);
  assert.equal((await clients.owner('POST', `/v2/images/${sh}/members`, { body: { member: projects['acc-p'] } })).status, 409);
  assert.equal((await clients.owner('PUT', `/v2/images/${sh}/members/${projects['acc-p']}`, { body: { status: 'accepted' } })).status, 403);
  assert.equal((await clients.accepted('PUT', `/v2/images/${sh}/members/${projects['acc-p']}`, { body: { status: 'maybe' } })).status, 400);
  assert.equal((await clients.other('GET', `/v2/images/${sh}/members/${projects['acc-p']}`)).status, 404);
  const mine = await clients.accepted('GET', `/v2/images/${sh}/members`);
  assert.deepEqual(mine.json.members.map((m: any) => m.member_id), [projects['acc-p']]);
  assert.equal((await clients.accepted('DELETE', `/v2/images/${sh}/members/${projects['acc-p']}`)).status, 403);
  assert.equal((await clients.owner('DELETE', `/v2/images/${sh}/members/${projects['acc-p']}`)).status, 204);
  // Non-admins cannot publicize, nor create images for another project.
  assert.equal((await clients.owner('POST', '/v2/images', { body: { visibility: 'public' } })).status, 403);
  assert.equal((await clients.owner('POST', '/v2/images', { body: { owner: projects['acc-p'] } })).status, 403);
  // A reader of a project may create images for it under Glance 25's default policy (add_image's
  // deprecated default is OR'd in); a policy file can restrict it (see policy.test.ts).
  assert.equal((await clients.ownerReader('POST', '/v2/images', { body: { name: 'r' } })).status, 201);
});
