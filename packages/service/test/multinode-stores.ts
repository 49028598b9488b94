/**
 * The stores the multi-node tests run on, each with its oracle (multinode.ts StoreOracle): what
 * the store holds of an image, read with the store's own client. null when the store's service
 * is missing and the test skipped (outside CI; under CI=true a missing service fails the test).
 */
import type { TestContext } from 'node:test';
import { AbortMultipartUploadCommand, DeleteBucketCommand, DeleteObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { ceph, PARTIAL_TAG, rbdCli, removeImageWithCli } from './ceph.js';
import type { StoreOracle } from './multinode.js';
import { freshName, needSwift, swiftDrop, swiftList, swiftManifest, S3_ENDPOINT, SWIFT_AUTH, SWIFT_KEY, SWIFT_USER } from './swift-peer.js';

/** The RBD store on pool `images` as client.glance; the oracle is `rbd ls` (the rbd CLI). */
export function rbdOracle(t: TestContext): StoreOracle | null {
  const c = ceph(t);
  if (!c) return null;
  const seen = new Set<string>();
  // What a failed run leaves of its images is removed with the rbd CLI as the admin (an image
  // a killed node still watches cannot be, for 30 s: that is left, not waited for).
  t.after(async () => { for (const name of seen) await removeImageWithCli(c, `${c.pool}/${name}`).catch(() => {}); });
  return {
    config: { type: 'rbd', rbd_store_pool: c.pool, rbd_store_user: c.user, rbd_store_ceph_conf: c.conf, rbd_store_keyring: c.glanceKeyring, rados_connect_timeout: 20, rbd_store_partial_tag: PARTIAL_TAG },
    async contents(id) {
      const names = (JSON.parse(await rbdCli(c, ['ls', '--format', 'json', c.pool])) as string[]).filter((n) => n.includes(id));
      for (const n of names) seen.add(n);
      return { image: names.includes(id), partial: names.filter((n) => n !== id) };
    },
  };
}

/**
 * The Swift store in a fresh container (tempauth), images above 1 MiB as static large objects
 * in 1 MiB segments (in `<container>_segments`, with an upload's marker there until it ends),
 * so an upload cut off by a killed node leaves something to find. The oracle is Swift's own
 * listings and the image's SLO manifest.
 */
export async function swiftOracle(t: TestContext): Promise<(StoreOracle & { container: string }) | null> {
  if (!await needSwift(t)) return null;
  const container = freshName('multinode');
  const segments = `${container}_segments`;
  t.after(() => swiftDrop(container, segments));
  return {
    container,
    config: {
      type: 'swift', auth_version: '1', auth_address: SWIFT_AUTH, user: SWIFT_USER, key: SWIFT_KEY,
      swift_store_container: container, swift_store_create_container_on_put: true,
      swift_store_large_object_size: 1, swift_store_large_object_chunk_size: 1,
    },
    async contents(id) {
      // The segments and markers of the image's uploads (`<id>.<suffix>/…`, `.partial/<id>.<suffix>`)
      // are grouped by upload: the upload the manifest names is the image's, any other is partial.
      const image = (await swiftList(container)).includes(id);
      const inUse = new Set(image ? (await swiftManifest(container, id)).map((p) => p.slice(0, p.lastIndexOf('/'))) : []);
      const partial = new Set<string>();
      for (const name of await swiftList(segments)) {
        if (!name.includes(id)) continue;
        if (name.startsWith('.partial/')) { partial.add(name); continue; }
        const upload = `${segments}/${name.slice(0, name.lastIndexOf('/'))}`;
        if (!inUse.has(upload)) partial.add(upload);
      }
      return { image, partial: [...partial].sort() };
    },
  };
}

/**
 * The S3 store on the all-in-one's S3 API (path-style, a fresh bucket), images above 5 MiB as
 * multipart uploads of 5 MiB parts (S3's smallest). The oracle is the bucket's object listing
 * and its open multipart uploads (ListObjectsV2, ListMultipartUploads): an upload cut off by a
 * killed node is an open multipart upload of a key of the image.
 */
export async function s3Oracle(t: TestContext): Promise<(StoreOracle & { bucket: string; s3: S3Client }) | null> {
  if (!await needSwift(t)) return null;
  const bucket = freshName('multinode');
  const s3 = new S3Client({ endpoint: S3_ENDPOINT, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: SWIFT_USER, secretAccessKey: SWIFT_KEY } });
  t.after(async () => {
    for (const u of (await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket })).catch(() => ({ Uploads: [] }))).Uploads ?? []) {
      await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key!, UploadId: u.UploadId! })).catch(() => {});
    }
    for (const o of (await s3.send(new ListObjectsV2Command({ Bucket: bucket })).catch(() => ({ Contents: [] }))).Contents ?? []) {
      await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.Key! })).catch(() => {});
    }
    await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => {});
    s3.destroy();
  });
  return {
    bucket, s3,
    config: {
      type: 's3', s3_store_host: S3_ENDPOINT, s3_store_access_key: SWIFT_USER, s3_store_secret_key: SWIFT_KEY,
      s3_store_bucket: bucket, s3_store_create_bucket_on_put: 'true', s3_store_bucket_url_format: 'path',
      s3_store_large_object_size: 5, s3_store_large_object_chunk_size: 5,
    },
    async contents(id) {
      const objects = ((await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: id }))).Contents ?? []).map((o) => o.Key!);
      const uploads = ((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: id }))).Uploads ?? []).map((u) => `multipart upload of ${u.Key}`);
      // One object is the image's (its key is the upload's: S3 has no rename); more would be partial.
      return { image: objects.length > 0, partial: [...(objects.length > 1 ? objects : []), ...uploads].sort() };
    },
  };
}
