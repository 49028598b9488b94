/**
 * `diskhub scrub`: delayed delete's scrubber as a command, Glance's glance-scrubber (its
 * options: --daemon, --restore <IMAGE_ID>; glance/cmd/scrubber.py). Every API node runs the
 * same scrubber every DISKHUB_SCRUB_WAKEUP_TIME seconds; this command is for deployments that
 * turn that off (0) and run it from cron, and for restoring an image deleted by mistake.
 * Unlike glance-scrubber it need not be the only one running: images are scrubbed under
 * leases, and a restore is refused once a scrubber has begun removing an image's data.
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { ConfigError, loadConfig } from './config.js';
import { DatabaseUrlError, openDatabase } from './db/connect.js';
import { jsonLogger } from './log.js';
import { stopSignal } from './main.js';
import { openConfiguredStores } from './stores/configured.js';
import { ScrubRepo } from './repo/scrubs.js';
import { RestoreError, Scrubber, commandScrubberNode } from './domain/scrubber.js';

const USAGE = `usage: diskhub scrub [--config FILE] [--data-dir DIR] [--database-url URL] [-D|--daemon] [--restore IMAGE_ID]

Removes the data of images deleted while delayed delete is on (status pending_delete) once
DISKHUB_SCRUB_TIME seconds have passed, and marks them deleted (as glance-scrubber does).
  -D, --daemon          keep running, scrubbing every DISKHUB_SCRUB_WAKEUP_TIME seconds (300)
  --restore IMAGE_ID    put a pending_delete image back to active (its data must not be scrubbed yet)
Reads the same settings as diskhub serve (DISKHUB_DATA_DIR, DISKHUB_DATABASE_URL, DISKHUB_CONFIG, ...).
`;

export async function scrubMain(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' }, 'data-dir': { type: 'string' }, 'database-url': { type: 'string' },
        daemon: { type: 'boolean', short: 'D' }, restore: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`diskhub scrub: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  if (values.help) { process.stdout.write(USAGE); return 0; }
  // glance-scrubber's own refusal, word for word.
  if (values.restore !== undefined && values.daemon) {
    process.stderr.write('ERROR: The restore and daemon options should not be set together. Please use either of them in one request.\n');
    return 1;
  }
  let cfg;
  try {
    const overrides: Record<string, string> = {};
    if (values['data-dir']) overrides.dataDir = values['data-dir'];
    if (values['database-url']) overrides.databaseUrl = values['database-url'];
    cfg = loadConfig(process.env, overrides, values.config);
  } catch (e) {
    if (e instanceof ConfigError) { process.stderr.write(`diskhub scrub: ${e.message}\n`); return 1; }
    throw e;
  }
  const log = jsonLogger(process.stderr, cfg.logLevel);
  let db;
  try {
    db = await openDatabase(cfg.databaseUrl, cfg.dataDir);
  } catch (e) {
    process.stderr.write(`diskhub scrub: ${e instanceof DatabaseUrlError ? e.message : `cannot open the database: ${(e as Error).message}`}\n`);
    return 1;
  }
  try {
    const stores = await openConfiguredStores(cfg);
    const scrubber = new Scrubber(new ScrubRepo(db), (id, url) => stores.locate(id, url), { scrubTime: cfg.scrubTime, node: commandScrubberNode(cfg.dataDir) }, log);
    if (values.restore !== undefined) {
      try {
        await scrubber.restore(values.restore);
        return 0;
      } catch (e) {
        if (e instanceof RestoreError) { process.stderr.write(`ERROR: ${e.message}\n`); return 1; }
        throw e;
      }
    }
    if (values.daemon) {
      scrubber.start(cfg.scrubWakeupTime || 300);
      await stopSignal();
      await scrubber.stop();
      return 0;
    }
    await scrubber.recover();
    const { failed } = await scrubber.runOnce();
    return failed.length ? 1 : 0;
  } catch (e) {
    process.stderr.write(`ERROR: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await db.close();
  }
}
