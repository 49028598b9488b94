/**
 * Discovery and operations: the version documents Glance answers at / and /versions, what
 * the Images API offers (/v2/info/import; the stores are stores.ts's), the health check load
 * balancers poll, and Prometheus metrics.
 */
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Db } from '../db/connect.js';
import { replyJson, type Authenticate } from '../http.js';
import { IMPORT_METHODS } from '../domain/image-data.js';
import { findStatic, sendStatic, wantsHtml } from '../static.js';

/**
 * The Image API versions this service implements (newest first): what Glance 25 lists for a
 * deployment like this one — no image cache (so no 2.14 and 2.16, the cache API), and stores
 * configured as enabled_backends (there is always at least one), so the multi-store versions
 * 2.8 and 2.10–2.13.
 */
export const VERSIONS = ['2.15', '2.13', '2.12', '2.11', '2.10', '2.9', '2.8', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];

export interface DiscoveryDeps {
  db: Db;
  metrics: Registry;
  /** The dashboard's files, served to a browser opening `/`. */
  webDir: string | null;
  auth: Authenticate;
}

export function discoveryRoutes(app: FastifyInstance, deps: DiscoveryDeps): void {
  const versions = (baseUrl: string) => VERSIONS.map((v, i) => ({ id: `v${v}`, status: i === 0 ? 'CURRENT' : 'SUPPORTED', links: [{ rel: 'self', href: `${baseUrl}/v2/` }] }));
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
  app.get('/healthcheck', async (_request, reply) => {
    await deps.db.kysely.selectFrom('settings').select('name').limit(1).execute();
    return reply.code(200).header('content-type', 'text/plain').send(Buffer.from('OK'));
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await deps.metrics.metrics();
    return reply.code(200).header('content-type', deps.metrics.contentType).send(Buffer.from(text));
  });
}
