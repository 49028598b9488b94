/**
 * Two API nodes on one PostgreSQL database and one S3 store (Swift's S3 API): a web-download
 * import whose node is SIGKILLed after it has uploaded a part is finished by the other node,
 * and the killed node's open multipart upload is aborted (multinode.ts takeover); boto3
 * confirms what is left: the image's one object, no multipart upload.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needs } from '@diskhub/testkit';
import { takeoverFromScratch } from './multinode.js';
import { s3Oracle } from './multinode-stores.js';
import { boto3 } from './swift-peer.js';

test('two API nodes on PostgreSQL and S3: a web-download whose node is SIGKILLed is finished by the other', needs('qemu-img', 'python3'), async (t) => {
  const store = await s3Oracle(t);
  // 8 MiB, the node killed after 6 MiB: past the first 5 MiB part
  const id = store && await takeoverFromScratch(t, store, 8, 6 << 20);
  if (!store || !id) return;
  const seen = JSON.parse(await boto3(`b = sys.argv[1]; p = sys.argv[2]
objs = [o["Key"] for o in s3.list_objects_v2(Bucket=b, Prefix=p).get("Contents", [])]
ups = [u["Key"] for u in s3.list_multipart_uploads(Bucket=b, Prefix=p).get("Uploads", [])]
print(json.dumps({"objects": objs, "uploads": ups}))`, store.bucket, id));
  assert.equal(seen.objects.length, 1, JSON.stringify(seen));
  assert.ok(seen.objects[0].startsWith(`${id}.`), JSON.stringify(seen));
  assert.deepEqual(seen.uploads, []);
});
