/**
 * The service on each of its databases: SQLite (embedded), PostgreSQL and MariaDB. The same
 * API scenario runs on each (migrations, filters, sorting with NULLs, keyset pagination,
 * sharing, case-sensitive names, uploads), plus two API nodes sharing one database.
 * PostgreSQL and MariaDB come from .ci/services/*.sh; without them the tests skip locally
 * and fail under CI=true.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Kysely, PostgresDialect, MysqlDialect, sql } from 'kysely';
import pg from 'pg';
import mysql from 'mysql2';
import { tempDir } from '@diskhub/testkit';
import { mkdir, writeFile } from 'node:fs/promises';
import { jsonLogger, loadConfig, openDatabase, startService } from '../src/index.js';
import { TaskRepo } from '../src/repo/tasks.js';
import { ImageRepo } from '../src/repo/images.js';
import { ADMIN_PASSWORD, addProjectUser, api, startTestService, token } from './helpers.js';
import { provisioners, type Provision } from './databases.js';

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

  test(`database ${dialect}: a database from before image_locations keeps its images' data (bare keys become file:// URLs)`, async (t) => {
    const provisioned = await provision(t);
    if (!provisioned) return;
    const { url } = provisioned;
    const dataDir = await tempDir(t);
    // The schema as it was (0003), with an active image whose location is a bare key of the file store.
    const old = await openDatabase(url, dataDir, { migrateTo: '0003_identity_lockout_revocation' });
    const id = '5b8e1a6e-2a0b-4c35-9a51-2f5d3a0c9d11';
    const data = randomBytes(70_000);
    const ts = '2026-01-01T00:00:00.000Z';
    await old.kysely.insertInto('images').values({
      id, name: 'legacy', disk_format: 'raw', container_format: 'bare', size: data.length, virtual_size: data.length, status: 'active',
      visibility: 'private', protected: 0, os_hidden: 0, checksum: null, os_hash_algo: null, os_hash_value: null, min_disk: 0, min_ram: 0,
      owner: null, location: id, store: 'file', created_at: ts, updated_at: ts, revision: 1, deleted: 0, deleted_at: null,
    } as any).execute();
    await old.close();
    await mkdir(join(dataDir, 'images'), { recursive: true });
    await writeFile(join(dataDir, 'images', id), data);

    const cfg = loadConfig({ DISKHUB_DATA_DIR: dataDir, DISKHUB_PORT: '0', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_DATABASE_URL: url, DISKHUB_SHOW_MULTIPLE_LOCATIONS: 'true' });
    const svc = await startService(cfg, jsonLogger({ write: () => true }, 'silent'));
    t.after(() => svc.close());
    t.after(provisioned.drop);
    const tok = await token(svc.url);
    const shown = await api(svc.url, tok)('GET', `/v2/images/${id}`);
    assert.equal(shown.status, 200, shown.text);
    assert.equal(shown.json.stores, 'file');
    assert.deepEqual(shown.json.locations, [{ url: `file://${join(dataDir, 'images', id)}`, metadata: { store: 'file' } }]);
    const dl = await fetch(`${svc.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': tok } });
    assert.equal(dl.status, 200);
    assert.ok(Buffer.from(await dl.arrayBuffer()).equals(data));
    // The old columns are gone: image_locations is the one record of where data is.
    const cols = await svc.db.kysely.introspection.getTables().then((ts) => ts.find((x) => x.name === 'images')!.columns.map((c) => c.name));
    assert.ok(!cols.includes('location') && !cols.includes('store'), cols.join(','));
    assert.equal((await api(svc.url, tok)('DELETE', `/v2/images/${id}`)).status, 204);
  });

  test(`database ${dialect}: a database from before 0007 takes an upload row naming many stores' temporary keys (temp_key widened to text)`, async (t) => {
    const provisioned = await provision(t);
    if (!provisioned) return;
    const dir = await tempDir(t);
    const old = await openDatabase(provisioned.url, dir, { migrateTo: '0006_image_scrubs' });
    await old.close();
    const db = await openDatabase(provisioned.url, dir);
    t.after(async () => { await db.close(); await provisioned.drop(); });
    // 40 stores' keys (`<image id>.<uuid>` each, joined): past the varchar(1024) the column was.
    const imageId = randomUUID();
    const tempKey = Array.from({ length: 40 }, () => `${imageId}.${randomUUID()}`).join(',');
    assert.ok(tempKey.length > 1024);
    await db.kysely.insertInto('uploads').values({ image_id: imageId, node: 'node-a', temp_key: tempKey, started_at: new Date().toISOString() }).execute();
    const row = await db.kysely.selectFrom('uploads').select('temp_key').where('image_id', '=', imageId).executeTakeFirstOrThrow();
    assert.equal(row.temp_key, tempKey, 'the whole key list is kept, not cut off');
    // 0008: tasks name their stage host (null for the tasks of before).
    const cols = (await db.kysely.introspection.getTables()).find((x) => x.name === 'tasks')!.columns;
    assert.equal(cols.find((c) => c.name === 'stage_host')?.isNullable, true);
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

/**
 * Two nodes' task repositories on one fresh database (null when the database is not here).
 * SQLite: one node per database file in one process — two better-sqlite3 connections of one
 * process wait for each other's locks synchronously; two processes are the kill test's case.
 */
async function twoNodes(t: TestContext, dialect: string, provision: Provision): Promise<{ a: TaskRepo; b: TaskRepo } | null> {
  const provisioned = await provision(t);
  if (!provisioned) return null;
  const dir = await tempDir(t);
  const dbA = await openDatabase(provisioned.url, dir);
  const dbB = dialect === 'sqlite' ? dbA : await openDatabase(provisioned.url, dir);
  t.after(async () => { await dbA.close(); if (dbB !== dbA) await dbB.close(); await provisioned.drop(); });
  return { a: new TaskRepo(dbA), b: new TaskRepo(dbB) };
}

for (const [dialect, provision] of Object.entries(provisioners)) {
  test(`database ${dialect}: task claims are exclusive between nodes; a lapsed lease is taken over, a held one is not`, async (t) => {
    const nodes = await twoNodes(t, dialect, provision);
    if (!nodes) return;
    const { a, b } = nodes;
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const id = randomUUID();
      ids.push(id);
      assert.equal(await a.create({ id, type: 'api_image_import', owner: 'p', image_id: null, request_id: null, user_id: null, input: { n: i } }), true);
    }
    // Two nodes claim at the same time, each on its own connection pool: every task once.
    const now = Date.now();
    const claimAll = async (repo: TaskRepo, node: string) => {
      const got: string[] = [];
      for (;;) {
        const task = await repo.claim(node, now, now + 60_000, () => 'k');
        if (!task) return got;
        assert.equal(task.node, node);
        got.push(task.id);
      }
    };
    const [gotA, gotB] = await Promise.all([claimAll(a, 'node-a'), claimAll(b, 'node-b')]);
    assert.deepEqual([...gotA, ...gotB].sort(), [...ids].sort());
    assert.equal(new Set([...gotA, ...gotB]).size, ids.length);
    // Held leases: nothing to claim. After the lease has run out: node-b takes node-a's task over.
    assert.equal(await b.claim('node-b', now + 1000, now + 61_000, () => 'k'), undefined);
    const victim = gotA[0] ?? gotB[0]!;
    const later = now + 120_000;
    const taken = await b.claim('node-b', later, later + 60_000, () => 'k');
    assert.ok(taken);
    assert.equal(taken.attempts, 2);
    assert.equal(taken.status, 'processing');
    assert.ok(ids.includes(taken.id));
    // The node that lost the lease cannot renew or finish it; the new holder can.
    const loser = gotA.includes(taken.id) ? a : b;
    if (loser === a) assert.equal(await a.renew(taken.id, 'node-a', later + 1, 5), false);
    assert.equal(await b.renew(taken.id, 'node-b', later + 90_000, 1234), true);
    assert.equal((await b.get(taken.id))!.progress, 1234);
    assert.equal(await a.finish(taken.id, 'node-a', { status: 'success', result: null, message: '', expiresAt: new Date(later).toISOString() }), false);
    assert.equal(await b.finish(taken.id, 'node-b', { status: 'success', result: { ok: 1 }, message: '', expiresAt: new Date(later + 1e9).toISOString() }), true);
    const done = (await a.get(taken.id))!;
    assert.equal(done.status, 'success');
    assert.deepEqual(done.result, { ok: 1 });
    assert.equal(done.node, null);
    void victim;
    // Paging through the list, newest first, as Glance pages (created_at, then id).
    const seen: string[] = [];
    let marker: string | undefined;
    for (;;) {
      const page = await a.list({ projectId: 'p', isAdmin: false }, { sortKey: 'created_at', sortDir: 'desc', limit: 5, marker });
      seen.push(...page.map((x) => x.id));
      if (page.length < 5) break;
      marker = page[page.length - 1]!.id;
    }
    assert.deepEqual([...seen].sort(), [...ids].sort());
    assert.equal((await a.list({ projectId: 'other', isAdmin: false }, { sortKey: 'created_at', sortDir: 'desc', limit: 50 })).length, 0);
  });

  test(`database ${dialect}: the uploads and stagings of a node whose heartbeat ran out are put back to queued; a live node's, an unknown node's and an import's are not`, async (t) => {
    const provisioned = await provision(t);
    if (!provisioned) return;
    const dir = await tempDir(t);
    const db = await openDatabase(provisioned.url, dir);
    t.after(async () => { await db.close(); await provisioned.drop(); });
    const tasks = new TaskRepo(db);
    const images = new ImageRepo(db);
    const ts = new Date().toISOString();
    const image = async (status: string, node: string, tempKey: string) => {
      const id = randomUUID();
      await db.kysely.insertInto('images').values({
        id, name: status, disk_format: 'raw', container_format: 'bare', size: null, virtual_size: null, status, visibility: 'private', protected: 0,
        os_hidden: 0, checksum: null, os_hash_algo: null, os_hash_value: null, min_disk: 0, min_ram: 0, owner: 'p', created_at: ts, updated_at: ts, revision: 1, deleted: 0, deleted_at: null,
      } as any).execute();
      await db.kysely.insertInto('uploads').values({ image_id: id, node, temp_key: tempKey, started_at: ts }).execute();
      return id;
    };
    const t0 = Date.now();
    await tasks.beat('node-dead', null, t0 - 10_000, t0 - 1);
    await tasks.beat('node-live', 'http://live:9292', t0, t0 + 60_000);
    const saving = await image('saving', 'node-dead', 'k1,k2');
    const staging = await image('uploading', 'node-dead', 'stage');
    const importing = await image('importing', 'node-dead', 'k3');
    const live = await image('saving', 'node-live', 'k4');
    const unknown = await image('saving', 'node-never-beat', 'k5');
    assert.deepEqual(await images.deadUploads(t0, 'node-dead'), [], 'a node never takes itself for dead');
    const dead = await images.deadUploads(t0, 'node-live');
    assert.deepEqual(dead.map((r) => r.image_id).sort(), [saving, staging].sort());
    assert.deepEqual(dead.find((r) => r.image_id === saving), { image_id: saving, node: 'node-dead', temp_key: 'k1,k2' });
    // Two nodes at once: one of them puts each back.
    const done = await Promise.all(dead.flatMap((r) => [images.revertDeadUpload(r), images.revertDeadUpload(r)]));
    assert.equal(done.filter(Boolean).length, 2);
    const status = async (id: string) => (await db.kysely.selectFrom('images').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
    assert.deepEqual([await status(saving), await status(staging), await status(importing), await status(live), await status(unknown)], ['queued', 'queued', 'importing', 'saving', 'saving']);
    assert.deepEqual(await images.deadUploads(t0, 'node-live'), []);
    assert.deepEqual((await db.kysely.selectFrom('uploads').select('image_id').execute()).map((r) => r.image_id).sort(), [importing, live, unknown].sort());
  });

  test(`database ${dialect}: a task tied to a stage host is claimed by that node only while its heartbeat runs; by another once it ran out (never claimed, given back, or mid-run)`, async (t) => {
    const nodes = await twoNodes(t, dialect, provision);
    if (!nodes) return;
    const { a, b } = nodes;
    const [hostA, hostB] = ['http://node-a:9292', 'http://node-b:9292'];
    const make = async (stageHost: string | null) => {
      const id = randomUUID();
      assert.equal(await a.create({ id, type: 'api_image_import', owner: 'p', image_id: null, request_id: null, user_id: null, input: {}, stage_host: stageHost }), true);
      return id;
    };
    const lease = 60_000;
    const t0 = Date.now();
    assert.equal(await a.beat('node-a', hostA, t0, t0 + lease), false, 'a first beat');
    assert.equal(await b.beat('node-b', hostB, t0, t0 + lease), false);
    assert.deepEqual((await b.aliveStageHosts(t0)).sort(), [hostA, hostB]);
    const tied = await make(hostA);
    const free = await make(null);
    // b (and a node with no self URL) take the free task, never a's while a beats.
    assert.equal((await b.claim('node-b', t0, t0 + lease, () => 'k', hostB))?.id, free);
    assert.equal(await b.claim('node-b', t0, t0 + lease, () => 'k', hostB), undefined);
    assert.equal(await b.claim('node-c', t0, t0 + lease, () => 'k'), undefined);
    const mine = await a.claim('node-a', t0, t0 + lease, () => 'k', hostA);
    assert.equal(mine?.id, tied);
    assert.equal(mine.stage_host, hostA);
    const end = { status: 'failure' as const, result: null, message: '', expiresAt: new Date(t0 + 1e9).toISOString() };
    assert.equal(await b.finish(free, 'node-b', end), true);
    // a's lease on the task runs out while a still beats: the task is still a's alone.
    const t1 = t0 + lease / 2;
    assert.equal(await a.beat('node-a', hostA, t1, t1 + lease), false);
    const t2 = t0 + lease + 1000;
    assert.equal(await b.claim('node-b', t2, t2 + lease, () => 'k', hostB), undefined);
    assert.equal((await a.claim('node-a', t2, t2 + lease, () => 'k', hostA))?.id, tied);
    // Given back (a stop), and one a never claimed: both wait for a while it beats.
    await a.release(tied, 'node-a');
    const waiting = await make(hostA);
    assert.equal(await b.claim('node-b', t2, t2 + lease, () => 'k', hostB), undefined);
    assert.equal(await b.claim('node-c', t2, t2 + lease, () => 'k'), undefined);
    // a dies: once its heartbeat ran out, any other node claims both (to fail them).
    const t3 = t1 + lease + 1;
    assert.deepEqual(await b.aliveStageHosts(t3), []);
    const taken = [await b.claim('node-b', t3, t3 + lease, () => 'k', hostB), await b.claim('node-c', t3, t3 + lease, () => 'k')];
    assert.deepEqual(taken.map((x) => x?.id).sort(), [tied, waiting].sort());
    assert.equal(taken.find((x) => x?.id === tied)!.attempts, 3);
    assert.equal(taken.find((x) => x?.id === waiting)!.attempts, 1);
    // a comes back: its beat says its heartbeat had run out meanwhile.
    assert.equal(await a.beat('node-a', hostA, t3, t3 + lease), true);
    assert.deepEqual(await b.aliveStageHosts(t3), [hostA]);
  });
}
