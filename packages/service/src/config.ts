/**
 * Service configuration: defaults, then a JSON config file (`--config FILE` or
 * DISKHUB_CONFIG), then environment variables, then command-line flags.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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
  DISKHUB_DELAYED_DELETE: 'delayedDelete',
  DISKHUB_SCRUB_TIME: 'scrubTime',
  DISKHUB_SCRUB_WAKEUP_TIME: 'scrubWakeupTime',
  DISKHUB_IMAGE_CACHE: 'imageCache',
  DISKHUB_IMAGE_CACHE_DIR: 'imageCacheDir',
  DISKHUB_IMAGE_CACHE_MAX_SIZE: 'imageCacheMaxSize',
};

const NUMERIC = new Set<keyof ServiceConfig>(['port', 'tokenTtlSeconds', 'imageSizeCap', 'projectImageQuota', 'projectStorageQuota', 'limitMax', 'limitDefault', 'shutdownGraceSeconds', 'lockoutFailureAttempts', 'lockoutDuration', 'scrubTime', 'scrubWakeupTime', 'imageCacheMaxSize']);
const BOOLEAN = new Set<keyof ServiceConfig>(['delayedDelete']);

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Record<keyof ServiceConfig, string | number>> = {}, configFile?: string): ServiceConfig {
  const raw: Record<string, unknown> = {};
  const file = configFile ?? env.DISKHUB_CONFIG;
  if (file) {
    let parsed: unknown;
    try { parsed = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`); }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`config file ${file}: expected a JSON object`);
    Object.assign(raw, parsed);
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
    // Glance's defaults: delayed_delete off, scrub_time 0, wakeup_time 300, image_cache_max_size 10 GiB.
    delayedDelete: false,
    scrubTime: 0,
    scrubWakeupTime: 300,
    imageCache: 'auto',
    imageCacheMaxSize: 10 * 1024 ** 3,
    keystoneUser: 'glance',
    keystoneProject: 'service',
    webDir: fileURLToPath(new URL('../../../web/dist/app', import.meta.url)),
  };
  for (const [key, v] of Object.entries(raw)) {
    if (key === 'dataDir' || v === undefined) continue;
    if (!(key in cfg) && key !== 'adminPassword' && key !== 'publicUrl' && key !== 'webDir' && key !== 'keystoneUrl' && key !== 'keystonePassword' && key !== 'policyFile' && key !== 'imageCacheDir') throw new ConfigError(`unknown configuration setting '${key}'`);
    if (NUMERIC.has(key as keyof ServiceConfig)) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${key} must be a non-negative integer, got '${v}'`);
      (cfg as unknown as Record<string, unknown>)[key] = n;
    } else if (BOOLEAN.has(key as keyof ServiceConfig)) {
      const b = typeof v === 'boolean' ? v : { true: true, false: false, on: true, off: false, '1': true, '0': false, yes: true, no: false }[String(v).toLowerCase()];
      if (b === undefined) throw new ConfigError(`${key} must be true or false, got '${v}'`);
      (cfg as unknown as Record<string, unknown>)[key] = b;
    } else {
      (cfg as unknown as Record<string, unknown>)[key] = String(v);
    }
  }
  if (cfg.port > 65535) throw new ConfigError(`port must be at most 65535, got ${cfg.port}`);
  if (!['info', 'warn', 'error', 'silent'].includes(cfg.logLevel)) throw new ConfigError(`logLevel must be info, warn, error or silent`);
  if (!['auto', 'on', 'off'].includes(cfg.imageCache)) throw new ConfigError(`imageCache must be auto, on or off`);
  if (cfg.imageCacheDir) cfg.imageCacheDir = resolve(cfg.imageCacheDir);
  if (cfg.publicUrl) cfg.publicUrl = cfg.publicUrl.replace(/\/+$/, '');
  return cfg;
}
