/**
 * A service with several stores for the import tests: stores fast (file, default), cheap
 * (file) and mem — an in-memory test store shared by every service of the process that
 * configures it (two nodes, one store), with faults on demand — and a local web server.
 */
import type { TestContext } from 'node:test';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { tempDir } from '@diskhub/testkit';
import { jsonLogger, loadConfig, startService } from '../src/index.js';
import { register, registeredTypes, type StoreSpec } from '../src/stores/registry.js';
import { ADMIN_PASSWORD, api, token, until, type Api } from './helpers.js';
import { MemoryStore } from './memory-store.js';

/** Memory stores shared by every service of this process that configures `{"type": "shared-memory"}` (two nodes, one store). */
const shared = new Map<string, MemoryStore>();
if (!registeredTypes().includes('shared-memory')) {
  register('shared-memory', (spec: StoreSpec) => {
    let store = shared.get(spec.id);
    if (!store) shared.set(spec.id, store = new MemoryStore(spec.id));
    return store;
  });
}

export interface StoreNode { url: string; dataDir: string; admin: Api; mem: MemoryStore }

/** A service (node `node`) on `dataDir` with stores fast (file, default), cheap (file) and mem (shared memory store). */
export async function startNode(t: TestContext, dataDir: string, node = 'node-a', settings: Record<string, unknown> = {}): Promise<StoreNode> {
  const configFile = join(await tempDir(t), 'config.json');
  await writeFile(configFile, JSON.stringify({
    stores: { fast: { type: 'file', path: 'fast' }, cheap: { type: 'file', path: 'cheap' }, mem: { type: 'shared-memory' } },
    defaultStore: 'fast', imageCache: 'off', nodeId: node, taskPollSeconds: 1, shutdownGraceSeconds: 1, ...settings,
  }));
  const cfg = loadConfig({ DISKHUB_DATA_DIR: dataDir, DISKHUB_PORT: '0', DISKHUB_BIND: '127.0.0.1', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD }, {}, configFile);
  const svc = await startService(cfg, jsonLogger(process.stdout, 'silent'));
  t.after(() => svc.close());
  return { url: svc.url, dataDir, admin: api(svc.url, await token(svc.url)), mem: shared.get('mem')! };
}

/** A web server on 127.0.0.1 serving `data` at /disk.raw. */
export async function webServer(t: TestContext, data: Buffer): Promise<{ url: string; port: number }> {
  const server = createServer((_req, res) => { res.writeHead(200, { 'Content-Length': String(data.length) }); res.end(data); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/disk.raw`, port };
}

/** The image's last import task once it has ended. */
export async function ended(a: Api, id: string): Promise<any> {
  const tasks = await until(`the import of ${id}`, async () => (await a('GET', `/v2/images/${id}/tasks`)).json.tasks as any[],
    (ts) => ts.length > 0 && ['success', 'failure'].includes(ts[ts.length - 1].status));
  return tasks[tasks.length - 1];
}

