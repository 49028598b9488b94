/**
 * `diskhub compute` where things go wrong: hostile images served with correct hashes by a
 * minimal Glance-shaped server (the diskhub service refuses them at upload), a download
 * interrupted by SIGTERM, and the lock shared with oslo.concurrency's holders.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, diskhubBin } from '@diskhub/testkit';
import { osEnv } from '@diskhub/service/test-helpers';
import { compute, hostileGlance, sha1 } from './compute-helpers.js';

test('compute fetch: images the safety inspection finds unsafe, or not in their declared format, are refused and leave nothing', needs('qemu-img'), async (t) => {
  const work = await tempDir(t, 'diskhub-compute-');
  await qemuImg('create', '-f', 'raw', join(work, 'secret.raw'), '1M');
  await qemuImg('create', '-f', 'qcow2', '-b', join(work, 'secret.raw'), '-F', 'raw', join(work, 'backed.qcow2'));
  await qemuImg('create', '-f', 'qcow2', '-o', `data_file=${join(work, 'data.raw')}`, join(work, 'datafile.qcow2'), '1M');
  await qemuImg('create', '-f', 'qcow2', join(work, 'plain.qcow2'), '1M');
  const record = async (id: string, file: string, diskFormat: string) => {
    const data = await readFile(file);
    return [id, { data, record: {
      id, name: id, status: 'active', disk_format: diskFormat, container_format: 'bare', size: data.length, virtual_size: null, min_disk: 0, min_ram: 0, owner: 'p1',
      checksum: createHash('md5').update(data).digest('hex'), os_hash_algo: 'sha512', os_hash_value: createHash('sha512').update(data).digest('hex'),
    } }] as const;
  };
  const ids = { backed: '11111111-1111-4111-8111-111111111111', datafile: '22222222-2222-4222-8222-222222222222', mismatch: '33333333-3333-4333-8333-333333333333', md5: '55555555-5555-4555-8555-555555555555', unhashed: '66666666-6666-4666-8666-666666666666' };
  const images = new Map<string, { record: Record<string, unknown>; data: Buffer }>([
    await record(ids.backed, join(work, 'backed.qcow2'), 'qcow2'),
    await record(ids.datafile, join(work, 'datafile.qcow2'), 'qcow2'),
    await record(ids.mismatch, join(work, 'plain.qcow2'), 'raw'),
  ]);
  const authUrl = await hostileGlance(t, images);
  const env = { ...osEnv('http://unused'), OS_AUTH_URL: authUrl };
  const baseDir = join(work, 'instances', '_base');
  const expect: [string, RegExp][] = [
    [ids.backed, new RegExp(`^diskhub compute: Image ${ids.backed} is unacceptable: Image does not pass safety check \\(backing-file: `)],
    [ids.datafile, new RegExp(`^diskhub compute: Image ${ids.datafile} is unacceptable: Image does not pass safety check \\(data-file: `)],
    [ids.mismatch, new RegExp(`^diskhub compute: Image ${ids.mismatch} is unacceptable: Image content does not match disk_format \\(format-mismatch: `)],
  ];
  // Without os_hash_value the md5 checksum is verified; without either, nothing is trusted.
  const plain = await readFile(join(work, 'plain.qcow2'));
  const md5Only: { record: Record<string, unknown>; data: Buffer } = { ...(await record(ids.md5, join(work, 'plain.qcow2'), 'qcow2'))[1] };
  md5Only.record = { ...md5Only.record, os_hash_algo: null, os_hash_value: null, checksum: createHash('md5').update(plain.subarray(1)).digest('hex') };
  images.set(ids.md5, md5Only);
  images.set(ids.unhashed, { data: plain, record: { ...md5Only.record, id: ids.unhashed, checksum: null } });
  expect.push([ids.md5, new RegExp(`^diskhub compute: Corrupt image download\\. Hash was ${createHash('md5').update(plain).digest('hex')}, expected `)]);
  expect.push([ids.unhashed, /has no os_hash_value or checksum to verify its data against/]);
  for (const [id, message] of expect) {
    for (const forceRaw of [[], ['--force-raw']]) {
      const r = await compute(['fetch', id, '--base-dir', baseDir, ...forceRaw], env);
      assert.equal(r.code, 1, r.stdout);
      assert.match(r.stderr, message);
      assert.deepEqual(await readdir(baseDir), [], 'nothing in _base');
    }
  }
});

test('compute fetch: SIGTERM during a download ends with 143 and leaves nothing in _base', needs('qemu-img'), async (t) => {
  const work = await tempDir(t, 'diskhub-compute-');
  const data = randomBytes(4 << 20);
  const id = '44444444-4444-4444-8444-444444444444';
  const authUrl = await hostileGlance(t, new Map([[id, { stall: true, data, record: {
    id, name: id, status: 'active', disk_format: 'raw', container_format: 'bare', size: data.length, virtual_size: null, min_disk: 0, min_ram: 0, owner: 'p1',
    checksum: createHash('md5').update(data).digest('hex'), os_hash_algo: 'sha512', os_hash_value: createHash('sha512').update(data).digest('hex'),
  } }]]));
  const baseDir = join(work, 'instances', '_base');
  const child = spawn(process.execPath, [diskhubBin, 'compute', 'fetch', id, '--base-dir', baseDir], { env: { ...osEnv('http://unused'), OS_AUTH_URL: authUrl }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const part = join(baseDir, `${sha1(id)}.part`);
  for (let i = 0; i < 400; i++) {
    const st = await stat(part).catch(() => undefined);
    if (st && st.size > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.ok((await stat(part)).size > 0, 'the download is under way');
  child.kill('SIGTERM');
  assert.equal(await exited, 143, stderr);
  assert.match(stderr, /Operation cancelled/);
  assert.deepEqual(await readdir(baseDir), []);
});

test('compute locks: the external lock is the one oslo.concurrency takes (fcntl.lockf on <lock_path>/nova-NAME)', needs('python3'), async (t) => {
  const dir = await tempDir(t, 'diskhub-compute-lock-');
  const { withExternalLock } = await import('../src/compute/lock.js');
  // A Python process holds the lock as Nova's lockutils would, for a second.
  const holder = spawn('python3', ['-c', [
    'import fcntl, sys, time',
    `f = open(${JSON.stringify(join(dir, 'nova-base'))}, 'a')`,
    'fcntl.lockf(f, fcntl.LOCK_EX)',
    'print("held", flush=True)',
    'time.sleep(1)',
    'print("released", flush=True)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
  let said = '';
  await new Promise<void>((resolve) => holder.stdout.on('data', (d: Buffer) => { said += d.toString(); if (said.includes('held')) resolve(); }));
  const ran = await withExternalLock(dir, 'base', async () => said);
  assert.match(ran, /released/, 'the body ran only after the Python holder let go');
  // In one process, two holders of the same name run one after the other.
  const order: string[] = [];
  await Promise.all([1, 2].map((n) => withExternalLock(dir, 'base', async () => {
    order.push(`start ${n}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    order.push(`end ${n}`);
  })));
  assert.deepEqual(order, ['start 1', 'end 1', 'start 2', 'end 2']);
});

test('compute fetch: a 40 MiB download (many staging turns) is verified byte for byte and kept sparse', async (t) => {
  const work = await tempDir(t, 'diskhub-compute-');
  const data = randomBytes(40 << 20);
  data.fill(0, 8 << 20, 24 << 20); // zeroes in the middle: left as a hole
  const record = (id: string, sha512: string) => ({
    id, name: id, status: 'active', disk_format: 'raw', container_format: 'bare', size: data.length, virtual_size: null, min_disk: 0, min_ram: 0, owner: 'p1',
    checksum: createHash('md5').update(data).digest('hex'), os_hash_algo: 'sha512', os_hash_value: sha512,
  });
  const good = '77777777-7777-4777-8777-777777777777';
  const bad = '88888888-8888-4888-8888-888888888888';
  const wrong = createHash('sha512').update('something else').digest('hex');
  const authUrl = await hostileGlance(t, new Map([
    [good, { data, record: record(good, createHash('sha512').update(data).digest('hex')) }],
    [bad, { data, record: record(bad, wrong) }],
  ]));
  const env = { ...osEnv('http://unused'), OS_AUTH_URL: authUrl };
  const baseDir = join(work, 'instances', '_base');
  const ok = await compute(['fetch', good, '--base-dir', baseDir], env);
  assert.equal(ok.code, 0, ok.stderr);
  const base = join(baseDir, sha1(good));
  assert.ok((await readFile(base)).equals(data));
  assert.ok((await stat(base)).blocks * 512 <= data.length - (15 << 20), 'the zero run is a hole');
  const corrupt = await compute(['fetch', bad, '--base-dir', baseDir], env);
  assert.equal(corrupt.code, 1);
  assert.match(corrupt.stderr, new RegExp(`Corrupt image download\\. Hash was ${createHash('sha512').update(data).digest('hex')}, expected ${wrong}`));
  assert.deepEqual(await readdir(baseDir), [sha1(good)]);
});
