/**
 * glance-direct on several API nodes that do not share a staging directory (Glance 25's
 * distributed image import): the node that stages an image records its own URL
 * (worker_self_reference_url) on the image as os_glance_stage_host, a property the API never
 * shows and clients cannot set. An import request for that image arriving at another node is
 * replayed against the stage host with the user's token (Glance's _proxy_request_to_host), and
 * the import task is tied to the stage host: only that node claims it (repo/tasks.ts).
 */
import { HttpError } from '../../http.js';
import { STAGE_HOST_PROPERTY } from '../../images-model.js';

export { STAGE_HOST_PROPERTY };

/**
 * Marks a request one node replayed against another: that one never replays it again (a stage
 * host URL that reaches a node other than the one that recorded it would otherwise loop).
 */
export const PROXIED_HEADER = 'x-diskhub-proxied-by';

/** Glance's proxy timeout (requests' timeout=60 in _proxy_request_to_host). */
const PROXY_TIMEOUT_MS = 60_000;

/**
 * This node's URL as other nodes reach it: the configured worker_self_reference_url, whose
 * port 0 (with the service on port 0: a free port) is the port the node listens on.
 */
export function selfReference(configured: string | undefined, listeningPort: number): string | undefined {
  if (!configured) return undefined;
  const u = new URL(configured);
  if (u.port !== '0') return configured;
  u.port = String(listeningPort);
  return u.href.replace(/\/+$/, '');
}

/**
 * The stage host a request for `properties`' image must be sent to: the recorded one when it is
 * not this node (Glance's is_proxyable); undefined when it is done here. `proxiedBy`: the
 * request was replayed here by that node, so this node was meant to be the stage host.
 */
export function otherStageHost(properties: Record<string, string>, self: string | undefined, proxiedBy?: string): string | undefined {
  const host = properties[STAGE_HOST_PROPERTY];
  if (!host || host === self) return undefined;
  if (proxiedBy !== undefined) throw new HttpError(502, `Stage host is unavailable: ${host} is answered by a node whose worker_self_reference_url is ${self ?? 'not set'}`);
  return host;
}

/**
 * Replay a request (an import, a delete) against the stage host with the user's token (as if
 * the user had called it), and answer as Glance does: the remote's 2xx is success; its 4xx/5xx
 * is returned with the same status; a host that cannot be reached is 504 (a refused or
 * timed-out connection) or 502 (any other failure), "Stage host is unavailable".
 */
export async function proxyToStageHost(host: string, self: string | undefined, method: 'POST' | 'DELETE', path: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<void> {
  let r: Response;
  try {
    r = await fetch(`${host}${path}`, {
      method,
      headers: { Accept: 'application/json', ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...(token ? { 'X-Auth-Token': token } : {}), [PROXIED_HEADER]: self ?? '', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      redirect: 'manual',
      signal: AbortSignal.timeout(PROXY_TIMEOUT_MS),
    });
  } catch (e) {
    throw new HttpError(unreachable(e) ? 504 : 502, 'Stage host is unavailable');
  }
  const text = await r.text().catch(() => '');
  if (r.status >= 200 && r.status < 300) return;
  // (Glance keeps only the remote's status and reason; its message is kept too, where there is one)
  throw new HttpError(r.status, remoteMessage(text) ?? r.statusText);
}

/** A connection that was refused, reset or timed out (requests' ConnectionError / ConnectTimeout). */
function unreachable(e: unknown): boolean {
  if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError')) return true;
  const code = (e as { cause?: { code?: string } }).cause?.code ?? '';
  return ['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET'].includes(code);
}

/** The message of an error answer in the API's JSON shape ({"code", "title", "message"}, or Glance's webob page). */
function remoteMessage(text: string): string | undefined {
  try {
    const j = JSON.parse(text) as Record<string, unknown>;
    const inner = (typeof j.error === 'object' && j.error) ? j.error as Record<string, unknown> : j;
    for (const k of ['message', 'explanation', 'title']) if (typeof inner[k] === 'string' && inner[k]) return inner[k] as string;
  } catch { /* not JSON */ }
  return undefined;
}
