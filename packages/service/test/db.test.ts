/**
 * The service on each of its databases: SQLite (embedded), PostgreSQL and MariaDB. The same
 * API scenario runs on each (migrations, filters, sorting with NULLs, keyset pagination,
 * sharing, case-sensitive names, uploads), plus two API nodes sharing one database.
 * PostgreSQL and MariaDB come from .ci/services/*.sh; without them the tests skip locally
 * and fail under CI=true.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { tempDir } from '@diskhub/testkit';
import { openDatabase } from '../src/index.js';
import { addProjectUser, api, startTestService, token } from './helpers.js';
import { provisioners } from './databases.js';

for (const [dialect, provision] of Object.entries(provisioners)) {
  test(`database ${dialect}: migrations are idempotent; the API scenario gives the same answers`, async (t) => {
    const provisioned = await provision(t);
    if (!provisioned) return;
    const { url } = provisioned;
    const dir = await tempDir(t);
    // Migrating twice (a restart, or a second node) is a no-op.
    for (let i = 0; i < 2; i++) { const db = await openDatabase(url, dir); await db.close(); }

    const svc = await startTestService(t, { DISKHUB_DATABASE_URL: url });
    t.after(provisioned.drop); // after hooks run in order: the service closes first
    const tok = await token(svc.url);
    const a = api(svc.url, tok);
    const ids: Record<string, string> = {};
    const specs = [
      { name: 'Alpha', disk_format: 'raw', tags: ['t1'], os_distro: 'debian' },
      { name: 'alpha', disk_format: 'qcow2', tags: ['t1', 'T1'] },
      { name: 'beta', disk_format: 'raw', tags: [] },
      { name: null, disk_format: null, tags: ['t2'] },
      { name: 'gamma', disk_format: 'iso', tags: [], os_distro: 'fedora' },
    ];
    for (const s of specs) {
      const r = await a('POST', '/v2/images', { body: { ...s, container_format: 'bare' } });
      assert.equal(r.status, 201, r.text);
      ids[s.name ?? '(null)'] = r.json.id;
    }
    assert.equal((await a('PUT', `/v2/images/${ids.beta}/file`, { raw: randomBytes(3000) })).status, 204);
    // gamma is declared iso: the upload inspector wants an ISO 9660 volume descriptor at 32 KiB.
    const iso = randomBytes(40000);
    iso[32768] = 1;
    iso.write('CD001', 32769, 'latin1');
    assert.equal((await a('PUT', `/v2/images/${ids.gamma}/file`, { raw: iso })).status, 204);

    const names = async (q: string) => (await a('GET', `/v2/images?${q}`)).json.images.map((i: any) => i.name);
    assert.deepEqual(await names('name=alpha'), ['alpha'], 'names compare case-sensitively');
    assert.deepEqual(await names('tag=T1'), ['alpha']);
    assert.deepEqual(await names('sort=name:asc'), [null, 'Alpha', 'alpha', 'beta', 'gamma']);
    assert.deepEqual(await names('sort=size:desc,name:asc'), ['gamma', 'beta', null, 'Alpha', 'alpha']);
    assert.deepEqual(await names('os_distro=fedora'), ['gamma']);
    assert.deepEqual(await names('disk_format=in:raw,iso&sort=name:asc'), ['Alpha', 'beta', 'gamma']);
    assert.deepEqual(await names('size_min=4000'), ['gamma']);
    // diskhub's name search: case-insensitive substring, LIKE wildcards taken literally.
    assert.deepEqual(await names('x-diskhub-name-contains=LPH&sort=name:asc'), ['Alpha', 'alpha']);
    assert.deepEqual(await names('x-diskhub-name-contains=%25'), []);
    assert.deepEqual(await names('x-diskhub-name-contains=_'), []);
    assert.deepEqual(await names('x-diskhub-name-contains=a&disk_format=raw&sort=name:asc'), ['Alpha', 'beta']);
    // Keyset pagination over a sort with NULLs and ties visits each image once.
    for (const sort of ['name:asc', 'size:desc,name:desc', 'disk_format:asc', 'created_at:asc']) {
      const seen: string[] = [];
      let next: string | undefined = `/v2/images?limit=2&sort=${sort}`;
      while (next) {
        const page: any = await a('GET', next);
        assert.equal(page.status, 200, page.text);
        seen.push(...page.json.images.map((i: any) => i.id));
        next = page.json.next;
      }
      assert.deepEqual([...seen].sort(), Object.values(ids).sort(), `pagination by ${sort}`);
    }

    const patched = await a('PATCH', `/v2/images/${ids.beta}`, { body: [{ op: 'add', path: '/k', value: 'v'.repeat(10_000) }, { op: 'replace', path: '/min_disk', value: 5 }], type: 'application/openstack-images-v2.1-json-patch' });
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.json.k.length, 10_000);
    assert.equal(patched.json.size, 3000);

    // Sharing across projects.
    const { projectId } = await addProjectUser(svc.url, tok, 'other', 'ouser', 'opw');
    const other = api(svc.url, await token(svc.url, 'ouser', 'opw', 'other'));
    assert.equal((await a('POST', `/v2/images/${ids.gamma}/members`, { body: { member: projectId } })).status, 200);
    assert.deepEqual((await other('GET', '/v2/images')).json.images, []);
    assert.deepEqual((await other('GET', '/v2/images?member_status=pending&visibility=shared')).json.images.map((i: any) => i.name), ['gamma']);
    assert.equal((await other('PUT', `/v2/images/${ids.gamma}/members/${projectId}`, { body: { status: 'accepted' } })).status, 200);
    assert.deepEqual((await other('GET', '/v2/images')).json.images.map((i: any) => i.name), ['gamma']);
    const dl = await fetch(`${svc.url}/v2/images/${ids.gamma}/file`, { headers: { 'X-Auth-Token': await token(svc.url, 'ouser', 'opw', 'other') } });
    assert.equal(dl.status, 200);
    assert.equal((await dl.arrayBuffer()).byteLength, 40000);

    assert.equal((await a('DELETE', `/v2/images/${ids.gamma}`)).status, 204);
    assert.deepEqual((await other('GET', '/v2/images')).json.images, []);
    assert.equal((await a('POST', '/v2/images', { body: { id: ids.beta } })).status, 409);
  });

  test(`database ${dialect}: two API nodes share one database (tokens, images)`, async (t) => {
    const provisioned = await provision(t);
    if (!provisioned) return;
    const { url } = provisioned;
    const a = await startTestService(t, { DISKHUB_DATABASE_URL: url });
    const b = await startTestService(t, { DISKHUB_DATABASE_URL: url });
    t.after(provisioned.drop);
    const tok = await token(a.url);
    const created = await api(a.url, tok)('POST', '/v2/images', { body: { name: 'on-a' } });
    assert.equal(created.status, 201);
    const seen = await api(b.url, tok)('GET', `/v2/images/${created.json.id}`);
    assert.equal(seen.status, 200, 'a token from node A is valid on node B');
    assert.equal(seen.json.name, 'on-a');
    const revoked = await api(b.url, tok)('DELETE', '/identity/v3/auth/tokens', { headers: { 'X-Subject-Token': await token(b.url) } });
    assert.equal(revoked.status, 204);
  });
}
