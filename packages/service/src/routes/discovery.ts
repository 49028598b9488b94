/**
 * Discovery and operations: the version documents Glance answers at / and /versions, what
 * the Images API offers (/v2/info/import, /v2/info/stores), the health check load balancers
 * poll, and Prometheus metrics.
 */
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Db } from '../db/connect.js';
import { replyJson, type Authenticate } from '../http.js';
import { IMPORT_METHODS } from '../domain/image-data.js';
import { findStatic, sendStatic, wantsHtml } from '../static.js';

/**
 * The Image API versions this service implements (newest first): what Glance 25 lists for a
 * deployment like this one — one store instead of enabled_backends (so no 2.8 and 2.10–2.13,
 * the multi-store APIs); 2.16 and 2.14 (the cache API) only with an image cache, as Glance
 * lists them only with image_cache_dir (glanceclient's cache commands look for 2.14).
 */
export const VERSIONS = ['2.15', '2.9', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];
const CACHE_VERSIONS = ['2.16', '2.15', '2.14'];

export interface DiscoveryDeps {
  db: Db;
  metrics: Registry;
  /** The dashboard's files, served to a browser opening `/`. */
  webDir: string | null;
  auth: Authenticate;
  storeId: string;
  /** Whether this node has an image cache (and so the cache API). */
  cacheEnabled?: boolean;
}

export function discoveryRoutes(app: FastifyInstance, deps: DiscoveryDeps): void {
  const list = deps.cacheEnabled ? [...CACHE_VERSIONS, ...VERSIONS.filter((v) => !CACHE_VERSIONS.includes(v))] : VERSIONS;
  const versions = (baseUrl: string) => list.map((v, i) => ({ id: `v${v}`, status: i === 0 ? 'CURRENT' : 'SUPPORTED', links: [{ rel: 'self', href: `${baseUrl}/v2/` }] }));
  app.get('/', async (request, reply) => {
    // A browser opening the service gets the dashboard; API clients get the versions document.
    const page = deps.webDir && wantsHtml(request.raw) ? await findStatic(deps.webDir, '/', request.raw) : null;
    if (page) { reply.hijack(); await sendStatic(page, request.raw, reply.raw); return; }
    return replyJson(reply, 300, { versions: versions(request.baseUrl) });
  });
  app.get('/versions', async (request, reply) => replyJson(reply, 200, { versions: versions(request.baseUrl) }));
  app.get('/v2/info/import', async (request, reply) => {
    await deps.auth(request);
    return replyJson(reply, 200, { 'import-methods': { description: 'Import methods available.', type: 'array', value: IMPORT_METHODS } });
  });
  app.get('/v2/info/stores', async (request, reply) => {
    await deps.auth(request);
    return replyJson(reply, 200, { stores: [{ id: deps.storeId, default: 'true', description: 'Local file store' }] });
  });
  app.get('/healthcheck', async (_request, reply) => {
    await deps.db.kysely.selectFrom('settings').select('name').limit(1).execute();
    return reply.code(200).header('content-type', 'text/plain').send(Buffer.from('OK'));
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await deps.metrics.metrics();
    return reply.code(200).header('content-type', deps.metrics.contentType).send(Buffer.from(text));
  });
}
