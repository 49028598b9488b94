/** Test helpers: a real service on a free loopback port with a temporary data dir. */
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { diskhubBin, tempDir } from '@diskhub/testkit';
import { loadConfig, startService, jsonLogger, type Service } from '../src/index.js';

export const ADMIN_PASSWORD = 'admin-secret';

export interface TestService extends Service { dataDir: string }

export async function startTestService(t: TestContext | { after(fn: () => unknown): void }, env: Record<string, string> = {}): Promise<TestService> {
  const dataDir = await tempDir(t, 'diskhub-service-');
  const cfg = loadConfig({ DISKHUB_DATA_DIR: dataDir, DISKHUB_PORT: '0', DISKHUB_BIND: '127.0.0.1', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, ...env });
  const service = await startService(cfg, jsonLogger(process.stdout, 'silent'));
  t.after(() => service.close());
  return Object.assign(service, { dataDir });
}

/** The OS_* environment the openstack and glance clients read. */
export function osEnv(url: string, user = 'admin', password = ADMIN_PASSWORD, project = 'admin'): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('OS_')) delete env[k];
  return {
    ...env,
    OS_AUTH_URL: `${url}/identity/v3`, OS_USERNAME: user, OS_PASSWORD: password, OS_PROJECT_NAME: project,
    OS_USER_DOMAIN_NAME: 'Default', OS_PROJECT_DOMAIN_NAME: 'Default', OS_IDENTITY_API_VERSION: '3', OS_IMAGE_API_VERSION: '2',
    OS_INTERFACE: 'public',
  };
}

/** A token for user/project through the identity API, as the curl flow in Glance's docs does. */
export async function token(url: string, user = 'admin', password = ADMIN_PASSWORD, project = 'admin'): Promise<string> {
  const r = await fetch(`${url}/identity/v3/auth/tokens`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: user, domain: { name: 'Default' }, password } } }, scope: { project: { name: project, domain: { name: 'Default' } } } } }),
  });
  if (r.status !== 201) throw new Error(`token for ${user}: ${r.status} ${await r.text()}`);
  return r.headers.get('x-subject-token')!;
}

export interface Api {
  (method: string, path: string, opts?: { body?: unknown; raw?: string | Buffer; type?: string; headers?: Record<string, string> }): Promise<{ status: number; headers: Headers; text: string; json: any }>;
}

/** A small JSON client for one token. */
export function api(url: string, tok: string | null): Api {
  return async (method, path, opts = {}) => {
    const headers: Record<string, string> = { Accept: 'application/json', ...opts.headers };
    if (tok) headers['X-Auth-Token'] = tok;
    let body: string | Buffer | undefined;
    if (opts.raw !== undefined) { body = opts.raw; headers['Content-Type'] ??= opts.type ?? 'application/octet-stream'; }
    else if (opts.body !== undefined) { body = JSON.stringify(opts.body); headers['Content-Type'] ??= opts.type ?? 'application/json'; }
    const r = await fetch(`${url}${path}`, { method, headers, body });
    const text = await r.text();
    let json: any;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    return { status: r.status, headers: r.headers, text, json };
  };
}

/** Create a project with a user holding `role` on it (admin token). */
export async function addProjectUser(url: string, adminToken: string, project: string, user: string, password: string, role = 'member'): Promise<{ projectId: string; userId: string }> {
  const a = api(url, adminToken);
  const p = await a('POST', '/identity/v3/projects', { body: { project: { name: project, domain_id: 'default' } } });
  if (p.status !== 201) throw new Error(`project create: ${p.status} ${p.text}`);
  const u = await a('POST', '/identity/v3/users', { body: { user: { name: user, password, domain_id: 'default', default_project_id: p.json.project.id } } });
  if (u.status !== 201) throw new Error(`user create: ${u.status} ${u.text}`);
  const roles = await a('GET', `/identity/v3/roles?name=${role}`);
  const r = await a('PUT', `/identity/v3/projects/${p.json.project.id}/users/${u.json.user.id}/roles/${roles.json.roles[0].id}`);
  if (r.status !== 204) throw new Error(`role add: ${r.status} ${r.text}`);
  return { projectId: p.json.project.id, userId: u.json.user.id };
}

/** A free loopback port (for a service process, which is told its port). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

/** A `diskhub serve` process. */
export interface Proc { child: ChildProcess; url: string; stderr: () => string; exited: Promise<number | null> }

/**
 * Start `diskhub serve` on `dataDir` and `port` and wait for its health check. Port 0: the
 * system picks a free port, read back from the process's start-up line.
 */
export async function serve(dataDir: string, port: number, env: Record<string, string> = {}): Promise<Proc> {
  const child = spawn(process.execPath, [diskhubBin, 'serve'], {
    env: { ...process.env, DISKHUB_DATA_DIR: dataDir, DISKHUB_PORT: String(port), DISKHUB_BIND: '127.0.0.1', DISKHUB_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const bound = () => (port ? `http://127.0.0.1:${port}` : /^diskhub image service on (http:\/\/127\.0\.0\.1:\d+) /m.exec(err)?.[1]);
  // (60 s: several nodes starting at once on a busy machine take long to load their modules)
  for (const end = Date.now() + 60_000; Date.now() < end;) {
    if (child.exitCode !== null) throw new Error(`diskhub serve exited: ${err}`);
    const url = bound();
    if (url && await fetch(`${url}/healthcheck`).then((r) => r.ok, () => false)) return { child, url, stderr: () => err, exited };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`diskhub serve did not start: ${err}`);
}

/** Poll `get` until `done` says yes (every 50 ms, at most `ms`). */
export async function until<T>(what: string, get: () => Promise<T>, done: (v: T) => boolean, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (done(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The image is active with exactly `data`: size, md5 and sha512 as shown, and the bytes downloaded back (admin token). */
export async function assertStored(url: string, id: string, data: Buffer): Promise<any> {
  const tok = await token(url);
  const img = (await api(url, tok)('GET', `/v2/images/${id}`)).json;
  assert.equal(img.status, 'active');
  assert.equal(img.size, data.length);
  assert.equal(img.checksum, createHash('md5').update(data).digest('hex'));
  assert.equal(img.os_hash_value, createHash('sha512').update(data).digest('hex'));
  const got = await fetch(`${url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': tok } });
  assert.ok(Buffer.from(await got.arrayBuffer()).equals(data), 'the downloaded data is the data');
  return img;
}

/** glanceclient prints a table of Property | Value; turn it into JSON. */
export function toJson(table: string): string {
  const out: Record<string, string> = {};
  for (const line of table.split('\n')) {
    const m = /^\|\s*(\S+)\s*\|\s*(.*?)\s*\|$/.exec(line);
    if (m && m[1] !== 'Property') out[m[1]!] = m[2]!;
  }
  return JSON.stringify(out);
}
