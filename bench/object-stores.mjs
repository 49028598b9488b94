#!/usr/bin/env node
// Upload and download through the Swift and S3 stores against the direct clients, same file,
// same Swift (the all-in-one of .ci/services/swift.sh), same run; prints the ratios.
//
//   Swift: the Swift store (static large object, 200 MiB segments: Glance's chunk size) against
//          `swift upload --use-slo --segment-size 200M` / `swift download -o /dev/null`.
//   S3:    the S3 store (multipart, 10 MiB parts, 10 at once: Glance's s3_store defaults)
//          against boto3's upload_file / download_file with the same part size and concurrency.
//          (The AWS CLI is not packaged in Debian 12; boto3 is what it runs on.)
//
// The store side reads the file in 1 MiB batches and writes them as the image service does
// (one write in flight); downloads go to a sink that drops the bytes.
// Issue 19's targets: upload at least 80 % of the direct client's speed, download at least equal.
//   BENCH_SIZE_MB (default 1024)  BENCH_RUNS (default 2; the best of each side counts)
//   DISKHUB_SWIFT_PORT (default 8480)
import { execFileSync } from 'node:child_process';
import { open, mkdir, rm } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomFillSync, randomUUID } from 'node:crypto';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { SwiftStore } = await import(join(root, 'packages/service/dist/src/stores/swift/swift-store.js'));
const { S3Store } = await import(join(root, 'packages/service/dist/src/stores/s3/s3-store.js'));

const MiB = 1 << 20;
const SIZE = Number(process.env.BENCH_SIZE_MB ?? 1024) * MiB;
const RUNS = Number(process.env.BENCH_RUNS ?? 2);
const PORT = Number(process.env.DISKHUB_SWIFT_PORT ?? 8480);
const AUTH = `http://127.0.0.1:${PORT}/auth/v1.0`;
const S3_URL = `http://127.0.0.1:${PORT}`;
const USER = 'test:tester';
const KEY = 'testing';
const CONTAINER = 'bench-objects';
const BUCKET = 'bench-objects-s3';
const SEGMENT = 200 * MiB;
const PART = 10 * MiB;
const THREADS = 10;

const work = join(root, 'bench', 'work', 'object-stores');
await mkdir(work, { recursive: true });
const file = join(work, 'data');
const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const mbps = (s) => (SIZE / MiB / s).toFixed(0);

{ // Random data (incompressible; nothing in the path compresses, but no shortcut either way).
  const fh = await open(file, 'w');
  const buf = Buffer.alloc(8 * MiB);
  for (let at = 0; at < SIZE; at += buf.length) { randomFillSync(buf); await fh.write(buf, 0, Math.min(buf.length, SIZE - at), at); }
  await fh.close();
  execFileSync('cat', [file], { stdio: ['ignore', 'ignore', 'inherit'] }); // into the page cache
}

const swiftEnv = { ...process.env, ST_AUTH: AUTH, ST_USER: USER, ST_KEY: KEY };
const swift = (...args) => execFileSync('swift', args, { env: swiftEnv, stdio: ['ignore', 'ignore', 'inherit'] });
const hasBoto3 = (() => { try { execFileSync('python3', ['-c', 'import boto3']); return true; } catch { return false; } })();
const boto3 = (script, ...args) => execFileSync('python3', ['-c', `import sys, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url="${S3_URL}", aws_access_key_id="${USER}", aws_secret_access_key="${KEY}", region_name="us-east-1")
cfg = TransferConfig(multipart_threshold=${PART}, multipart_chunksize=${PART}, max_concurrency=${THREADS})
${script}`, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });

/** Upload the file through a store as the service writes: 1 MiB reads, one write in flight. */
async function storeUpload(store, sizeHint) {
  const id = randomUUID();
  const writer = await store.begin(store.newTempKey(id), sizeHint);
  const fh = await open(file, 'r');
  const buf = Buffer.allocUnsafe(MiB);
  try {
    for (let at = 0; at < SIZE;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(MiB, SIZE - at), at);
      await writer.write([buf.subarray(0, bytesRead)]);
      at += bytesRead;
    }
  } finally { await fh.close(); }
  return writer.commit(id);
}

async function storeDownload(store, location) {
  let bytes = 0;
  const sink = new Writable({ write(chunk, _e, done) { bytes += chunk.length; done(); } });
  await store.send(location, sink);
  if (bytes !== SIZE) throw new Error(`downloaded ${bytes} bytes, not ${SIZE}`);
}

async function time(fn) { const t0 = process.hrtime.bigint(); await fn(); return seconds(t0); }

const swiftStore = new SwiftStore('bench', { authAddress: AUTH, authVersion: '1', user: USER, key: KEY, timeoutMs: 120_000, container: CONTAINER, createContainerOnPut: true, largeObjectSize: 1, largeObjectChunkSize: SEGMENT });
await swiftStore.init();
const s3Store = new S3Store('bench', { host: S3_URL, accessKey: USER, secretKey: KEY, bucket: BUCKET, bucketUrlFormat: 'path', createBucketOnPut: true, largeObjectSize: PART, largeObjectChunkSize: PART, threadPools: THREADS, timeoutMs: 120_000 });
await s3Store.init();

const best = {};
const keep = (name, s) => { best[name] = Math.min(best[name] ?? Infinity, s); console.log(`  ${name.padEnd(22)} ${s.toFixed(2)} s  ${mbps(s)} MiB/s`); };

for (let run = 1; run <= RUNS; run++) {
  console.log(`run ${run}/${RUNS}: ${SIZE / MiB} MiB`);
  let location;
  keep('swift store upload', await time(async () => { location = await storeUpload(swiftStore); }));
  keep('swift store download', await time(() => storeDownload(swiftStore, location)));
  await swiftStore.delete(location);
  keep('swift client upload', await time(() => swift('upload', '--use-slo', '--segment-size', String(SEGMENT), CONTAINER, file, '--object-name', 'client')));
  keep('swift client download', await time(() => swift('download', CONTAINER, 'client', '-o', '/dev/null')));
  swift('delete', CONTAINER, 'client');

  keep('s3 store upload', await time(async () => { location = await storeUpload(s3Store); }));
  keep('s3 store download', await time(() => storeDownload(s3Store, location)));
  await s3Store.delete(location);
  if (hasBoto3) {
    keep('boto3 upload', await time(() => boto3(`s3.upload_file(sys.argv[1], "${BUCKET}", "client", Config=cfg)`, file)));
    keep('boto3 download', await time(() => boto3(`s3.download_file("${BUCKET}", "client", "/dev/null", Config=cfg)`)));
    boto3(`s3.delete_object(Bucket="${BUCKET}", Key="client")`);
  }
}

const ratio = (ours, theirs) => (best[theirs] / best[ours]).toFixed(2);
console.log(`\nbest of ${RUNS}, ${SIZE / MiB} MiB (ratio = direct client's time / store's time; >1: the store is faster)`);
console.log(`swift upload:   store ${mbps(best['swift store upload'])} MiB/s, swift client ${mbps(best['swift client upload'])} MiB/s, ratio ${ratio('swift store upload', 'swift client upload')} (target >= 0.80)`);
console.log(`swift download: store ${mbps(best['swift store download'])} MiB/s, swift client ${mbps(best['swift client download'])} MiB/s, ratio ${ratio('swift store download', 'swift client download')} (target >= 1.00)`);
if (hasBoto3) {
  console.log(`s3 upload:      store ${mbps(best['s3 store upload'])} MiB/s, boto3 ${mbps(best['boto3 upload'])} MiB/s, ratio ${ratio('s3 store upload', 'boto3 upload')} (target >= 0.80)`);
  console.log(`s3 download:    store ${mbps(best['s3 store download'])} MiB/s, boto3 ${mbps(best['boto3 download'])} MiB/s, ratio ${ratio('s3 store download', 'boto3 download')} (target >= 1.00)`);
} else {
  console.log('s3: boto3 is not installed (python3-boto3), and the AWS CLI is not packaged in Debian 12: no direct client to compare with');
}
await swiftStore.close();
await s3Store.close();
swift('delete', CONTAINER);
swift('delete', `${CONTAINER}_segments`);
boto3(`s3.delete_bucket(Bucket="${BUCKET}")`);
await rm(work, { recursive: true, force: true });
