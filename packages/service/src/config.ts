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
};

const NUMERIC = new Set<keyof ServiceConfig>(['port', 'tokenTtlSeconds', 'imageSizeCap', 'projectImageQuota', 'projectStorageQuota', 'limitMax', 'limitDefault', 'shutdownGraceSeconds', 'lockoutFailureAttempts', 'lockoutDuration']);

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
    keystoneUser: 'glance',
    keystoneProject: 'service',
    webDir: fileURLToPath(new URL('../../../web/dist/app', import.meta.url)),
  };
  for (const [key, v] of Object.entries(raw)) {
    if (key === 'dataDir' || v === undefined) continue;
    if (!(key in cfg) && key !== 'adminPassword' && key !== 'publicUrl' && key !== 'webDir' && key !== 'keystoneUrl' && key !== 'keystonePassword' && key !== 'policyFile') throw new ConfigError(`unknown configuration setting '${key}'`);
    if (NUMERIC.has(key as keyof ServiceConfig)) {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${key} must be a non-negative integer, got '${v}'`);
      (cfg as unknown as Record<string, unknown>)[key] = n;
    } else {
      (cfg as unknown as Record<string, unknown>)[key] = String(v);
    }
  }
  if (cfg.port > 65535) throw new ConfigError(`port must be at most 65535, got ${cfg.port}`);
  if (!['info', 'warn', 'error', 'silent'].includes(cfg.logLevel)) throw new ConfigError(`logLevel must be info, warn, error or silent`);
  if (cfg.publicUrl) cfg.publicUrl = cfg.publicUrl.replace(/\/+$/, '');
  return cfg;
}
