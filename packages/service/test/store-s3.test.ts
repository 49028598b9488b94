/**
 * The S3 store against a real S3 API (Swift's s3api in the all-in-one of
 * .ci/services/swift.sh), checked with boto3 and the API itself: multipart uploads really
 * made of parts, nothing left by a discard, a failed write or a crash (after sweep), clear
 * errors for wrong credentials and unreachable endpoints, and path-style against
 * virtual-hosted requests as a recording server receives them.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AbortMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command, DeleteObjectCommand, DeleteBucketCommand } from '@aws-sdk/client-s3';
import { tempDir } from '@diskhub/testkit';
import { StoreError } from '../src/stores/store.js';
import { S3Store, type S3StoreOptions } from '../src/stores/s3/s3-store.js';
import { needSwift, freshName, boto3, S3_ENDPOINT, SWIFT_USER, SWIFT_KEY } from './swift-peer.js';
import { storeContractTests, writeLikeTheService as writeImage } from './store-contract.js';

const MiB = 1 << 20;

const options = (bucket: string, more: Partial<S3StoreOptions> = {}): S3StoreOptions => ({
  host: S3_ENDPOINT, accessKey: SWIFT_USER, secretKey: SWIFT_KEY, bucket, bucketUrlFormat: 'path', createBucketOnPut: true, timeoutMs: 10_000, ...more,
});

/** The bucket's open multipart uploads and objects, from the S3 API. */
async function leftovers(store: S3Store): Promise<{ uploads: string[]; objects: string[] }> {
  const u = await store.client.send(new ListMultipartUploadsCommand({ Bucket: store.bucket }));
  const o = await store.client.send(new ListObjectsV2Command({ Bucket: store.bucket }));
  return { uploads: (u.Uploads ?? []).map((x) => x.Key!), objects: (o.Contents ?? []).map((x) => x.Key!) };
}

/** A store on a fresh bucket (emptied and removed after the test), not initialised; null when Swift is not running (outside CI). */
async function newS3Store(t: TestContext, more: Partial<S3StoreOptions> = {}): Promise<S3Store | null> {
  if (!await needSwift(t)) return null;
  const store = new S3Store('s3-test', options(freshName('s3-test'), more));
  // The contract suite closes the store after this; the SDK client works until then.
  t.after(async () => {
    const open = await store.client.send(new ListMultipartUploadsCommand({ Bucket: store.bucket })).catch(() => ({ Uploads: [] }));
    for (const u of open.Uploads ?? []) await store.client.send(new AbortMultipartUploadCommand({ Bucket: store.bucket, Key: u.Key, UploadId: u.UploadId }));
    const { objects } = await leftovers(store).catch(() => ({ objects: [] as string[] }));
    for (const key of objects) await store.client.send(new DeleteObjectCommand({ Bucket: store.bucket, Key: key }));
    await store.client.send(new DeleteBucketCommand({ Bucket: store.bucket })).catch(() => {});
  });
  return store;
}

/** The same, initialised. */
async function s3Store(t: TestContext, more: Partial<S3StoreOptions> = {}): Promise<S3Store | null> {
  const store = await newS3Store(t, more);
  t.after(() => store?.close());
  await store?.init();
  return store;
}

// Known sizes of 1 MiB and more (and unknown ones) are multipart uploads.
storeContractTests('s3', (t) => newS3Store(t, { largeObjectSize: 1 << 20 }));


test('a large image is a multipart upload: parts listed by boto3 before the commit, one object after, byte-identical through boto3', async (t) => {
  const store = await s3Store(t, { largeObjectSize: 5 * MiB, largeObjectChunkSize: 5 * MiB, threadPools: 2 });
  if (!store) return;
  const id = randomUUID();
  const data = randomBytes(12 * MiB + 7);
  const writer = await writeImage(store, id, data);
  // Before the commit: an open upload whose finished parts are 5 MiB each, and no object.
  const before = JSON.parse(await boto3(`
import time
bucket, key = sys.argv[1], sys.argv[2]
for _ in range(100):
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", []) if uploads else []
    if len(parts) >= 2: break
    time.sleep(0.1)
print(json.dumps({"uploads": [u["Key"] for u in uploads], "parts": [[p["PartNumber"], p["Size"]] for p in parts],
                  "objects": [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]}))
`, store.bucket, writer.tempKey)) as { uploads: string[]; parts: number[][]; objects: string[] };
  assert.deepEqual(before, { uploads: [writer.tempKey], parts: [[1, 5 * MiB], [2, 5 * MiB]], objects: [] });

  const location = await writer.commit(id);
  assert.equal(location, `s3://127.0.0.1:${new URL(S3_ENDPOINT).port}/${store.bucket}/${writer.tempKey}`);
  const dir = await tempDir(t);
  const after = JSON.parse(await boto3(`
bucket, key, out = sys.argv[1], sys.argv[2], sys.argv[3]
head = s3.head_object(Bucket=bucket, Key=key)
s3.download_file(bucket, key, out)
print(json.dumps({"etag": head["ETag"], "size": head["ContentLength"], "uploads": len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))}))
`, store.bucket, writer.tempKey, join(dir, 'out'))) as { etag: string; size: number; uploads: number };
  assert.match(after.etag, /-3"$/, 'a multipart ETag: three parts');
  assert.equal(after.size, data.length);
  assert.equal(after.uploads, 0);
  assert.ok((await readFile(join(dir, 'out'))).equals(data), 'boto3 downloads the same bytes');
  assert.ok((await store.read(location, 5 * MiB - 3, MiB)).equals(data.subarray(5 * MiB - 3, 6 * MiB - 3)), 'a range across parts');
  await store.delete(location);
  assert.deepEqual(await leftovers(store), { uploads: [], objects: [] });
});

test('a known size below s3_store_large_object_size is one PutObject; sizes at or above it multipart', async (t) => {
  const store = await s3Store(t, { largeObjectSize: 6 * MiB, largeObjectChunkSize: 5 * MiB });
  if (!store) return;
  const small = randomUUID();
  const smallWriter = await writeImage(store, small, randomBytes(6 * MiB - 1), 6 * MiB - 1);
  assert.deepEqual((await leftovers(store)).uploads, [], 'no multipart upload for a small image');
  await smallWriter.commit(small);
  const large = randomUUID();
  const largeWriter = await writeImage(store, large, randomBytes(6 * MiB), 6 * MiB);
  assert.deepEqual((await leftovers(store)).uploads, [largeWriter.tempKey]);
  await largeWriter.commit(large);
  assert.deepEqual((await leftovers(store)).objects.sort(), [smallWriter.tempKey, largeWriter.tempKey].sort());
});

test('discard and a failed write leave no object and no open multipart upload', async (t) => {
  const store = await s3Store(t, { largeObjectSize: 5 * MiB, largeObjectChunkSize: 5 * MiB });
  if (!store) return;
  const discarded = await writeImage(store, randomUUID(), randomBytes(11 * MiB));
  await discarded.discard();
  await discarded.discard();
  assert.deepEqual(await leftovers(store), { uploads: [], objects: [] });

  // The upload vanishes under the writer (aborted by someone else): its next part fails, the commit reports it.
  const id = randomUUID();
  const failing = await writeImage(store, id, randomBytes(6 * MiB));
  const open = await store.client.send(new ListMultipartUploadsCommand({ Bucket: store.bucket }));
  await store.client.send(new AbortMultipartUploadCommand({ Bucket: store.bucket, Key: failing.tempKey, UploadId: open.Uploads![0]!.UploadId }));
  await assert.rejects(async () => { await failing.write([randomBytes(5 * MiB)]); await failing.commit(id); },
    (e: unknown) => e instanceof StoreError && /S3 UploadPart .* not found|S3 CompleteMultipartUpload .* not found/.test(e.message));
  await failing.discard();
  assert.deepEqual(await leftovers(store), { uploads: [], objects: [] });
});

test('a crash mid-upload: sweep aborts its multipart upload, keeps live uploads and committed objects', async (t) => {
  const store = await s3Store(t, { largeObjectSize: 5 * MiB, largeObjectChunkSize: 5 * MiB });
  if (!store) return;
  const keptId = randomUUID();
  const location = await (await writeImage(store, keptId, randomBytes(6 * MiB))).commit(keptId);
  const crashed = await writeImage(store, randomUUID(), randomBytes(6 * MiB));
  const live = await writeImage(store, randomUUID(), randomBytes(MiB));
  const other = new S3Store('s3-test', options(store.bucket));
  t.after(() => other.close());
  assert.deepEqual(await other.sweep(new Set([live.tempKey])), [crashed.tempKey]);
  assert.deepEqual((await leftovers(store)).uploads, [live.tempKey]);
  assert.equal(await other.size(location), 6 * MiB);
  await live.discard();
  await crashed.discard();
  assert.deepEqual((await leftovers(store)).uploads, []);
});

test('wrong credentials: a clear error that names the access key, never the secret', async (t) => {
  if (!await needSwift(t)) return;
  const store = new S3Store('bad', options('diskhub-any', { secretKey: 'not-the-secret-4242', maxAttempts: 1 }));
  t.after(() => store.close());
  await assert.rejects(store.init(), (e: unknown) => {
    assert.ok(e instanceof StoreError, String(e));
    assert.match(e.message, /access denied .*check the access key test:tester/);
    assert.doesNotMatch(e.message, /not-the-secret-4242/);
    return true;
  });
});

test('an unreachable endpoint: refused at once, and a silent one times out; neither hangs', async (t) => {
  const closed = createTcpServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const closedPort = (closed.address() as { port: number }).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const refused = new S3Store('s', options('diskhub-any', { host: `http://127.0.0.1:${closedPort}`, maxAttempts: 2, timeoutMs: 1000 }));
  t.after(() => refused.close());
  await assert.rejects(refused.init(), (e: unknown) => e instanceof StoreError && e.kind === 'unavailable' && /cannot reach the S3 endpoint \(ECONNREFUSED/.test(e.message));

  const sockets: Socket[] = [];
  const silent = createTcpServer((s) => { sockets.push(s); });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of sockets) s.destroy(); silent.close(); });
  const store = new S3Store('s', options('diskhub-any', { host: `http://127.0.0.1:${(silent.address() as { port: number }).port}`, maxAttempts: 2, timeoutMs: 500 }));
  t.after(() => store.close());
  const started = Date.now();
  await assert.rejects(store.init(), (e: unknown) => e instanceof StoreError && e.kind === 'unavailable');
  assert.ok(Date.now() - started < 5000, `gave up after the timeouts (${Date.now() - started} ms)`);
});

test('path-style and virtual-hosted requests, as an S3 server receives them (SigV4 signed, no secret on the wire)', async (t) => {
  const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers });
      res.writeHead(200, { ETag: '"d41d8cd98f00b204e9800998ecf8427e"', 'Content-Length': '0' }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;

  const run = async (store: S3Store, id: string) => {
    t.after(() => store.close());
    seen.length = 0;
    await store.init();
    const writer = await store.begin(store.newTempKey(id), 3);
    await writer.write([Buffer.from('abc')]);
    return { location: await writer.commit(id), key: writer.tempKey };
  };

  const id = randomUUID();
  const path = await run(new S3Store('s', options('images-path', { host: `http://127.0.0.1:${port}` })), id);
  assert.deepEqual(seen.map((r) => [r.method, r.headers.host, r.url.split('?')[0]]), [
    ['HEAD', `127.0.0.1:${port}`, '/images-path/'],
    ['PUT', `127.0.0.1:${port}`, `/images-path/${path.key}`],
  ]);
  assert.match(seen[1]!.headers.authorization!, /^AWS4-HMAC-SHA256 Credential=test:tester\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=[^ ]*host[^ ]*, Signature=[0-9a-f]{64}$/);
  assert.ok(!JSON.stringify(seen).includes(SWIFT_KEY), 'the secret never travels');
  assert.equal(path.location, `s3://127.0.0.1:${port}/images-path/${path.key}`);

  // Virtual-hosted: the bucket is in the host name. That name does not resolve here, so the
  // request is sent to the loopback server after signing, with its Host header as built.
  const store = new S3Store('s', options('images-virtual', { host: `http://s3.diskhub.test:${port}`, bucketUrlFormat: 'virtual' }));
  store.client.middlewareStack.addRelativeTo(((next: (a: { request: unknown }) => Promise<unknown>) => async (args: { request: unknown }) => {
    (args.request as { hostname: string }).hostname = '127.0.0.1';
    return next(args);
  }) as never, { relation: 'after', toMiddleware: 'httpSigningMiddleware', name: 'sendToLoopback' });
  const virtual = await run(store, id);
  assert.deepEqual(seen.map((r) => [r.method, r.headers.host, r.url.split('?')[0]]), [
    ['HEAD', `images-virtual.s3.diskhub.test:${port}`, '/'],
    ['PUT', `images-virtual.s3.diskhub.test:${port}`, `/${virtual.key}`],
  ]);
  assert.equal(virtual.location, `s3://s3.diskhub.test:${port}/images-virtual/${virtual.key}`);
});
