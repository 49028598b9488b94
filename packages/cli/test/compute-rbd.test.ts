/**
 * `diskhub compute` with RBD instance disks (Nova's images_type = rbd) against the image service
 * keeping its images in Ceph (.ci/services/ceph.sh), as client.nova, with the rbd CLI (as the
 * admin) as the oracle: the root disk of a raw image is a clone of its protected snapshot in
 * the vms pool, grown to the root size, with no download; a qcow2 image is fetched and
 * imported; the snapshot reads the clone through its parent; delete-disks removes them all.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, qemuIo, run, runOk, tempDir } from '@diskhub/testkit';
import { api, osEnv, startTestService, token } from '@diskhub/service/test-helpers';
import { ceph, rbdCli, rbdExport, removeImageWithCli } from '@diskhub/service/test-ceph';
import { compute, makeQcow2, sha1, uploadImage } from './compute-helpers.js';

const MiB = 1 << 20;

test('compute with images_type rbd: clone of the image snapshot, import fallback, snapshot, delete-disks', needs('qemu-img', 'qemu-io', 'rbd', 'blkid', 'mkswap'), async (t) => {
  const c = ceph(t);
  if (!c) return;
  const work = await tempDir(t, 'diskhub-compute-rbd-');
  const config = join(work, 'diskhub.json');
  await writeFile(config, JSON.stringify({
    stores: { ceph: { type: 'rbd', rbd_store_pool: c.pool, rbd_store_user: c.user, rbd_store_ceph_conf: c.conf, rbd_store_keyring: c.glanceKeyring, rados_connect_timeout: 20 } },
    defaultStore: 'ceph',
    showImageDirectUrl: true,
  }));
  const svc = await startTestService(t, { DISKHUB_CONFIG: config });
  const tok = await token(svc.url);
  const env = osEnv(svc.url);
  const instances = join(work, 'instances');
  const baseDir = join(instances, '_base');
  await mkdir(instances);
  const rbdArgs = ['--images-type', 'rbd', '--images-rbd-pool', c.clonePool, '--images-rbd-ceph-conf', c.conf, '--rbd-user', c.novaUser, '--rbd-keyring', c.novaKeyring];
  const uuids = [randomUUID(), randomUUID()];
  const glanceImages: string[] = [];
  // Should the test fail half-way: the instances' images first (they are the clones), then Glance's.
  t.after(async () => {
    for (const u of uuids) for (const name of ['disk', 'disk.swap', 'disk.config']) await removeImageWithCli(c, `${c.clonePool}/${u}_${name}`);
    for (const id of glanceImages) await removeImageWithCli(c, `${c.pool}/${id}`);
  });
  const info = async (spec: string) => JSON.parse(await rbdCli(c, ['info', '--format', 'json', spec], 'admin')) as { size: number; parent?: { pool: string; image: string; snapshot: string } };

  // A raw image in Ceph: Glance's location rbd://fsid/images/<id>/snap.
  const raw = join(work, 'disk.raw');
  await qemuImg('create', '-f', 'raw', raw, '24M');
  await qemuIo('-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0xc3 20M 1M', raw);
  const rawId = await uploadImage(svc.url, tok, raw, 'raw-on-ceph', 'raw');
  glanceImages.push(rawId);
  const shown = await api(svc.url, tok)('GET', `/v2/images/${rawId}`);
  assert.equal(shown.json.direct_url, `rbd://${c.fsid}/${c.pool}/${rawId}/snap`);

  const inst = join(instances, uuids[0]!);
  const made = await compute(['create-disks', inst, '--image', rawId, '--root', '64M', '--swap', '16', '--base-dir', baseDir, '--config-drive', ...rbdArgs], env);
  assert.equal(made.code, 0, made.stderr);
  const root = `${c.clonePool}/${uuids[0]}_disk`;
  assert.match(made.stdout, new RegExp(`disk: created rbd:${root} \\(raw, ${64 * MiB} bytes, backed by ${c.pool}/${rawId}@snap\\)`));
  // The oracle: a copy-on-write child of the protected snapshot, grown to the root size.
  const rootInfo = await info(root);
  assert.deepEqual({ pool: rootInfo.parent?.pool, image: rootInfo.parent?.image, snapshot: rootInfo.parent?.snapshot }, { pool: c.pool, image: rawId, snapshot: 'snap' });
  assert.equal(rootInfo.size, 64 * MiB);
  const rootBytes = await rbdExport(c, root, 'admin');
  assert.equal(rootBytes.length, 64 * MiB);
  assert.ok(rootBytes.subarray(0, 24 * MiB).equals(await readFile(raw)), 'the clone reads the image through its parent');
  assert.ok(rootBytes.subarray(24 * MiB).every((b) => b === 0));
  assert.ok(!(await readdir(baseDir)).includes(sha1(rawId)), 'nothing downloaded for a cloned root disk');
  // Swap and config drive imported into the pool; the config drive's local copy removed.
  const swap = join(work, 'swap.raw');
  await writeFile(swap, await rbdExport(c, `${c.clonePool}/${uuids[0]}_disk.swap`, 'admin'));
  assert.match(await runOk('blkid', ['-p', '-o', 'value', '-s', 'TYPE', swap]), /^swap/);
  assert.equal((await info(`${c.clonePool}/${uuids[0]}_disk.config`)).parent, undefined);
  assert.ok(!(await readdir(inst)).includes('disk.config'), 'the imported config drive is not kept locally');
  // A second run keeps what exists.
  const again = await compute(['create-disks', inst, '--image', rawId, '--root', '64M', '--swap', '16', '--base-dir', baseDir, ...rbdArgs], env);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`disk: kept rbd:${root} `));

  // A qcow2 image cannot be cloned (Nova: "Image is not raw format"): fetched into the cache and imported.
  const q = join(work, 'q.qcow2');
  await makeQcow2(q, '32M', 3);
  const qId = await uploadImage(svc.url, tok, q, 'qcow2-on-ceph');
  glanceImages.push(qId);
  const inst2 = join(instances, uuids[1]!);
  const made2 = await compute(['create-disks', inst2, '--image', qId, '--base-dir', baseDir, ...rbdArgs], env);
  assert.equal(made2.code, 0, made2.stderr);
  const root2 = `${c.clonePool}/${uuids[1]}_disk`;
  assert.equal((await info(root2)).parent, undefined, 'imported, not cloned');
  assert.ok((await readdir(baseDir)).includes(sha1(qId)), 'fetched into the cache');
  const exported2 = join(work, 'root2.raw');
  await writeFile(exported2, await rbdExport(c, root2, 'admin'));
  assert.equal((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', q, exported2])).code, 0);
  // A root size below the image's: Nova's FlavorDiskSmallerThanImage, and no disk left.
  const small = await compute(['create-disks', join(instances, randomUUID()), '--image', rawId, '--root', '16M', '--base-dir', baseDir, ...rbdArgs], env);
  assert.equal(small.code, 1);
  assert.match(small.stderr, /Flavor's disk is too small for requested image/);

  // snapshot: the clone read through its parent, uploaded raw with Nova's properties.
  const snap = await compute(['snapshot', inst, '--name', 'snap-of-clone', '--base-image-ref', rawId, '--output', 'json', ...rbdArgs], env);
  assert.equal(snap.code, 0, snap.stderr);
  const snapImage = JSON.parse(snap.stdout) as Record<string, unknown>;
  glanceImages.push(snapImage.id as string);
  assert.equal(snapImage.disk_format, 'raw');
  assert.equal(snapImage.image_type, 'snapshot');
  assert.equal(snapImage.instance_uuid, uuids[0]);
  assert.equal(snapImage.base_image_ref, rawId);
  assert.equal(snapImage.size, 64 * MiB);
  const downloaded = await fetch(`${svc.url}/v2/images/${snapImage.id}/file`, { headers: { 'X-Auth-Token': tok } });
  assert.ok(Buffer.from(await downloaded.arrayBuffer()).equals(rootBytes), 'the snapshot holds the clone\'s bytes');

  // delete-disks: every image of the instance gone from the pool, the parent has no children.
  const del = await compute(['delete-disks', inst, ...rbdArgs], env);
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, new RegExp(`removed rbd:${root}\\n`));
  const left = JSON.parse(await rbdCli(c, ['ls', '--format', 'json', c.clonePool], 'admin')) as string[];
  assert.deepEqual(left.filter((n) => n.startsWith(uuids[0]!)), []);
  assert.equal((await rbdCli(c, ['children', `${c.pool}/${rawId}@snap`], 'admin')).trim(), '');
  assert.equal((await compute(['delete-disks', inst2, ...rbdArgs], env)).code, 0);

  // Options that need the rbd type are refused without it.
  const stray = await compute(['create-disks', inst, '--image', rawId, '--rbd-user', 'nova'], env);
  assert.equal(stray.code, 1);
  assert.match(stray.stderr, /--rbd-user needs --images-type rbd/);
});

test('compute delete-disks (qcow2 instances): the disk files go, other files and the directory stay', needs('qemu-img'), async (t) => {
  const inst = join(await tempDir(t), randomUUID());
  await mkdir(inst);
  await qemuImg('create', '-q', '-f', 'qcow2', join(inst, 'disk'), '1M');
  await writeFile(join(inst, 'disk.info'), '{}');
  await writeFile(join(inst, 'console.log'), 'boot\n');
  const r = await compute(['delete-disks', inst], {});
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `removed ${join(inst, 'disk')}\nremoved ${join(inst, 'disk.info')}\n`);
  assert.deepEqual(await readdir(inst), ['console.log']);
  const rbdOnly = await compute(['delete-disks', inst, '--images-rbd-pool', 'vms'], {});
  assert.equal(rbdOnly.code, 1);
  assert.match(rbdOnly.stderr, /--images-rbd-pool needs --images-type rbd/);
});
