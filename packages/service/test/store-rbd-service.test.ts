/**
 * The image service with the RBD store as its default store, driven by the real openstack
 * client, with the rbd CLI checking what lands in Ceph: an upload becomes images/<id> with its
 * protected snapshot, the download is byte-identical, a Range download reads through librbd, and
 * deleting the image removes the RBD image.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, run, runOk, tempDir } from '@diskhub/testkit';
import { api, osEnv, startTestService, token } from './helpers.js';
import { ceph, PARTIAL_TAG, rbdCli, rbdExport, removeImageWithCli, type CephCluster } from './ceph.js';

const os = (env: NodeJS.ProcessEnv, ...args: string[]) => runOk('openstack', args, { env });
const osJson = async (env: NodeJS.ProcessEnv, ...args: string[]) => JSON.parse(await os(env, ...args, '-f', 'json'));

/** The service with the Ceph pool as its default store ("ceph", described) and a file store ("local"); `extra`: more settings. */
async function serviceOnCeph(t: TestContext, c: CephCluster, dir: string, extra: Record<string, unknown>) {
  const config = join(dir, 'diskhub.json');
  await writeFile(config, JSON.stringify({
    stores: {
      ceph: { type: 'rbd', description: 'Ceph images pool', rbd_store_pool: c.pool, rbd_store_user: c.user, rbd_store_ceph_conf: c.conf, rbd_store_keyring: c.glanceKeyring, rados_connect_timeout: 20, rbd_store_partial_tag: PARTIAL_TAG },
      local: { type: 'file', path: 'images' },
    },
    defaultStore: 'ceph',
    ...extra,
  }));
  return startTestService(t, { DISKHUB_CONFIG: config });
}

test('openstack client with the RBD store as the default: upload, download, Range, delete', needs('openstack', 'qemu-img'), async (t) => {
  const c = ceph(t);
  if (!c) return;
  const dir = await tempDir(t);
  const svc = await serviceOnCeph(t, c, dir, { showImageDirectUrl: true });
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

test('an image whose RBD snapshot has a clone is in use: delete answers 409 and keeps it (Glance\'s InUseByStore)', needs('openstack'), async (t) => {
  const c = ceph(t);
  if (!c) return;
  const dir = await tempDir(t);
  const svc = await serviceOnCeph(t, c, dir, { enabledImportMethods: 'glance-direct,web-download,copy-image' });
  const env = osEnv(svc.url);
  const raw = join(dir, 'disk.raw');
  const bytes = Buffer.alloc(3 << 20, 0x6b);
  await writeFile(raw, bytes);
  const id = (await osJson(env, 'image', 'create', '--file', raw, '--disk-format', 'raw', '--container-format', 'bare', 'cloned')).id as string;
  t.after(() => removeImageWithCli(c, `${c.pool}/${id}`));
  // Nova's clone of the image's snapshot, in the vms pool (made by the admin: client.glance may not write there).
  const clone = `${c.clonePool}/clone-${id}`;
  await rbdCli(c, ['clone', `${c.pool}/${id}@snap`, clone], 'admin');
  let cloned = true;
  t.after(async () => { if (cloned) await rbdCli(c, ['rm', '--no-progress', clone], 'admin'); });

  const call = api(svc.url, await token(svc.url));
  const refused = await call('DELETE', `/v2/images/${id}`);
  assert.equal(refused.status, 409);
  assert.match(refused.text, new RegExp(`Image ${id} could not be deleted because it is in use: The image cannot be deleted because it is in use through the backend store outside of Glance\\.`));
  // The openstack client reports the failure too, and the image is still there, whole.
  const cli = await run('openstack', ['image', 'delete', id], { env });
  assert.notEqual(cli.code, 0);
  assert.match(cli.stderr, /Failed to delete 1 of 1 images/);
  const shown = await osJson(env, 'image', 'show', id);
  assert.equal(shown.status, 'active');
  assert.equal(shown.properties.stores, 'ceph');
  const info = JSON.parse(await rbdCli(c, ['info', '--format', 'json', `${c.pool}/${id}@snap`])) as { protected: string };
  assert.equal(info.protected, 'true', 'the snapshot stays protected');
  assert.ok((await rbdExport(c, clone, 'admin')).equals(bytes), 'the clone still reads the image');
  const saved = join(dir, 'saved.raw');
  await os(env, 'image', 'save', '--file', saved, id);
  assert.ok((await readFile(saved)).equals(bytes), 'the image still downloads');

  // Copied to the file store too: deleting the Ceph copy alone (DELETE /v2/stores/ceph/{id}) is in use as well.
  const copied = await call('POST', `/v2/images/${id}/import`, { body: { method: { name: 'copy-image' }, stores: ['local'] } });
  assert.equal(copied.status, 202, copied.text);
  for (let i = 0; i < 100 && (await osJson(env, 'image', 'show', id)).properties.stores !== 'ceph,local'; i++) await new Promise((r) => setTimeout(r, 100));
  const fromStore = await call('DELETE', `/v2/stores/ceph/${id}`);
  assert.equal(fromStore.status, 409);
  assert.match(fromStore.text, new RegExp(`The data for Image ${id} could not be deleted because it is in use: `));
  assert.equal((await osJson(env, 'image', 'show', id)).properties.stores, 'ceph,local');

  // The clone gone (flattened or deleted by Nova), the delete goes through and removes the RBD image.
  await rbdCli(c, ['rm', '--no-progress', clone], 'admin');
  cloned = false;
  await os(env, 'image', 'delete', id);
  const left = JSON.parse(await rbdCli(c, ['ls', '--format', 'json', c.pool])) as string[];
  assert.ok(!left.includes(id), 'the RBD image is removed');
});
