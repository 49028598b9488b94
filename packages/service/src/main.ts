/**
 * `diskhub serve`: run the image service until SIGINT/SIGTERM.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config.js';
import { DatabaseUrlError } from './db/connect.js';
import { startService } from './server.js';
import { redactCredentials } from './stores/credentials.js';

const USAGE = `usage: diskhub serve [--config FILE] [--data-dir DIR] [--bind ADDR] [--port N] [--database-url URL]

Runs the image service (Glance Image API v2 with a built-in Keystone v3 identity API).
Environment: DISKHUB_DATA_DIR (./data), DISKHUB_PORT (9292), DISKHUB_BIND (127.0.0.1),
DISKHUB_ADMIN_PASSWORD (generated and printed on first start when unset),
DISKHUB_DATABASE_URL (sqlite:DATA_DIR/diskhub.sqlite; postgres://… or mysql://…),
DISKHUB_PUBLIC_URL, DISKHUB_REGION, DISKHUB_LOG_LEVEL, DISKHUB_CONFIG (JSON config file),
DISKHUB_STORES (image stores: id:type or id:file:PATH, comma-separated; default one file
store 'file' in DATA_DIR/images), DISKHUB_DEFAULT_STORE, DISKHUB_SHOW_MULTIPLE_LOCATIONS,
DISKHUB_SHOW_IMAGE_DIRECT_URL.
`;

export async function serveMain(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' }, 'data-dir': { type: 'string' }, bind: { type: 'string' },
        port: { type: 'string' }, 'database-url': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`diskhub serve: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  if (values.help) { process.stdout.write(USAGE); return 0; }
  try {
    const overrides: Record<string, string> = {};
    if (values['data-dir']) overrides.dataDir = values['data-dir'];
    if (values.bind) overrides.bind = values.bind;
    if (values.port) overrides.port = values.port;
    if (values['database-url']) overrides.databaseUrl = values['database-url'];
    const cfg = loadConfig(process.env, overrides, values.config);
    const service = await startService(cfg);
    if (service.generatedAdminPassword) {
      process.stderr.write(`\nBootstrap admin user created: user 'admin', project 'admin', domain 'Default'.\n` +
        `Its password (printed only this once): ${service.generatedAdminPassword}\n\n`);
    }
    process.stderr.write(`diskhub image service on ${service.url} (identity: ${service.url}/identity/v3)\n`);
    await new Promise<void>((resolve) => {
      const stop = () => { process.off('SIGINT', stop); process.off('SIGTERM', stop); resolve(); };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await service.close();
    return 0;
  } catch (e) {
    if (e instanceof ConfigError || e instanceof DatabaseUrlError) { process.stderr.write(`diskhub serve: ${e.message}\n`); return 1; }
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL') { process.stderr.write(`diskhub serve: cannot listen: ${err.message}\n`); return 1; }
    // (a store that cannot connect may say why with its configuration: its credentials are cut)
    process.stderr.write(`diskhub serve: ${redactCredentials(err.message)}\n`);
    return 1;
  }
}
