/**
 * `diskhub compute` end to end: the image service in-process on a free port, images made by
 * qemu-img uploaded through the Image API, then fetch / create-disks / snapshot / cache-clean
 * run as the CLI, their results checked with qemu-img, qemu-io, blkid and isoinfo.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, stat, unlink as unlinkFile, utimes, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, runOk } from '@diskhub/testkit';
import { api, osEnv, startTestService, token } from '@diskhub/service/test-helpers';
import { compute, makeQcow2, md5, sha1, uploadImage } from './compute-helpers.js';

const INSTANCE = '3f2a6c1e-8d4b-4f6a-9c2e-1b7d5e9a0c11';
const OTHER_INSTANCE = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';

/** GET /v2/images/{id}/file requests answered 200 so far, from the service's /metrics. */
async function downloads(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('diskhub_http_requests_total') && l.includes('route="/v2/images/:id/file"') && l.includes('method="GET"') && l.includes('status="200"'));
  return line ? Number(line.split(' ').pop()) : 0;
}

test('compute: fetch, create-disks, snapshot and cache-clean against the image service', needs('qemu-img', 'qemu-io', 'blkid', 'mkfs.ext4', 'mkswap', 'isoinfo'), async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const env = osEnv(svc.url);
  const work = await tempDir(t, 'diskhub-compute-');
  const instances = join(work, 'instances');
  const baseDir = join(instances, '_base');
  await mkdir(instances);

  const srcA = join(work, 'a.qcow2');
  const srcB = join(work, 'b.qcow2');
  await makeQcow2(srcA, '64M', 1);
  await makeQcow2(srcB, '32M', 7);
  const imageA = await uploadImage(svc.url, tok, srcA, 'image-a');
  const imageB = await uploadImage(svc.url, tok, srcB, 'image-b');

  // Two fetches of the same image at once: one download, one cache hit.
  const before = await downloads(svc.url);
  const [f1, f2] = await Promise.all([compute(['fetch', imageA, '--base-dir', baseDir], env), compute(['fetch', imageA, '--base-dir', baseDir], env)]);
  assert.equal(f1.code, 0, f1.stderr);
  assert.equal(f2.code, 0, f2.stderr);
  const outputs = [f1.stdout, f2.stdout].sort();
  assert.match(outputs[0]!, /^Fetched image .* bytes verified/);
  assert.match(outputs[1]!, /^Image .* is cached at /);
  assert.equal(await downloads(svc.url) - before, 1, 'one download for two concurrent fetches');
  const baseA = join(baseDir, sha1(imageA));
  assert.equal((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', srcA, baseA])).code, 0);
  assert.equal(JSON.parse(await runOk('qemu-img', ['info', '--output=json', baseA])).format, 'qcow2');
  assert.ok((await stat(join(instances, 'locks', `nova-${sha1(imageA)}`))).isFile(), 'Nova-named lock file');
  // A cached image needs no image service (Nova's Image.cache does not ask either).
  const offline = { ...env, OS_AUTH_URL: 'http://127.0.0.1:9/identity/v3' };
  const cached = await compute(['fetch', imageA, '--base-dir', baseDir], offline);
  assert.equal(cached.code, 0, cached.stderr);
  assert.match(cached.stdout, /is cached at/);
  const notCached = await compute(['fetch', imageB, '--base-dir', baseDir], offline);
  assert.equal(notCached.code, 1);
  assert.match(notCached.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/);

  // --force-raw: a sparse raw base with the same content (a .part a killed fetch left is replaced).
  await writeFile(join(baseDir, `${sha1(imageB)}.part`), 'left by a killed fetch');
  const rb = await compute(['fetch', imageB, '--base-dir', baseDir, '--force-raw', '--output', 'json'], env);
  assert.equal(rb.code, 0, rb.stderr);
  const fetchB = JSON.parse(rb.stdout);
  assert.equal(fetchB.downloaded, true);
  assert.equal(fetchB.converted, true);
  const baseB = join(baseDir, sha1(imageB));
  assert.equal(JSON.parse(await runOk('qemu-img', ['info', '--output=json', baseB])).format, 'raw');
  assert.equal((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', srcB, baseB])).code, 0);
  assert.deepEqual((await readdir(baseDir)).filter((f) => f.includes('.')), [], 'no .part or .converted left');
  const stB = await stat(baseB);
  assert.equal(stB.size, 32 << 20);
  assert.ok(stB.blocks * 512 < 4 << 20, `sparse raw base (${stB.blocks * 512} bytes allocated)`);

  // create-disks: root overlay grown to 1 GiB, ephemeral ext4 and swap on their cached bases.
  const inst = join(instances, INSTANCE);
  await writeFile(join(work, 'user-data'), '#cloud-config\n');
  const cd = await compute(['create-disks', inst, '--image', imageA, '--root', '1G', '--ephemeral', '1', '--ephemeral-fs', 'ext4', '--swap', '64',
    '--config-drive', '--user-data', join(work, 'user-data'), '--hostname', 'vm1'], env);
  assert.equal(cd.code, 0, cd.stderr);
  const chain = JSON.parse(await runOk('qemu-img', ['info', '--backing-chain', '--output=json', join(inst, 'disk')]));
  assert.equal(chain.length, 2);
  assert.equal(chain[0].format, 'qcow2');
  assert.equal(chain[0]['virtual-size'], 1 << 30);
  assert.equal(chain[0]['backing-filename'], baseA);
  assert.equal(chain[0]['backing-filename-format'], 'qcow2');
  assert.equal(chain[1].filename, baseA);
  assert.equal((await run('qemu-img', ['check', join(inst, 'disk')])).code, 0);
  // Byte for byte what Nova's `qemu-img create -f qcow2 -o backing_file=…,backing_fmt=…,cluster_size=…,size=…` makes.
  await qemuImg('create', '-f', 'qcow2', '-o', `backing_file=${baseA},backing_fmt=qcow2,cluster_size=65536,size=${1 << 30}`, join(work, 'nova-disk'));
  assert.ok((await readFile(join(work, 'nova-disk'))).equals(await readFile(join(inst, 'disk'))), 'the overlay equals qemu-img create\'s');
  // The guest sees the image's data through the overlay, zeroes past the image's end.
  assert.equal((await run('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 1 0 1M', '-c', 'read -P 0 64M 1M', join(inst, 'disk')])).stdout.includes('Pattern verification failed'), false);

  const ephName = `ephemeral_1_${md5('ext4').slice(0, 7)}`;
  const eph = JSON.parse(await runOk('qemu-img', ['info', '--backing-chain', '--output=json', join(inst, 'disk.eph0')]));
  assert.equal(eph[0]['backing-filename'], join(baseDir, ephName));
  assert.equal(eph[0]['backing-filename-format'], 'raw');
  assert.equal(eph[0]['virtual-size'], 1 << 30);
  assert.equal((await run('qemu-img', ['check', join(inst, 'disk.eph0')])).code, 0);
  const ephRaw = join(work, 'eph.raw');
  await qemuImg('convert', '-O', 'raw', join(inst, 'disk.eph0'), ephRaw);
  const ephId = await runOk('blkid', ['-o', 'export', ephRaw]);
  assert.match(ephId, /^TYPE=ext4$/m);
  assert.match(ephId, /^LABEL=ephemeral0$/m);

  const swap = JSON.parse(await runOk('qemu-img', ['info', '--backing-chain', '--output=json', join(inst, 'disk.swap')]));
  assert.equal(swap[0]['backing-filename'], join(baseDir, 'swap_64'));
  assert.equal(swap[0]['virtual-size'], 64 << 20);
  const swapRaw = join(work, 'swap.raw');
  await qemuImg('convert', '-O', 'raw', join(inst, 'disk.swap'), swapRaw);
  assert.match(await runOk('blkid', ['-o', 'export', swapRaw]), /^TYPE=swap$/m);
  // disk.config: the config drive, labelled config-2, for this instance's uuid.
  assert.match(await runOk('isoinfo', ['-d', '-i', join(inst, 'disk.config')]), /^Volume id: config-2$/m);
  assert.equal(JSON.parse(await runOk('isoinfo', ['-R', '-x', '/openstack/latest/meta_data.json', '-i', join(inst, 'disk.config')])).uuid, INSTANCE);
  assert.equal(await runOk('isoinfo', ['-R', '-x', '/openstack/latest/user_data', '-i', join(inst, 'disk.config')]), '#cloud-config\n');
  assert.deepEqual(Object.keys(JSON.parse(await readFile(join(inst, 'disk.info'), 'utf8'))).sort(), ['disk', 'disk.config', 'disk.eph0', 'disk.swap'].map((d) => join(inst, d)));
  // A config drive option without --config-drive is refused.
  const stray = await compute(['create-disks', inst, '--image', imageA, '--user-data', join(work, 'user-data')], env);
  assert.equal(stray.code, 1);
  assert.match(stray.stderr, /--user-data needs --config-drive/);

  // A flavor smaller than the image is refused, as Nova refuses it; nothing is created.
  const small = await compute(['create-disks', join(instances, OTHER_INSTANCE), '--image', imageA, '--root', '16M'], env);
  assert.equal(small.code, 1);
  assert.match(small.stderr, /Flavor's disk is too small for requested image\. Flavor disk is 16777216 bytes, image is 67108864 bytes\./);
  assert.deepEqual(await readdir(join(instances, OTHER_INSTANCE)), []);
  // …and checked before an uncached image is converted to raw (fetch_to_raw's max_size): no base is left.
  const smallRaw = await compute(['create-disks', join(instances, OTHER_INSTANCE), '--image', imageB, '--root', '16M', '--force-raw', '--base-dir', join(work, 'other-base')], env);
  assert.equal(smallRaw.code, 1);
  assert.match(smallRaw.stderr, /Flavor's disk is too small for requested image\. Flavor disk is 16777216 bytes, image is 33554432 bytes\./);
  assert.deepEqual(await readdir(join(work, 'other-base')), []);

  // Snapshot: the guest wrote to its disk; the uploaded image equals the overlay's view.
  await qemuIo('-f', 'qcow2', '-c', 'write -P 9 2M 1M', '-c', 'write -P 10 900M 4k', join(inst, 'disk'));
  const sn = await compute(['snapshot', inst, '--name', 'snap-1'], env);
  assert.equal(sn.code, 0, sn.stderr);
  const snapId = sn.stdout.trim();
  const snap = await api(svc.url, tok)('GET', `/v2/images/${snapId}`);
  assert.equal(snap.status, 200);
  assert.equal(snap.json.status, 'active');
  assert.equal(snap.json.disk_format, 'qcow2');
  assert.equal(snap.json.image_type, 'snapshot');
  assert.equal(snap.json.instance_uuid, INSTANCE);
  assert.equal(snap.json.base_image_ref, imageA);
  assert.equal(snap.json.image_location, 'snapshot');
  assert.equal(snap.json.owner_project_name, 'admin');
  assert.equal(snap.json.owner_user_name, 'admin');
  assert.equal(snap.json.image_state, 'available');
  assert.equal(snap.json.os_distro, 'debian', 'inherited from the base image');
  assert.equal(snap.json.min_ram, 128);
  assert.equal(snap.json.min_disk, 1, 'the 1 GiB root disk');
  const snapFile = join(work, 'snap.qcow2');
  await writeFile(snapFile, Buffer.from(await (await fetch(`${svc.url}/v2/images/${snapId}/file`, { headers: { 'X-Auth-Token': tok } })).arrayBuffer()));
  const snapInfo = JSON.parse(await runOk('qemu-img', ['info', '--output=json', snapFile]));
  assert.equal(snapInfo.format, 'qcow2');
  assert.equal(snapInfo['backing-filename'], undefined, 'flattened');
  assert.equal((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', snapFile, join(inst, 'disk')])).code, 0);
  assert.equal((await run('qemu-img', ['check', snapFile])).code, 0);

  // cache-clean: image A's base is used by the instance (kept however old), B's is not (removed).
  const old = new Date(Date.now() - 7200_000);
  for (const f of await readdir(baseDir)) await utimes(join(baseDir, f), old, old);
  const cc = await compute(['cache-clean', '--base-dir', baseDir, '--max-age', '3600'], env);
  assert.equal(cc.code, 0, cc.stderr);
  assert.match(cc.stdout, new RegExp(`^Removing base or swap file: ${baseB}$`, 'm'));
  assert.match(cc.stdout, new RegExp(`^Active base files: .*${sha1(imageA)}`, 'm'));
  assert.deepEqual((await readdir(baseDir)).sort(), [sha1(imageA), ephName, 'swap_64'].sort());
  assert.equal((await run('qemu-img', ['check', join(inst, 'disk')])).code, 0);
  // A young unused base survives too.
  const again = await compute(['fetch', imageB, '--base-dir', baseDir], env);
  assert.equal(again.code, 0, again.stderr);
  const cc2 = await compute(['cache-clean', '--base-dir', baseDir, '--max-age', '3600', '--output', 'json'], env);
  assert.equal(cc2.code, 0, cc2.stderr);
  const report = JSON.parse(cc2.stdout);
  assert.deepEqual(report.tooYoung, [baseB]);
  assert.deepEqual(report.removed, []);

  // A root disk on a raw base (--force-raw): backing_fmt raw, and the base is in use however old.
  await unlinkFile(baseB);
  const other = join(instances, OTHER_INSTANCE);
  const cdRaw = await compute(['create-disks', other, '--image', imageB, '--root', '64M', '--force-raw'], env);
  assert.equal(cdRaw.code, 0, cdRaw.stderr);
  const rawChain = JSON.parse(await runOk('qemu-img', ['info', '--backing-chain', '--output=json', join(other, 'disk')]));
  assert.equal(rawChain[0]['backing-filename'], baseB);
  assert.equal(rawChain[0]['backing-filename-format'], 'raw');
  assert.equal(rawChain[1].format, 'raw');
  assert.equal((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', srcB, join(other, 'disk')])).code, 0, 'the guest sees image B');
  for (const f of await readdir(baseDir)) await utimes(join(baseDir, f), old, old);
  const cc3 = JSON.parse((await compute(['cache-clean', '--base-dir', baseDir, '--max-age', '60', '--output', 'json'], env)).stdout);
  assert.deepEqual(cc3.removed, []);
  assert.deepEqual([...cc3.active].sort(), [baseA, baseB, join(baseDir, ephName), join(baseDir, 'swap_64')].sort());
});

test('compute fetch: a download that does not match the image hash leaves nothing in _base', needs('qemu-img', 'qemu-io'), async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const env = osEnv(svc.url);
  const work = await tempDir(t, 'diskhub-compute-');
  const src = join(work, 'c.qcow2');
  await makeQcow2(src, '16M', 3);
  const id = await uploadImage(svc.url, tok, src, 'image-c');
  // The stored data rots: one byte of the store's file changes.
  const stored = (await readdir(svc.dataDir, { recursive: true })).map((f) => join(svc.dataDir, f)).filter((f) => f.includes(id) && !f.includes('.partial'));
  assert.equal(stored.length, 1, `the store's file for ${id}: ${stored.join(', ')}`);
  const fh = await open(stored[0]!, 'r+');
  await fh.write(Buffer.from([0xa5]), 0, 1, 100_000);
  await fh.close();
  const baseDir = join(work, 'instances', '_base');
  const r = await compute(['fetch', id, '--base-dir', baseDir], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Corrupt image download\. Hash was [0-9a-f]+, expected [0-9a-f]+/);
  assert.deepEqual(await readdir(baseDir), []);

  // Bad input gets a clear error: an unknown image, a wrong password.
  const missing = await compute(['fetch', '00000000-0000-0000-0000-000000000000', '--base-dir', baseDir], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Image 00000000-0000-0000-0000-000000000000 could not be found/);
  const denied = await compute(['fetch', id, '--base-dir', baseDir, '--os-password', 'wrong'], env);
  assert.equal(denied.code, 1);
  assert.match(denied.stderr, /refused the credentials \(HTTP 401/);
  const tokenOnly = await compute(['fetch', id, '--base-dir', baseDir, '--token', 'not-a-token'], env);
  assert.equal(tokenOnly.code, 1);
  assert.match(tokenOnly.stderr, /refused the token/);
});

test('compute create-disks: each ephemeral filesystem gets its own Nova-named base, made by the real mkfs', needs('qemu-img', 'qemu-io', 'blkid', 'mkfs.vfat', 'mkfs.ext3', 'mkfs.xfs', 'mkfs.btrfs'), async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const env = osEnv(svc.url);
  const work = await tempDir(t, 'diskhub-compute-');
  const src = join(work, 'small.qcow2');
  await makeQcow2(src, '16M', 5);
  const id = await uploadImage(svc.url, tok, src, 'small');
  const instances = join(work, 'instances');
  const expected: Record<string, string> = { vfat: 'vfat', ext3: 'ext3', xfs: 'xfs', btrfs: 'btrfs' };
  for (const [i, fs] of Object.keys(expected).entries()) {
    const inst = join(instances, `00000000-0000-4000-8000-00000000000${i}`);
    // Without --ephemeral-fs Nova formats vfat (no os_type); the name hashes the filesystem either way.
    const r = await compute(['create-disks', inst, '--image', id, '--ephemeral', '1', ...(fs === 'vfat' ? [] : ['--ephemeral-fs', fs])], env);
    assert.equal(r.code, 0, r.stderr);
    const base = join(instances, '_base', `ephemeral_1_${md5(fs).slice(0, 7)}`);
    const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', join(inst, 'disk.eph0')]));
    assert.equal(info['backing-filename'], base);
    const ids = await runOk('blkid', ['-o', 'export', base]);
    assert.match(ids, new RegExp(`^TYPE=${expected[fs]}$`, 'm'), fs);
    assert.match(ids, /^LABEL=ephemeral0$/im, fs);
  }
});
