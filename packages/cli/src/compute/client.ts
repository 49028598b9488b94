/**
 * A client of the image service over its public HTTP API (Glance Image API v2 + Keystone v3),
 * as a compute node is: a token from Keystone v3 password authentication (the OS_* variables
 * the openstack client reads, or --os-* options) or a given token, the image endpoint from the
 * token's service catalog (type "image"), and nothing else — no shortcut into the service's
 * database or store.
 */
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ComputeError } from './errors.js';

/** Authentication settings, named after the OS_* variables (OS_AUTH_URL → authUrl). */
export interface AuthSettings {
  token?: string;
  authUrl?: string;
  username?: string;
  userId?: string;
  password?: string;
  projectName?: string;
  projectId?: string;
  userDomainName?: string;
  projectDomainName?: string;
  regionName?: string;
  interface?: string;
  /** The image API's URL, instead of the catalog's (OS_IMAGE_URL, as glanceclient's --os-image-url). */
  imageUrl?: string;
}

const ENV_NAMES: Record<keyof AuthSettings, string> = {
  token: 'OS_TOKEN', authUrl: 'OS_AUTH_URL', username: 'OS_USERNAME', userId: 'OS_USER_ID', password: 'OS_PASSWORD',
  projectName: 'OS_PROJECT_NAME', projectId: 'OS_PROJECT_ID', userDomainName: 'OS_USER_DOMAIN_NAME',
  projectDomainName: 'OS_PROJECT_DOMAIN_NAME', regionName: 'OS_REGION_NAME', interface: 'OS_INTERFACE', imageUrl: 'OS_IMAGE_URL',
};

/** The `--os-auth-url`-style option names, for the command line. */
export const AUTH_OPTIONS: { name: string; key: keyof AuthSettings }[] = [
  { name: 'token', key: 'token' },
  ...Object.entries(ENV_NAMES).map(([key, env]) => ({ name: env.toLowerCase().replace(/_/g, '-'), key: key as keyof AuthSettings })),
];

/** Settings from the environment, overridden by the given ones. */
export function authFromEnv(env: NodeJS.ProcessEnv, given: AuthSettings = {}): AuthSettings {
  const out: AuthSettings = {};
  for (const [key, name] of Object.entries(ENV_NAMES) as [keyof AuthSettings, string][]) {
    const v = given[key] ?? env[name];
    if (v) out[key] = v;
  }
  return out;
}

/** An image record as the Image API v2 returns it (the fields this tool reads). */
export interface ImageRecord {
  id: string;
  name: string | null;
  status: string;
  disk_format: string | null;
  container_format: string | null;
  size: number | null;
  virtual_size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
  min_disk: number;
  min_ram: number;
  owner: string | null;
  [property: string]: unknown;
}

/** Who the token belongs to (for the snapshot's owner_* properties). */
export interface TokenIdentity {
  userId: string;
  userName: string;
  projectId: string;
  projectName: string;
}

interface TokenBody {
  token: {
    user: { id: string; name: string };
    project?: { id: string; name: string };
    catalog?: { type: string; endpoints: { interface: string; region?: string; region_id?: string; url: string }[] }[];
  };
}

const REQUEST_TIMEOUT_MS = 30_000;

export class ImageServiceClient {
  private constructor(readonly imageUrl: string, readonly token: string, readonly identity: TokenIdentity, private readonly signal?: AbortSignal) {}

  /** Authenticate and find the image endpoint. `signal` cancels every request of the client (Ctrl-C). */
  static async connect(settings: AuthSettings, signal?: AbortSignal): Promise<ImageServiceClient> {
    const authUrl = settings.authUrl?.replace(/\/+$/, '');
    let token = settings.token;
    let body: TokenBody;
    if (!authUrl) throw new ComputeError('no identity service: set OS_AUTH_URL (or --os-auth-url)');
    if (token) {
      // A token validates itself: GET /v3/auth/tokens with it as both caller and subject.
      const r = await send(`${authUrl}/auth/tokens`, { headers: { 'X-Auth-Token': token, 'X-Subject-Token': token, Accept: 'application/json' } }, signal);
      if (r.status !== 200) { await r.text(); throw new ComputeError(`the identity service refused the token (HTTP ${r.status})`); }
      body = await r.json() as TokenBody;
    } else {
      if (!settings.password || !(settings.username || settings.userId)) {
        throw new ComputeError('no credentials: set OS_USERNAME and OS_PASSWORD (or OS_TOKEN), or give --os-username/--os-password or --token');
      }
      const domain = (name: string | undefined) => ({ name: name ?? 'Default' });
      const user = settings.userId ? { id: settings.userId, password: settings.password } : { name: settings.username, domain: domain(settings.userDomainName), password: settings.password };
      const project = settings.projectId ? { id: settings.projectId } : settings.projectName ? { name: settings.projectName, domain: domain(settings.projectDomainName) } : undefined;
      const r = await send(`${authUrl}/auth/tokens`, {
        method: 'POST', headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user } }, ...(project ? { scope: { project } } : {}) } }),
      }, signal);
      if (r.status !== 201) throw new ComputeError(`the identity service refused the credentials (HTTP ${r.status}: ${errorText(await r.text())})`);
      const subject = r.headers['x-subject-token'];
      token = typeof subject === 'string' ? subject : undefined;
      if (!token) throw new ComputeError('the identity service answered without a token (no X-Subject-Token header)');
      body = await r.json() as TokenBody;
    }
    const t = body.token;
    if (!t.project) throw new ComputeError('the token is not scoped to a project: set OS_PROJECT_NAME (or OS_PROJECT_ID)');
    const identity: TokenIdentity = { userId: t.user.id, userName: t.user.name, projectId: t.project.id, projectName: t.project.name };
    const imageUrl = settings.imageUrl ?? endpointOf(t.catalog ?? [], settings.interface ?? 'public', settings.regionName);
    return new ImageServiceClient(imageUrl.replace(/\/+$/, ''), token, identity, signal);
  }

  private async call(method: string, path: string, init: { body?: unknown; stream?: { data: Readable; size: number }; headers?: Record<string, string>; expect: number[]; streamed?: boolean; uncancellable?: boolean }): Promise<Answer> {
    const headers: Record<string, string> = { 'X-Auth-Token': this.token, Accept: 'application/json', ...init.headers };
    let body: string | Readable | undefined;
    if (init.body !== undefined) { body = JSON.stringify(init.body); headers['Content-Type'] ??= 'application/json'; }
    if (init.stream) { body = init.stream.data; headers['Content-Type'] = 'application/octet-stream'; headers['Content-Length'] = String(init.stream.size); }
    const r = await send(`${this.imageUrl}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) }, init.uncancellable ? undefined : this.signal, !init.streamed && !init.stream);
    if (!init.expect.includes(r.status)) {
      throw new ComputeError(`${method} ${path}: HTTP ${r.status} ${errorText(await r.text())}`, r.status === 404 ? 'not-found' : 'service');
    }
    return r;
  }

  async getImage(id: string): Promise<ImageRecord> {
    try {
      return await (await this.call('GET', `/v2/images/${encodeURIComponent(id)}`, { expect: [200] })).json() as ImageRecord;
    } catch (e) {
      if (e instanceof ComputeError && e.kind === 'not-found') throw new ComputeError(`Image ${id} could not be found.`, 'not-found');
      throw e;
    }
  }

  /** Every image the token can see, page by page (the API's `next` links). */
  async *listImages(): AsyncIterable<ImageRecord> {
    let next: string | undefined = '/v2/images?limit=200';
    while (next) {
      const page = await (await this.call('GET', next, { expect: [200] })).json() as { images: ImageRecord[]; next?: string };
      yield* page.images;
      next = page.next;
    }
  }

  /** The image data as a stream of chunks (GET /v2/images/{id}/file). */
  async download(id: string): Promise<AsyncIterable<Uint8Array>> {
    const r = await this.call('GET', `/v2/images/${encodeURIComponent(id)}/file`, { expect: [200, 204], headers: { Accept: 'application/octet-stream' }, streamed: true });
    if (r.status === 204) { await r.text(); throw new ComputeError(`Image ${id} has no data`); }
    return r.body;
  }

  async createImage(meta: Record<string, unknown>): Promise<ImageRecord> {
    return await (await this.call('POST', '/v2/images', { body: meta, expect: [201] })).json() as ImageRecord;
  }

  /** PUT the image data (a stream of `size` bytes). */
  async upload(id: string, data: Readable, size: number): Promise<void> {
    const r = await this.call('PUT', `/v2/images/${encodeURIComponent(id)}/file`, { stream: { data, size }, expect: [204] });
    await r.text();
  }

  /** Also after cancellation: it is how a half-made snapshot is cleaned up. */
  async deleteImage(id: string): Promise<void> {
    await (await this.call('DELETE', `/v2/images/${encodeURIComponent(id)}`, { expect: [204, 404], uncancellable: true })).text();
  }
}

/** The image endpoint of a catalog, for one interface and (if given) region, as keystoneauth picks it. */
export function endpointOf(catalog: NonNullable<TokenBody['token']['catalog']>, iface: string, region?: string): string {
  const wanted = iface.replace(/URL$/, '');
  for (const service of catalog) {
    if (service.type !== 'image') continue;
    const ep = service.endpoints.find((e) => e.interface === wanted && (!region || e.region_id === region || e.region === region));
    if (ep) return ep.url;
  }
  throw new ComputeError(`no image service in the catalog for interface '${wanted}'${region ? ` in region '${region}'` : ''}; give --os-image-url`);
}

/** An HTTP answer: status, headers, and the body to read once (text, JSON, or as a stream). */
interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
  text(): Promise<string>;
  json(): Promise<unknown>;
}

/**
 * One request with node:http(s) — not fetch(): a body streamed from a file needs no web-stream
 * adapter (it cost a second of CPU and garbage collection per 100 MiB uploaded), and undici is
 * not loaded at all (0.1-0.2 s of every command's start). Cancelled by `signal`; `timed`: the
 * whole exchange within REQUEST_TIMEOUT_MS (not for image data, whose size has no bound). A
 * server that answers before taking a streamed body is reported by its answer.
 */
async function send(url: string, init: { method?: string; headers?: Record<string, string>; body?: string | Readable }, signal: AbortSignal | undefined, timed = true): Promise<Answer> {
  const signals = [...(signal ? [signal] : []), ...(timed ? [AbortSignal.timeout(REQUEST_TIMEOUT_MS)] : [])];
  let target: URL;
  try { target = new URL(url); } catch { throw new ComputeError(`'${url}' is not a URL`); }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new ComputeError(`'${url}' is not an http or https URL`);
  const req = (target.protocol === 'https:' ? httpsRequest : httpRequest)(target, {
    method: init.method ?? 'GET',
    headers: typeof init.body === 'string' ? { ...init.headers, 'Content-Length': String(Buffer.byteLength(init.body)) } : init.headers,
    ...(signals.length ? { signal: AbortSignal.any(signals) } : {}),
  });
  const answered = new Promise<IncomingMessage>((resolve, reject) => { req.once('response', resolve); req.once('error', reject); });
  let sent: Promise<unknown> = Promise.resolve();
  if (init.body === undefined || typeof init.body === 'string') req.end(init.body);
  else sent = pipeline(init.body, req).catch((e: unknown) => e);
  let res: IncomingMessage;
  try {
    res = await answered;
  } catch (e) {
    throw requestError(url, e, signal);
  }
  const text = async () => {
    const parts: Buffer[] = [];
    try {
      for await (const chunk of res) parts.push(chunk as Buffer);
    } catch (e) {
      throw requestError(url, e, signal);
    }
    const failure = await sent;
    if (failure && (res.statusCode ?? 0) < 300) throw requestError(url, failure, signal);
    return Buffer.concat(parts).toString('utf8');
  };
  return {
    status: res.statusCode ?? 0,
    headers: res.headers,
    body: res,
    text,
    json: async () => {
      const t = await text();
      try { return JSON.parse(t) as unknown; } catch { throw new ComputeError(`${url}: the answer is not JSON`); }
    },
  };
}

function requestError(url: string, e: unknown, signal: AbortSignal | undefined): ComputeError {
  if (signal?.aborted) return new ComputeError('Operation cancelled', 'cancelled');
  const cause = (e as { cause?: { message?: string } }).cause?.message ?? (e as Error).message;
  return new ComputeError(`cannot reach ${url.startsWith('http') ? new URL(url).origin : url}: ${cause}`);
}

/** The message of an API error body ({"message": ...} or Glance's HTML-ish text), kept short. */
function errorText(text: string): string {
  try {
    const j = JSON.parse(text) as { message?: string; error?: { message?: string } };
    const m = j.message ?? j.error?.message;
    if (m) return m;
  } catch { /* not JSON */ }
  return text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
}
