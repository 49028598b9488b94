#!/usr/bin/env node
// `diskhub compute` against what a Nova compute node runs for the same work, on the same image
// served by the diskhub image service (in-process, loopback), in the same run: wall time (best
// of BENCH_RUNS, the two alternating) and the ratio.
//   fetch --force-raw   vs  curl | tee .part | sha512sum (glanceclient hashes the stream as it
//                           downloads), then qemu-img convert -t none -O raw to .converted
//                           and mv (nova/virt/images.py fetch_to_raw; convert_image uses -t none
//                           where the instances path takes O_DIRECT, as ext4 does)
//   snapshot            vs  qemu-img convert -t none -O qcow2 of the overlay, then curl -T
//                           upload (the libvirt driver's cold snapshot: extract_snapshot goes
//                           through the same convert_image), the image record made first
//   img config-drive    vs  genisoimage with Nova's options over the same tree already laid out
//                           (nova/virt/configdrive.py; Nova writes the tree first, not timed here)
// Both sides start with a token (Nova's request context carries one) and know the base image.
// Both sides have their result on stable storage when they finish (-t none; the engine flushes).
// The service runs in this process, so everything that talks to it is spawned asynchronously.
// Input: a qcow2 of BENCH_SIZE_MB virtual size (default 2048) with random data in every other
// MiB of its first half, made by qemu-img, and an overlay of it with 64 MiB written by qemu-io.
//   node bench/compute.mjs    (after npm run build; needs qemu-img, qemu-io, curl)
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSync, writeSync, closeSync, ftruncateSync } from 'node:fs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const work = join(root, 'bench', 'work', 'compute');
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 2048) * 2 ** 20;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const run = promisify(execFile);
const diskhub = [process.execPath, join(root, 'packages', 'cli', 'bin', 'diskhub.js'), 'compute'];
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

const { loadConfig, startService, jsonLogger } = await import(join(root, 'packages', 'service', 'dist', 'src', 'index.js'));
const password = 'bench-secret';
const service = await startService(loadConfig({ DISKHUB_DATA_DIR: join(work, 'service'), DISKHUB_PORT: '0', DISKHUB_BIND: '127.0.0.1', DISKHUB_ADMIN_PASSWORD: password }), jsonLogger(process.stdout, 'silent'));
const url = service.url;
const env = { ...process.env, OS_AUTH_URL: `${url}/identity/v3`, OS_USERNAME: 'admin', OS_PASSWORD: password, OS_PROJECT_NAME: 'admin', OS_USER_DOMAIN_NAME: 'Default', OS_PROJECT_DOMAIN_NAME: 'Default' };
delete env.NODE_EXTRA_CA_CERTS; // see bench/img.mjs: no TLS here, and it costs every Node start 50 ms
const token = await (async () => {
  const r = await fetch(`${url}/identity/v3/auth/tokens`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { name: 'admin', domain: { name: 'Default' }, password } } }, scope: { project: { name: 'admin', domain: { name: 'Default' } } } } }) });
  return r.headers.get('x-subject-token');
})();
const api = async (method, path, body) => {
  const r = await fetch(`${url}${path}`, { method, headers: { 'X-Auth-Token': token, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
  return r.status === 204 ? undefined : r.json();
};

// The image: random data in every other MiB of the first half, made into a qcow2 by qemu-img.
const raw = join(work, 'src.raw');
const fd = openSync(raw, 'w');
ftruncateSync(fd, SIZE);
const random = randomBytes(1 << 20);
for (let off = 0; off < SIZE / 2; off += 2 << 20) writeSync(fd, random, 0, random.length, off);
closeSync(fd);
const qcow2 = join(work, 'src.qcow2');
execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
rmSync(raw);
const image = await api('POST', '/v2/images', { name: 'bench', disk_format: 'qcow2', container_format: 'bare' });
await run('curl', ['-sf', '-X', 'PUT', '-H', `X-Auth-Token: ${token}`, '-H', 'Content-Type: application/octet-stream', '-T', qcow2, `${url}/v2/images/${image.id}/file`]);
const sha1 = createHash('sha1').update(image.id).digest('hex');

async function timed(cmd, args) {
  const t0 = process.hrtime.bigint();
  await run(cmd, args, { env, maxBuffer: 1 << 26 });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const rows = [];
async function row(name, ours, peer) {
  const o = [];
  const p = [];
  for (let i = 0; i < RUNS; i++) {
    // Alternate which goes first: whichever runs after a pause pays for it.
    if (i % 2 === 0) { o.push(await ours()); p.push(await peer()); } else { p.push(await peer()); o.push(await ours()); }
  }
  const [bo, bp] = [Math.min(...o), Math.min(...p)];
  rows.push(`| ${name} | ${bo.toFixed(2)} | ${bp.toFixed(2)} | ${(bo / bp).toFixed(2)} |`);
}

const instances = join(work, 'instances');
const base = join(instances, '_base');
await row(`fetch --force-raw (${SIZE / 2 ** 20} MiB virtual, ${Math.round(statSync(qcow2).size / 2 ** 20)} MiB qcow2)`, () => {
  rmSync(instances, { recursive: true, force: true });
  return timed(diskhub[0], [...diskhub.slice(1), 'fetch', image.id, '--instances-path', instances, '--force-raw', '--token', token]);
}, async () => {
  rmSync(instances, { recursive: true, force: true });
  mkdirSync(base, { recursive: true });
  const target = join(base, sha1);
  return timed('sh', ['-c', 'set -e; curl -sf -H "X-Auth-Token: $1" "$2" | tee "$3.part" | sha512sum >/dev/null; qemu-img convert -t none -f qcow2 -O raw "$3.part" "$3.converted"; mv "$3.converted" "$3"; rm "$3.part"',
    'sh', token, `${url}/v2/images/${image.id}/file`, target]);
});

// Snapshot of an instance whose overlay has 64 MiB of guest writes.
rmSync(instances, { recursive: true, force: true });
const inst = join(instances, '3f2a6c1e-8d4b-4f6a-9c2e-1b7d5e9a0c11');
await run(diskhub[0], [...diskhub.slice(1), 'create-disks', inst, '--image', image.id], { env });
execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 7 ${SIZE / 4} ${Math.min(64 << 20, SIZE / 2)}`, join(inst, 'disk')]);
await row('snapshot (flatten + upload)', () => timed(diskhub[0], [...diskhub.slice(1), 'snapshot', inst, '--name', 'bench-snap', '--token', token, '--base-image-ref', image.id]), async () => {
  const flat = join(work, 'flat.qcow2');
  rmSync(flat, { force: true });
  const t0 = process.hrtime.bigint();
  const record = await run('curl', ['-sf', '-X', 'POST', '-H', `X-Auth-Token: ${token}`, '-H', 'Content-Type: application/json', '-d', JSON.stringify({ name: 'peer-snap', disk_format: 'qcow2', container_format: 'bare', image_type: 'snapshot' }), `${url}/v2/images`]);
  const id = JSON.parse(record.stdout).id;
  await run('qemu-img', ['convert', '-t', 'none', '-f', 'qcow2', '-O', 'qcow2', join(inst, 'disk'), flat]);
  await run('curl', ['-sf', '-X', 'PUT', '-H', `X-Auth-Token: ${token}`, '-H', 'Content-Type: application/octet-stream', '-T', flat, `${url}/v2/images/${id}/file`]);
  return Number(process.hrtime.bigint() - t0) / 1e9;
});

// A config drive with a 64 KiB user-data (Nova's limit) and a network_data.json.
const drive = join(work, 'drive');
mkdirSync(drive, { recursive: true });
const { writeFileSync } = await import('node:fs');
writeFileSync(join(drive, 'ud'), randomBytes(48 << 10).toString('base64'));
writeFileSync(join(drive, 'nd.json'), JSON.stringify({ links: [], networks: [], services: [] }));
const tree = join(drive, 'tree');
await run(diskhub[0], [diskhub[1], 'img', 'config-drive', '-o', join(drive, 'seed.iso'), '--user-data', join(drive, 'ud'), '--network-data', join(drive, 'nd.json'), '--hostname', 'vm', '--uuid', '3f2a6c1e-8d4b-4f6a-9c2e-1b7d5e9a0c11'], { env });
// The tree genisoimage gets: the same files (extracted from ours with isoinfo).
const listing = (await run('isoinfo', ['-R', '-f', '-i', join(drive, 'seed.iso')])).stdout.split('\n').filter(Boolean);
for (const p of listing) {
  const isFile = /(data|\.json)$/.test(p) && !/\/(\d{4}-\d\d-\d\d|latest|1\.0)$/.test(p);
  if (!isFile) { mkdirSync(join(tree, p), { recursive: true }); continue; }
  mkdirSync(dirname(join(tree, p)), { recursive: true });
  writeFileSync(join(tree, p), (await run('isoinfo', ['-R', '-x', p, '-i', join(drive, 'seed.iso')], { encoding: 'buffer', maxBuffer: 1 << 26 })).stdout);
}
await row('img config-drive (64 KiB user-data)', () => timed(diskhub[0], [diskhub[1], 'img', 'config-drive', '-o', join(drive, 'ours.iso'), '--user-data', join(drive, 'ud'), '--network-data', join(drive, 'nd.json'), '--hostname', 'vm', '--uuid', '3f2a6c1e-8d4b-4f6a-9c2e-1b7d5e9a0c11']),
  () => timed('genisoimage', ['-o', join(drive, 'nova.iso'), '-ldots', '-allow-lowercase', '-allow-multidot', '-l', '-publisher', 'OpenStack Compute', '-quiet', '-J', '-r', '-V', 'config-2', tree]));

console.log(`diskhub compute against Nova's commands, best of ${RUNS} (s)\n`);
console.log('| case | diskhub | Nova\'s way | ratio |');
console.log('| --- | ---: | ---: | ---: |');
for (const r of rows) console.log(r);
await service.close();
rmSync(work, { recursive: true, force: true });
