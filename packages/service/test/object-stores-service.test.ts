/**
 * The image service with a Swift store and an S3 store configured by Glance's option names (in
 * the config file's `stores`), against the real Swift all-in-one: uploads to each store, the
 * locations Glance would show (without credentials), downloads with and without Range, and
 * delete removing the SLO segments and the S3 object.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ListObjectsV2Command, S3Client, DeleteBucketCommand } from '@aws-sdk/client-s3';
import { tempDir } from '@diskhub/testkit';
import { jsonLogger, loadConfig, startService } from '../src/index.js';
import { ADMIN_PASSWORD, api, token } from './helpers.js';
import { needSwift, freshName, swiftList, swiftDrop, SWIFT_AUTH, SWIFT_USER, SWIFT_KEY, S3_ENDPOINT } from './swift-peer.js';

test('the service stores images in Swift (SLO) and S3 (multipart) configured with Glance option names', async (t) => {
  if (!await needSwift(t)) return;
  const container = freshName('svc-swift');
  const bucket = freshName('svc-s3');
  t.after(() => swiftDrop(container, `${container}_segments`));
  const s3 = new S3Client({ endpoint: S3_ENDPOINT, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: SWIFT_USER, secretAccessKey: SWIFT_KEY } });
  t.after(async () => { await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => {}); s3.destroy(); });

  const dir = await tempDir(t, 'diskhub-objstores-');
  const configFile = join(dir, 'config.json');
  await writeFile(configFile, JSON.stringify({
    stores: {
      swift: {
        type: 'swift', auth_version: '1', auth_address: SWIFT_AUTH, user: SWIFT_USER, key: SWIFT_KEY,
        swift_store_container: container, swift_store_create_container_on_put: true,
        swift_store_large_object_size: 1, swift_store_large_object_chunk_size: 1,
      },
      s3: {
        type: 's3', s3_store_host: S3_ENDPOINT, s3_store_access_key: SWIFT_USER, s3_store_secret_key: SWIFT_KEY,
        s3_store_bucket: bucket, s3_store_create_bucket_on_put: 'true', s3_store_bucket_url_format: 'path',
        s3_store_large_object_size: 5, s3_store_large_object_chunk_size: 5,
      },
    },
    defaultStore: 'swift',
    showMultipleLocations: true,
  }));
  const cfg = loadConfig({ DISKHUB_DATA_DIR: dir, DISKHUB_PORT: '0', DISKHUB_BIND: '127.0.0.1', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD }, {}, configFile);
  const svc = await startService(cfg, jsonLogger({ write: () => {} }, 'info'));
  t.after(() => svc.close());
  const tok = await token(svc.url);
  const admin = api(svc.url, tok);

  const detail = await admin('GET', '/v2/info/stores/detail');
  assert.equal(detail.status, 200, detail.text);
  assert.deepEqual(detail.json.stores.map((s: { id: string; type: string }) => [s.id, s.type]), [['swift', 'swift'], ['s3', 's3']]);
  assert.ok(!detail.text.includes(SWIFT_KEY), 'no credential in the detail');

  const data = randomBytes(11 * (1 << 20) + 5);
  for (const store of ['swift', 's3']) {
    const created = await admin('POST', '/v2/images', { body: { name: store, disk_format: 'raw', container_format: 'bare' } });
    const id = created.json.id as string;
    const put = await admin('PUT', `/v2/images/${id}/file`, { raw: data, headers: { 'X-Image-Meta-Store': store } });
    assert.equal(put.status, 204, put.text);
    const shown = (await admin('GET', `/v2/images/${id}`)).json;
    assert.equal(shown.status, 'active');
    assert.equal(shown.stores, store);
    const url = shown.locations[0].url as string;
    assert.ok(store === 'swift' ? url === `swift+config://swift/${container}/${id}` : url.startsWith(`s3://127.0.0.1:${new URL(S3_ENDPOINT).port}/${bucket}/${id}.`), url);
    const whole = await fetch(`${svc.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': tok } });
    assert.ok(Buffer.from(await whole.arrayBuffer()).equals(data), `${store}: download`);
    const ranged = await fetch(`${svc.url}/v2/images/${id}/file`, { headers: { 'X-Auth-Token': tok, Range: 'bytes=5242000-6291999' } });
    assert.equal(ranged.status, 206);
    assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(5242000, 6292000)), `${store}: range`);
    if (store === 'swift') assert.equal((await swiftList(`${container}_segments`)).length, 12, '11 MiB + 5 in 1 MiB segments');
    else assert.equal((await s3.send(new ListObjectsV2Command({ Bucket: bucket }))).KeyCount, 1);
    assert.equal((await admin('DELETE', `/v2/images/${id}`)).status, 204);
  }
  assert.deepEqual(await swiftList(container), []);
  assert.deepEqual(await swiftList(`${container}_segments`), [], 'the segments went with the manifest');
  assert.equal((await s3.send(new ListObjectsV2Command({ Bucket: bucket }))).KeyCount, 0);
});
