/**
 * The Swift all-in-one the Swift and S3 store tests run against (.ci/services/swift.sh): its
 * addresses and credentials, whether it answers, and its own clients as oracles — the `swift`
 * command (python-swiftclient) and boto3 — to check what the stores wrote.
 *
 * Outside CI a test skips when Swift is not running; under CI=true it runs and fails.
 */
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { runOk } from '@diskhub/testkit';

export const SWIFT_PORT = Number(process.env.DISKHUB_SWIFT_PORT ?? 8480);
export const SWIFT_AUTH = `http://127.0.0.1:${SWIFT_PORT}/auth/v1.0`;
export const SWIFT_USER = 'test:tester';
export const SWIFT_KEY = 'testing';
export const S3_ENDPOINT = `http://127.0.0.1:${SWIFT_PORT}`;
/** The memcached holding tempauth's tokens: flushing it expires every token. */
const MEMCACHED_PORT = SWIFT_PORT + 4;

let up: Promise<boolean> | undefined;
function swiftAnswers(): Promise<boolean> {
  up ??= fetch(SWIFT_AUTH, { headers: { 'X-Auth-User': SWIFT_USER, 'X-Auth-Key': SWIFT_KEY }, signal: AbortSignal.timeout(5000) })
    .then((r) => r.ok, () => false);
  return up;
}

/** Skips the test (outside CI) when Swift is not running; returns false then. */
export async function needSwift(t: TestContext): Promise<boolean> {
  if (await swiftAnswers()) return true;
  if (process.env.CI === 'true') throw new Error(`Swift does not answer at ${SWIFT_AUTH}: start it with .ci/services/swift.sh`);
  t.skip(`Swift is not running at ${SWIFT_AUTH} (.ci/services/swift.sh starts it)`);
  return false;
}

/** A fresh container or bucket name for one test. */
export const freshName = (prefix: string) => `${prefix}-${randomBytes(5).toString('hex')}`;

const swiftEnv = { ...process.env, ST_AUTH: SWIFT_AUTH, ST_USER: SWIFT_USER, ST_KEY: SWIFT_KEY };

/** The `swift` command line client against the all-in-one; throws unless it exits 0. */
export const swiftCli = (...args: string[]) => runOk('swift', args, { env: swiftEnv });

/** A tempauth token and storage URL for the raw Swift API (python's start-up makes the `swift` command slow on a busy machine). */
let account: Promise<{ url: string; token: string }> | undefined;
async function swiftApi(method: string, path: string): Promise<Response> {
  account ??= fetch(SWIFT_AUTH, { headers: { 'X-Auth-User': SWIFT_USER, 'X-Auth-Key': SWIFT_KEY } })
    .then((r) => ({ url: r.headers.get('x-storage-url')!, token: r.headers.get('x-auth-token')! }));
  let { url, token } = await account;
  let r = await fetch(`${url}/${path}`, { method, headers: { 'X-Auth-Token': token } });
  if (r.status === 401) { // a test expired the tokens
    account = undefined;
    ({ url, token } = await (account ??= fetch(SWIFT_AUTH, { headers: { 'X-Auth-User': SWIFT_USER, 'X-Auth-Key': SWIFT_KEY } })
      .then((a) => ({ url: a.headers.get('x-storage-url')!, token: a.headers.get('x-auth-token')! }))));
    r = await fetch(`${url}/${path}`, { method, headers: { 'X-Auth-Token': token } });
  }
  return r;
}

/** Names in a container, from Swift's own listing ([] when the container does not exist). */
export async function swiftList(container: string): Promise<string[]> {
  const r = await swiftApi('GET', `${encodeURIComponent(container)}?format=json`);
  if (r.status === 404) return [];
  if (r.status === 204) return [];
  if (!r.ok) throw new Error(`listing ${container}: ${r.status}`);
  return (await r.json() as { name: string }[]).map((o) => o.name);
}

/**
 * The container's listing once `settled` holds, or the last listing after `timeoutMs`. A
 * container listing is updated by the object server after each PUT or DELETE; when the
 * container server is slow to answer (a loaded machine), the update is queued for Swift's
 * object-updater and the listing lags behind the objects for a while (Swift's "async pending").
 */
export async function swiftListSettled(container: string, settled: (names: string[]) => boolean, timeoutMs = 15_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const names = await swiftList(container);
    if (settled(names) || Date.now() > until) return names;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Names in a container by the `swift` command line client. */
export async function swiftCliList(container: string): Promise<string[]> {
  return (await swiftCli('list', container)).split('\n').filter(Boolean);
}

/** `swift stat container object` as a header → value map. */
export async function swiftStat(container: string, object: string): Promise<Map<string, string>> {
  const out = await swiftCli('stat', container, object);
  return new Map(out.split('\n').map((l) => l.split(/:\s(.*)/s)).filter((p) => p.length > 1).map(([k, v]) => [k!.trim(), v!.trim()]));
}

/** Delete containers with everything in them (plain deletes: segments are listed containers too). */
export async function swiftDrop(...containers: string[]): Promise<void> {
  for (const c of containers) {
    for (const name of await swiftList(c)) await swiftApi('DELETE', `${encodeURIComponent(c)}/${name.split('/').map(encodeURIComponent).join('/')}`);
    await swiftApi('DELETE', encodeURIComponent(c));
  }
}

/** Run a boto3 snippet against the all-in-one's S3 API with `s3` bound to a client; returns stdout. */
export async function boto3(script: string, ...args: string[]): Promise<string> {
  const prelude = `import sys, json, boto3
s3 = boto3.client("s3", endpoint_url="${S3_ENDPOINT}", aws_access_key_id="${SWIFT_USER}", aws_secret_access_key="${SWIFT_KEY}", region_name="us-east-1")
`;
  return runOk('python3', ['-c', prelude + script, ...args]);
}

/** Expire every tempauth token by flushing the memcached that holds them. */
export function expireSwiftTokens(): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(MEMCACHED_PORT, '127.0.0.1', () => s.write('flush_all\r\n'));
    s.on('data', (d) => { if (d.toString().includes('OK')) { s.end(); resolve(); } });
    s.on('error', reject);
  });
}

/** An object's headers from Swift's HEAD. */
export async function swiftHead(container: string, object: string): Promise<Headers> {
  const r = await swiftApi('HEAD', `${encodeURIComponent(container)}/${encodeURIComponent(object)}`);
  if (!r.ok) throw new Error(`HEAD ${container}/${object}: ${r.status}`);
  return r.headers;
}


/** The segment paths (`container/object`) a static large object's manifest lists (?multipart-manifest=get). */
export async function swiftManifest(container: string, object: string): Promise<string[]> {
  const r = await swiftApi('GET', `${encodeURIComponent(container)}/${encodeURIComponent(object)}?multipart-manifest=get&format=raw`);
  if (!r.ok) throw new Error(`manifest of ${container}/${object}: ${r.status}`);
  return (await r.json() as { path: string }[]).map((s) => s.path.replace(/^\//, ''));
}
