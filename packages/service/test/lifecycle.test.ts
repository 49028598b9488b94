/**
 * The service as a process (`diskhub serve`): first start prints the generated admin
 * password; SIGKILL during an upload leaves no image saving forever and no partial file;
 * SIGTERM lets an upload in flight finish before the process exits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { request, type ClientRequest } from 'node:http';
import { join } from 'node:path';
import { diskhubBin, tempDir } from '@diskhub/testkit';
import { api, token, ADMIN_PASSWORD, freePort, serve } from './helpers.js';

/** Start an upload that announces `total` bytes and sends `first` of them; returns the request and its answer. */
function startUpload(url: string, tok: string, id: string, total: number, first: Buffer): { req: ClientRequest; status: Promise<number> } {
  const u = new URL(`${url}/v2/images/${id}/file`);
  const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { 'X-Auth-Token': tok, 'Content-Type': 'application/octet-stream', 'Content-Length': String(total) } });
  const status = new Promise<number>((resolve) => {
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', () => resolve(0));
  });
  req.write(first);
  return { req, status };
}

async function waitFor(cond: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) { if (await cond()) return; await new Promise((r) => setTimeout(r, 25)); }
  throw new Error(`timed out waiting for ${what}`);
}

test('first start without a password generates and prints one; bad settings fail clearly', async (t) => {
  const dir = await tempDir(t);
  const p = await serve(dir, await freePort(), { DISKHUB_ADMIN_PASSWORD: '' });
  t.after(() => { p.child.kill('SIGKILL'); });
  // The server answers its health check before the parent has necessarily read its stderr pipe.
  const printed = /password \(printed only this once\): (\S+)\n/;
  await waitFor(async () => printed.test(p.stderr()), 'the printed password');
  const m = printed.exec(p.stderr());
  assert.ok(m, p.stderr());
  assert.ok(await token(p.url, 'admin', m[1]!, 'admin'));
  p.child.kill('SIGTERM');
  assert.equal(await p.exited, 0);

  const bad = spawn(process.execPath, [diskhubBin, 'serve'], { env: { ...process.env, DISKHUB_DATA_DIR: dir, DISKHUB_DATABASE_URL: 'oracle://x' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  bad.stderr.on('data', (d) => { err += d; });
  const code = await new Promise((r) => bad.on('exit', r));
  assert.equal(code, 1);
  assert.match(err, /unsupported database URL/);
});

test('SIGKILL during an upload: after restart the image is queued again and no partial data remains', async (t) => {
  const dir = await tempDir(t);
  const port = await freePort();
  const env = { DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD };
  const first = await serve(dir, port, env);
  t.after(() => { first.child.kill('SIGKILL'); });
  const tok = await token(first.url);
  const a = api(first.url, tok);
  const id = (await a('POST', '/v2/images', { body: { name: 'crash', disk_format: 'raw', container_format: 'bare' } })).json.id;
  const up = startUpload(first.url, tok, id, 8 << 20, randomBytes(1 << 20));
  await waitFor(async () => (await a('GET', `/v2/images/${id}`)).json.status === 'saving', 'saving');
  await waitFor(async () => (await readdir(join(dir, 'images'))).length > 0, 'a partial file');
  first.child.kill('SIGKILL');
  await first.exited;
  up.req.destroy();

  const second = await serve(dir, port, env);
  t.after(() => { second.child.kill('SIGKILL'); });
  const b = api(second.url, await token(second.url));
  const img = (await b('GET', `/v2/images/${id}`)).json;
  assert.equal(img.status, 'queued');
  assert.equal(img.size, null);
  assert.deepEqual(await readdir(join(dir, 'images')), [], 'partial data removed');
  const data = randomBytes(10_000);
  assert.equal((await b('PUT', `/v2/images/${id}/file`, { raw: data })).status, 204, 'the image takes a new upload');
  assert.equal((await b('GET', `/v2/images/${id}`)).json.size, data.length);
});

test('SIGTERM waits for an upload in flight, then exits 0', async (t) => {
  const dir = await tempDir(t);
  const p = await serve(dir, await freePort(), { DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD });
  t.after(() => { p.child.kill('SIGKILL'); });
  const tok = await token(p.url);
  const a = api(p.url, tok);
  const id = (await a('POST', '/v2/images', { body: { name: 'graceful', disk_format: 'raw', container_format: 'bare' } })).json.id;
  const head = randomBytes(100_000);
  const rest = randomBytes(100_000);
  const up = startUpload(p.url, tok, id, head.length + rest.length, head);
  await waitFor(async () => (await a('GET', `/v2/images/${id}`)).json.status === 'saving', 'saving');
  p.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(p.child.exitCode, null, 'still running while the upload is in flight');
  up.req.end(rest);
  assert.equal(await up.status, 204);
  assert.equal(await p.exited, 0);
  const again = await serve(dir, await freePort(), { DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD });
  t.after(() => { again.child.kill('SIGKILL'); });
  const img = (await api(again.url, await token(again.url))('GET', `/v2/images/${id}`)).json;
  assert.equal(img.status, 'active');
  assert.equal(img.size, head.length + rest.length);
});

test('SIGKILL during staging: after restart the image is queued and the partial staged data is gone', async (t) => {
  const dir = await tempDir(t);
  const port = await freePort();
  const env = { DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD };
  const first = await serve(dir, port, env);
  t.after(() => { first.child.kill('SIGKILL'); });
  const tok = await token(first.url);
  const a = api(first.url, tok);
  const id = (await a('POST', '/v2/images', { body: { name: 'stage-crash', disk_format: 'raw', container_format: 'bare' } })).json.id;
  const u = new URL(`${first.url}/v2/images/${id}/stage`);
  const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'PUT', headers: { 'X-Auth-Token': tok, 'Content-Type': 'application/octet-stream', 'Content-Length': String(4 << 20) } });
  req.on('error', () => {});
  req.write(randomBytes(1 << 20));
  await waitFor(async () => (await a('GET', `/v2/images/${id}`)).json.status === 'uploading', 'uploading');
  await waitFor(async () => (await readdir(join(dir, 'staging')).catch(() => [])).length > 0, 'a partial staging file');
  first.child.kill('SIGKILL');
  await first.exited;
  req.destroy();
  const second = await serve(dir, port, env);
  t.after(() => { second.child.kill('SIGKILL'); });
  const b = api(second.url, await token(second.url));
  assert.equal((await b('GET', `/v2/images/${id}`)).json.status, 'queued');
  assert.deepEqual(await readdir(join(dir, 'staging')), []);
});
