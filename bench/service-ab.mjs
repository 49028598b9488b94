#!/usr/bin/env node
// The image service's metadata rows, two builds side by side: `bench/service.mjs`'s create,
// show, list and walk against two built checkouts of this repository (say, a commit before a
// change and after it), in one run, the builds' turns alternated round by round (the order
// swapped every round), so a busy machine weighs on both alike. Per row and build it prints
// the median over rounds of the request rate and of the server's CPU time per request (user +
// system of all its threads, from /proc: what the request cost, nearly whatever else runs),
// and the after/before ratios.
//   node bench/service-ab.mjs BEFORE_TREE AFTER_TREE
//   AB_ROUNDS (default 7)  AB_IMAGES (default 500: images made before the rounds)
//   AB_CALLGRIND=1: the servers run under valgrind's callgrind, counting the instructions of
//   each phase (callgrind_control --zero/--dump around it): a count no other load changes.
//   Slow (about 50x): use small counts, e.g. AB_ROUNDS=2 AB_IMAGES=150 AB_SCALE=0.05.
//   AB_SCALE (default 1) multiplies each phase's request count; AB_ONLY=list_c1,show_c1 picks rows.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const [before, after] = process.argv.slice(2).map((p) => resolve(p));
if (!before || !after) throw new Error('usage: node bench/service-ab.mjs BEFORE_TREE AFTER_TREE');
const ROUNDS = Number(process.env.AB_ROUNDS ?? 7);
const IMAGES = Number(process.env.AB_IMAGES ?? 500);
const SCALE = Number(process.env.AB_SCALE ?? 1);
const CALLGRIND = process.env.AB_CALLGRIND === '1';
const ONLY = process.env.AB_ONLY?.split(',');
const work = mkdtempSync(join(tmpdir(), 'service-ab-'));
const agent = new Agent({ keepAlive: true, maxSockets: 64 });
/** The servers started: stopped however this script ends. */
const started = [];
process.on('exit', () => { for (const c of started) if (c.exitCode === null) c.kill('SIGTERM'); });

const freePort = () => new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });

async function http(s, method, path, body) {
  // A kept-alive socket the server closed while idle (its keep-alive timeout passes while the
  // other build runs, under valgrind) resets the next request: once more on a new socket.
  try { return await http1(s, method, path, body); } catch (e) { if (e.code !== 'ECONNRESET') throw e; return http1(s, method, path, body); }
}
function http1(s, method, path, body) {
  return new Promise((res, rej) => {
    const headers = { 'X-Auth-Token': s.token ?? '', ...(body ? { 'Content-Type': 'application/json' } : {}) };
    const r = request({ host: '127.0.0.1', port: s.port, path, method, headers, agent }, (x) => {
      const chunks = [];
      x.on('data', (c) => chunks.push(c));
      x.on('end', () => res({ status: x.statusCode, headers: x.headers, text: Buffer.concat(chunks).toString() }));
      x.on('error', rej);
    });
    r.on('error', rej);
    r.end(body);
  });
}
async function ok(s, method, path, body, want) {
  const r = await http(s, method, path, body);
  if (r.status !== want) throw new Error(`${s.name} ${method} ${path}: ${r.status} ${r.text.slice(0, 200)}`);
  return r;
}

async function start(name, tree) {
  const dir = join(work, name);
  const port = await freePort();
  const node = [join(tree, 'packages/cli/bin/diskhub.js'), 'serve'];
  const cmd = CALLGRIND
    ? ['valgrind', ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${dir}-callgrind.%p`, process.execPath, ...node]]
    : [process.execPath, node];
  const child = spawn(cmd[0], cmd[1], { env: { ...process.env, DISKHUB_DATA_DIR: dir, DISKHUB_PORT: String(port), DISKHUB_ADMIN_PASSWORD: 'bench', DISKHUB_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', openSync(`${dir}.stderr`, 'w')] });
  const s = { name, tree, port, pid: child.pid, child, dir };
  started.push(child);
  for (let i = 0; ; i++) {
    try { if ((await http(s, 'GET', '/healthcheck')).status === 200) break; } catch { /* starting */ }
    // (valgrind runs the start about 50x slower: up to 20 minutes on a busy machine)
    if (i > (CALLGRIND ? 24_000 : 2400) || child.exitCode !== null) throw new Error(`${name} did not start: ${readFileSync(`${dir}.stderr`, 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const auth = { auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { id: 'default' }, password: 'bench' } } }, scope: { project: { name: 'admin', domain: { id: 'default' } } } } };
  s.token = (await ok(s, 'POST', '/identity/v3/auth/tokens', JSON.stringify(auth), 201)).headers['x-subject-token'];
  return s;
}

/** CPU time of the process, all threads, in µs (clock ticks of 10 ms). */
const cpuUs = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 10_000; };

/** Instructions counted since the last call (callgrind: dump, read the dump's totals, zero). */
function instructions(s) {
  execFileSync('callgrind_control', ['--dump', String(s.pid)], { stdio: 'ignore' });
  let total = 0;
  for (const f of readdirSync(join(s.dir, '..')).filter((f) => f.startsWith(`${s.name}-callgrind.${s.pid}.`))) {
    const m = /^totals: (\d+)/m.exec(readFileSync(join(s.dir, '..', f), 'utf8'));
    total += Number(m?.[1] ?? 0);
    rmSync(join(s.dir, '..', f));
  }
  return total;
}

const create = (s) => ok(s, 'POST', '/v2/images', JSON.stringify({ name: 'ab', disk_format: 'raw', container_format: 'bare' }), 201);
let k = 0;
const PHASES = {
  create_c32: { n: 400, conc: 32, op: create },
  show_c1: { n: 2000, conc: 1, op: (s) => ok(s, 'GET', `/v2/images/${s.ids[k++ % s.ids.length]}`, undefined, 200) },
  show_c32: { n: 3000, conc: 32, op: (s) => ok(s, 'GET', `/v2/images/${s.ids[k++ % s.ids.length]}`, undefined, 200) },
  list_c1: { n: 300, conc: 1, op: (s) => ok(s, 'GET', '/v2/images?limit=100', undefined, 200) },
  list_c32: { n: 400, conc: 32, op: (s) => ok(s, 'GET', '/v2/images?limit=100', undefined, 200) },
  // A paginated walk of all images (a request per page of 100; rates in walks/s, costs per page).
  walk: {
    n: 10, conc: 1,
    op: async (s) => { let next = '/v2/images?limit=100'; let pages = 0; while (next) { next = JSON.parse((await ok(s, 'GET', next, undefined, 200)).text).next; pages++; } return pages; },
  },
};

async function phase(s, { n, conc, op }) {
  const count = Math.max(1, Math.round(n * SCALE));
  let left = count;
  const c0 = cpuUs(s.pid);
  if (CALLGRIND) { instructions(s); execFileSync('callgrind_control', ['-i', 'on', String(s.pid)], { stdio: 'ignore' }); }
  const t0 = performance.now();
  let requests = 0;
  await Promise.all(Array.from({ length: conc }, async () => { while (left-- > 0) { const r = await op(s); requests += typeof r === 'number' ? r : 1; } }));
  const seconds = (performance.now() - t0) / 1000;
  let instr = NaN;
  if (CALLGRIND) { execFileSync('callgrind_control', ['-i', 'off', String(s.pid)], { stdio: 'ignore' }); instr = instructions(s); }
  return { rate: count / seconds, cpu: (cpuUs(s.pid) - c0) / requests, instr: instr / requests };
}

const servers = [await start('before', before), await start('after', after)];
for (const s of servers) {
  for (let i = 0; i < IMAGES; i += 32) await Promise.all(Array.from({ length: Math.min(32, IMAGES - i) }, () => create(s)));
  s.ids = JSON.parse((await ok(s, 'GET', `/v2/images?limit=${IMAGES}`, undefined, 200)).text).images.map((i) => i.id);
  // Warm-up (the JIT, the statement caches), not counted.
  for (const p of Object.values(PHASES)) if (p.op !== create) await phase(s, { ...p, n: p.n / 4 });
}
const names = Object.keys(PHASES).filter((p) => !ONLY || ONLY.includes(p));
const results = Object.fromEntries(names.map((p) => [p, servers.map(() => [])]));
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.error(`load average at start: ${load()}`);
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 ? [1, 0] : [0, 1];
  for (const p of names) for (const i of order) results[p][i].push(await phase(servers[i], PHASES[p]));
  console.error(`round ${round + 1}/${ROUNDS} done, load average ${load()}`);
}
for (const s of servers) s.child.kill('SIGTERM');
agent.destroy();

const median = (a) => { const b = a.filter((x) => !Number.isNaN(x)).sort((x, y) => x - y); if (!b.length) return NaN; const m = b.length >> 1; return b.length % 2 ? b[m] : (b[m - 1] + b[m]) / 2; };
const f = (x, d = 1) => (Number.isNaN(x) ? '-' : x.toFixed(d));
console.log(`service metadata rows, before = ${before}, after = ${after}; ${ROUNDS} alternated rounds, medians${CALLGRIND ? ', under callgrind' : ''}`);
console.log(['row', 'req/s before', 'req/s after', 'after/before', 'CPU µs/req before', 'after', 'before/after', ...(CALLGRIND ? ['Minstr/req before', 'after', 'after/before'] : [])].join('\t'));
for (const p of names) {
  const [b, a] = results[p].map((r) => ({ rate: median(r.map((x) => x.rate)), cpu: median(r.map((x) => x.cpu)), instr: median(r.map((x) => x.instr)) / 1e6 }));
  const row = [p, f(b.rate), f(a.rate), f(a.rate / b.rate, 3), f(b.cpu, 0), f(a.cpu, 0), f(b.cpu / a.cpu, 3)];
  if (CALLGRIND) row.push(f(b.instr, 3), f(a.instr, 3), f(a.instr / b.instr, 3));
  console.log(row.join('\t'));
}
console.log(`(walk: per page request; rate in walks/s. Load average at the end: ${load()})`);
rmSync(work, { recursive: true, force: true });
