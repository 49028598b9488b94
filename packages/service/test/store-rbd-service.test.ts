/**
 * The image service with the RBD store as its default store, driven by the real openstack
 * client, with the rbd CLI checking what lands in Ceph: an upload becomes images/<id> with its
 * protected snapshot, the download is byte-identical, a Range download reads through librbd, and
 * deleting the image removes the RBD image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, runOk, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService, token } from './helpers.js';
import { ceph, rbdCli, rbdExport, removeImageWithCli } from './ceph.js';

const os = (env: NodeJS.ProcessEnv, ...args: string[]) => runOk('openstack', args, { env });
const osJson = async (env: NodeJS.ProcessEnv, ...args: string[]) => JSON.parse(await os(env, ...args, '-f', 'json'));

test('openstack client with the RBD store as the default: upload, download, Range, delete', needs('openstack', 'qemu-img'), async (t) => {
  const c = ceph(t);
  if (!c) return;
  const dir = await tempDir(t);
  const config = join(dir, 'diskhub.json');
  await writeFile(config, JSON.stringify({
    stores: {
      ceph: { type: 'rbd', description: 'Ceph images pool', rbd_store_pool: c.pool, rbd_store_user: c.user, rbd_store_ceph_conf: c.conf, rbd_store_keyring: c.glanceKeyring, rados_connect_timeout: 20 },
      local: { type: 'file', path: 'images' },
    },
    defaultStore: 'ceph',
    showImageDirectUrl: true,
  }));
  const svc = await startTestService(t, { DISKHUB_CONFIG: config });
  const env = osEnv(svc.url);

  // A raw disk: a qemu-img-made image with data in places and zero runs between.
  const raw = join(dir, 'disk.raw');
  await qemuImg('create', '-f', 'raw', raw, '24M');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0xc3 20M 1M', raw]);
  const bytes = await readFile(raw);
  const created = await osJson(env, 'image', 'create', '--file', raw, '--disk-format', 'raw', '--container-format', 'bare', 'on-ceph');
  const id = created.id as string;
  t.after(() => removeImageWithCli(c, `${c.pool}/${id}`)); // should the test fail before the delete

  const shown = await osJson(env, 'image', 'show', id);
  assert.equal(shown.status, 'active');
  assert.equal(shown.size, bytes.length);
  assert.equal(shown.checksum, createHash('md5').update(bytes).digest('hex'));
  assert.equal(shown.properties.stores, 'ceph');
  assert.equal(shown.properties.direct_url, `rbd://${c.fsid}/${c.pool}/${id}/snap`, 'Glance\'s RBD location, for Nova to clone');

  // In Ceph: the image under its id, its protected snapshot, the same bytes.
  const info = JSON.parse(await rbdCli(c, ['info', '--format', 'json', `${c.pool}/${id}@snap`])) as { size: number; protected: string };
  assert.equal(info.size, bytes.length);
  assert.equal(info.protected, 'true');
  assert.ok((await rbdExport(c, `${c.pool}/${id}@snap`)).equals(bytes));

  const saved = join(dir, 'saved.raw');
  await os(env, 'image', 'save', '--file', saved, id);
  assert.ok((await readFile(saved)).equals(bytes), 'download is byte-identical');

  const tok = await token(svc.url);
  const ranged = await fetch(`${svc.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': tok, Range: 'bytes=3145000-20972000' } });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers.get('content-range'), `bytes 3145000-20972000/${bytes.length}`);
  assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(3145000, 20972001)));

  const stores = await (await fetch(`${svc.url}/v2/info/stores`, { headers: { 'X-Auth-Token': tok } })).json() as { stores: { id: string; default?: string; description: string }[] };
  assert.deepEqual(stores.stores.find((s) => s.id === 'ceph'), { id: 'ceph', description: 'Ceph images pool', default: 'true' }, 'Glance writes default as the string "true"');

  await os(env, 'image', 'delete', id);
  const left = JSON.parse(await rbdCli(c, ['ls', '--format', 'json', c.pool])) as string[];
  assert.ok(!left.includes(id), 'the RBD image is removed');
  assert.ok(!left.some((n) => n.includes(id)), 'and no temporary image of the upload is left');
});
