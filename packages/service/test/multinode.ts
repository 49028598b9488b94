/**
 * Two API nodes, as clouds run Glance: two `diskhub serve` processes (nodes a and b, each with
 * its own data directory and port) on one fresh PostgreSQL database and one store (RBD, Swift,
 * S3), and the scenarios the multi-node tests run on each store:
 *
 * - sharedImages: an image uploaded on a is the same image on b (show, download, Range), image
 *   lists, members and quota usage agree on both nodes, and quotas used up on a refuse on b;
 * - takeover: a web-download import whose node is SIGKILLed mid-transfer is finished by the
 *   other node once the lease has run out, and no partial object is left in the store.
 *
 * The store's own client is the oracle for what is in the store (`StoreOracle`, made in
 * multinode-stores.ts). Without PostgreSQL a test skips outside CI; under CI=true it fails
 * (databases.ts).
 */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { qemuImg, runOk, tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, addProjectUser, api, osEnv, serve, token, until, type Api, type Proc } from './helpers.js';
import { provisioners } from './databases.js';
import { slowServer, type WebSource } from './web-source.js';

/** What the store holds, read with the store's own client (rbd, swift, boto3). */
export interface StoreOracle {
  /** The store's options in the config file (Glance's names), as store `main`. */
  config: Record<string, unknown>;
  /**
   * What the store holds of image `id`: whether its data is there (`image`), and the names of
   * anything else of it (`partial`: a temporary object, segments or a marker of an upload that
   * did not end).
   */
  contents(id: string): Promise<{ image: boolean; partial: string[] }>;
}

export interface Node extends Proc { name: string; dataDir: string }

export interface TwoNodes {
  a: Node;
  b: Node;
  /** The database both nodes use. */
  databaseUrl: string;
  /** (Re)start a node by name, on its data directory (a node that was killed comes back). */
  start(name: 'a' | 'b'): Promise<Node>;
}

/**
 * Nodes a and b on a fresh PostgreSQL database with `store` as their one store, started at
 * once (both migrate the empty database). null: PostgreSQL is missing and the test skipped.
 */
export async function twoNodes(t: TestContext, store: StoreOracle, env: Record<string, string> = {}): Promise<TwoNodes | null> {
  const db = await provisioners.postgres!(t);
  if (!db) return null;
  const dir = await tempDir(t, 'diskhub-multinode-');
  const config = join(dir, 'diskhub.json');
  await writeFile(config, JSON.stringify({ stores: { main: store.config }, defaultStore: 'main' }));
  const nodes: Partial<Record<'a' | 'b', Node>> = {};
  t.after(async () => {
    for (const n of Object.values(nodes)) if (n.child.exitCode === null && n.child.signalCode === null) { n.child.kill('SIGKILL'); await n.exited; }
    await db.drop();
  });
  const start = async (name: 'a' | 'b'): Promise<Node> => {
    const dataDir = join(dir, `node-${name}`);
    const proc = await serve(dataDir, 0, {
      DISKHUB_CONFIG: config, DISKHUB_DATABASE_URL: db.url, DISKHUB_NODE_ID: `node-${name}`, DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, ...env,
    });
    return (nodes[name] = { ...proc, name, dataDir });
  };
  const [a, b] = await Promise.all([start('a'), start('b')]);
  return { a, b, databaseUrl: db.url, start };
}

const os = (env: NodeJS.ProcessEnv, ...args: string[]) => runOk('openstack', args, { env });
const osJson = async (env: NodeJS.ProcessEnv, ...args: string[]) => JSON.parse(await os(env, ...args, '-f', 'json'));
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');

/** A real qcow2 (made by qemu-img from `mib` MiB of random data) and its bytes. */
export async function randomQcow2(dir: string, mib: number): Promise<{ path: string; bytes: Buffer }> {
  const raw = join(dir, `random-${mib}.raw`);
  const path = join(dir, `random-${mib}.qcow2`);
  await writeFile(raw, randomBytes(mib << 20));
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, path);
  return { path, bytes: await readFile(path) };
}

/** `glance usage` (Glance's GET /v2/info/usage) as quota name → { limit, usage }. */
async function glanceUsage(env: NodeJS.ProcessEnv): Promise<Record<string, { limit: number; usage: number }>> {
  const out: Record<string, { limit: number; usage: number }> = {};
  for (const line of (await runOk('glance', ['usage'], { env })).split('\n')) {
    const m = /^\|\s*(\w+)\s*\|\s*(-?\d+)\s*\|\s*(-?\d+)\s*\|$/.exec(line);
    if (m) out[m[1]!] = { limit: Number(m[2]), usage: Number(m[3]) };
  }
  return out;
}


/** Quotas the sharedImages scenario runs with (every node is configured alike). */
export const QUOTA_ENV = { DISKHUB_PROJECT_IMAGE_QUOTA: '2', DISKHUB_PROJECT_STORAGE_QUOTA: String(16 << 20) };

/**
 * Upload on a, download on b; lists, members and quota usage agree on both nodes; quotas used
 * on a refuse on b. The nodes run with QUOTA_ENV. The openstack and glance clients do the
 * steps users do with them (upload, download, share, accept, usage); the API checks the rest
 * (each client call costs a Python start).
 */
export async function sharedImages(t: TestContext, nodes: TwoNodes, store: StoreOracle): Promise<void> {
  const { a, b } = nodes;
  const dir = await tempDir(t);
  const adminA = api(a.url, await token(a.url));
  const adminB = api(b.url, await token(b.url));

  // Upload on a with the openstack client; b shows the same image and serves the same bytes.
  const qcow = await randomQcow2(dir, 3);
  const created = await osJson(osEnv(a.url), 'image', 'create', '--file', qcow.path, '--disk-format', 'qcow2', '--container-format', 'bare', '--shared', 'uploaded-on-a');
  const id = created.id as string;
  const onA = (await adminA('GET', `/v2/images/${id}`)).json;
  const onB = (await adminB('GET', `/v2/images/${id}`)).json;
  assert.equal(onB.status, 'active');
  assert.equal(onB.size, qcow.bytes.length);
  assert.equal(onB.checksum, md5(qcow.bytes));
  assert.equal(onB.os_hash_algo, 'sha512');
  assert.equal(onB.os_hash_value, sha512(qcow.bytes));
  assert.deepEqual(onB, onA, 'both nodes show the same image');
  assert.deepEqual(await store.contents(id), { image: true, partial: [] }, 'the store holds the image, nothing partial');

  const saved = join(dir, 'saved-from-b.qcow2');
  await os(osEnv(b.url), 'image', 'save', '--file', saved, id);
  assert.ok((await readFile(saved)).equals(qcow.bytes), 'download on b is byte-identical');
  await qemuImg('compare', qcow.path, saved);
  const from = 1_000_003;
  const to = qcow.bytes.length - 77_777;
  const ranged = await fetch(`${b.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': await token(b.url), Range: `bytes=${from}-${to}` } });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers.get('content-range'), `bytes ${from}-${to}/${qcow.bytes.length}`);
  assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(qcow.bytes.subarray(from, to + 1)), 'Range download on b');

  // Identity is shared too: a project and its user made on b sign in on a.
  const team = await addProjectUser(b.url, await token(b.url), 'team', 'bob', 'bob-pw');
  const bobA = api(a.url, await token(a.url, 'bob', 'bob-pw', 'team'));
  const bobB = api(b.url, await token(b.url, 'bob', 'bob-pw', 'team'));
  const listed = async (as: Api) => (await as('GET', '/v2/images')).json.images.map((i: { id: string }) => i.id).sort();

  // Members: shared on a (openstack image add project), accepted on b (openstack image set --accept).
  await os(osEnv(a.url), 'image', 'add', 'project', id, 'team');
  assert.deepEqual(await listed(bobB), [], 'a pending member does not list the image');
  await os(osEnv(b.url, 'bob', 'bob-pw', 'team'), 'image', 'set', '--accept', id);
  const membersA = (await adminA('GET', `/v2/images/${id}/members`)).json.members;
  assert.deepEqual((await adminB('GET', `/v2/images/${id}/members`)).json.members, membersA);
  assert.deepEqual(membersA.map((m: { member_id: string; status: string }) => [m.member_id, m.status]), [[team.projectId, 'accepted']]);
  assert.deepEqual(await listed(bobA), [id], 'the accepted member lists it on a');

  // Quotas: what bob's project uses on a counts on b (glance usage, on each node).
  const first = (await bobA('POST', '/v2/images', { body: { name: 'bob-10m', disk_format: 'raw', container_format: 'bare' } })).json;
  assert.equal((await bobA('PUT', `/v2/images/${first.id}/file`, { raw: randomBytes(10 << 20) })).status, 204);
  const second = await bobB('POST', '/v2/images', { body: { name: 'bob-7m', disk_format: 'raw', container_format: 'bare' } });
  assert.equal(second.status, 201, second.text);
  const over = await bobB('PUT', `/v2/images/${second.json.id}/file`, { raw: randomBytes(7 << 20) });
  assert.equal(over.status, 413, `10 MiB used on a + 7 MiB on b is over the 16 MiB quota: ${over.text}`);
  assert.equal((await bobB('GET', `/v2/images/${second.json.id}`)).json.status, 'queued');
  const third = await bobB('POST', '/v2/images', { body: { name: 'one-too-many', disk_format: 'raw', container_format: 'bare' } });
  assert.equal(third.status, 413, `the project's 2 images (one made on a) are its quota: ${third.text}`);
  const [usageA, usageB] = await Promise.all([glanceUsage(osEnv(a.url, 'bob', 'bob-pw', 'team')), glanceUsage(osEnv(b.url, 'bob', 'bob-pw', 'team'))]);
  assert.deepEqual(usageB, usageA, 'glance usage agrees on both nodes');
  assert.deepEqual(usageA.image_size_total, { limit: 16, usage: 10 });
  assert.deepEqual(usageA.image_count_total, { limit: 2, usage: 2 });
  assert.deepEqual(await store.contents(second.json.id), { image: false, partial: [] }, 'the refused upload left nothing in the store');

  // Image lists agree, for the admin and for the member.
  const all = [id, first.id, second.json.id].sort();
  assert.deepEqual(await listed(adminA), all);
  assert.deepEqual(await listed(adminB), all);
  assert.deepEqual(await listed(bobA), all);
  assert.deepEqual(await listed(bobB), all);

  // A delete on b is seen on a, and the store lets go of the data.
  assert.equal((await adminB('DELETE', `/v2/images/${id}`)).status, 204);
  assert.equal((await adminA('GET', `/v2/images/${id}`)).status, 404);
  assert.deepEqual(await store.contents(id), { image: false, partial: [] });
}

/** The env the takeover scenario adds to every node: a short lease, and the loopback source allowed. */
function takeoverEnv(port: number): Record<string, string> {
  return {
    DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(port),
    DISKHUB_TASK_LEASE_SECONDS: '3', DISKHUB_TASK_POLL_SECONDS: '1',
  };
}

const tasksOf = async (a: Api, id: string) => (await a('GET', `/v2/images/${id}/tasks`)).json.tasks as any[];

/** The node holding a task's lease, from the shared database. */
async function holder(databaseUrl: string, taskId: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query<{ node: string | null }>('SELECT node FROM tasks WHERE id = $1', [taskId])).rows[0]?.node ?? null;
  } finally {
    await client.end();
  }
}

/**
 * A web-download import started on a, its node SIGKILLed while the body flows, finished by the
 * other node; the image active on both with the right checksum, nothing partial in the store.
 * `web` serves `qcow` (its first answer trickles); the nodes run with takeoverEnv(web.port).
 * The node is killed once `killAfter` bytes were sent (more than the store's first segment or
 * part, so that it has written something).
 */
async function takeover(nodes: TwoNodes, store: StoreOracle, web: WebSource, qcow: Buffer, killAfter = 1536 << 10): Promise<string> {
  const a = api(nodes.a.url, await token(nodes.a.url));
  const img = (await a('POST', '/v2/images', { body: { name: 'web-download', disk_format: 'qcow2', container_format: 'bare' } })).json;
  const started = await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download', uri: web.url } } });
  assert.equal(started.status, 202, started.text);
  // Some of the body has reached the node that claimed the task, not all of it.
  await until('the import to be downloading', async () => web.sent[0] ?? 0, (n) => n >= killAfter);
  const [task] = await tasksOf(a, img.id);
  assert.equal(task.status, 'processing');
  // The node that claimed the task (a, which was told first, all but always) is killed; the other finishes.
  const owner = await holder(nodes.databaseUrl, task.id);
  assert.ok(owner === 'node-a' || owner === 'node-b', `the task is held by a node: ${owner}`);
  const [dead, survivor] = owner === 'node-a' ? [nodes.a, nodes.b] : [nodes.b, nodes.a];
  dead.child.kill('SIGKILL');
  await dead.exited;
  assert.ok(web.sent[0]! > 0 && web.sent[0]! < qcow.length, `${dead.name} died mid-transfer (${web.sent[0]} of ${qcow.length} bytes sent)`);
  // Until its lease runs out the dead node's partial data is in the store (seen only when the
  // store's listing beats the takeover: the task still the dead node's after it).
  const cutOff = await store.contents(img.id);
  if (await holder(nodes.databaseUrl, task.id) === dead.name) assert.notDeepEqual(cutOff.partial, [], `${dead.name} left partial data`);

  const s = api(survivor.url, await token(survivor.url));
  const [done] = await until('the task to end on the other node', () => tasksOf(s, img.id), (ts) => ts.length === 1 && !['pending', 'processing'].includes(ts[0].status), 45_000);
  assert.equal(done.status, 'success', done.message);
  assert.equal(web.requests(), 2, `${survivor.name} downloaded again from the start`);
  assert.equal(await holder(nodes.databaseUrl, task.id), null, 'the task is nobody\'s once done');
  const shown = (await s('GET', `/v2/images/${img.id}`)).json;
  assert.equal(shown.status, 'active');
  assert.equal(shown.checksum, md5(qcow));
  assert.equal(shown.os_hash_value, sha512(qcow));
  assert.equal(shown.os_glance_import_task, undefined);
  // The dead node's partial upload is removed by the node that took over (an RBD image the
  // dead client still watches only once the OSD's 30 s watch timeout has passed).
  const left = await until(`${dead.name}'s partial upload to go from the store`, () => store.contents(img.id), (c) => c.partial.length === 0, 45_000);
  assert.equal(left.image, true);

  // The killed node comes back and serves the same image.
  const back = await nodes.start(dead === nodes.a ? 'a' : 'b');
  const again = api(back.url, await token(back.url));
  assert.deepEqual((await again('GET', `/v2/images/${img.id}`)).json, (await s('GET', `/v2/images/${img.id}`)).json, 'both nodes show the same image');
  const got = await fetch(`${back.url}/v2/images/${img.id}/file`, { headers: { 'X-Auth-Token': await token(back.url) } });
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(qcow), 'the imported data, byte-identical, from the node that died');
  assert.equal((await tasksOf(again, img.id))[0].status, 'success');
  return img.id as string;
}

/**
 * The takeover scenario from scratch: a qcow2 of `mib` MiB of random data on a trickling
 * loopback source, nodes a and b allowed to fetch it, `takeover` run. Returns the image id,
 * or null when the test skipped (PostgreSQL missing, outside CI).
 */
export async function takeoverFromScratch(t: TestContext, store: StoreOracle, mib = 4, killAfter?: number): Promise<string | null> {
  const qcow = await randomQcow2(await tempDir(t), mib);
  const web = await slowServer(t, qcow.bytes, 1, 'disk.qcow2');
  const nodes = await twoNodes(t, store, takeoverEnv(web.port));
  return nodes && takeover(nodes, store, web, qcow.bytes, killAfter);
}

/** One file store in a directory both nodes use (the shared store; staging stays per node, for the glance-direct tests). */
export function sharedFileStore(dir: string): StoreOracle {
  return {
    config: { type: 'file', path: dir },
    async contents(id) {
      const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.includes(id));
      return { image: names.includes(id), partial: names.filter((n) => n !== id) };
    },
  };
}

/** The image's properties as the database holds them (hidden ones too). */
export async function storedProperties(databaseUrl: string, id: string): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const rows = (await client.query<{ name: string; value: string }>('SELECT name, value FROM image_properties WHERE image_id = $1', [id])).rows;
    return Object.fromEntries(rows.map((r) => [r.name, r.value]));
  } finally {
    await client.end();
  }
}

export async function taskRow(databaseUrl: string, imageId: string): Promise<{ stage_host: string | null; node: string | null; status: string; message: string }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query('SELECT stage_host, node, status, message FROM tasks WHERE image_id = $1', [imageId])).rows[0];
  } finally {
    await client.end();
  }
}

/** The image files in a node's staging area. */
export const staged = async (dataDir: string) => (await readdir(join(dataDir, 'staging')).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));
