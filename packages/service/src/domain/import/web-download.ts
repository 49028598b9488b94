/**
 * The web-download import source: the image data streamed from an http(s) URL.
 *
 * Which URLs are allowed is Glance's `[import_filtering_opts]` check as
 * glance/common/utils.py validate_import_uri makes it (allowed/disallowed schemes, hosts and
 * ports; an allow list, when set, makes the matching deny list ignored; a port is only
 * checked when the URL spells one). On top of it, and unlike Glance, the addresses the host
 * name resolves to are checked before connecting — loopback, link-local, private, shared
 * (CGNAT), multicast, reserved and unspecified addresses are refused unless the operator lists
 * their network in `allowedNetworks` — and the connection goes to exactly the address that was
 * checked (the check is the socket's DNS lookup), so a name that resolves differently the
 * second time (DNS rebinding) cannot reach what the check refused. Every redirect is checked
 * the same way, up to `maxRedirects` (urllib's limit, 10, by default). Plain http goes through
 * httpGet (http-get.ts: large reads, no per-read buffers), https through Node's client.
 */
import type { IncomingMessage, ClientRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { HttpError, badRequest } from '../../http.js';
import { httpGet } from './http-get.js';

export interface ImportFilteringOptions {
  allowedSchemes: string[];
  disallowedSchemes: string[];
  allowedHosts: string[];
  disallowedHosts: string[];
  allowedPorts: number[];
  disallowedPorts: number[];
  /** CIDR networks (`127.0.0.0/8`, `fd00::/8`) of otherwise refused addresses that downloads may reach. */
  allowedNetworks: string[];
  maxRedirects: number;
  /** Longest wait, in ms, for the connection, the response headers, and between two pieces of data. */
  timeoutMs: number;
}

/** Glance's defaults (glance/async_/flows/_internal_plugins/__init__.py). */
export const GLANCE_IMPORT_FILTERING: Omit<ImportFilteringOptions, 'allowedNetworks' | 'maxRedirects' | 'timeoutMs'> = {
  allowedSchemes: ['http', 'https'], disallowedSchemes: [], allowedHosts: [], disallowedHosts: [],
  allowedPorts: [80, 443], disallowedPorts: [],
};

/** The scheme, host and explicit port of a URL as Python's urlparse gives them (a default port spelled out still counts as given). */
function urlParts(uri: string): { scheme: string; host: string; port: number | null } | null {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)(?::([^/?#]*))?/.exec(uri);
  if (!m) return null;
  const portText = m[3] ?? '';
  if (portText !== '' && !/^\d+$/.test(portText)) return null;
  const port = portText === '' ? null : Number(portText);
  if (port !== null && port > 65535) return null;
  return { scheme: m[1]!.toLowerCase(), host: m[2]!.replace(/^\[|\]$/g, '').toLowerCase(), port };
}

/** glance/common/utils.py validate_import_uri: true when the URL passes the scheme, host and port lists. */
export function passesImportFiltering(uri: string, o: Omit<ImportFilteringOptions, 'allowedNetworks' | 'maxRedirects' | 'timeoutMs'>): boolean {
  if (!uri) return false;
  const p = urlParts(uri);
  if (!p) return false;
  const bannedSchemes = o.allowedSchemes.length ? [] : o.disallowedSchemes;
  const bannedHosts = o.allowedHosts.length ? [] : o.disallowedHosts;
  const bannedPorts = o.allowedPorts.length ? [] : o.disallowedPorts;
  if (!p.scheme || (o.allowedSchemes.length && !o.allowedSchemes.includes(p.scheme)) || bannedSchemes.includes(p.scheme)) return false;
  if (!p.host || (o.allowedHosts.length && !o.allowedHosts.includes(p.host)) || bannedHosts.includes(p.host)) return false;
  if (p.port && ((o.allowedPorts.length && !o.allowedPorts.includes(p.port)) || bannedPorts.includes(p.port))) return false;
  return true;
}

/** Glance's answer to a URL that does not pass (images.py import_image). */
export const filteringRefusal = (uri: string) => badRequest(`URI for web-download does not pass filtering: ${uri}`);

/** Addresses no download reaches unless the operator allows their network (RFC 6890's special-purpose registries). */
const SPECIAL: [string, number, 'ipv4' | 'ipv6', string][] = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified'], ['127.0.0.0', 8, 'ipv4', 'loopback'], ['10.0.0.0', 8, 'ipv4', 'private'],
  ['172.16.0.0', 12, 'ipv4', 'private'], ['192.168.0.0', 16, 'ipv4', 'private'], ['100.64.0.0', 10, 'ipv4', 'shared'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'], ['192.0.0.0', 24, 'ipv4', 'reserved'], ['198.18.0.0', 15, 'ipv4', 'reserved'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'], ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'], ['::1', 128, 'ipv6', 'loopback'], ['fc00::', 7, 'ipv6', 'private'],
  ['fe80::', 10, 'ipv6', 'link-local'], ['ff00::', 8, 'ipv6', 'multicast'],
];

/** Why an address is refused (its kind), or null when a download may connect to it. */
export class AddressPolicy {
  private readonly allowed = new BlockList();
  private readonly kinds = SPECIAL.map(([net, prefix, family, kind]) => {
    const list = new BlockList();
    list.addSubnet(net, prefix, family);
    return { list, kind };
  });

  constructor(allowedNetworks: string[]) {
    for (const cidr of allowedNetworks) {
      const [net, prefixText] = cidr.split('/');
      const family = isIP(net ?? '');
      if (!family) throw new Error(`not a network address: ${cidr}`);
      const prefix = prefixText === undefined ? (family === 4 ? 32 : 128) : Number(prefixText);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) throw new Error(`not a network prefix: ${cidr}`);
      this.allowed.addSubnet(net!, prefix, family === 4 ? 'ipv4' : 'ipv6');
    }
  }

  refusal(address: string): string | null {
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    // (BlockList matches an IPv4-mapped IPv6 address, ::ffff:127.0.0.1, against IPv4 rules)
    const hit = this.kinds.find((k) => k.list.check(address, family));
    if (!hit || this.allowed.check(address, family)) return null;
    return hit.kind;
  }
}

const addressRefusal = (host: string, address: string, kind: string) =>
  badRequest(`Image download from ${host} refused: it resolves to ${address}, a ${kind} address this service does not download from.`);

/** A response whose body is the image data, and the length it announced. */
export interface WebSource { body: Readable; length: number | null; url: string }

/** A response as openWebSource looks at it (Node's https client's, or httpGet's). */
interface Response { statusCode: number; statusMessage: string; headers: Record<string, string | string[] | undefined>; body: Readable }

/**
 * GET `uri` (after filtering and address checks, redirects followed and checked), resolving
 * with the body once a 2xx answer's headers arrive. Stalls longer than `timeoutMs`, on the
 * way or in the body, end it with an error; so does `signal`.
 */
export async function openWebSource(uri: string, o: ImportFilteringOptions, signal?: AbortSignal, headers: Record<string, string> = {}): Promise<WebSource> {
  const addresses = new AddressPolicy(o.allowedNetworks);
  let origin = '';
  let url = uri;
  for (let redirects = 0; ; redirects++) {
    if (!passesImportFiltering(url, o)) throw filteringRefusal(url);
    if (redirects === 0) origin = new URL(url).origin;
    // (`headers` may hold the user's token: they go to the first URL's origin only, never to where it redirects elsewhere)
    const res = await get(url, addresses, o.timeoutMs, signal, new URL(url).origin === origin ? headers : {});
    const status = res.statusCode;
    const location = res.headers.location;
    if ([301, 302, 303, 307, 308].includes(status) && typeof location === 'string' && location) {
      res.body.destroy();
      if (redirects >= o.maxRedirects) throw badRequest(`Image download from ${uri} stopped: more than ${o.maxRedirects} redirects.`);
      url = new URL(location, url).toString();
      continue;
    }
    if (status < 200 || status > 299) {
      res.body.destroy();
      throw badRequest(`Image download from ${url} failed: HTTP Error ${status}: ${res.statusMessage}`.trimEnd());
    }
    const cl = res.headers['content-length'];
    const length = typeof cl === 'string' && /^\d+$/.test(cl) ? Number(cl) : null;
    return { body: res.body, length, url };
  }
}

function get(url: string, addresses: AddressPolicy, timeoutMs: number, signal: AbortSignal | undefined, headers: Record<string, string>): Promise<Response> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) {
    const kind = addresses.refusal(host);
    if (kind) return Promise.reject(addressRefusal(host, host, kind));
  }
  // The socket's own lookup: what it connects to is exactly what was checked here.
  const lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, found: LookupAddress[]) => {
      if (err) return callback(err, '', 0);
      for (const a of found) {
        const kind = addresses.refusal(a.address);
        if (kind) return callback(addressRefusal(hostname, a.address, kind), '', 0);
      }
      if ((options as { all?: boolean }).all) (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, found);
      else callback(null, found[0]!.address, found[0]!.family);
    });
  };
  const timedOut = () => new HttpError(504, `Image download from ${u.host} timed out: nothing received for ${timeoutMs / 1000} s.`);
  const failed = (e: Error) => (e instanceof HttpError ? e : badRequest(`Image download from ${u.host} failed: ${e.message}`));
  if (u.protocol === 'http:') {
    const port = u.port ? Number(u.port) : 80;
    // (credentials in the URL are sent as Basic authorization, as Node's client sends them)
    const auth: Record<string, string> = u.username || u.password ? { Authorization: `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64')}` } : {};
    const request = httpGet({
      host, port, path: `${u.pathname}${u.search}`, hostHeader: u.host, lookup, timeoutMs, onTimeout: timedOut,
      headers: { 'User-Agent': 'diskhub-web-download', Accept: '*/*', ...auth, ...headers },
    });
    if (signal) {
      const onAbort = () => request.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        void request.response.then((r) => r.body.once('close', () => signal.removeEventListener('abort', onAbort)), () => signal.removeEventListener('abort', onAbort));
      }
    }
    return request.response.catch((e: Error) => { throw failed(e); });
  }
  return new Promise((resolve, reject) => {
    let res: IncomingMessage | undefined;
    const fail = (e: Error) => { if (res) res.destroy(e); else req.destroy(e); };
    const req: ClientRequest = httpsRequest(u, { method: 'GET', lookup, agent: false, headers: { 'User-Agent': 'diskhub-web-download', Accept: '*/*', ...headers } }, (r) => {
      res = r;
      resolve({ statusCode: r.statusCode ?? 0, statusMessage: r.statusMessage ?? '', headers: r.headers, body: r });
    });
    // An idle socket for timeoutMs (connecting, waiting for headers, or between pieces of the body).
    req.setTimeout(timeoutMs, () => fail(timedOut()));
    req.on('error', (e) => reject(failed(e)));
    if (signal) {
      const onAbort = () => fail(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      req.on('close', () => signal.removeEventListener('abort', onAbort));
    }
    req.end();
  });
}
