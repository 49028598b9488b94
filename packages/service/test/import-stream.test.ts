/**
 * image_conversion to raw as the source streams (web-download from a local HTTP server): the
 * stored data is byte for byte what `qemu-img convert -O raw` makes of the same source, for
 * qcow2 images qemu-img made (plain, compressed, with holes), one whose L2 table follows its
 * data, a vmdk streamOptimized (staged), and a cut qcow2 (read as qemu-img reads it: zeroes
 * past the end); hostile streams (a body that stops, a lying virtual size, a cluster mapped
 * twice) fail the import and store nothing; a real qcow2 whose virtual size passes the size cap
 * is refused from its header, before its data arrives and without asking the store.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, qemuIo, tempDir } from '@diskhub/testkit';
import { api, startTestService, token, until, type Api } from './helpers.js';

async function webServer(t: { after(fn: () => unknown): void }, files: Map<string, Buffer>): Promise<{ url: string; port: number }> {
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((req, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const stops = path.startsWith('/stops/');
    const file = files.get(stops ? path.slice(6) : path);
    if (!file) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Length': String(file.length) });
    // A body that stops: half of it, then the connection is cut.
    if (stops) res.write(file.subarray(0, file.length >> 1), () => res.destroy());
    else res.end(file);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });
  const port = (server.address() as import('node:net').AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, port };
}

async function importEnded(a: Api, imageId: string): Promise<any> {
  const tasks = await until(`the import task of ${imageId}`, async () => (await a('GET', `/v2/images/${imageId}/tasks`)).json.tasks,
    (ts: any[]) => ts.length > 0 && ts.every((x) => x.status === 'success' || x.status === 'failure'));
  return tasks[0];
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('image_conversion to raw as the source streams: byte-exact with qemu-img convert; hostile streams fail and store nothing', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const raw = join(dir, 'src.raw');
  await qemuImg('create', '-f', 'raw', raw, '24M');
  await qemuIo('-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x11 12M 64k', '-c', 'write -P 0x7e 20M 4M', raw);
  const files = new Map<string, Buffer>();
  const expected = new Map<string, string>();
  for (const [name, args] of [['plain.qcow2', ['-O', 'qcow2']], ['compressed.qcow2', ['-O', 'qcow2', '-c']], ['stream.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']]] as const) {
    const file = join(dir, name);
    await qemuImg('convert', '-f', 'raw', ...args, raw, file);
    files.set(`/${name}`, await readFile(file));
    await qemuImg('convert', '-O', 'raw', file, join(dir, `${name}.raw`));
    expected.set(`/${name}`, sha256(await readFile(join(dir, `${name}.raw`))));
  }
  // The L2 table swapped with the last data cluster it maps: the table follows its data.
  const late = Buffer.from(files.get('/plain.qcow2')!);
  const cs = 2 ** late.readUInt32BE(20), l1 = Number(late.readBigUInt64BE(40)), mask = 0x00fffffffffffe00n;
  const l1e = late.readBigUInt64BE(l1), l2 = Number(l1e & mask);
  let last = 0, lastHost = 0;
  for (let i = 0; i < cs / 8; i++) { const h = Number(late.readBigUInt64BE(l2 + i * 8) & mask); if (h > lastHost) { lastHost = h; last = i; } }
  const table = Buffer.from(late.subarray(l2, l2 + cs));
  table.writeBigUInt64BE((table.readBigUInt64BE(last * 8) & ~mask) | BigInt(l2), last * 8);
  late.copy(late, l2, lastHost, lastHost + cs);
  table.copy(late, lastHost);
  late.writeBigUInt64BE((l1e & ~mask) | BigInt(lastHost), l1);
  files.set('/late.qcow2', late);
  expected.set('/late.qcow2', expected.get('/plain.qcow2')!);
  // Hostile: cut in half; a virtual size of 1 PiB (past the size cap); a data cluster mapped twice.
  const plain = files.get('/plain.qcow2')!;
  // (qemu-img reads what lies past the end of a cut file as zeroes, so does the engine: the
  // import must store exactly what qemu-img convert makes of it)
  files.set('/truncated.qcow2', plain.subarray(0, plain.length >> 1));
  await writeFile(join(dir, 'truncated.qcow2'), files.get('/truncated.qcow2')!);
  await qemuImg('convert', '-O', 'raw', join(dir, 'truncated.qcow2'), join(dir, 'truncated.raw'));
  expected.set('/truncated.qcow2', sha256(await readFile(join(dir, 'truncated.raw'))));
  const huge = Buffer.from(plain);
  huge.writeBigUInt64BE(1n << 50n, 24);
  files.set('/huge.qcow2', huge);
  const twice = Buffer.from(plain);
  let first = 0;
  while (twice.readBigUInt64BE(l2 + first * 8) === 0n) first++;
  twice.writeBigUInt64BE(twice.readBigUInt64BE(l2 + first * 8), l2 + (first + 200) * 8);
  files.set('/twice.qcow2', twice);

  const web = await webServer(t, files);
  const svc = await startTestService(t, {
    DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port),
    DISKHUB_SHUTDOWN_GRACE: '1', DISKHUB_TASK_POLL_SECONDS: '1',
    DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_conversion', DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: 'raw',
  });
  const a = api(svc.url, await token(svc.url));
  const importing = async (path: string, diskFormat: string) => {
    const img = (await a('POST', '/v2/images', { body: { name: path, disk_format: diskFormat, container_format: 'bare' } })).json;
    assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download', uri: `${web.url}${path}` } } })).status, 202);
    return { id: img.id as string, task: await importEnded(a, img.id) };
  };
  for (const [path, want] of expected) {
    const { id, task } = await importing(path, path.endsWith('.vmdk') ? 'vmdk' : 'qcow2');
    assert.equal(task.status, 'success', `${path}: ${task.message}`);
    const img = (await a('GET', `/v2/images/${id}`)).json;
    assert.equal(img.disk_format, 'raw');
    assert.equal(img.virtual_size, 24 << 20);
    const got = Buffer.from(await (await fetch(`${svc.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': await token(svc.url) } })).arrayBuffer());
    assert.equal(sha256(got), want, `${path}: the stored bytes are qemu-img convert's`);
    // The checksums are of the converted bytes, as Glance's.
    assert.equal(img.checksum, createHash('md5').update(got).digest('hex'));
    assert.equal(img.os_hash_value, createHash('sha512').update(got).digest('hex'));
  }
  for (const [path, why] of [['/stops/plain.qcow2', /.+/], ['/huge.qcow2', /exceeds|cap|quota|L1 table is too small/i], ['/twice.qcow2', /a second time|mapped twice/]] as const) {
    const { id, task } = await importing(path, 'qcow2');
    assert.equal(task.status, 'failure', path);
    assert.match(task.message, why, `${path}: ${task.message}`);
    const img = (await a('GET', `/v2/images/${id}`)).json;
    assert.equal(img.status, 'queued', path);
    assert.equal(img.disk_format, 'qcow2', `${path}: the formats are put back`);
  }
  assert.deepEqual((await readdir(join(svc.dataDir, 'staging'))).filter((f) => f.includes('convert')), [], 'no spill file left');
});

test('a qcow2 with a valid header and a virtual size past the size cap is refused before its data is read, spilled or stored', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'huge.qcow2');
  // A real qcow2 (qemu-img's own header, L1 and refcount tables) of a 2 TiB disk, 8 MiB written.
  await qemuImg('create', '-f', 'qcow2', file, '2T');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x33 0 8M', file);
  const image = await readFile(file);
  const l1 = Number(image.readBigUInt64BE(40)), mask = 0x00fffffffffffe00n;
  const l2 = Number(image.readBigUInt64BE(l1) & mask);
  const firstData = Number(image.readBigUInt64BE(l2) & mask);
  assert.ok(firstData > l2, 'qemu-img put the data after its tables');
  // The server sends everything before the first data cluster, then holds the connection
  // open without sending more: an import that waited for the data would hang there.
  const held = new Set<import('node:net').Socket>();
  const server = createServer((req, res) => {
    held.add(req.socket);
    res.writeHead(200, { 'Content-Length': String(image.length) });
    res.write(image.subarray(0, firstData));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of held) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });
  const port = (server.address() as import('node:net').AddressInfo).port;
  const cap = 1 << 30;
  const svc = await startTestService(t, {
    DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(port),
    DISKHUB_SHUTDOWN_GRACE: '1', DISKHUB_TASK_POLL_SECONDS: '1', DISKHUB_IMAGE_SIZE_CAP: String(cap),
    DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_conversion', DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: 'raw',
  });
  // The file store's directory becomes a plain file: had the import asked the store for
  // anything, it would fail with the store's error, not the size cap's.
  const storeDir = join(svc.dataDir, 'images');
  await rm(storeDir, { recursive: true, force: true });
  await writeFile(storeDir, 'not a directory');
  const a = api(svc.url, await token(svc.url));
  const img = (await a('POST', '/v2/images', { body: { name: 'huge', disk_format: 'qcow2', container_format: 'bare' } })).json;
  assert.equal((await a('POST', `/v2/images/${img.id}/import`, { body: { method: { name: 'web-download', uri: `http://127.0.0.1:${port}/huge.qcow2` } } })).status, 202);
  const task = await importEnded(a, img.id);
  assert.equal(task.status, 'failure');
  assert.equal(task.message, `Image exceeds the storage quota: the image size cap is ${cap} bytes.`);
  const after = (await a('GET', `/v2/images/${img.id}`)).json;
  assert.equal(after.status, 'queued');
  assert.equal(after.disk_format, 'qcow2', 'the formats are put back');
  assert.equal(await readFile(storeDir, 'utf8'), 'not a directory');
  assert.deepEqual((await readdir(join(svc.dataDir, 'staging'))).filter((f) => f.includes('convert')), [], 'no spill file left');
  // The download was stopped (the service closed its connection to the server).
  await until('the download connection closed', async () => [...held].every((s) => s.destroyed || s.readableEnded), (v) => v, 10_000);
});
