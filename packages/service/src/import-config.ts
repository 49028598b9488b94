/**
 * The import and task settings of the configuration (config.ts: comma-separated strings, as
 * Glance's ListOpt/DictOpt are written) turned into the options the import and task domains
 * take; a value that cannot be used stops the start.
 */
import { ConfigError, type ServiceConfig } from './config.js';
import { KNOWN_IMPORT_METHODS, type ImportOptions } from './domain/import/index.js';
import { CONVERSION_FORMATS, KNOWN_PLUGINS } from './domain/import/plugins.js';
import { AddressPolicy } from './domain/import/web-download.js';
import type { TaskOptions } from './domain/tasks.js';

const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);

function ports(name: string, v: string): number[] {
  return list(v).map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(`${name}: '${p}' is not a port number`);
    return n;
  });
}

export function importOptions(cfg: ServiceConfig, stagingDir: string, storeId: string): Omit<ImportOptions, 'allStoreIds'> {
  const enabledMethods = list(cfg.enabledImportMethods);
  for (const m of enabledMethods) if (!KNOWN_IMPORT_METHODS.includes(m)) throw new ConfigError(`enabledImportMethods: unknown or unavailable import method '${m}' (available: ${KNOWN_IMPORT_METHODS.join(', ')})`);
  const plugins = list(cfg.imageImportPlugins);
  for (const p of plugins) if (!(KNOWN_PLUGINS as readonly string[]).includes(p)) throw new ConfigError(`imageImportPlugins: unknown import plugin '${p}' (available: ${KNOWN_PLUGINS.join(', ')})`);
  if (!CONVERSION_FORMATS.includes(cfg.imageConversionOutputFormat)) throw new ConfigError(`imageConversionOutputFormat must be one of ${CONVERSION_FORMATS.join(', ')}, got '${cfg.imageConversionOutputFormat}'`);
  const inject: Record<string, string> = {};
  for (const pair of list(cfg.injectMetadataProperties)) {
    const i = pair.indexOf(':');
    if (i <= 0 || i > 255) throw new ConfigError(`injectMetadataProperties: '${pair}' is not key:value`);
    inject[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
  }
  const allowedNetworks = list(cfg.importAllowedNetworks);
  try { new AddressPolicy(allowedNetworks); } catch (e) { throw new ConfigError(`importAllowedNetworks: ${(e as Error).message}`); }
  return {
    enabledMethods,
    filtering: {
      allowedSchemes: list(cfg.importAllowedSchemes).map((s) => s.toLowerCase()), disallowedSchemes: list(cfg.importDisallowedSchemes).map((s) => s.toLowerCase()),
      allowedHosts: list(cfg.importAllowedHosts).map((s) => s.toLowerCase()), disallowedHosts: list(cfg.importDisallowedHosts).map((s) => s.toLowerCase()),
      allowedPorts: ports('importAllowedPorts', cfg.importAllowedPorts), disallowedPorts: ports('importDisallowedPorts', cfg.importDisallowedPorts),
      allowedNetworks, maxRedirects: cfg.webDownloadMaxRedirects, timeoutMs: cfg.webDownloadTimeout * 1000,
    },
    plugins: { enabled: plugins, inject, ignoreUserRoles: list(cfg.injectIgnoreUserRoles), outputFormat: cfg.imageConversionOutputFormat, workDir: stagingDir, sizeCap: cfg.imageSizeCap },
    stagingDir,
    storeId,
  };
}

export function taskOptions(cfg: ServiceConfig, node: string, data: Pick<TaskOptions, 'dropTempData' | 'stageHost' | 'reapDeadUploads'>): TaskOptions {
  return {
    node, ...data, leaseMs: cfg.taskLeaseSeconds * 1000, pollMs: cfg.taskPollSeconds * 1000, maxAttempts: cfg.taskMaxAttempts,
    concurrency: cfg.taskConcurrency, timeToLiveHours: cfg.taskTimeToLive,
  };
}

/** `RegionTwo=https://…,RegionThree=…`: image endpoints of other regions for the built-in Keystone's catalog. */
export function catalogImageEndpoints(value: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of list(value)) {
    const i = pair.indexOf('=');
    const url = pair.slice(i + 1).trim();
    if (i <= 0 || !/^https?:\/\/[^\s]+$/.test(url)) throw new ConfigError(`catalogImageEndpoints: '${pair}' is not region=http(s)://url`);
    out[pair.slice(0, i).trim()] = url;
  }
  return out;
}
