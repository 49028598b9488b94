/**
 * Service configuration: defaults, then a JSON config file (`--config FILE` or
 * DISKHUB_CONFIG), then environment variables, then command-line flags.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StoreSpec } from './stores/registry.js';

export interface ServiceConfig {
  dataDir: string;
  port: number;
  bind: string;
  /** Bootstrap admin password; generated and printed once when absent. */
  adminPassword?: string;
  /** sqlite:…, postgres://…, mysql://… (default: SQLite in the data dir). */
  databaseUrl: string;
  /** URL clients use to reach us (catalog, Location headers); derived from the Host header when absent. */
  publicUrl?: string;
  region: string;
  /** Image endpoints of other regions the built-in Keystone's catalog lists (`RegionTwo=https://…,…`): where glance-download finds them. */
  catalogImageEndpoints: string;
  tokenTtlSeconds: number;
  imageSizeCap: number;
  /** Images a project may own (0: unlimited). */
  projectImageQuota: number;
  /** Bytes of image data a project may store (0: unlimited). */
  projectStorageQuota: number;
  limitMax: number;
  limitDefault: number;
  logLevel: 'info' | 'warn' | 'error' | 'silent';
  /** External identity: Keystone's v3 URL; tokens are validated there instead of built in. */
  keystoneUrl?: string;
  keystoneUser: string;
  keystonePassword?: string;
  keystoneProject: string;
  /** The dashboard's built files (served to browsers); default: packages/web/dist/app of this checkout. */
  webDir?: string;
  /** How long shutdown waits for uploads in flight before cutting them off. */
  shutdownGraceSeconds: number;
  /** An oslo.policy YAML or JSON file whose rules override Glance 25's defaults. */
  policyFile?: string;
  /** Keystone's [security_compliance] lockout_failure_attempts: failed logins before a user is locked out (0: never). */
  lockoutFailureAttempts: number;
  /** Keystone's lockout_duration: seconds a lockout lasts (0: until an administrator enables the user again). */
  lockoutDuration: number;
  /** The image stores (Glance's enabled_backends), in order; default: one file store `file` in <data dir>/images. */
  stores: StoreSpec[];
  /** The store uploads go to unless the request names one (Glance's default_backend); default: the first store. */
  defaultStore?: string;
  /** Glance's show_image_direct_url: images show `direct_url`, the URL of their first location (off by default: it tells where data lives). */
  showImageDirectUrl: boolean;
  /** Glance's show_multiple_locations: images show `locations`, and the locations API is open (off by default). */
  showMultipleLocations: boolean;
  /** This API node's name in upload records and task leases (default host:dataDir); two processes sharing a data dir need different names. */
  nodeId?: string;
  /**
   * Glance's worker_self_reference_url: the URL other API nodes reach this one at. Staging
   * (PUT /stage) records it on the image (os_glance_stage_host); an import of that image
   * arriving at another node is proxied here, and only this node runs it. Unset: staged data
   * is not tied to a node (one node, or a staging directory the nodes share).
   */
  workerSelfReferenceUrl?: string;
  /** Glance's enabled_import_methods (comma-separated). */
  enabledImportMethods: string;
  /** Glance's [import_filtering_opts] (comma-separated lists; an allow list makes its deny list ignored). */
  importAllowedSchemes: string;
  importDisallowedSchemes: string;
  importAllowedHosts: string;
  importDisallowedHosts: string;
  importAllowedPorts: string;
  importDisallowedPorts: string;
  /** CIDR networks web-download may reach although they are loopback, private, link-local… (default: none). */
  importAllowedNetworks: string;
  /** Seconds web-download waits for a connection, headers, or the next data before giving up. */
  webDownloadTimeout: number;
  webDownloadMaxRedirects: number;
  /** Glance's [image_import_opts] image_import_plugins (comma-separated, run in order). */
  imageImportPlugins: string;
  /** Glance's [image_conversion] output_format: raw, qcow2 or vmdk. */
  imageConversionOutputFormat: string;
  /** Glance's [inject_metadata_properties] inject (k1:v1,k2:v2) and ignore_user_roles. */
  injectMetadataProperties: string;
  injectIgnoreUserRoles: string;
  /** A task claim lasts this long without renewal; a dead node's tasks are taken over after it. */
  taskLeaseSeconds: number;
  /** How often an idle node looks for tasks. */
  taskPollSeconds: number;
  /** Runs of one task (its node dying each time) before it is failed. */
  taskMaxAttempts: number;
  /** Tasks one node runs at once. */
  taskConcurrency: number;
  /** Glance's [task] task_time_to_live, hours a finished task stays listed. */
  taskTimeToLive: number;
  /** Glance's delayed_delete: deleted images with data wait in pending_delete for the scrubber. */
  delayedDelete: boolean;
  /** Glance's scrub_time: seconds a pending_delete image keeps its data. */
  scrubTime: number;
  /** Glance's wakeup_time: seconds between the scrubber's runs in each API node (0: no scrubber in the API nodes; run `diskhub scrub`). */
  scrubWakeupTime: number;
  /** The per-node image cache: on, off, or auto (on unless the store is the local file store, whose files it would only copy). */
  imageCache: 'auto' | 'on' | 'off';
  /** Glance's image_cache_dir (default: image-cache in the data dir). */
  imageCacheDir?: string;
  /** Glance's image_cache_max_size: the cache is pruned to this many bytes (least recently used first). */
  imageCacheMaxSize: number;
  /** Seconds x-diskhub/inside may spend inspecting and linting an image's operating systems. */
  insideTimeBudget: number;
  /** Bytes of an image x-diskhub/inside may read to inspect and lint its operating systems. */
  insideReadBudget: number;
}

export class ConfigError extends Error {}

const ENV: Record<string, keyof ServiceConfig> = {
  DISKHUB_DATA_DIR: 'dataDir',
  DISKHUB_PORT: 'port',
  DISKHUB_BIND: 'bind',
  DISKHUB_ADMIN_PASSWORD: 'adminPassword',
  DISKHUB_DATABASE_URL: 'databaseUrl',
  DISKHUB_PUBLIC_URL: 'publicUrl',
  DISKHUB_REGION: 'region',
  DISKHUB_CATALOG_IMAGE_ENDPOINTS: 'catalogImageEndpoints',
  DISKHUB_TOKEN_TTL: 'tokenTtlSeconds',
  DISKHUB_IMAGE_SIZE_CAP: 'imageSizeCap',
  DISKHUB_PROJECT_IMAGE_QUOTA: 'projectImageQuota',
  DISKHUB_PROJECT_STORAGE_QUOTA: 'projectStorageQuota',
  DISKHUB_LOG_LEVEL: 'logLevel',
  DISKHUB_SHUTDOWN_GRACE: 'shutdownGraceSeconds',
  DISKHUB_WEB_DIR: 'webDir',
  DISKHUB_KEYSTONE_URL: 'keystoneUrl',
  DISKHUB_KEYSTONE_USER: 'keystoneUser',
  DISKHUB_KEYSTONE_PASSWORD: 'keystonePassword',
  DISKHUB_KEYSTONE_PROJECT: 'keystoneProject',
  DISKHUB_POLICY_FILE: 'policyFile',
  DISKHUB_LOCKOUT_FAILURE_ATTEMPTS: 'lockoutFailureAttempts',
  DISKHUB_LOCKOUT_DURATION: 'lockoutDuration',
  DISKHUB_STORES: 'stores',
  DISKHUB_DEFAULT_STORE: 'defaultStore',
  DISKHUB_SHOW_IMAGE_DIRECT_URL: 'showImageDirectUrl',
  DISKHUB_SHOW_MULTIPLE_LOCATIONS: 'showMultipleLocations',
  DISKHUB_NODE_ID: 'nodeId',
  DISKHUB_WORKER_SELF_REFERENCE_URL: 'workerSelfReferenceUrl',
  DISKHUB_ENABLED_IMPORT_METHODS: 'enabledImportMethods',
  DISKHUB_IMPORT_ALLOWED_SCHEMES: 'importAllowedSchemes',
  DISKHUB_IMPORT_DISALLOWED_SCHEMES: 'importDisallowedSchemes',
  DISKHUB_IMPORT_ALLOWED_HOSTS: 'importAllowedHosts',
  DISKHUB_IMPORT_DISALLOWED_HOSTS: 'importDisallowedHosts',
  DISKHUB_IMPORT_ALLOWED_PORTS: 'importAllowedPorts',
  DISKHUB_IMPORT_DISALLOWED_PORTS: 'importDisallowedPorts',
  DISKHUB_IMPORT_ALLOWED_NETWORKS: 'importAllowedNetworks',
  DISKHUB_WEB_DOWNLOAD_TIMEOUT: 'webDownloadTimeout',
  DISKHUB_WEB_DOWNLOAD_MAX_REDIRECTS: 'webDownloadMaxRedirects',
  DISKHUB_IMAGE_IMPORT_PLUGINS: 'imageImportPlugins',
  DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: 'imageConversionOutputFormat',
  DISKHUB_INJECT_METADATA_PROPERTIES: 'injectMetadataProperties',
  DISKHUB_INJECT_IGNORE_USER_ROLES: 'injectIgnoreUserRoles',
  DISKHUB_TASK_LEASE_SECONDS: 'taskLeaseSeconds',
  DISKHUB_TASK_POLL_SECONDS: 'taskPollSeconds',
  DISKHUB_TASK_MAX_ATTEMPTS: 'taskMaxAttempts',
  DISKHUB_TASK_CONCURRENCY: 'taskConcurrency',
  DISKHUB_TASK_TIME_TO_LIVE: 'taskTimeToLive',
  DISKHUB_DELAYED_DELETE: 'delayedDelete',
  DISKHUB_SCRUB_TIME: 'scrubTime',
  DISKHUB_SCRUB_WAKEUP_TIME: 'scrubWakeupTime',
  DISKHUB_IMAGE_CACHE: 'imageCache',
  DISKHUB_IMAGE_CACHE_DIR: 'imageCacheDir',
  DISKHUB_IMAGE_CACHE_MAX_SIZE: 'imageCacheMaxSize',
  DISKHUB_INSIDE_TIME_BUDGET: 'insideTimeBudget',
  DISKHUB_INSIDE_READ_BUDGET: 'insideReadBudget',
};

const BOOLEAN = new Set<keyof ServiceConfig>(['showImageDirectUrl', 'showMultipleLocations', 'delayedDelete']);
const NUMERIC = new Set<keyof ServiceConfig>(['webDownloadTimeout', 'webDownloadMaxRedirects', 'taskLeaseSeconds', 'taskPollSeconds', 'taskMaxAttempts', 'taskConcurrency', 'taskTimeToLive', 'port', 'tokenTtlSeconds', 'imageSizeCap', 'projectImageQuota', 'projectStorageQuota', 'limitMax', 'limitDefault', 'shutdownGraceSeconds', 'lockoutFailureAttempts', 'lockoutDuration', 'scrubTime', 'scrubWakeupTime', 'imageCacheMaxSize', 'insideTimeBudget', 'insideReadBudget']);

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Record<keyof ServiceConfig, string | number>> = {}, configFile?: string): ServiceConfig {
  const raw: Record<string, unknown> = {};
  /** The config file's `stores` (each store's options), which DISKHUB_STORES may choose from. */
  let fileStores: unknown;
  const file = configFile ?? env.DISKHUB_CONFIG;
  if (file) {
    let parsed: unknown;
    try { parsed = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`); }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${file}: expected a JSON object`);
    Object.assign(raw, parsed);
    fileStores = (parsed as Record<string, unknown>).stores;
  }
  for (const [name, key] of Object.entries(ENV)) if (env[name] !== undefined && env[name] !== '') raw[key] = env[name];
  Object.assign(raw, overrides);
  const dataDir = resolve(String(raw.dataDir ?? './data'));
  const cfg: ServiceConfig = {
    dataDir,
    port: 9292,
    bind: '127.0.0.1',
    databaseUrl: `sqlite:${resolve(dataDir, 'diskhub.sqlite')}`,
    region: 'RegionOne',
    catalogImageEndpoints: '',
    tokenTtlSeconds: 3600,
    imageSizeCap: 1099511627776, // 1 TiB, Glance's default image_size_cap
    projectImageQuota: 0,
    projectStorageQuota: 0,
    limitMax: 1000,
    limitDefault: 25,
    logLevel: 'info',
    shutdownGraceSeconds: 60,
    // Keystone's defaults: no lockout; when enabled, 30 minutes.
    lockoutFailureAttempts: 0,
    lockoutDuration: 1800,
    stores: [{ id: 'file', type: 'file', path: 'images' }],
    showImageDirectUrl: false,
    showMultipleLocations: false,
    // Glance 25's default (copy-image included: copy_image is admin-only by policy).
    enabledImportMethods: 'glance-direct,web-download,copy-image',
    importAllowedSchemes: 'http,https',
    importDisallowedSchemes: '',
    importAllowedHosts: '',
    importDisallowedHosts: '',
    importAllowedPorts: '80,443',
    importDisallowedPorts: '',
    importAllowedNetworks: '',
    webDownloadTimeout: 60,
    webDownloadMaxRedirects: 10, // urllib's HTTPRedirectHandler.max_redirections, what Glance's download follows
    imageImportPlugins: '',
    imageConversionOutputFormat: 'raw',
    injectMetadataProperties: '',
    injectIgnoreUserRoles: 'admin',
    taskLeaseSeconds: 60,
    taskPollSeconds: 5,
    taskMaxAttempts: 3,
    taskConcurrency: 4,
    taskTimeToLive: 48,
    // Glance's defaults: delayed_delete off, scrub_time 0, wakeup_time 300, image_cache_max_size 10 GiB.
    delayedDelete: false,
    scrubTime: 0,
    scrubWakeupTime: 300,
    imageCache: 'auto',
    imageCacheMaxSize: 10 * 1024 ** 3,
    insideTimeBudget: 20,
    insideReadBudget: 512 * 1024 * 1024,
    keystoneUser: 'glance',
    keystoneProject: 'service',
    webDir: fileURLToPath(new URL('../../../web/dist/app', import.meta.url)),
  };
  for (const [key, v] of Object.entries(raw)) {
    if (key === 'dataDir' || v === undefined) continue;
    if (!(key in cfg) && key !== 'adminPassword' && key !== 'publicUrl' && key !== 'webDir' && key !== 'keystoneUrl' && key !== 'keystonePassword' && key !== 'policyFile' && key !== 'defaultStore' && key !== 'nodeId' && key !== 'workerSelfReferenceUrl' && key !== 'imageCacheDir') throw new ConfigError(`unknown configuration setting '${key}'`);
    if (key === 'stores') {
      cfg.stores = typeof v === 'string' ? parseStoresList(v, fileStores) : storeSpecs(v);
    } else if (BOOLEAN.has(key as keyof ServiceConfig)) {
      (cfg as unknown as Record<string, unknown>)[key] = parseBoolean(key, v);
    } else if (NUMERIC.has(key as keyof ServiceConfig)) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${key} must be a non-negative integer, got '${v}'`);
      (cfg as unknown as Record<string, unknown>)[key] = n;
    } else {
      (cfg as unknown as Record<string, unknown>)[key] = String(v);
    }
  }
  if (cfg.port > 65535) throw new ConfigError(`port must be at most 65535, got ${cfg.port}`);
  if (!['info', 'warn', 'error', 'silent'].includes(cfg.logLevel)) throw new ConfigError(`logLevel must be info, warn, error or silent`);
  if (cfg.taskLeaseSeconds < 1) throw new ConfigError('taskLeaseSeconds must be at least 1');
  if (cfg.taskPollSeconds < 1) throw new ConfigError('taskPollSeconds must be at least 1');
  if (cfg.taskConcurrency < 1) throw new ConfigError('taskConcurrency must be at least 1');
  if (cfg.webDownloadTimeout < 1) throw new ConfigError('webDownloadTimeout must be at least 1');
  if (!['auto', 'on', 'off'].includes(cfg.imageCache)) throw new ConfigError(`imageCache must be auto, on or off`);
  if (cfg.imageCacheDir) cfg.imageCacheDir = resolve(cfg.imageCacheDir);
  if (cfg.publicUrl) cfg.publicUrl = cfg.publicUrl.replace(/\/+$/, '');
  if (cfg.workerSelfReferenceUrl !== undefined) {
    if (!/^https?:\/\/[^/]/.test(cfg.workerSelfReferenceUrl)) throw new ConfigError(`workerSelfReferenceUrl must be an http:// or https:// URL, got '${cfg.workerSelfReferenceUrl}'`);
    cfg.workerSelfReferenceUrl = cfg.workerSelfReferenceUrl.replace(/\/+$/, '');
  }
  if (cfg.defaultStore !== undefined && !cfg.stores.some((s) => s.id === cfg.defaultStore)) {
    throw new ConfigError(`defaultStore '${cfg.defaultStore}' is not one of the configured stores (${cfg.stores.map((s) => s.id).join(', ')})`);
  }
  return cfg;
}

function parseBoolean(key: string, v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  const s = String(v).toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  throw new ConfigError(`${key} must be true or false, got '${v}'`);
}

/**
 * The config file's `stores`: an object keyed by store id (Glance's enabled_backends with a
 * section per backend), each value the store's type and options:
 *   {"fast": {"type": "file", "path": "/srv/fast"}, "ceph": {"type": "rbd", "pool": "images"}}
 */
function storeSpecs(v: unknown): StoreSpec[] {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`stores must be an object keyed by store id, e.g. {"fast": {"type": "file", "path": "/srv/images"}}`);
  const specs: StoreSpec[] = [];
  for (const [id, opts] of Object.entries(v)) {
    if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw new ConfigError(`stores.${id} must be an object with a "type"`);
    const { type } = opts as Record<string, unknown>;
    if (typeof type !== 'string' || !type) throw new ConfigError(`stores.${id} needs a "type" (file, rbd, swift or s3)`);
    specs.push({ ...(opts as Record<string, unknown>), id, type });
  }
  if (specs.length === 0) throw new ConfigError('stores must name at least one store');
  return specs;
}

/**
 * DISKHUB_STORES: the stores to run, comma-separated, each `id:type` or `id:file:PATH`
 * (`fast:file:/srv/fast,cheap:file:/srv/cheap,ceph:rbd`). A store's other options (a pool, a
 * container, credentials) come from the config file's `stores.<id>`, which must then have the
 * same type.
 */
export function parseStoresList(list: string, fileStores?: unknown): StoreSpec[] {
  const configured = fileStores === undefined ? [] : storeSpecs(fileStores);
  const specs: StoreSpec[] = [];
  for (const item of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^([^:]+):([^:]+)(?::(.*))?$/.exec(item);
    if (!m) throw new ConfigError(`DISKHUB_STORES: '${item}' is not id:type or id:file:PATH`);
    const [, id, type, arg] = m as unknown as [string, string, string, string | undefined];
    const base = configured.find((s) => s.id === id);
    if (base && base.type !== type) throw new ConfigError(`DISKHUB_STORES: store '${id}' is ${type} here but ${base.type} in the config file`);
    const spec: StoreSpec = { ...base, id, type };
    if (arg !== undefined) {
      if (type !== 'file') throw new ConfigError(`DISKHUB_STORES: '${item}': only file stores take a path here; put ${type} options in the config file's stores.${id}`);
      spec.path = arg;
    }
    specs.push(spec);
  }
  if (specs.length === 0) throw new ConfigError('DISKHUB_STORES names no store');
  return specs;
}
