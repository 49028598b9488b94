/**
 * The image service process: database, store, identity and the HTTP server that routes to
 * the Images v2 and Identity v3 APIs.
 */
import { createServer, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServiceConfig } from './config.js';
import { openDatabase, type Db } from './db/connect.js';
import { HttpError, Router, sendError, sendJson, type Ctx } from './http.js';
import { AuthError, Identity, type AuthContext } from './identity.js';
import { KeystoneClient } from './keystone-client.js';
import { identityRoutes } from './identity-api.js';
import { imageRoutes } from './images.js';
import { metadefsRoutes } from './metadefs.js';
import { jsonLogger, type Logger } from './log.js';
import { FileStore } from './store.js';
import { DownloadUrls } from './download-urls.js';
import { serveStatic, wantsHtml } from './static.js';

export interface Service {
  server: Server;
  /** http://bind:port of the listening server. */
  url: string;
  db: Db;
  identity: Identity;
  /** The bootstrap admin password when this start generated it. */
  generatedAdminPassword?: string;
  close(): Promise<void>;
}

const VERSIONS = ['2.16', '2.15', '2.13', '2.12', '2.11', '2.10', '2.9', '2.8', '2.7', '2.6', '2.5', '2.4', '2.3', '2.2', '2.1', '2.0'];

export async function startService(cfg: ServiceConfig, log: Logger = jsonLogger(process.stdout, cfg.logLevel)): Promise<Service> {
  await mkdir(cfg.dataDir, { recursive: true });
  const db = await openDatabase(cfg.databaseUrl, cfg.dataDir);
  const identity = new Identity(db, { tokenTtlSeconds: cfg.tokenTtlSeconds, region: cfg.region });
  // With an external Keystone, it is the only source of users and tokens: nothing is bootstrapped here.
  const external = cfg.keystoneUrl ? new KeystoneClient({
    url: cfg.keystoneUrl, username: cfg.keystoneUser, password: cfg.keystonePassword ?? '', project: cfg.keystoneProject,
  }) : null;
  const { generatedPassword } = external ? { generatedPassword: undefined } : await identity.bootstrap(cfg.adminPassword);
  const store = new FileStore(join(cfg.dataDir, 'images'));
  await store.init();

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'diskhub_http_requests_total', help: 'HTTP requests by method, route and status', labelNames: ['method', 'route', 'status'], registers: [registry] });
  const duration = new Histogram({ name: 'diskhub_http_request_duration_seconds', help: 'HTTP request duration', labelNames: ['method', 'route'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: [registry] });

  const router = new Router();
  const auth = async (ctx: Ctx): Promise<AuthContext> => {
    const token = ctx.req.headers['x-auth-token'];
    const authUri = external ? cfg.keystoneUrl!.replace(/\/v3\/?$/, '') : `${ctx.baseUrl}/identity`;
    const unauthorized = () => new HttpError(401, 'The request you have made requires authentication.', { 'WWW-Authenticate': `Keystone uri="${authUri}"` });
    if (typeof token !== 'string' || !token) throw unauthorized();
    try { return await (external ?? identity).validate(token); } catch (e) {
      if (e instanceof AuthError || !external) throw unauthorized();
      log.error('identity service unavailable', { error: (e as Error).message });
      throw new HttpError(503, 'The identity service is unavailable; try again later.');
    }
  };
  const versions = (ctx: Ctx) => VERSIONS.map((v, i) => ({ id: `v${v}`, status: i === 0 ? 'CURRENT' : 'SUPPORTED', links: [{ rel: 'self', href: `${ctx.baseUrl}/v2/` }] }));
  router.add('GET', '/', (ctx) => sendJson(ctx, 300, { versions: versions(ctx) }));
  router.add('GET', '/versions', (ctx) => sendJson(ctx, 200, { versions: versions(ctx) }));
  router.add('GET', '/healthcheck', async (ctx) => {
    await db.kysely.selectFrom('settings').select('name').limit(1).execute();
    ctx.res.writeHead(200, { 'Content-Type': 'text/plain' });
    ctx.res.end('OK');
  });
  router.add('GET', '/metrics', async (ctx) => {
    const text = await registry.metrics();
    ctx.res.writeHead(200, { 'Content-Type': registry.contentType });
    ctx.res.end(text);
  });
  if (!external) identityRoutes(router, db, identity);
  await metadefsRoutes(router, db, auth);
  const node = `${hostname()}:${cfg.dataDir}`;
  const images = imageRoutes(router, db, store, auth, {
    imageSizeCap: cfg.imageSizeCap, projectImageQuota: cfg.projectImageQuota, projectStorageQuota: cfg.projectStorageQuota, limitMax: cfg.limitMax, limitDefault: cfg.limitDefault,
    stagingDir: join(cfg.dataDir, 'staging'), node, downloadUrls: await DownloadUrls.open(db),
  }, log);
  await images.recover();
  const webDir = cfg.webDir && existsSync(join(cfg.webDir, 'index.html')) ? resolve(cfg.webDir) : null;

  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, maxHeaderSize: 16384 }, (req, res) => {
    const started = process.hrtime.bigint();
    const requestId = `req-${randomUUID()}`;
    res.setHeader('X-OpenStack-Request-Id', requestId);
    let url: URL;
    try { url = new URL(req.url ?? '/', 'http://localhost'); } catch { url = new URL('http://localhost/'); }
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const baseUrl = cfg.publicUrl ?? `http://${req.headers.host ?? `${cfg.bind}:${cfg.port}`}`;
    const ctx: Ctx = { req, res, url, params: {}, requestId, baseUrl, route: 'unmatched', api: path.startsWith('/identity') ? 'identity' : path.startsWith('/v2') ? 'image' : 'other' };
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      requests.inc({ method: req.method ?? '', route: ctx.route, status: String(res.statusCode) });
      duration.observe({ method: req.method ?? '', route: ctx.route }, seconds);
      if (ctx.route !== '/metrics' && ctx.route !== '/healthcheck') {
        log.info('request', { request_id: requestId, method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(seconds * 1e4) / 10, user: (ctx as { user?: string }).user });
      }
    });
    void (async () => {
      // A browser opening the service gets the dashboard; API clients get the versions document.
      if (webDir && path === '/' && wantsHtml(req) && await serveStatic(webDir, '/', req, res)) { ctx.route = 'static'; return; }
      const m = router.match(req.method ?? 'GET', path);
      if (!m && webDir && ctx.api === 'other' && await serveStatic(webDir, path, req, res)) { ctx.route = 'static'; return; }
      if (!m) throw new HttpError(404, `The resource could not be found.`);
      if ('allowed' in m) throw new HttpError(405, `The method ${req.method} is not allowed for this resource.`, { Allow: [...new Set(m.allowed)].join(', ') });
      ctx.params = m.params;
      ctx.route = m.pattern;
      await m.handler(ctx);
    })().catch((e: unknown) => {
      if (e instanceof HttpError) {
        sendError(ctx, e.status, e.message, e.headers);
      } else {
        log.error('unhandled error', { request_id: requestId, error: (e as Error)?.stack ?? String(e) });
        sendError(ctx, 500, 'The server has either erred or is incapable of performing the requested operation.');
      }
      // A request whose body we did not read (an error before the upload started) is
      // drained, so the client sees the answer rather than a reset; huge bodies get cut.
      if (!req.complete) {
        let seen = 0;
        req.on('data', (c: Buffer) => { seen += c.length; if (seen > 64 << 20) req.destroy(); });
        req.resume();
      }
    });
  });
  // Idle keep-alive connections stay open long enough for clients that pause between calls.
  server.keepAliveTimeout = 30_000;
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.bind, () => { server.off('error', reject); resolve(); });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : cfg.port;
  const url = `http://${cfg.bind.includes(':') ? `[${cfg.bind}]` : cfg.bind}:${port}`;
  log.info('listening', { url, data_dir: cfg.dataDir, database: db.dialect });

  let closing: Promise<void> | null = null;
  return {
    server, url, db, identity, generatedAdminPassword: generatedPassword,
    close: () => closing ??= (async () => {
      // Stop accepting, let in-flight uploads and imports finish, then release the database.
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // A client that stalls does not hold the process forever: after the grace period its
      // connection is cut, and the upload cleans up as any interrupted upload does.
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, cfg.shutdownGraceSeconds * 1000); });
      await Promise.race([Promise.allSettled([...images.inFlight]), grace]);
      clearTimeout(timer);
      server.closeAllConnections();
      await Promise.allSettled([...images.inFlight]);
      await stopped;
      await db.close();
    })(),
  };
}
