/**
 * A task whose node dies is taken over: two `diskhub serve` processes (nodes a and b) share
 * one data directory and one SQLite database. Node a claims a web-download import from a slow
 * local server and is SIGKILLed halfway; node b, once a's lease has run out, claims the task
 * again (second attempt), downloads from the start and the image ends active with the right
 * checksum — never left importing. The same with a node stopped in an orderly way (SIGTERM,
 * shortest grace): it gives the task back at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, api, freePort, serve, token, type Api } from './helpers.js';
import { assertStored, until } from './helpers.js';

/** Serves `data`; the first `slowRequests` answers trickle (64 KiB every 100 ms), later ones go at full speed. */
async function slowServer(t: { after(fn: () => unknown): void }, data: Buffer, slowRequests: number) {
  let requests = 0;
  const sent: number[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((_req, res: ServerResponse) => {
    const n = requests++;
    sent[n] = 0;
    res.writeHead(200, { 'Content-Length': String(data.length) });
    if (n >= slowRequests) { res.end(data); sent[n] = data.length; return; }
    let off = 0;
    const timer = setInterval(() => {
      if (res.destroyed) { clearInterval(timer); return; }
      const piece = data.subarray(off, off + 65536);
      off += piece.length;
      sent[n] = off;
      if (off >= data.length) { clearInterval(timer); res.end(piece); } else res.write(piece);
    }, 100);
    res.on('close', () => clearInterval(timer));
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/disk.raw`, port: (server.address() as AddressInfo).port, requests: () => requests, sent };
}

const tasksOf = async (a: Api, id: string) => (await a('GET', `/v2/images/${id}/tasks`)).json.tasks as any[];

for (const how of ['SIGKILL', 'SIGTERM'] as const) {
  test(`a task whose node stops (${how}) mid-download is finished by another node; the image ends active with the right checksum`, async (t) => {
    const dir = await tempDir(t);
    const data = randomBytes(3 << 20);
    const web = await slowServer(t, data, 1);
    const env = {
      DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port),
      DISKHUB_TASK_LEASE_SECONDS: '2', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_SHUTDOWN_GRACE: '0',
    };
    const nodeA = await serve(dir, await freePort(), { ...env, DISKHUB_NODE_ID: 'node-a' });
    t.after(() => { nodeA.child.kill('SIGKILL'); });
    const a = api(nodeA.url, await token(nodeA.url));
    const img = (await a('POST', '/v2/images', { body: { name: 'slow', disk_format: 'raw', container_format: 'bare' } })).json;
    assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download', uri: web.url } } })).status, 202);
    // Node a holds the task and has moved some of the data, not all of it.
    await until('node a downloading', async () => web.sent[0] ?? 0, (n) => n >= 512 << 10);
    const mid = (await tasksOf(a, img.id))[0];
    assert.equal(mid.status, 'processing');
    assert.equal((await a('GET', `/v2/images/${img.id}`)).json.status, 'importing');
    nodeA.child.kill(how);
    await nodeA.exited;
    assert.ok(web.sent[0]! < data.length, 'node a stopped before the download ended');

    const nodeB = await serve(dir, await freePort(), { ...env, DISKHUB_NODE_ID: 'node-b' });
    t.after(() => { nodeB.child.kill('SIGKILL'); });
    const b = api(nodeB.url, await token(nodeB.url));
    const [task] = await until('the task to end on node b', () => tasksOf(b, img.id), (ts) => ts.length === 1 && ts[0].status !== 'processing' && ts[0].status !== 'pending');
    assert.equal(task.status, 'success', task.message);
    assert.equal(web.requests(), 2, 'node b downloaded again from the start');
    const done = await assertStored(nodeB.url, img.id, data);
    assert.equal(done.os_glance_import_task, undefined);
    nodeB.child.kill('SIGTERM');
    assert.equal(await nodeB.exited, 0);
  });
}
