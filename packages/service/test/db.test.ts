/**
 * The service on each of its databases: SQLite (embedded), PostgreSQL and MariaDB. The same
 * API scenario runs on each (migrations, filters, sorting with NULLs, keyset pagination,
 * sharing, case-sensitive names, uploads), plus two API nodes sharing one database.
 * PostgreSQL and MariaDB come from .ci/services/*.sh; without them the tests skip locally
 * and fail under CI=true.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Kysely, PostgresDialect, MysqlDialect, sql } from 'kysely';
import pg from 'pg';
import mysql from 'mysql2';
import { tempDir } from '@diskhub/testkit';
import { mkdir, writeFile } from 'node:fs/promises';
import { jsonLogger, loadConfig, openDatabase, startService } from '../src/index.js';
import { ADMIN_PASSWORD, addProjectUser, api, startTestService, token } from './helpers.js';

const PG_URL = process.env.DISKHUB_TEST_POSTGRES_URL ?? 'postgres://diskhub:diskhub@127.0.0.1:5432/diskhub_test';
const MYSQL_URL = process.env.DISKHUB_TEST_MYSQL_URL ?? 'mysql://diskhub:diskhub@127.0.0.1:3306/diskhub_test';

/** A database URL and how to drop it (called after the services using it are closed). */
type Provision = (t: TestContext) => Promise<{ url: string; drop: () => Promise<void> } | null>;

/** A fresh, empty database for one test (dropped afterwards), or null when the server is not there. */
const provisioners: Record<string, Provision> = {
  sqlite: async (t) => ({ url: `sqlite:${join(await tempDir(t), 'db.sqlite')}`, drop: async () => {} }),
  postgres: async (t) => {
    const admin = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: PG_URL, max: 1, connectionTimeoutMillis: 3000 }) }) });
    const name = `diskhub_t_${randomBytes(6).toString('hex')}`;
    try { await sql`CREATE DATABASE ${sql.id(name)}`.execute(admin); } catch (e) {
      await admin.destroy();
      return unavailable(t, 'PostgreSQL', e);
    }
    const u = new URL(PG_URL); u.pathname = `/${name}`;
    return { url: u.toString(), drop: async () => { await sql`DROP DATABASE IF EXISTS ${sql.id(name)} WITH (FORCE)`.execute(admin).catch(() => {}); await admin.destroy(); } };
  },
  mariadb: async (t) => {
    const u = new URL(MYSQL_URL);
    const pool = mysql.createPool({ host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), connectionLimit: 1, connectTimeout: 3000 });
    const admin = new Kysely<any>({ dialect: new MysqlDialect({ pool }) });
    const name = `diskhub_t_${randomBytes(6).toString('hex')}`;
    try { await sql`CREATE DATABASE ${sql.id(name)} CHARACTER SET utf8mb4`.execute(admin); } catch (e) {
      await admin.destroy();
      return unavailable(t, 'MariaDB', e);
    }
    u.pathname = `/${name}`;
    return { url: u.toString(), drop: async () => { await sql`DROP DATABASE IF EXISTS ${sql.id(name)}`.execute(admin).catch(() => {}); await admin.destroy(); } };
  },
};

function unavailable(t: TestContext, what: string, e: unknown): null {
  const msg = `${what} is not reachable (${(e as Error).message}); run .ci/services/*.sh`;
  if (process.env.CI === 'true') throw new Error(msg);
  t.skip(msg);
  return null;
}

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
