/**
 * A connection to one Swift account: authentication (tempauth/v1 or Keystone v3) and the
 * object API's requests over keep-alive sockets, as python-swiftclient's Connection does for
 * glance_store. A request answered 401 (the token expired or was revoked) authenticates again
 * and is sent once more. Errors are StoreErrors whose messages name the URL and status, never
 * a key, a password or a token.
 *
 * Swift object API: https://docs.openstack.org/api-ref/object-store/
 * Keystone v3 password auth and the service catalog: https://docs.openstack.org/api-ref/identity/v3/
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage, ClientRequest } from 'node:http';
import { StoreError } from '../store.js';
import { readAll } from '../remote-read.js';

export interface SwiftAuthOptions {
  /** Glance's auth_address: the tempauth URL (…/auth/v1.0) or Keystone's v3 URL (…/v3). */
  authAddress: string;
  /** Glance's auth_version: '1' (tempauth, swauth) or '3' (Keystone v3). */
  authVersion: '1' | '3';
  /** v1: "account:user"; v3: "project:user" (Glance's reference form) or a bare user with `project`. */
  user: string;
  key: string;
  project?: string;
  userDomainId?: string;
  projectDomainId?: string;
  /** swift_store_region: the catalog endpoint's region (needed when there are several). */
  region?: string;
  /** swift_store_endpoint_type: publicURL, internalURL or adminURL. */
  endpointType?: string;
  /** swift_store_service_type (object-store). */
  serviceType?: string;
  /** swift_store_endpoint: use this storage URL instead of the one auth returns. */
  endpoint?: string;
  /** Connect and idle timeout of each request, in milliseconds. */
  timeoutMs: number;
  /** swift_store_auth_insecure: do not check the TLS certificate. */
  insecure?: boolean;
}

export interface SwiftResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A request's answer when the caller reads the body itself (GET streams). */
export interface SwiftStream {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: IncomingMessage;
}

const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });
const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 32 });
const insecureAgent = new https.Agent({ keepAlive: true, maxSockets: 32, rejectUnauthorized: false });

export class SwiftConnection {
  private storageUrl: string | null = null;
  private token: string | null = null;
  private authenticating: Promise<void> | null = null;
  /** How many times this connection authenticated (tests check that a 401 re-authenticates). */
  authCount = 0;

  constructor(private readonly opts: SwiftAuthOptions) {}

  /** Authenticate now (init: bad credentials or an unreachable endpoint show at start). */
  async connect(): Promise<void> {
    await this.authenticate(null);
  }

  /** The account's storage URL (known after connect). */
  get url(): string | null {
    return this.storageUrl;
  }

  private authenticate(staleToken: string | null): Promise<void> {
    // Concurrent requests that all saw the same token rejected share one authentication.
    if (this.token !== null && this.token !== staleToken) return Promise.resolve();
    this.authenticating ??= (this.opts.authVersion === '3' ? this.keystoneV3() : this.tempauth())
      .finally(() => { this.authenticating = null; });
    return this.authenticating;
  }

  private async tempauth(): Promise<void> {
    const o = this.opts;
    const r = await this.raw('GET', o.authAddress, { 'X-Auth-User': o.user, 'X-Auth-Key': o.key }, null, `Swift authentication at ${o.authAddress}`);
    if (r.status === 401 || r.status === 403) throw new StoreError(`Swift authentication at ${o.authAddress} refused user ${o.user} (${r.status}): check the user and key`, 'failed');
    if (r.status >= 300) throw statusError(`Swift authentication at ${o.authAddress}`, r.status);
    const storage = header(r.headers, 'x-storage-url');
    const token = header(r.headers, 'x-auth-token') ?? header(r.headers, 'x-storage-token');
    if (!storage || !token) throw new StoreError(`Swift authentication at ${o.authAddress} answered without X-Storage-Url and X-Auth-Token`, 'failed');
    this.storageUrl = (o.endpoint ?? storage).replace(/\/+$/, '');
    this.token = token;
    this.authCount++;
  }

  private async keystoneV3(): Promise<void> {
    const o = this.opts;
    let project = o.project;
    let user = o.user;
    if (project === undefined) {
      const colon = o.user.indexOf(':');
      if (colon < 0) throw new StoreError('Swift with Keystone v3 needs the user as "project:user" (or a project option)', 'failed');
      project = o.user.slice(0, colon);
      user = o.user.slice(colon + 1);
    }
    const url = `${o.authAddress.replace(/\/+$/, '')}/auth/tokens`;
    const body = JSON.stringify({
      auth: {
        identity: { methods: ['password'], password: { user: { name: user, domain: { id: o.userDomainId ?? 'default' }, password: o.key } } },
        scope: { project: { name: project, domain: { id: o.projectDomainId ?? 'default' } } },
      },
    });
    const r = await this.raw('POST', url, { 'Content-Type': 'application/json', Accept: 'application/json' }, Buffer.from(body), `Keystone authentication at ${o.authAddress}`);
    if (r.status === 401 || r.status === 403) throw new StoreError(`Keystone at ${o.authAddress} refused user ${user} in project ${project} (${r.status}): check the user, key and project`, 'failed');
    if (r.status !== 201 && r.status !== 200) throw statusError(`Keystone authentication at ${o.authAddress}`, r.status);
    const token = header(r.headers, 'x-subject-token');
    let catalog: CatalogEntry[];
    try {
      catalog = (JSON.parse(r.body.toString('utf8')) as { token: { catalog?: CatalogEntry[] } }).token.catalog ?? [];
    } catch {
      throw new StoreError(`Keystone at ${o.authAddress} answered with a body that is not a token`, 'failed');
    }
    if (!token) throw new StoreError(`Keystone at ${o.authAddress} answered without X-Subject-Token`, 'failed');
    this.storageUrl = (o.endpoint ?? catalogEndpoint(catalog, o)).replace(/\/+$/, '');
    this.token = token;
    this.authCount++;
  }

  /** The URL of a container, or of an object in it (names are percent-encoded here). */
  objectUrl(container: string, object?: string, query?: string): string {
    // An empty container name addresses the account itself (its container listing).
    let url = container === '' ? this.storageUrl! : `${this.storageUrl}/${encodeURIComponent(container)}`;
    if (object !== undefined) url += `/${object.split('/').map(encodeURIComponent).join('/')}`;
    return query ? `${url}?${query}` : url;
  }

  /**
   * An authenticated request with a buffered body and answer; a 401 authenticates again and
   * repeats it once. `path` is (container, object?, query?).
   */
  async request(method: string, path: [string, string?, string?], headers: Record<string, string> = {}, body: Buffer | null = null): Promise<SwiftResponse> {
    await this.authenticate(null);
    for (let attempt = 0; ; attempt++) {
      const token = this.token!;
      const r = await this.raw(method, this.objectUrl(...path), { ...headers, 'X-Auth-Token': token }, body, describe(method, path));
      if (r.status === 401 && attempt === 0) { this.token = this.token === token ? null : this.token; await this.authenticate(token); continue; }
      return r;
    }
  }

  /** An authenticated GET whose body the caller reads (a 401 authenticates again once). */
  async stream(path: [string, string?, string?], headers: Record<string, string> = {}): Promise<SwiftStream> {
    await this.authenticate(null);
    for (let attempt = 0; ; attempt++) {
      const token = this.token!;
      const req = this.client('GET', this.objectUrl(...path), { ...headers, 'X-Auth-Token': token }, describe('GET', path));
      req.end();
      const res = await responseOf(req, describe('GET', path));
      if (res.statusCode === 401 && attempt === 0) { res.resume(); this.token = this.token === token ? null : this.token; await this.authenticate(token); continue; }
      return { status: res.statusCode ?? 0, headers: res.headers, body: res };
    }
  }

  /**
   * A PUT whose body is streamed (chunked): resolves once Swift asked for the body
   * (Expect: 100-continue), so a 401 or a missing container is answered before any data is
   * sent and the request can be made again with nothing lost.
   */
  async upload(path: [string, string?, string?], headers: Record<string, string> = {}): Promise<StreamingPut> {
    await this.authenticate(null);
    for (let attempt = 0; ; attempt++) {
      const token = this.token!;
      const what = describe('PUT', path);
      const req = this.client('PUT', this.objectUrl(...path), { ...headers, 'X-Auth-Token': token, 'Transfer-Encoding': 'chunked', Expect: '100-continue' }, what);
      req.flushHeaders();
      const early = await new Promise<IncomingMessage | null>((resolve, reject) => {
        req.once('continue', () => resolve(null));
        responseOf(req, what).then(resolve, reject);
      });
      if (early) {
        const body = await readAll(early).catch(() => Buffer.alloc(0));
        req.destroy();
        if (early.statusCode === 401 && attempt === 0) { this.token = this.token === token ? null : this.token; await this.authenticate(token); continue; }
        throw statusError(what, early.statusCode ?? 0, body);
      }
      return new StreamingPut(req, what);
    }
  }

  private client(method: string, url: string, headers: Record<string, string>, what: string): ClientRequest {
    const u = new URL(url);
    const secure = u.protocol === 'https:';
    const agent = secure ? (this.opts.insecure ? insecureAgent : httpsAgent) : httpAgent;
    const req = (secure ? https : http).request(u, { method, headers, agent, timeout: this.opts.timeoutMs });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${this.opts.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    return req;
  }

  /** One request with a buffered body and answer; transport failures become 'unavailable' StoreErrors. */
  private async raw(method: string, url: string, headers: Record<string, string>, body: Buffer | null, what: string): Promise<SwiftResponse> {
    const req = this.client(method, url, body ? { ...headers, 'Content-Length': String(body.length) } : headers, what);
    req.end(body ?? undefined);
    const res = await responseOf(req, what);
    return { status: res.statusCode ?? 0, headers: res.headers, body: await readAll(res) };
  }

  close(): void {
    this.token = null;
  }
}

/** A streamed PUT in progress: write its body, then end it and get Swift's answer. */
export class StreamingPut {
  private failed: unknown = null;
  private readonly answer: Promise<IncomingMessage>;

  constructor(private readonly req: ClientRequest, private readonly what: string) {
    this.answer = responseOf(req, what);
    this.answer.catch((e) => { this.failed = e; });
  }

  /**
   * Send chunks; resolves once the socket has taken them all (the caller reuses its buffers
   * after that, so a write that only queued them would not do).
   */
  async write(chunks: Buffer[]): Promise<void> {
    if (this.failed) throw this.failed;
    if (chunks.length === 0) return;
    await new Promise<void>((resolve, reject) => {
      for (let i = 0; i < chunks.length - 1; i++) this.req.write(chunks[i]!);
      this.req.write(chunks[chunks.length - 1]!, (err) => (err ? reject(err) : resolve()));
      this.answer.catch(reject);
    });
    if (this.failed) throw this.failed;
  }

  /** End the body; resolves with the object's ETag once Swift stored it. */
  async end(): Promise<string> {
    this.req.end();
    const res = await this.answer;
    const body = await readAll(res);
    if (res.statusCode !== 201) throw statusError(this.what, res.statusCode ?? 0, body);
    return (header(res.headers, 'etag') ?? '').replace(/"/g, '');
  }

  /** Break the request off: Swift stores nothing for a PUT whose body did not end. */
  abort(): void {
    this.req.destroy();
    this.answer.catch(() => {});
  }
}

interface CatalogEntry {
  type: string;
  endpoints: { interface: string; region?: string; region_id?: string; url: string }[];
}

/** The object-store endpoint of the catalog for the configured interface and region. */
function catalogEndpoint(catalog: CatalogEntry[], o: SwiftAuthOptions): string {
  const type = o.serviceType ?? 'object-store';
  const iface = (o.endpointType ?? 'publicURL').replace(/URL$/, '');
  const endpoints = catalog.filter((s) => s.type === type).flatMap((s) => s.endpoints).filter((e) => e.interface === iface);
  const inRegion = o.region ? endpoints.filter((e) => e.region_id === o.region || e.region === o.region) : endpoints;
  if (inRegion.length === 0) {
    throw new StoreError(`the Keystone catalog has no ${type} endpoint (${iface}${o.region ? `, region ${o.region}` : ''}); regions: ${[...new Set(endpoints.map((e) => e.region_id ?? e.region))].join(', ') || 'none'}`, 'failed');
  }
  const regions = new Set(inRegion.map((e) => e.region_id ?? e.region));
  if (regions.size > 1) throw new StoreError(`the Keystone catalog has ${type} endpoints in several regions (${[...regions].join(', ')}): set swift_store_region`, 'failed');
  return inRegion[0]!.url;
}

function header(headers: http.IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function describe(method: string, [container, object, query]: [string, string?, string?]): string {
  return `Swift ${method} ${container}${object !== undefined ? `/${object}` : ''}${query ? `?${query}` : ''}`;
}

/** The response of a sent request; a transport failure becomes an 'unavailable' StoreError. */
function responseOf(req: ClientRequest, what: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', (e: NodeJS.ErrnoException) => {
      reject(Object.assign(new StoreError(`${what}: ${e.code === 'ETIMEDOUT' ? e.message : `cannot reach the server (${e.code ?? e.message})`}`, 'unavailable'), { code: e.code }));
    });
  });
}

/** A StoreError for an unexpected status: 404 not-found, 413/507 full, 5xx unavailable. */
export function statusError(what: string, status: number, body?: Buffer): StoreError {
  const kind = status === 404 ? 'not-found' : status === 413 || status === 507 ? 'full' : status >= 500 || status === 429 ? 'unavailable' : 'failed';
  const detail = body?.length ? `: ${body.toString('utf8', 0, Math.min(body.length, 200)).replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim()}` : '';
  return new StoreError(`${what}: ${status}${detail}`, kind);
}
