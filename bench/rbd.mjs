#!/usr/bin/env node
// The RBD store against the rbd CLI on the same data, in the same run (issue 19).
//
// Upload: RbdStore (librbd through the @diskhub/rbd addon) writing a file as the image service
// writes it (1 MiB batches, one write in flight), commit included (snapshot, protect, rename),
// against `rbd import FILE pool/name` of the same file. Download: RbdStore.send of the whole
// image to a sink that drops the bytes, against `rbd export pool/name@snap -` into /dev/null.
// Both as client.glance on the cluster .ci/services/ceph.sh starts ($DISKHUB_CEPH_ENV).
//
// And the other way the store could have been built (the issue asks for both to be measured):
// Node streaming through the CLI, `rbd import - ` fed from a pipe and `rbd export -` read from
// one, as a store without librbd would do it (no ranged reads that way: `rbd export` has none).
//
// Glance's layout costs more than `rbd import`: a snapshot, which allocates a snapshot id from
// the monitors (a new OSD map: up to a Paxos round, ~1 s on an idle one-mon cluster), and its
// protection; so the CLI is also timed doing what the store does, `rbd import` + `rbd snap
// create` + `rbd snap protect`, for a like-for-like second ratio.
//
// Every image has 8 MiB objects (the store's default rbd_store_chunk_size, as Glance's; the
// CLI's default is 4 MiB). The data is random (thin provisioning saves nothing on it). Each side runs BENCH_RUNS times
// (default 3), interleaved; the best run of each counts. Prints MiB/s and the ratios
// (issue 19's targets: upload >= 90 % of rbd import, download >= rbd export).
//   BENCH_SIZE_MB (default 1024)  BENCH_RUNS (default 3)
import { spawn } from 'node:child_process';
import { open, mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomFillSync, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'rbd');
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 1024) << 20;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const MiB = 1 << 20;

const { RbdStore } = await import(join(root, 'packages/service/dist/src/stores/rbd/rbd-store.js'));
const envFile = process.env.DISKHUB_CEPH_ENV ?? '/var/tmp/diskhub-ceph/env';
const env = Object.fromEntries((await readFile(envFile, 'utf8').catch(() => {
  console.error(`no Ceph cluster: ${envFile} is missing (run .ci/services/ceph.sh as root)`);
  process.exit(2);
})).split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
const conf = env.CEPH_CONF;
const pool = env.DISKHUB_CEPH_POOL ?? 'images';
const cli = ['--conf', conf, '--id', env.DISKHUB_CEPH_USER ?? 'glance', '--keyring', env.DISKHUB_CEPH_GLANCE_KEYRING];

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const rate = (s) => SIZE / MiB / s;

function rbd(args, { stdin = 'ignore', stdout = 'ignore' } = {}) {
  // --no-progress: the commands that move data take it (and snap protect refuses it)
  const quiet = ['import', 'export', 'rm'].includes(args[0]) || args[1] === 'create' || args[1] === 'rm' ? ['--no-progress'] : [];
  const child = spawn('rbd', [...cli, ...quiet, ...args], { stdio: [stdin, stdout, 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const done = new Promise((res, rej) => child.on('close', (code) => (code === 0 ? res() : rej(new Error(`rbd ${args.join(' ')}: exit ${code}: ${err}`)))));
  return { child, done };
}

async function makeData(path) {
  const have = await stat(path).catch(() => null);
  if (have?.size === SIZE) return;
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(8 * MiB);
  for (let at = 0; at < SIZE; at += chunk.length) {
    const n = Math.min(chunk.length, SIZE - at);
    randomFillSync(chunk, 0, n);
    await fh.write(chunk, 0, n, at);
  }
  await fh.close();
}

/** The store's upload of `path`: 1 MiB reads, each written before the next (as the service does). */
async function storeUpload(store, path, id) {
  const t0 = process.hrtime.bigint();
  const fh = await open(path, 'r');
  const writer = await store.begin(store.newTempKey(id), SIZE);
  const buf = Buffer.allocUnsafe(MiB);
  for (let at = 0; at < SIZE;) {
    const { bytesRead } = await fh.read(buf, 0, MiB, at);
    await writer.write([buf.subarray(0, bytesRead)]);
    at += bytesRead;
  }
  await fh.close();
  const location = await writer.commit(id);
  return { s: seconds(t0), location };
}

/** The CLI way from Node: the file's bytes piped into `rbd import -`. */
async function pipedImport(path, name) {
  const t0 = process.hrtime.bigint();
  const { child, done } = rbd(['import', '--object-size', '8M', '-', `${pool}/${name}`], { stdin: 'pipe' });
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(MiB);
  for (let at = 0; at < SIZE;) {
    const { bytesRead } = await fh.read(buf, 0, MiB, at);
    // The pipe keeps a reference: a fresh copy per write.
    if (!child.stdin.write(Buffer.from(buf.subarray(0, bytesRead)))) await new Promise((r) => child.stdin.once('drain', r));
    at += bytesRead;
  }
  await fh.close();
  child.stdin.end();
  await done;
  return seconds(t0);
}

/** `rbd import FILE`; then, timed on, the snapshot and its protection as Glance makes them. */
async function cliImport(path, name) {
  const t0 = process.hrtime.bigint();
  await rbd(['import', '--object-size', '8M', path, `${pool}/${name}`]).done;
  const imported = seconds(t0);
  await rbd(['snap', 'create', `${pool}/${name}@snap`]).done;
  await rbd(['snap', 'protect', `${pool}/${name}@snap`]).done;
  return { imported, withSnapshot: seconds(t0) };
}

function sink() {
  let bytes = 0;
  return { out: new Writable({ highWaterMark: 4 * MiB, write(chunk, _e, done) { bytes += chunk.length; done(); } }), bytes: () => bytes };
}

async function storeDownload(store, location) {
  const t0 = process.hrtime.bigint();
  const s = sink();
  await store.send(location, s.out);
  if (s.bytes() !== SIZE) throw new Error(`store download: ${s.bytes()} bytes`);
  return seconds(t0);
}

async function cliExport(spec) {
  const t0 = process.hrtime.bigint();
  const devnull = await open('/dev/null', 'w');
  await rbd(['export', spec, '-'], { stdout: devnull.fd }).done;
  await devnull.close();
  return seconds(t0);
}

async function pipedExport(spec) {
  const t0 = process.hrtime.bigint();
  const { child, done } = rbd(['export', spec, '-'], { stdout: 'pipe' });
  let bytes = 0;
  child.stdout.on('data', (d) => { bytes += d.length; });
  await done;
  if (bytes !== SIZE) throw new Error(`rbd export: ${bytes} bytes`);
  return seconds(t0);
}

await mkdir(work, { recursive: true });
const data = join(work, `random-${SIZE / MiB}M.raw`);
await makeData(data);
const store = new RbdStore({ id: 'bench', pool, user: env.DISKHUB_CEPH_USER ?? 'glance', confFile: conf, keyring: env.DISKHUB_CEPH_GLANCE_KEYRING });
await store.init();
// The download read-ahead the store had before (four 8 MiB reads in flight), timed in the same runs.
const before = new RbdStore({ id: 'bench-before', pool, user: env.DISKHUB_CEPH_USER ?? 'glance', confFile: conf, keyring: env.DISKHUB_CEPH_GLANCE_KEYRING, sendDepth: 4, sendChunk: 8 * MiB });
await before.init();
const best = { store: [Infinity, Infinity], cli: [Infinity, Infinity], piped: [Infinity, Infinity], glanceCli: [Infinity], before: [Infinity] };
const take = (side, i, s) => { best[side][i] = Math.min(best[side][i], s); };
const clean = async (name, snapshot = false) => {
  if (snapshot) {
    await rbd(['snap', 'unprotect', `${pool}/${name}@snap`]).done;
    await rbd(['snap', 'rm', `${pool}/${name}@snap`]).done;
  }
  await rbd(['rm', `${pool}/${name}`]).done;
};

console.log(`RBD store vs rbd CLI: ${SIZE / MiB} MiB of random data, ${RUNS} runs each, pool ${pool} as client.glance`);
try {
  for (let run = 1; run <= RUNS; run++) {
    // Uploads (the store's image is then downloaded and deleted; the CLI's exported, removed).
    const id = randomUUID();
    const up = await storeUpload(store, data, id);
    take('store', 0, up.s);
    const name = `bench-cli-${randomUUID()}`;
    const { imported: cliUp, withSnapshot } = await cliImport(data, name);
    take('cli', 0, cliUp);
    take('glanceCli', 0, withSnapshot);
    const piped = `bench-pipe-${randomUUID()}`;
    const pipeUp = await pipedImport(data, piped);
    take('piped', 0, pipeUp);
    // Downloads, of the same committed image (its snapshot), each way.
    const spec = `${pool}/${id}@snap`;
    const down = await storeDownload(store, up.location);
    take('store', 1, down);
    const cliDown = await cliExport(spec);
    take('cli', 1, cliDown);
    const beforeDown = await storeDownload(before, up.location);
    take('before', 0, beforeDown);
    const pipeDown = await pipedExport(spec);
    take('piped', 1, pipeDown);
    console.log(`run ${run}: upload store ${rate(up.s).toFixed(0)} MiB/s, rbd import ${rate(cliUp).toFixed(0)} (with snap create + protect ${rate(withSnapshot).toFixed(0)}), rbd import - (piped from Node) ${rate(pipeUp).toFixed(0)}; ` +
      `download store ${rate(down).toFixed(0)} MiB/s (with 4 x 8 MiB reads ${rate(beforeDown).toFixed(0)}), rbd export ${rate(cliDown).toFixed(0)}, rbd export - (piped to Node) ${rate(pipeDown).toFixed(0)}`);
    await store.delete(up.location);
    await clean(name, true);
    await clean(piped);
  }
} finally {
  await store.close();
  await before.close();
}
const [su, sd] = best.store;
const [cu, cd] = best.cli;
const [pu, pd] = best.piped;
const [gu] = best.glanceCli;
console.log(`best: upload store ${rate(su).toFixed(0)} MiB/s (${su.toFixed(2)} s), rbd import ${rate(cu).toFixed(0)} MiB/s (${cu.toFixed(2)} s), piped rbd import - ${rate(pu).toFixed(0)} MiB/s (${pu.toFixed(2)} s)`);
console.log(`best: download store ${rate(sd).toFixed(0)} MiB/s (${sd.toFixed(2)} s), rbd export ${rate(cd).toFixed(0)} MiB/s (${cd.toFixed(2)} s), piped rbd export - ${rate(pd).toFixed(0)} MiB/s (${pd.toFixed(2)} s)`);
console.log(`best: download store with 4 x 8 MiB reads in flight (before) ${rate(best.before[0]).toFixed(0)} MiB/s; ratios to rbd export: store ${(cd / sd).toFixed(2)}, before ${(cd / best.before[0]).toFixed(2)}`);
console.log(`best: rbd import + snap create + snap protect ${rate(gu).toFixed(0)} MiB/s (${gu.toFixed(2)} s)`);
console.log(`ratio upload   store / rbd import = ${(cu / su).toFixed(2)} (target >= 0.90); store / (rbd import + snap create + protect) = ${(gu / su).toFixed(2)}; piped CLI / rbd import = ${(cu / pu).toFixed(2)}`);
console.log(`ratio download store / rbd export = ${(cd / sd).toFixed(2)} (target >= 1.00); piped CLI / rbd export = ${(cd / pd).toFixed(2)}`);
if (process.env.BENCH_KEEP_DATA !== '1') await rm(data, { force: true });
