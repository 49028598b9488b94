#!/usr/bin/env node
// Image service benchmark: diskhub's service and Debian's real Glance (shared/peers/glance,
// noauth, 2 workers, SQLite + file store) on the same machine in the same run, on loopback.
// Prints upload/download throughput, create/show/list request rates at 1 and 32 concurrent
// clients, and peak RSS, with the diskhub/Glance ratio.
//   BENCH_SIZE_MB (default 1024)  BENCH_IMAGES (default 1000)  BENCH_SECONDS (default 5 per load)
//   BENCH_TRANSFER_RUNS (default 3): uploads and downloads of BENCH_SIZE_MB; the best of each counts
//   BENCH_CONCURRENT (default 10): uploads of BENCH_SIZE_MB run at once at the end, with the
//   servers' resident memory sampled throughout (0 skips the phase)
//   GLANCE_PEER (default ../shared/peers/glance next to the repository)
import { spawn, execFileSync } from 'node:child_process';
import { createReadStream, existsSync, readFileSync, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { request, Agent } from 'node:http';
import { createServer } from 'node:net';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'service');
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 1024) << 20;
const IMAGES = Number(process.env.BENCH_IMAGES ?? 1000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 10);
const TRANSFER_RUNS = Number(process.env.BENCH_TRANSFER_RUNS ?? 3);
const peer = process.env.GLANCE_PEER ?? [resolve(root, '..', 'shared', 'peers', 'glance'), '/work/shared/peers/glance'].find((p) => existsSync(join(p, 'start.sh')));
if (!peer) throw new Error('reference Glance scripts not found: set GLANCE_PEER to shared/peers/glance');
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

const freePort = () => new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });

async function http(url, opts = {}) {
  // A kept-alive socket the server closed while idle resets the next request: retry once.
  try { return await http1(url, opts); } catch (e) { if (e.code !== 'ECONNRESET' || opts.bodyStream) throw e; return http1(url, opts); }
}
function http1(url, { method = 'GET', headers = {}, body, bodyStream } = {}) {
  return new Promise((resolveP, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent }, (res) => {
      const chunks = []; let n = 0;
      res.on('data', (c) => { n += c.length; if (n < 1 << 20) chunks.push(c); });
      res.on('end', () => resolveP({ status: res.statusCode, headers: res.headers, bytes: n, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (bodyStream) bodyStream.pipe(req); else req.end(body);
  });
}

function rssOf(pids) {
  let kb = 0;
  for (const pid of pids) {
    try { kb += Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]); } catch { /* gone */ }
  }
  return kb * 1024;
}
/** Resident memory now (VmRSS), summed over the processes. */
function rssNow(pids) {
  let kb = 0;
  for (const pid of pids) {
    try { kb += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]); } catch { /* gone */ }
  }
  return kb * 1024;
}
function childrenOf(pid) {
  try { return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number); } catch { return []; }
}

async function startDiskhub() {
  const dir = join(work, 'diskhub'); await rm(dir, { recursive: true, force: true }); await mkdir(dir, { recursive: true });
  const port = await freePort();
  const child = spawn(process.execPath, [join(root, 'packages/cli/bin/diskhub.js'), 'serve'], {
    env: { ...process.env, DISKHUB_DATA_DIR: dir, DISKHUB_PORT: String(port), DISKHUB_ADMIN_PASSWORD: 'bench', DISKHUB_LOG_LEVEL: 'warn' }, stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) { try { if ((await http(`${url}/healthcheck`)).status === 200) break; } catch { /* starting */ } await new Promise((r) => setTimeout(r, 50)); }
  const t = await http(`${url}/identity/v3/auth/tokens`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { id: 'default' }, password: 'bench' } } }, scope: { project: { name: 'admin', domain: { id: 'default' } } } } }) });
  return { name: 'diskhub', url, headers: { 'X-Auth-Token': t.headers['x-subject-token'] }, pids: () => [child.pid], stop: () => child.kill('SIGTERM') };
}

async function startGlance() {
  const dir = join(work, 'glance'); await rm(dir, { recursive: true, force: true });
  const port = await freePort();
  execFileSync('bash', [join(peer, 'start.sh')], { env: { ...process.env, GLANCE_REF_DIR: dir, GLANCE_REF_PORT: String(port) }, stdio: 'ignore' });
  const pid = Number(readFileSync(join(dir, 'glance.pid'), 'utf8'));
  return {
    name: 'glance', url: `http://127.0.0.1:${port}`, headers: { 'X-Tenant-Id': 'bench', 'X-Project-Id': 'bench', 'X-Roles': 'admin' },
    pids: () => [pid, ...childrenOf(pid)],
    stop: () => execFileSync('bash', [join(peer, 'stop.sh')], { env: { ...process.env, GLANCE_REF_DIR: dir }, stdio: 'ignore' }),
  };
}

async function createImage(s, name) {
  const r = await http(`${s.url}/v2/images`, { method: 'POST', headers: { ...s.headers, 'Content-Type': 'application/json' }, body: JSON.stringify({ name, disk_format: 'raw', container_format: 'bare' }) });
  if (r.status !== 201) throw new Error(`${s.name} create: ${r.status} ${r.text}`);
  return JSON.parse(r.text).id;
}

/** Run `fn` from `conc` clients for SECONDS; requests per second and p50/p99 latency in ms. */
async function load(conc, fn) {
  const lat = []; const end = Date.now() + SECONDS * 1000; let errors = 0;
  await Promise.all(Array.from({ length: conc }, async () => {
    while (Date.now() < end) { const t0 = performance.now(); try { await fn(); } catch { errors++; } lat.push(performance.now() - t0); }
  }));
  lat.sort((a, b) => a - b);
  return { rps: lat.length / SECONDS, p50: lat[Math.floor(lat.length * 0.5)] ?? 0, p99: lat[Math.floor(lat.length * 0.99)] ?? 0, errors };
}

async function measure(s, file) {
  const out = { uploadMBps: 0, downloadMBps: 0 };
  // Data transfers go through curl, so the numbers are the server's, not a JavaScript client's.
  // Best of TRANSFER_RUNS uploads and downloads (a 2-core machine is noisy); one image is kept.
  const hdr = Object.entries(s.headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
  const curl = (args) => execFileSync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{speed_upload} %{speed_download} %{size_download}', ...hdr, ...args], { encoding: 'utf8' }).split(' ');
  for (let run = 0; run < TRANSFER_RUNS; run++) {
    const id = await createImage(s, 'big');
    const [upCode, upSpeed] = curl(['-H', 'Content-Type: application/octet-stream', '-T', file, `${s.url}/v2/images/${id}/file`]);
    if (upCode !== '204') throw new Error(`${s.name} upload: ${upCode}`);
    out.uploadMBps = Math.max(out.uploadMBps, Number(upSpeed) / 2 ** 20);
    const [downCode, , downSpeed, downSize] = curl([`${s.url}/v2/images/${id}/file`]);
    if (downCode !== '200' || Number(downSize) !== SIZE) throw new Error(`${s.name} download: ${downCode} ${downSize} bytes`);
    out.downloadMBps = Math.max(out.downloadMBps, Number(downSpeed) / 2 ** 20);
    if (run > 0) {
      const del = await http(`${s.url}/v2/images/${id}`, { method: 'DELETE', headers: s.headers });
      if (del.status !== 204) throw new Error(`${s.name} delete: ${del.status}`);
    }
  }
  let t0;
  t0 = performance.now();
  const ids = [];
  for (let i = 0; i < IMAGES; i += 32) ids.push(...await Promise.all(Array.from({ length: Math.min(32, IMAGES - i) }, (_, j) => createImage(s, `img-${i + j}`))));
  out.createRps = IMAGES / ((performance.now() - t0) / 1000);
  let k = 0;
  const show = () => http(`${s.url}/v2/images/${ids[k++ % ids.length]}`, { headers: s.headers }).then((r) => { if (r.status !== 200) throw new Error(String(r.status)); });
  const list = () => http(`${s.url}/v2/images?limit=100`, { headers: s.headers }).then((r) => { if (r.status !== 200) throw new Error(String(r.status)); });
  for (const c of [1, 32]) { out[`show_c${c}`] = await load(c, show); out[`list_c${c}`] = await load(c, list); }
  // A full paginated walk of all images.
  t0 = performance.now(); let next = '/v2/images?limit=100'; let n = 0;
  while (next) { const r = await http(`${s.url}${next}`, { headers: s.headers }); const b = JSON.parse(r.text); n += b.images.length; next = b.next; }
  out.walkMs = performance.now() - t0; out.walked = n;
  out.peakRssMB = rssOf(s.pids()) / 2 ** 20;
  if (CONCURRENT > 0) Object.assign(out, await concurrentUploads(s, file, hdr));
  return out;
}

/** CONCURRENT uploads of `file` at once (curl each): aggregate throughput, and resident memory before and at its highest. */
async function concurrentUploads(s, file, hdr) {
  const ids = await Promise.all(Array.from({ length: CONCURRENT }, (_, i) => createImage(s, `concurrent-${i}`)));
  const before = rssNow(s.pids());
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, rssNow(s.pids())); }, 100);
  const t0 = performance.now();
  const codes = await Promise.all(ids.map((id) => new Promise((res, rej) => {
    const c = spawn('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...hdr, '-H', 'Content-Type: application/octet-stream', '-T', file, `${s.url}/v2/images/${id}/file`]);
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.on('error', rej);
    c.on('exit', () => res(out));
  })));
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  // A failed upload is a result (the peer's SQLite may refuse one under load), not a crash of the benchmark.
  const failed = codes.filter((c) => c !== '204').length;
  if (failed) console.error(`${s.name}: ${failed} of ${CONCURRENT} concurrent uploads failed (HTTP ${codes.join(', ')})`);
  return { concurrentFailed: failed, concurrentMBps: ((CONCURRENT - failed) * SIZE) / 2 ** 20 / seconds, concurrentRssBeforeMB: before / 2 ** 20, concurrentRssPeakMB: peak / 2 ** 20 };
}

await mkdir(work, { recursive: true });
const file = join(work, `data-${SIZE}.bin`);
if (!existsSync(file)) {
  const ws = createWriteStream(file); const chunk = randomBytes(1 << 20);
  for (let i = 0; i < SIZE >> 20; i++) if (!ws.write(chunk)) await new Promise((r) => ws.once('drain', r));
  await new Promise((r) => ws.end(r));
}
const results = {};
for (const start of [startDiskhub, startGlance]) {
  const s = await start();
  console.error(`measuring ${s.name} at ${s.url}`);
  try { results[s.name] = await measure(s, file); } finally { s.stop(); }
  // The uploaded data is not needed after the run (it is several GiB with the concurrent phase).
  await rm(join(work, s.name), { recursive: true, force: true }).catch(() => {});
}
const d = results.diskhub, g = results.glance;
const row = (what, a, b, unit, higherBetter = true) => console.log(`${what.padEnd(30)} ${a.toFixed(1).padStart(10)} ${b.toFixed(1).padStart(10)} ${unit.padEnd(6)} ${(higherBetter ? a / b : b / a).toFixed(2).padStart(6)}x`);
console.log(`image service benchmark: ${SIZE >> 20} MiB upload/download, ${IMAGES} images, ${SECONDS}s per load level`);
console.log(`${'measure'.padEnd(30)} ${'diskhub'.padStart(10)} ${'glance'.padStart(10)} ${'unit'.padEnd(6)} ${'ratio'.padStart(7)}`);
row('upload throughput', d.uploadMBps, g.uploadMBps, 'MiB/s');
row('download throughput', d.downloadMBps, g.downloadMBps, 'MiB/s');
row('create (32 concurrent)', d.createRps, g.createRps, 'req/s');
for (const c of [1, 32]) {
  row(`show, ${c} client(s)`, d[`show_c${c}`].rps, g[`show_c${c}`].rps, 'req/s');
  row(`show p99, ${c} client(s)`, d[`show_c${c}`].p99, g[`show_c${c}`].p99, 'ms', false);
  row(`list 100, ${c} client(s)`, d[`list_c${c}`].rps, g[`list_c${c}`].rps, 'req/s');
  row(`list 100 p99, ${c} client(s)`, d[`list_c${c}`].p99, g[`list_c${c}`].p99, 'ms', false);
}
row(`walk all ${d.walked} (limit 100)`, d.walkMs, g.walkMs, 'ms', false);
row('peak RSS (all processes)', d.peakRssMB, g.peakRssMB, 'MiB', false);
if (CONCURRENT > 0) {
  row(`${CONCURRENT} uploads at once, total`, d.concurrentMBps, g.concurrentMBps, 'MiB/s');
  row(`RSS before ${CONCURRENT} uploads`, d.concurrentRssBeforeMB, g.concurrentRssBeforeMB, 'MiB', false);
  row(`RSS peak during ${CONCURRENT} uploads`, d.concurrentRssPeakMB, g.concurrentRssPeakMB, 'MiB', false);
  console.log(`${'failed of the concurrent uploads'.padEnd(30)} ${String(d.concurrentFailed).padStart(10)} ${String(g.concurrentFailed).padStart(10)}`);
}
agent.destroy();
