/**
 * The S3 store: image data as objects in one bucket of any S3 endpoint (AWS, Ceph RGW, Swift's
 * s3api, MinIO), through the AWS SDK (SigV4 signing, retries), as glance_store's s3 driver
 * does with boto3. Options keep Glance's names (s3_store_host, s3_store_bucket,
 * s3_store_bucket_url_format, s3_store_large_object_size/_chunk_size, s3_store_thread_pools,
 * s3_store_create_bucket_on_put); locations are Glance's without the keys:
 * `s3://<host>/<bucket>/<key>`, `s3+https://` for an https:// endpoint (as Glance writes them:
 * `s3` is plain HTTP, and a host without a scheme means http).
 *
 * Writes: an image of known size below s3_store_large_object_size is one PutObject at commit
 * (buffered: it is small); anything else is a multipart upload begun at `begin`, parts of
 * s3_store_large_object_chunk_size uploaded as they fill (up to s3_store_thread_pools at
 * once), `CompleteMultipartUpload` the commit and `AbortMultipartUpload` the discard. The
 * object key is the upload's temporary key (`<image id>.<random>`, see temp-key.ts), so an
 * upload cut off by a crash is an open multipart upload named by its temporary key, which
 * sweep finds with ListMultipartUploads; S3 has no rename, and copying a large object to
 * another key would cost a second upload.
 */
import type { Readable, Writable } from 'node:stream';
import {
  S3Client, HeadBucketCommand, CreateBucketCommand, PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand,
  CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand, AbortMultipartUploadCommand, ListMultipartUploadsCommand,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { StoreError, type LiveKeys, type Store, type StoreWriter } from '../store.js';
import { isTransient, readAll, sendResuming, withRetries } from '../remote-read.js';
import { imageIdOf, newObjectTempKey, ObjectUploadWriter } from '../object-upload.js';

const MiB = 1 << 20;
/** S3's smallest part (all parts but the last) and largest part count. */
const MIN_PART = 5 * MiB;
const MAX_PARTS = 10_000;

export interface S3StoreOptions {
  /** s3_store_host: the endpoint URL (http(s)://host[:port]); a bare host means http, as in Glance. */
  host: string;
  accessKey: string;
  secretKey: string;
  bucket: string;
  /** s3_store_region_name (default us-east-1). */
  region?: string;
  /** s3_store_create_bucket_on_put: create a missing bucket instead of failing. */
  createBucketOnPut?: boolean;
  /** s3_store_bucket_url_format: path (https://host/bucket/key), virtual (https://bucket.host/key) or auto (virtual where the bucket name allows). */
  bucketUrlFormat?: 'auto' | 'path' | 'virtual';
  /** s3_store_large_object_size in bytes (Glance: 100 MiB): known sizes below it are one PutObject. */
  largeObjectSize?: number;
  /** s3_store_large_object_chunk_size in bytes (Glance: 10 MiB; at least 5 MiB): the part size. */
  largeObjectChunkSize?: number;
  /** s3_store_thread_pools: parts uploaded at once (Glance: 10). */
  threadPools?: number;
  /** Connect and per-request socket timeout, in milliseconds (default 30 s). */
  timeoutMs?: number;
  /** Attempts per request, the first included (the SDK retries transient failures; default 3). */
  maxAttempts?: number;
}

export class S3Store implements Store {
  readonly type = 's3' as const;
  readonly description: string;
  /** The SDK client (tests inspect the requests it builds). */
  readonly client: S3Client;
  readonly bucket: string;
  private readonly endpoint: URL;
  private readonly scheme: 's3' | 's3+https';
  private readonly largeObjectSize: number;
  private readonly partSize: number;
  private readonly parallel: number;
  private readonly retries: number;

  constructor(readonly id: string, private readonly opts: S3StoreOptions, description?: string) {
    this.endpoint = new URL(/^https?:\/\//.test(opts.host) ? opts.host : `http://${opts.host}`);
    this.scheme = this.endpoint.protocol === 'https:' ? 's3+https' : 's3';
    this.bucket = opts.bucket;
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(this.bucket)) throw new StoreError(`bad S3 bucket name '${this.bucket}'`, 'failed');
    this.largeObjectSize = opts.largeObjectSize ?? 100 * MiB;
    this.partSize = opts.largeObjectChunkSize ?? 10 * MiB;
    if (this.partSize < MIN_PART) throw new StoreError(`s3_store_large_object_chunk_size must be at least 5 MiB (S3's smallest part)`, 'failed');
    this.parallel = Math.max(1, opts.threadPools ?? 10);
    const timeout = opts.timeoutMs ?? 30_000;
    this.retries = (opts.maxAttempts ?? 3) - 1;
    this.client = new S3Client({
      endpoint: this.endpoint.origin,
      region: opts.region ?? 'us-east-1',
      credentials: { accessKeyId: opts.accessKey, secretAccessKey: opts.secretKey },
      forcePathStyle: opts.bucketUrlFormat === 'path',
      maxAttempts: opts.maxAttempts ?? 3,
      // Checksums only where S3 requires them: the SDK's default CRC32 trailers (aws-chunked
      // bodies) are refused by S3 endpoints other than AWS's (Swift's s3api among them).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({
        // requestTimeout: until the answer's headers (a part's upload included; without
        // throwOnRequestTimeout the SDK only warns); socketTimeout: idle time while a body streams.
        // The handler's own agents: given agents of ours, it sends a part's body without waiting
        // for 100 Continue, and an early answer (NoSuchUpload) then breaks the body's write
        // with an EPIPE that no one catches.
        connectionTimeout: timeout, requestTimeout: timeout, throwOnRequestTimeout: true, socketTimeout: timeout,
      }),
    });
    this.description = description ?? `S3 bucket ${this.bucket} at ${this.endpoint.host}`;
  }

  async init(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (e) {
      if (status(e) !== 404) throw this.error(e, `S3 HeadBucket ${this.bucket}`);
      if (!this.opts.createBucketOnPut) throw new StoreError(`the S3 bucket ${this.bucket} does not exist at ${this.endpoint.host}; create it or set s3_store_create_bucket_on_put`, 'failed');
      try {
        await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
      } catch (e2) {
        if ((e2 as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw this.error(e2, `S3 CreateBucket ${this.bucket}`);
      }
    }
  }

  newTempKey(imageId: string): string {
    return newObjectTempKey(imageId);
  }

  async begin(tempKey: string, sizeHint?: number): Promise<StoreWriter> {
    imageIdOf(tempKey); // refuses a key that is not one of newTempKey's
    if (sizeHint !== undefined && sizeHint < this.largeObjectSize) return new SingleObjectWriter(this, tempKey);
    // Parts grow where a known size would need more than S3's 10,000 parts.
    const partSize = Math.max(this.partSize, Math.ceil((sizeHint ?? 0) / MAX_PARTS));
    const created = await this.call(`S3 CreateMultipartUpload ${tempKey}`, () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: tempKey, ContentType: 'application/octet-stream' })));
    return new MultipartWriter(this, tempKey, created.UploadId!, partSize, this.parallel);
  }

  locationOf(key: string): string {
    return `${this.scheme}://${this.endpoint.host}/${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** The object key of one of this store's locations. */
  private keyOf(location: string): string {
    const m = /^(s3|s3\+http|s3\+https):\/\/([^/@]+)\/([^/]+)\/(.+)$/.exec(location);
    // s3 and s3+http both name plain HTTP (Glance reads s3+http, and writes s3).
    if (!m || m[2] !== this.endpoint.host || m[3] !== this.bucket || (m[1] === 's3+https') !== (this.scheme === 's3+https')) {
      throw new StoreError(`'${location}' is not a location of the S3 store ${this.id}`, 'failed');
    }
    return m[4]!.split('/').map(decodeURIComponent).join('/');
  }

  owns(location: string): boolean {
    try {
      this.keyOf(location);
      return true;
    } catch {
      return false;
    }
  }

  /** A ranged GetObject's body, or null for a range that starts past the end. */
  private async getRange(key: string, start: number, end: number | undefined): Promise<Readable | null> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(start > 0 || end !== undefined ? { Range: `bytes=${start}-${end ?? ''}` } : {}) }));
      return r.Body as Readable;
    } catch (e) {
      if (status(e) === 416) return null;
      throw this.error(e, `S3 GetObject ${key}`);
    }
  }

  async read(location: string, offset: number, length: number): Promise<Buffer> {
    const key = this.keyOf(location);
    if (length <= 0) return Buffer.alloc(0);
    return withRetries(this.retries, async () => {
      const body = await this.getRange(key, offset, offset + length - 1);
      if (!body) return Buffer.alloc(0);
      const got = await readAll(body);
      // An empty object answers a Range with the whole (empty) object.
      return got.length > length ? got.subarray(offset, offset + length) : got;
    });
  }

  async send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void> {
    const key = this.keyOf(location);
    await sendResuming((start, end) => this.getRange(key, start, end), out, range?.start ?? 0, range?.end, this.retries);
  }

  async size(location: string): Promise<number> {
    const key = this.keyOf(location);
    const r = await this.call(`S3 HeadObject ${key}`, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })));
    return r.ContentLength ?? 0;
  }

  async delete(location: string): Promise<void> {
    const key = this.keyOf(location);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      if (status(e) !== 404) throw this.error(e, `S3 DeleteObject ${key}`);
    }
  }

  /** Abort every open multipart upload whose key is not a live temporary key. */
  async sweep(live: LiveKeys): Promise<string[]> {
    const removed: string[] = [];
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.call('S3 ListMultipartUploads', () =>
        this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, KeyMarker, UploadIdMarker })));
      for (const u of page.Uploads ?? []) {
        if (!u.Key || !u.UploadId || live.has(u.Key)) continue;
        await this.abort(u.Key, u.UploadId);
        if (!removed.includes(u.Key)) removed.push(u.Key);
      }
      if (!page.IsTruncated) return removed;
      KeyMarker = page.NextKeyMarker;
      UploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async abort(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
    } catch (e) {
      if (status(e) !== 404) throw this.error(e, `S3 AbortMultipartUpload ${key}`);
    }
  }

  async putObject(key: string, body: Buffer): Promise<void> {
    await this.call(`S3 PutObject ${key}`, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length, ContentType: 'application/octet-stream' })));
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<string> {
    const r = await this.call(`S3 UploadPart ${key} #${partNumber}`, () =>
      this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length })));
    return r.ETag!;
  }

  async complete(key: string, uploadId: string, parts: { ETag: string; PartNumber: number }[]): Promise<void> {
    await this.call(`S3 CompleteMultipartUpload ${key}`, () =>
      this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } })));
  }

  /** Run an SDK call, its failure as a StoreError. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.error(e, what);
    }
  }

  /** A StoreError that says what failed and why, never with a key or signature in it. */
  private error(e: unknown, what: string): StoreError {
    if (e instanceof StoreError) return e;
    const err = e as { name?: string; code?: string; message?: string };
    const code = status(e);
    const where = `${what} at ${this.endpoint.host}`;
    if (code === 404 || err.name === 'NoSuchKey' || err.name === 'NotFound' || err.name === 'NoSuchUpload') return new StoreError(`${where}: not found`, 'not-found');
    if (code === 403 || err.name === 'InvalidAccessKeyId' || err.name === 'SignatureDoesNotMatch' || err.name === 'AccessDenied') {
      return new StoreError(`${where}: access denied (${err.name ?? code}): check the access key ${this.opts.accessKey} and its secret`, 'failed');
    }
    if (err.name === 'EntityTooLarge' || err.name === 'QuotaExceeded' || code === 507) return new StoreError(`${where}: out of space or quota (${err.name})`, 'full');
    if (code === undefined || isTransient(e)) {
      return new StoreError(`${where}: cannot reach the S3 endpoint (${err.code ?? err.name ?? 'error'}${err.message ? `: ${err.message.replaceAll(this.opts.secretKey, '***')}` : ''})`, 'unavailable');
    }
    return new StoreError(`${where}: ${code} ${err.name ?? ''}`.trim(), 'failed');
  }

  detail(): Record<string, unknown> {
    return {
      endpoint: this.endpoint.origin, bucket: this.bucket, region: this.opts.region ?? 'us-east-1',
      bucket_url_format: this.opts.bucketUrlFormat ?? 'auto', large_object_size: this.largeObjectSize, large_object_chunk_size: this.partSize,
    };
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

function status(e: unknown): number | undefined {
  return (e as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** A known-small image, kept in memory and sent as one PutObject at commit. */
class SingleObjectWriter extends ObjectUploadWriter {
  private parts: Buffer[] = [];

  constructor(private readonly store: S3Store, tempKey: string) {
    super(tempKey);
  }

  async write(chunks: Buffer[]): Promise<void> {
    this.checkOpen();
    for (const c of chunks) this.parts.push(Buffer.from(c));
  }

  protected async finish(): Promise<string> {
    const body = Buffer.concat(this.parts);
    this.parts = [];
    await this.store.putObject(this.tempKey, body);
    return this.store.locationOf(this.tempKey);
  }

  protected async drop(): Promise<void> {
    this.parts = [];
  }
}

/** A multipart upload: parts filled from the stream, up to `parallel` of them in flight. */
class MultipartWriter extends ObjectUploadWriter {
  private part: Buffer;
  private filled = 0;
  private readonly etags: string[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown = null;

  constructor(private readonly store: S3Store, tempKey: string, readonly uploadId: string,
    private readonly partSize: number, private readonly parallel: number) {
    super(tempKey);
    this.part = Buffer.allocUnsafe(partSize);
  }

  async write(chunks: Buffer[]): Promise<void> {
    this.checkOpen();
    for (let chunk of chunks) {
      while (chunk.length) {
        const n = chunk.copy(this.part, this.filled);
        this.filled += n;
        chunk = chunk.subarray(n);
        if (this.filled === this.partSize) await this.sendPart();
      }
    }
  }

  /** Upload the filled part; waits first while `parallel` parts are in flight. */
  private async sendPart(): Promise<void> {
    while (this.inFlight.size >= this.parallel) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
    const number = this.etags.length + 1;
    this.etags.push('');
    const body = this.filled === this.partSize ? this.part : this.part.subarray(0, this.filled);
    const sent: Promise<void> = this.store.uploadPart(this.tempKey, this.uploadId, number, body)
      .then((etag) => { this.etags[number - 1] = etag; }, (e: unknown) => { this.failure ??= e; })
      .finally(() => this.inFlight.delete(sent));
    this.inFlight.add(sent);
    this.part = Buffer.allocUnsafe(this.partSize);
    this.filled = 0;
  }

  protected async finish(): Promise<string> {
    // The last part may be short; an empty object is one empty part.
    if (this.filled > 0 || this.etags.length === 0) await this.sendPart();
    await Promise.all(this.inFlight);
    if (this.failure) throw this.failure;
    await this.store.complete(this.tempKey, this.uploadId, this.etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })));
    return this.store.locationOf(this.tempKey);
  }

  protected async drop(): Promise<void> {
    await Promise.allSettled(this.inFlight);
    await this.store.abort(this.tempKey, this.uploadId);
  }
}
