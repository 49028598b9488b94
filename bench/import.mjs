#!/usr/bin/env node
// web-download with image_conversion to raw (issue 19): diskhub's import, which converts the
// qcow2 as it streams in, against Glance's way measured as its three commands — `curl -o` into
// staging, `qemu-img convert -O raw`, then `rbd import` (+ `rbd snap create` + `snap protect`,
// as Glance's rbd store makes the snapshot; diskhub's import makes it too) or `cp` into a
// file store directory. Glance also hashes the data (md5, sha512) as it stores it; the
// three commands do not, diskhub does: the comparison leans towards Glance.
//
// The source: a qcow2 made by qemu-img of a BENCH_SIZE_MB disk (default 1024) whose every other
// 8 MiB holds random data (half of it), served by one loopback HTTP server (a child process)
// to both sides. Runs alternate (ours, Glance's, for each store), BENCH_RUNS rounds (default
// 3); the medians and their ratio are printed. diskhub's time runs from the import request until
// a GET shows the image active, polled as POLL_MS says (only once the web server has sent the
// last byte, then every 10 ms), so it is not charged the download-time polling nor a late look.
//
// Memory: the service's peak resident memory (VmRSS sampled every 20 ms) while it imports a
// 64 MiB qcow2, the BENCH_SIZE_MB one, and BENCH_CONCURRENT (default 3) of those at once
// into the file store: flat means it does not grow with the image size or the number of imports.
//
// BENCH_BASELINE=DIR (another diskhub checkout, built, e.g. a copy made before a change) also
// imports with that checkout's service in the same rounds (ours, the baseline's, Glance's), and
// prints ours against it: a change's effect measured under the same load. BENCH_MEMORY=0 skips
// the memory lines.
//
// RBD needs the cluster of .ci/services/ceph.sh ($DISKHUB_CEPH_ENV, default
// /var/tmp/diskhub-ceph/env); without it only the file store is measured.
import { spawn } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomFillSync, randomUUID } from 'node:crypto';
import { open } from 'node:fs/promises';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'import');
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 1024) << 20;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 3);
const MiB = 1 << 20;
const BASELINE = process.env.BENCH_BASELINE ? resolve(process.env.BENCH_BASELINE) : null;
const MEMORY = process.env.BENCH_MEMORY !== '0';
/**
 * When an import's image is polled for its status. Each GET is work for the service (token
 * check, a database read): polled every 25 ms throughout, as this bench did first, that was
 * 0.46-0.56 s of its CPU per 10 s, counted as the import's; every 200 ms, 0.1 s, but the end was
 * seen 100 ms late on average, a time the three commands are not charged. So the image is not
 * polled while its data downloads: the web server says when it has sent a request's last byte,
 * and from then on — the tail: the last conversion, hashing and writes, the snapshot, the
 * commit — the image is polled every BENCH_POLL_MS (default 10 ms: the end is seen 5 ms late on
 * average, and the tail's 50-100 GETs cost the service a few tens of ms of CPU). Before that, a
 * GET every second only notices a failed import.
 */
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 10);

const envFile = process.env.DISKHUB_CEPH_ENV ?? '/var/tmp/diskhub-ceph/env';
const ceph = await readFile(envFile, 'utf8').then((t) => Object.fromEntries(t.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])), () => null);
const pool = ceph?.DISKHUB_CEPH_POOL ?? 'images';
const rbdArgs = ceph ? ['--conf', ceph.CEPH_CONF, '--id', ceph.DISKHUB_CEPH_USER ?? 'glance', '--keyring', ceph.DISKHUB_CEPH_GLANCE_KEYRING] : [];

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const TICK = 100; // USER_HZ
/** CPU seconds (user + system) of process `pid` (its threads included), or of this process's reaped children. */
const cpuOf = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / TICK; };
const childrenCpu = () => { const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' '); return (Number(f[13]) + Number(f[14])) / TICK; };
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function run(cmd, args, opts = {}) {
  return new Promise((res, rej) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...opts });
    let err = '';
    c.stderr.on('data', (d) => { err += d; });
    c.on('close', (code) => (code === 0 ? res() : rej(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${err}`))));
  });
}
const rbd = (...args) => run('rbd', [...rbdArgs, ...args]);

async function freePort() {
  return new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
}

/** A qcow2 of `size` bytes, every other 8 MiB random. */
async function makeSource(size, name) {
  const qcow = join(work, name);
  if ((await stat(qcow).catch(() => null))?.size) return qcow;
  const raw = join(work, `${name}.raw`);
  const fh = await open(raw, 'w');
  await fh.truncate(size);
  const chunk = Buffer.alloc(8 * MiB);
  for (let at = 0; at < size; at += 16 * MiB) { randomFillSync(chunk); await fh.write(chunk, 0, Math.min(chunk.length, size - at), at); }
  await fh.close();
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow]);
  await rm(raw);
  return qcow;
}

/**
 * The loopback web server both sides download from (its own process: its CPU is not the
 * service's). A URL's query (`?tag`) is not part of the file name; once a response's last byte
 * is handed to the socket, the server prints the tag, and `sent(tag)` resolves.
 */
async function webServer() {
  const port = await freePort();
  const code = `const http=require('http'),fs=require('fs'),path=require('path');
http.createServer((q,s)=>{const u=new URL(q.url,'http://x');const f=path.join(${JSON.stringify(work)},path.basename(u.pathname));fs.stat(f,(e,st)=>{if(e){s.writeHead(404);s.end();return;}
s.writeHead(200,{'Content-Length':st.size});s.on('finish',()=>{if(u.search)process.stdout.write(u.search.slice(1)+'\\n');});fs.createReadStream(f,{highWaterMark:1<<20}).pipe(s);});}).listen(${port},'127.0.0.1');`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'ignore'] });
  const waiting = new Map();
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (d) => {
    text += d;
    for (let nl; (nl = text.indexOf('\n')) >= 0; text = text.slice(nl + 1)) { const tag = text.slice(0, nl); waiting.get(tag)?.(); waiting.delete(tag); }
  });
  for (let i = 0; i < 100; i++) { try { if ((await fetch(`http://127.0.0.1:${port}/none`)).status === 404) break; } catch { /* starting */ } await sleep(50); }
  const sent = (tag) => new Promise((resolve) => waiting.set(tag, resolve));
  return { url: `http://127.0.0.1:${port}`, port, sent, stop: () => child.kill() };
}

async function startDiskhub(name, web, stores, checkout = root) {
  const dir = join(work, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'diskhub.json');
  await writeFile(config, JSON.stringify({ stores, defaultStore: Object.keys(stores)[0] }));
  const port = await freePort();
  const child = spawn(process.execPath, [join(checkout, 'packages/cli/bin/diskhub.js'), 'serve'], {
    env: {
      ...process.env, DISKHUB_CONFIG: config, DISKHUB_DATA_DIR: dir, DISKHUB_PORT: String(port), DISKHUB_ADMIN_PASSWORD: 'bench', DISKHUB_LOG_LEVEL: 'warn',
      DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(web.port), DISKHUB_TASK_POLL_SECONDS: '1',
      DISKHUB_IMAGE_IMPORT_PLUGINS: 'image_conversion', DISKHUB_IMAGE_CONVERSION_OUTPUT_FORMAT: 'raw',
    },
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 400; i++) { try { if ((await fetch(`${url}/healthcheck`)).status === 200) break; } catch { /* starting */ } await sleep(50); }
  const t = await fetch(`${url}/identity/v3/auth/tokens`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { id: 'default' }, password: 'bench' } } }, scope: { project: { name: 'admin', domain: { id: 'default' } } } } }) });
  const headers = { 'X-Auth-Token': t.headers.get('x-subject-token'), 'Content-Type': 'application/json' };
  return { url, headers, pid: child.pid, dir, stop: () => child.kill('SIGTERM') };
}

/** One web-download import, from the request to the image being active (seen as the POLL_MS comment says). */
async function importOnce(svc, uri) {
  const img = await (await fetch(`${svc.url}/v2/images`, { method: 'POST', headers: svc.headers, body: JSON.stringify({ name: 'bench', disk_format: 'qcow2', container_format: 'bare' }) })).json();
  const tag = randomUUID();
  let tail = false;
  const sent = web.sent(tag).then(() => { tail = true; });
  const t0 = process.hrtime.bigint();
  const c0 = cpuOf(svc.pid);
  const r = await fetch(`${svc.url}/v2/images/${img.id}/import`, { method: 'POST', headers: svc.headers, body: JSON.stringify({ method: { name: 'web-download', uri: `${uri}?${tag}` } }) });
  if (r.status !== 202) throw new Error(`import: ${r.status} ${await r.text()}`);
  for (;;) {
    await (tail ? sleep(POLL_MS) : Promise.race([sent, sleep(1000)]));
    const cur = await (await fetch(`${svc.url}/v2/images/${img.id}`, { headers: svc.headers })).json();
    if (cur.status === 'active') return { s: seconds(t0), cpu: cpuOf(svc.pid) - c0, id: img.id };
    if (cur.status === 'queued' && cur.os_glance_failed_import) {
      const tasks = await (await fetch(`${svc.url}/v2/images/${img.id}/tasks`, { headers: svc.headers })).json();
      throw new Error(`import failed: ${tasks.tasks?.map((t) => t.message).join('; ')}`);
    }
  }
}

/** Peak VmRSS of `pid` while `fn` runs. */
async function peakRss(pid, fn) {
  let peak = 0, on = true;
  const sample = () => { try { peak = Math.max(peak, Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024); } catch { /* gone */ } };
  const sampler = (async () => { while (on) { sample(); await sleep(20); } })();
  try { await fn(); } finally { on = false; await sampler; }
  return peak;
}

/** Glance's way: the three commands. */
async function glanceWay(uri, store) {
  const staging = join(work, 'glance-staging');
  const converted = join(work, 'glance-converted.raw');
  const t0 = process.hrtime.bigint();
  const c0 = childrenCpu();
  await run('curl', ['-sS', '-o', staging, uri]);
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', staging, converted]);
  let name = null;
  if (store === 'rbd') {
    name = `bench-glance-${randomUUID()}`;
    await rbd('import', '--no-progress', '--object-size', '8M', converted, `${pool}/${name}`);
    await rbd('snap', 'create', `${pool}/${name}@snap`);
    await rbd('snap', 'protect', `${pool}/${name}@snap`);
  } else {
    await run('cp', [converted, join(work, 'glance-store', 'image')]);
  }
  const s = seconds(t0);
  const cpu = childrenCpu() - c0;
  // What Glance does besides the commands: it hashes the data it stores (md5 checksum, sha512
  // os_hash_value) as it writes it; timed apart, as md5sum and sha512sum of the converted file.
  const h0 = process.hrtime.bigint();
  const hc0 = childrenCpu();
  await Promise.all([run('md5sum', [converted]), run('sha512sum', [converted])]);
  const hashing = { s: seconds(h0), cpu: childrenCpu() - hc0 };
  await rm(staging, { force: true });
  await rm(converted, { force: true });
  await rm(join(work, 'glance-store', 'image'), { force: true });
  if (name) {
    await rbd('snap', 'unprotect', `${pool}/${name}@snap`);
    await rbd('snap', 'rm', '--no-progress', `${pool}/${name}@snap`);
    await rbd('rm', '--no-progress', `${pool}/${name}`);
  }
  return { s, cpu, hashing };
}

async function deleteImage(svc, id) {
  await fetch(`${svc.url}/v2/images/${id}`, { method: 'DELETE', headers: svc.headers });
}

await mkdir(join(work, 'glance-store'), { recursive: true });
const big = await makeSource(SIZE, `half-random-${SIZE / MiB}M.qcow2`);
const small = await makeSource(64 * MiB, 'half-random-64M.qcow2');
const web = await webServer();
const bigUri = `${web.url}/${big.split('/').pop()}`;
const smallUri = `${web.url}/${small.split('/').pop()}`;
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.log(`web-download + image_conversion to raw: ${SIZE / MiB} MiB qcow2 (${((await stat(big)).size / MiB).toFixed(0)} MiB file, half random), ${RUNS} alternated runs; load ${load()}`);
const stores = { file: { local: { type: 'file', path: 'images' } } };
if (ceph) stores.rbd = { ceph: { type: 'rbd', rbd_store_pool: pool, rbd_store_user: ceph.DISKHUB_CEPH_USER ?? 'glance', rbd_store_ceph_conf: ceph.CEPH_CONF, rbd_store_keyring: ceph.DISKHUB_CEPH_GLANCE_KEYRING, rados_connect_timeout: 20 } };
else console.log('no Ceph cluster: the RBD store is not measured');
const services = {};
try {
  for (const [store, cfg] of Object.entries(stores)) {
    services[store] = await startDiskhub(`diskhub-${store}`, web, cfg);
    if (BASELINE) services[`${store}-baseline`] = await startDiskhub(`diskhub-${store}-baseline`, web, cfg, BASELINE);
  }
  const times = Object.fromEntries(Object.keys(stores).map((s) => [s, { ours: [], glance: [], oursCpu: [], glanceCpu: [], hashS: [], hashCpu: [], base: [], baseCpu: [] }]));
  for (let i = 1; i <= RUNS; i++) {
    for (const store of Object.keys(stores)) {
      const ours = await importOnce(services[store], bigUri);
      await deleteImage(services[store], ours.id);
      if (BASELINE) {
        const base = await importOnce(services[`${store}-baseline`], bigUri);
        await deleteImage(services[`${store}-baseline`], base.id);
        times[store].base.push(base.s);
        times[store].baseCpu.push(base.cpu);
        console.log(`run ${i} ${store}: baseline diskhub (${BASELINE}) ${base.s.toFixed(2)} s (CPU ${base.cpu.toFixed(2)} s)`);
      }
      const theirs = await glanceWay(bigUri, store);
      times[store].ours.push(ours.s);
      times[store].glance.push(theirs.s);
      times[store].oursCpu.push(ours.cpu);
      times[store].glanceCpu.push(theirs.cpu);
      times[store].hashS.push(theirs.hashing.s);
      times[store].hashCpu.push(theirs.hashing.cpu);
      console.log(`run ${i} ${store}: diskhub ${ours.s.toFixed(2)} s (CPU ${ours.cpu.toFixed(2)} s), Glance's three commands ${theirs.s.toFixed(2)} s (CPU ${theirs.cpu.toFixed(2)} s), + md5sum and sha512sum ${theirs.hashing.s.toFixed(2)} s (CPU ${theirs.hashing.cpu.toFixed(2)} s) (load ${load()})`);
    }
  }
  for (const [store, t] of Object.entries(times)) {
    const o = median(t.ours), g = median(t.glance);
    const oc = median(t.oursCpu), gc = median(t.glanceCpu);
    console.log(`median ${store}: diskhub ${o.toFixed(2)} s (${(SIZE / MiB / o).toFixed(0)} MiB/s of guest data), Glance's three commands ${g.toFixed(2)} s; wall ratio diskhub / three commands ${(o / g).toFixed(2)} (issue 19's target: below 1; ${(g / o).toFixed(2)}x as fast)`);
    const hs = median(t.hashS), hc = median(t.hashCpu);
    console.log(`median ${store} with Glance's hashing added (md5sum and sha512sum of the converted file, run at once): Glance's way ${(g + hs).toFixed(2)} s, CPU ${(gc + hc).toFixed(2)} s; diskhub's wall time ratio ${(o / (g + hs)).toFixed(2)}, CPU ratio ${(oc / (gc + hc)).toFixed(2)}`);
    console.log(`median ${store} CPU (user + system; the service's threads vs the commands'; the web server and Ceph's daemons not counted): diskhub ${oc.toFixed(2)} s, Glance's way ${gc.toFixed(2)} s; ratio ${(oc / gc).toFixed(2)}`);
    if (BASELINE) {
      const b = median(t.base), bc = median(t.baseCpu);
      console.log(`median ${store} against the baseline: diskhub ${o.toFixed(2)} s (CPU ${oc.toFixed(2)} s), baseline ${b.toFixed(2)} s (CPU ${bc.toFixed(2)} s); wall ratio ${(o / b).toFixed(2)}, CPU ratio ${(oc / bc).toFixed(2)}`);
    }
  }
  // Memory: a fresh service per measurement, so each peak is that import's.
  for (const [label, uris] of !MEMORY ? [] : [['64 MiB', [smallUri]], [`${SIZE / MiB} MiB`, [bigUri]], [`${CONCURRENT} x ${SIZE / MiB} MiB at once`, Array(CONCURRENT).fill(bigUri)]]) {
    const svc = await startDiskhub('diskhub-memory', web, stores.file);
    const idle = await peakRss(svc.pid, () => sleep(200));
    const peak = await peakRss(svc.pid, () => Promise.all(uris.map((u) => importOnce(svc, u))));
    console.log(`memory, file store, ${label}: service peak RSS ${(peak / MiB).toFixed(0)} MiB (idle ${(idle / MiB).toFixed(0)} MiB)`);
    svc.stop();
    await sleep(500);
  }
} finally {
  for (const s of Object.values(services)) s.stop();
  web.stop();
}
