/**
 * The image service process: database, store, identity and the HTTP server (Fastify) that
 * routes to the Images v2 and Identity v3 APIs.
 *
 * ## The route-module contract
 *
 * Each resource is one module under `routes/` exporting a plain registration function:
 *
 *     export function imageRoutes(app: FastifyInstance, deps: ImageDeps): void
 *
 * - `deps` is an interface the module declares for what it needs (the database or a
 *   repository, a domain service, `auth`, `policy`, options); server.ts builds it. A module
 *   imports no other module's state and never reads the config itself.
 * - server.ts registers each module in its own Fastify scope (`app.register`), after
 *   `acceptJson(scope)` (http.ts): bodies of application/json and the JSON-patch media types
 *   arrive parsed (1 MiB cap, malformed JSON a 400 in Glance's words); every other media type
 *   (application/octet-stream uploads included) is left unread, so a route streams
 *   `request.raw` itself — nothing is ever buffered. `jsonBody(request)` gives the JSON body
 *   (Glance's "Body expected in request." when there is none).
 * - Authentication: `await deps.auth(request)` gives the AuthContext (401 with Keystone's
 *   WWW-Authenticate otherwise). Authorization is the domain's: it asks the policy (policy/,
 *   Glance's rule names and defaults, DISKHUB_POLICY_FILE) through ImageApiPolicy and
 *   MemberApiPolicy; a route never compares roles itself. PolicyNotAuthorized answers 403,
 *   PolicyHidesImage 404.
 * - Errors: throw `HttpError` (or badRequest/forbidden/notFound/conflict); the server's error
 *   handler renders it as the API owning the path does (webob's HTML/JSON/plain from Accept
 *   under /v2, Keystone's {"error": {...}} under /identity, see `request.api`), drains an
 *   unread upload body, and answers 500 (logged) for anything else.
 * - Replies: `replyJson(reply, status, body, headers)` / `replyEmpty(reply, status)`; links
 *   use `request.baseUrl` (the configured public URL or the bound address, never the client's
 *   Host header). HEAD is answered from GET routes; 405 with Allow is computed here from the
 *   registered routes; every response carries X-OpenStack-Request-Id (`request.id`).
 * - A route that writes the raw response (a download stream) calls `reply.hijack()` first.
 */
import { createServer, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import Fastify, { LogController, type FastifyError } from 'fastify';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServiceConfig } from './config.js';
import { openDatabase, type Db } from './db/connect.js';
import { HttpError, JSON_BODY_LIMIT, acceptJson, apiOf, drainUnread, renderError, storageError, type Authenticate } from './http.js';
import { AuthError, Identity } from './identity.js';
import { KeystoneClient } from './keystone-client.js';
import { identityRoutes } from './routes/identity.js';
import { metadefRoutes } from './routes/metadefs.js';
import { MetadefService } from './domain/metadefs.js';
import { MetadefRepo } from './repo/metadefs.js';
import { jsonLogger, type Logger } from './log.js';
import { FileStore } from './stores/file/file-store.js';
import { openConfiguredStores } from './stores/configured.js';
import { StoreInfo } from './domain/stores.js';
import { storeFailure } from './domain/store-failures.js';
import { redactCredentials } from './stores/credentials.js';
import { StoreError } from './stores/store.js';
import { storeRoutes } from './routes/stores.js';
import { DownloadUrls } from './download-urls.js';
import { findStatic, sendStatic } from './static.js';
import { discoveryRoutes } from './routes/discovery.js';
import { imageRoutes } from './routes/images.js';
import { imageDataRoutes } from './routes/image-data.js';
import { memberRoutes } from './routes/members.js';
import { tagRoutes } from './routes/tags.js';
import { schemaRoutes } from './routes/schemas.js';
import { extensionRoutes } from './routes/extensions.js';
import { ImageRepo } from './repo/images.js';
import { ImageService } from './domain/images.js';
import { ImageDataService } from './domain/image-data.js';
import { Scrubber } from './domain/scrubber.js';
import { ImageCache } from './cache/image-cache.js';
import { ImageCacheService } from './domain/image-cache.js';
import { cacheRoutes } from './routes/cache.js';
import { ScrubRepo } from './repo/scrubs.js';
import { Policy, PolicyNotAuthorized, PolicyHidesImage } from './policy/index.js';
import { TaskRepo } from './repo/tasks.js';
import { TaskService } from './domain/tasks.js';
import { IMPORT_TASK, ImportService } from './domain/import/index.js';
import { catalogImageEndpoints, importOptions, taskOptions } from './import-config.js';
import { findImageEndpoint } from './domain/import/glance-download.js';
import { selfReference } from './domain/import/stage-host.js';
import { taskRoutes } from './routes/tasks.js';

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

export async function startService(cfg: ServiceConfig, log: Logger = jsonLogger(process.stdout, cfg.logLevel)): Promise<Service> {
  // A policy file that cannot be used stops the start before anything is opened.
  const policy = await Policy.load(cfg.policyFile);
  await mkdir(cfg.dataDir, { recursive: true });
  // A store that cannot be used stops the start before the database is opened.
  const stores = await openConfiguredStores(cfg);
  const db = await openDatabase(cfg.databaseUrl, cfg.dataDir);
  const identity = new Identity(db, {
    tokenTtlSeconds: cfg.tokenTtlSeconds, region: cfg.region, otherImageEndpoints: catalogImageEndpoints(cfg.catalogImageEndpoints),
    lockoutFailureAttempts: cfg.lockoutFailureAttempts, lockoutDurationSeconds: cfg.lockoutDuration,
  });
  // With an external Keystone, it is the only source of users and tokens: nothing is bootstrapped here.
  const external = cfg.keystoneUrl ? new KeystoneClient({
    url: cfg.keystoneUrl, username: cfg.keystoneUser, password: cfg.keystonePassword ?? '', project: cfg.keystoneProject,
  }) : null;
  const { generatedPassword } = external ? { generatedPassword: undefined } : await identity.bootstrap(cfg.adminPassword);

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'diskhub_http_requests_total', help: 'HTTP requests by method, route and status', labelNames: ['method', 'route', 'status'], registers: [registry] });
  const duration = new Histogram({ name: 'diskhub_http_request_duration_seconds', help: 'HTTP request duration', labelNames: ['method', 'route'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: [registry] });

  // The address the service is reached at, for links, the token catalog and signed URLs:
  // the configured public URL, else the bound address (known once listening). Never the
  // client's Host header, which anyone can set.
  let selfUrl = cfg.publicUrl ?? '';

  const auth: Authenticate = async (request) => {
    const headers = request.headers;
    const token = headers['x-auth-token'];
    const authUri = external ? cfg.keystoneUrl!.replace(/\/v3\/?$/, '') : `${selfUrl}/identity`;
    const unauthorized = () => new HttpError(401, 'The request you have made requires authentication.', { 'WWW-Authenticate': `Keystone uri="${authUri}"` });
    if (typeof token !== 'string' || !token) throw unauthorized();
    try {
      const a = await (external ?? identity).validate(token);
      request.user = a.userId;
      return a;
    } catch (e) {
      if (e instanceof AuthError || !external) throw unauthorized();
      log.error('identity service unavailable', { error: (e as Error).message });
      throw new HttpError(503, 'The identity service is unavailable; try again later.');
    }
  };
  const webDir = cfg.webDir && existsSync(join(cfg.webDir, 'index.html')) ? resolve(cfg.webDir) : null;

  const app = Fastify({
    serverFactory: (handler) => createServer({ requestTimeout: 0, headersTimeout: 60_000, maxHeaderSize: 16384, keepAliveTimeout: 30_000 }, handler),
    loggerInstance: log.pino,
    // One access-log line per request is written below (with the route and the user).
    logController: new LogController({ disableRequestLogging: true }),
    // No per-request child logger (a pino child per request, unused: the access line above
    // carries the request id).
    childLoggerFactory: (logger) => logger,
    genReqId: () => `req-${randomUUID()}`,
    requestIdHeader: false,
    bodyLimit: JSON_BODY_LIMIT,
    // Bodies are checked as Glance's jsonschema checks them: a number is not a string.
    // Unknown keywords stay errors (a typo in a schema is caught at start), except Glance's
    // `is_base` annotation in the served image schema, which requests are checked against too.
    // Types are not demanded next to `properties` inside if/then (the patch schemas). Defaults
    // in the served schemas (metadefs' minLength: 0, …) are documentation: a request is not filled in.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, keywords: ['is_base'], strictTypes: false } },
    return503OnClosing: false,
    // A path segment is a tag, a member or a metadef name: their own schemas and checks bound
    // them (tags 255 characters, in Glance's words), not the router's default of 100, whose
    // 414 is Fastify's own shape rather than the API's.
    routerOptions: { maxParamLength: 4096 },
    // Paths are matched as the hand-written router did: repeated and trailing slashes do not
    // count — except that /v2/images/ names an image with an empty id (Glance: 404).
    rewriteUrl: (req) => {
      const url = req.url ?? '/';
      const q = url.indexOf('?');
      let path = (q < 0 ? url : url.slice(0, q)).replace(/\/{2,}/g, '/');
      if (path !== '/v2/images/') path = path.replace(/\/+$/, '') || '/';
      return q < 0 ? path : path + url.slice(q);
    },
  });
  app.decorateRequest('api', 'other');
  app.decorateRequest('baseUrl', '');
  app.decorateRequest('user', undefined);
  app.decorateRequest('bodyRead', false);

  // The root parses no body: modules' scopes add JSON (acceptJson); everything else reaches
  // its route (or the 404/405 answer) unread.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));

  /** Every route's method and path pattern, for 405 and its Allow header. */
  const patterns: { method: string; parts: string[] }[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) patterns.push({ method, parts: r.url.split('/').filter(Boolean) });
  });

  app.addHook('onRequest', (request, reply, done) => {
    const started = process.hrtime.bigint();
    const url = request.url;
    const path = url.split('?', 1)[0]!;
    request.api = apiOf(path);
    request.baseUrl = selfUrl;
    reply.raw.setHeader('X-OpenStack-Request-Id', request.id);
    // Answers are what their Content-Type says: a browser must not sniff an image's data or
    // a JSON error into HTML.
    reply.raw.setHeader('X-Content-Type-Options', 'nosniff');
    reply.raw.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = (reply.raw as { diskhubRoute?: string }).diskhubRoute ?? (request.is404 ? 'unmatched' : request.routeOptions.url ?? 'unmatched');
      requests.inc({ method: request.method, route, status: String(reply.raw.statusCode) });
      duration.observe({ method: request.method, route }, seconds);
      if (route !== '/metrics' && route !== '/healthcheck') {
        log.info('request', { request_id: request.id, method: request.method, path, status: reply.raw.statusCode, ms: Math.round(seconds * 1e4) / 10, user: request.user });
      }
    });
    done();
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    let status: number;
    let message: string;
    let headers: Record<string, string> = {};
    let storage: HttpError | null;
    if (err instanceof HttpError) {
      ({ status, message, headers } = err);
    } else if (err instanceof PolicyNotAuthorized || err instanceof PolicyHidesImage) {
      ({ status, message } = err);
    } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      status = 413; message = `Request body is larger than ${JSON_BODY_LIMIT} bytes.`;
    } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      status = 415; message = `The request media type ${request.headers['content-type'] || '(none)'} is not supported by this server.`;
    } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      status = err.statusCode; message = err.message;
    } else if (err instanceof StoreError && (storage = storeFailure(err, null, 'answering the request'))) {
      log.error('store failure', { request_id: request.id, error: storage.message });
      ({ status, message } = storage);
    } else if ((storage = storageError(err))) {
      log.error('storage full', { request_id: request.id, error: String(err?.message ?? err) });
      ({ status, message } = storage);
    } else {
      log.error('unhandled error', { request_id: request.id, error: redactCredentials(err?.stack ?? String(err)) });
      status = 500; message = 'The server has either erred or is incapable of performing the requested operation.';
    }
    drainUnread(request.raw);
    if (reply.raw.headersSent) { reply.raw.destroy(); return; }
    const { body, type } = renderError(request.api, request.headers.accept, status, message);
    return reply.code(status).headers(headers).header('content-type', type).send(Buffer.from(body));
  });

  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?', 1)[0]!;
    // (/v2/images/ with its empty id matches nothing, not the list's methods.)
    const segs = path.endsWith('/') ? null : path.split('/').filter(Boolean);
    const allowed = new Set<string>();
    for (const p of segs ? patterns : []) {
      if (p.parts.length === segs!.length && p.parts.every((part, i) => part.startsWith(':') || part === segs![i])) allowed.add(p.method);
    }
    if (allowed.size) throw new HttpError(405, `The method ${request.method} is not allowed for this resource.`, { Allow: [...allowed].filter((m) => m !== 'HEAD').join(', ') });
    // The dashboard's files and its client-side routes (only where no API route matched).
    const file = webDir && request.api === 'other' ? await findStatic(webDir, path, request.raw) : null;
    if (file) {
      (reply.raw as { diskhubRoute?: string }).diskhubRoute = 'static';
      reply.hijack();
      await sendStatic(file, request.raw, reply.raw);
      return;
    }
    throw new HttpError(404, 'The resource could not be found.');
  });

  const node = cfg.nodeId ?? `${hostname()}:${cfg.dataDir}`;
  // worker_self_reference_url (its port 0: the port listened on, known once listening).
  let selfReferenceUrl: string | undefined;
  const stageHost = () => selfReferenceUrl;
  const repo = new ImageRepo(db);
  const stagingDir = join(cfg.dataDir, 'staging');
  const images = new ImageService(repo, stores, policy, { projectImageQuota: cfg.projectImageQuota, stagingDir, showMultipleLocations: cfg.showMultipleLocations, delayedDelete: cfg.delayedDelete, stageHost }, log);
  const data = new ImageDataService(images, repo, stores, {
    imageSizeCap: cfg.imageSizeCap, projectStorageQuota: cfg.projectStorageQuota, stagingDir, node, downloadUrls: await DownloadUrls.open(db), stageHost,
  }, log);
  // Locations written before they were URLs are bare file names of the file store `file`.
  const legacy = stores.get('file');
  if (legacy instanceof FileStore) {
    const upgraded = await repo.upgradeBareLocations(legacy.id, (key) => legacy.locationOf(key));
    if (upgraded) log.info('store locations upgraded to URLs', { store: legacy.id, count: upgraded });
  }
  const taskRepo = new TaskRepo(db);
  const imports = new ImportService(images, repo, taskRepo, data, {
    ...importOptions(cfg, stagingDir, stores.default.id), allStoreIds: stores.ids(), imageQuota: cfg.projectImageQuota, storageQuota: cfg.projectStorageQuota, stageHost,
    // glance-download: the catalog the user's token sees (the external Keystone's, or the built-in one's)
    imageEndpoint: async (token, region, iface) => findImageEndpoint(external ? await external.catalog(token) : identity.catalog(selfUrl), region, iface),
  }, log);
  const tasks = new TaskService(taskRepo, policy, { [IMPORT_TASK]: imports }, taskOptions(cfg, node, { dropTempData: (keys) => data.dropTempData(keys), stageHost, reapDeadUploads: () => data.reapDeadUploads() }), log);
  imports.attach(tasks);
  // (tasks first: it gives back the tasks this node held, whose upload rows recovery must not
  // revert; claiming starts after recovery, which would take a new claim's row for a dead one)
  await tasks.recover();
  await data.recover();
  await imports.recover();
  // Requests wait for the task worker's start (after listening, below): a stage host's first
  // heartbeat is written before anything is staged here and tied to its URL.
  let workerStarted!: () => void;
  const started = new Promise<void>((resolve) => { workerStarted = resolve; });
  app.addHook('onRequest', async () => { await started; });
  // The image cache: worth it only in front of a remote store (auto); a local file store's files it would only copy.
  const imageCache = cfg.imageCache === 'on' || (cfg.imageCache === 'auto' && stores.all.some((s) => s.type !== 'file'))
    ? new ImageCache(cfg.imageCacheDir ?? join(cfg.dataDir, 'image-cache'), cfg.imageCacheMaxSize, log) : null;
  await imageCache?.init();
  const cacheService = new ImageCacheService(imageCache, images, repo, policy, data, log);
  cacheService.kick();
  const scrubber = new Scrubber(new ScrubRepo(db), (id, url) => stores.locate(id, url), { scrubTime: cfg.scrubTime, node }, log);
  if (cfg.scrubWakeupTime > 0) scrubber.start(cfg.scrubWakeupTime);

  await app.register(async (scope) => {
    acceptJson(scope);
    const storeInfo = new StoreInfo(stores, policy);
    discoveryRoutes(scope, { db, metrics: registry, webDir, auth, importMethods: imports.methods, usage: (a) => imports.usage(a), cacheEnabled: imageCache !== null });
    schemaRoutes(scope, { auth });
    imageRoutes(scope, {
      auth, images, storeIds: storeInfo.ids(), importMethods: imports.methods, limitMax: cfg.limitMax, limitDefault: cfg.limitDefault,
      showImageDirectUrl: cfg.showImageDirectUrl, showMultipleLocations: cfg.showMultipleLocations,
    });
    imageDataRoutes(scope, { auth, data, storeIds: storeInfo.ids(), cache: imageCache });
    cacheRoutes(scope, { auth, cache: cacheService });
    tagRoutes(scope, { auth, images });
    memberRoutes(scope, { auth, images });
    extensionRoutes(scope, { auth, images, data, insideLimits: { timeMs: cfg.insideTimeBudget * 1000, maxBytes: cfg.insideReadBudget } });
    storeRoutes(scope, { auth, images, stores: storeInfo });
    taskRoutes(scope, { auth, tasks, imports, images, storeIds: storeInfo.ids(), limitMax: cfg.limitMax, limitDefault: cfg.limitDefault });
  });
  if (!external) {
    await app.register(async (scope) => {
      acceptJson(scope);
      identityRoutes(scope, { identity, auth });
    });
  }

  const metadefs = new MetadefService(new MetadefRepo(db), policy);
  await metadefs.seed();
  await app.register(async (scope) => {
    acceptJson(scope);
    metadefRoutes(scope, { auth, metadefs });
  });

  await app.listen({ port: cfg.port, host: cfg.bind });
  const server = app.server;
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : cfg.port;
  const url = `http://${cfg.bind.includes(':') ? `[${cfg.bind}]` : cfg.bind}:${port}`;
  selfReferenceUrl = selfReference(cfg.workerSelfReferenceUrl, port);
  await tasks.start();
  workerStarted();
  // A wildcard bind is not an address anyone can reach: name this host instead.
  selfUrl ||= cfg.bind === '0.0.0.0' || cfg.bind === '::' ? `http://${hostname()}:${port}` : url;
  log.info('listening', { url, data_dir: cfg.dataDir, database: db.dialect, ...(selfReferenceUrl ? { worker_self_reference_url: selfReferenceUrl } : {}) });

  let closing: Promise<void> | null = null;
  return {
    server, url, db, identity, generatedAdminPassword: generatedPassword,
    close: () => closing ??= (async () => {
      // Stop accepting, let in-flight uploads and imports finish, then release the database.
      const stopped = app.close();
      server.closeIdleConnections();
      // A client that stalls does not hold the process forever: after the grace period its
      // connection is cut, and the upload cleans up as any interrupted upload does.
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, cfg.shutdownGraceSeconds * 1000); });
      const tasksStopped = tasks.stop(cfg.shutdownGraceSeconds * 1000);
      await Promise.race([Promise.allSettled([...data.inFlight, tasksStopped]), grace]);
      clearTimeout(timer);
      server.closeAllConnections();
      await Promise.allSettled([...data.inFlight]);
      await tasksStopped;
      await scrubber.stop();
      await cacheService.close();
      await stopped;
      await identity.close();
      await stores.close();
      await db.close();
    })(),
  };
}
