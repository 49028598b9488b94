/**
 * The Swift store: image data as objects in an OpenStack Swift account, as glance_store's
 * swift driver (single-tenant) keeps them — object name = image id, in one container
 * (swift_store_container) or in one per image-id prefix (swift_store_multiple_containers_seed),
 * locations `swift+config://<store id>/<container>/<image id>` (Glance's credential-free form:
 * the store's configuration holds the account and its credentials).
 *
 * Writes:
 * - an image whose size is known and below swift_store_large_object_size is one PUT, streamed
 *   as it arrives: Swift stores an object only when its body ends, so a discarded or broken
 *   write leaves nothing;
 * - anything else is a static large object: segments of swift_store_large_object_chunk_size
 *   streamed into `<container>_segments` as `<temp key>/<00000001>…`, and commit is the SLO
 *   manifest PUT (?multipart-manifest=put). A marker `<container>_segments/.partial/<temp key>`
 *   is written at begin so that sweep finds an upload cut off by a crash even before its first
 *   segment is complete; commit removes it. (Glance writes dynamic large objects from a
 *   temporary disk buffer; SLO manifests name their segments and are verified by Swift.)
 *
 * Reads are ranged GETs, retried on transient failures and resumed where they broke off;
 * delete removes an SLO with its segments (?multipart-manifest=delete).
 */
import type { Writable } from 'node:stream';
import { StoreError, type LiveKeys, type Store, type StoreWriter } from '../store.js';
import { readAll, sendResuming, withRetries } from '../remote-read.js';
import { imageIdOf, newObjectTempKey, ObjectUploadWriter } from '../object-upload.js';
import { SwiftConnection, statusError, type StreamingPut, type SwiftAuthOptions } from './connection.js';

const MiB = 1 << 20;
/** The segment-container prefix of upload markers. */
const MARKERS = '.partial/';
/** Swift's default max_manifest_segments: an SLO manifest lists at most this many segments. */
const MAX_MANIFEST_SEGMENTS = 1000;

export interface SwiftStoreOptions extends SwiftAuthOptions {
  /** swift_store_container (default "glance"); the prefix of every container in multiple-container mode. */
  container?: string;
  /** swift_store_multiple_containers_seed: 0 (one container) or 1..32 (16^N containers by image-id prefix). */
  multipleContainersSeed?: number;
  /** swift_store_create_container_on_put: create a missing container instead of failing. */
  createContainerOnPut?: boolean;
  /** swift_store_large_object_size, in bytes (Glance: 5 GiB): known sizes below it are one PUT. */
  largeObjectSize?: number;
  /** swift_store_large_object_chunk_size, in bytes (Glance: 200 MiB): the SLO segment size. */
  largeObjectChunkSize?: number;
  /** swift_store_retry_get_count: how often a failed read is tried again (default 3). */
  retryGetCount?: number;
}

export class SwiftStore implements Store {
  readonly type = 'swift' as const;
  readonly description: string;
  readonly connection: SwiftConnection;
  private readonly container: string;
  private readonly seed: number;
  private readonly largeObjectSize: number;
  private readonly chunkSize: number;
  private readonly retries: number;
  /** Containers known to exist (checked or created once per process). */
  private readonly ready = new Set<string>();

  constructor(readonly id: string, private readonly opts: SwiftStoreOptions, description?: string) {
    this.container = opts.container ?? 'glance';
    this.seed = opts.multipleContainersSeed ?? 0;
    if (!Number.isInteger(this.seed) || this.seed < 0 || this.seed > 32) {
      throw new StoreError(`swift_store_multiple_containers_seed must be 0..32, not ${this.seed}`, 'failed');
    }
    if (!/^[^/]{1,200}$/.test(this.container)) throw new StoreError(`bad Swift container name '${this.container}'`, 'failed');
    this.largeObjectSize = opts.largeObjectSize ?? 5 * 1024 * MiB;
    this.chunkSize = opts.largeObjectChunkSize ?? 200 * MiB;
    this.retries = opts.retryGetCount ?? 3;
    this.connection = new SwiftConnection(opts);
    this.description = description ?? `Swift container ${this.container}${this.seed ? `_* (${16 ** this.seed} containers)` : ''} at ${opts.authAddress}`;
  }

  async init(): Promise<void> {
    await this.connection.connect();
    if (this.seed === 0) await this.ensureContainer(this.container);
  }

  /** The container of an image: Glance's `<container>_<first seed characters of the id>`. */
  containerOf(imageId: string): string {
    return this.seed ? `${this.container}_${imageId.slice(0, this.seed)}` : this.container;
  }

  private async ensureContainer(container: string): Promise<void> {
    if (this.ready.has(container)) return;
    const head = await this.connection.request('HEAD', [container]);
    if (head.status === 404) {
      if (!this.opts.createContainerOnPut) {
        throw new StoreError(`the Swift container ${container} does not exist; create it or set swift_store_create_container_on_put`, 'failed');
      }
      const put = await this.connection.request('PUT', [container]);
      if (put.status !== 201 && put.status !== 202) throw statusError(`creating the Swift container ${container}`, put.status, put.body);
    } else if (head.status >= 300) {
      throw statusError(`Swift HEAD ${container}`, head.status, head.body);
    }
    this.ready.add(container);
  }

  newTempKey(imageId: string): string {
    return newObjectTempKey(imageId);
  }

  async begin(tempKey: string, sizeHint?: number): Promise<StoreWriter> {
    const imageId = imageIdOf(tempKey);
    const container = this.containerOf(imageId);
    await this.ensureContainer(container);
    if (sizeHint !== undefined && sizeHint < this.largeObjectSize) {
      return new SingleObjectWriter(this, tempKey, container, imageId, await this.connection.upload([container, imageId], { 'Content-Type': 'application/octet-stream' }));
    }
    const segments = `${container}_segments`;
    await this.ensureContainer(segments);
    const marker = await this.connection.request('PUT', [segments, MARKERS + tempKey], {}, Buffer.alloc(0));
    if (marker.status !== 201) throw statusError(`Swift PUT ${segments}/${MARKERS}${tempKey}`, marker.status, marker.body);
    // A manifest lists at most MAX_MANIFEST_SEGMENTS segments: larger known sizes get larger segments.
    const segmentSize = Math.max(this.chunkSize, Math.ceil((sizeHint ?? 0) / MAX_MANIFEST_SEGMENTS));
    return new LargeObjectWriter(this, tempKey, container, imageId, segments, segmentSize);
  }

  /** The location of a committed object. */
  locationOf(container: string, object: string): string {
    return `swift+config://${encodeURIComponent(this.id)}/${encodeURIComponent(container)}/${encodeURIComponent(object)}`;
  }

  /** [container, object] of one of this store's locations. */
  private parse(location: string): [string, string] {
    const m = /^swift\+config:\/\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(location);
    if (!m || decodeURIComponent(m[1]!) !== this.id) throw new StoreError(`'${location}' is not a location of the Swift store ${this.id}`, 'failed');
    return [decodeURIComponent(m[2]!), decodeURIComponent(m[3]!)];
  }

  owns(location: string): boolean {
    try {
      this.parse(location);
      return true;
    } catch {
      return false;
    }
  }

  async read(location: string, offset: number, length: number): Promise<Buffer> {
    const path = this.parse(location);
    if (length <= 0) return Buffer.alloc(0);
    return withRetries(this.retries, async () => {
      const r = await this.connection.stream(path, { Range: `bytes=${offset}-${offset + length - 1}` });
      if (r.status === 416) { r.body.resume(); return Buffer.alloc(0); }
      const body = await readAll(r.body);
      if (r.status === 200) return body.subarray(offset, offset + length); // an empty object ignores Range
      if (r.status !== 206) throw statusError(`Swift GET ${path.join('/')}`, r.status, body);
      return body;
    });
  }

  async send(location: string, out: Writable, range?: { start: number; end: number }): Promise<void> {
    const path = this.parse(location);
    const open = async (start: number, end: number | undefined) => {
      const ranged = start > 0 || end !== undefined;
      const r = await this.connection.stream(path, ranged ? { Range: `bytes=${start}-${end ?? ''}` } : {});
      if (r.status === 416) { r.body.resume(); return null; }
      if (r.status !== 200 && r.status !== 206) throw statusError(`Swift GET ${path.join('/')}`, r.status, await readAll(r.body));
      return r.body;
    };
    await sendResuming(open, out, range?.start ?? 0, range?.end, this.retries);
  }

  async size(location: string): Promise<number> {
    const path = this.parse(location);
    const r = await withRetries(this.retries, () => this.connection.request('HEAD', path));
    if (r.status !== 200) throw statusError(`Swift HEAD ${path.join('/')}`, r.status);
    return Number(r.headers['content-length'] ?? 0);
  }

  async delete(location: string): Promise<void> {
    const path = this.parse(location);
    const head = await this.connection.request('HEAD', path);
    if (head.status === 404) return;
    if (head.status !== 200) throw statusError(`Swift HEAD ${path.join('/')}`, head.status);
    // An SLO's manifest and segments go in one request; a plain object with a plain DELETE.
    const slo = String(head.headers['x-static-large-object']).toLowerCase() === 'true';
    const r = await this.connection.request('DELETE', slo ? [...path, 'multipart-manifest=delete'] : path, slo ? { Accept: 'application/json' } : {});
    if (r.status === 404) return;
    if (r.status >= 300) throw statusError(`Swift DELETE ${path.join('/')}`, r.status, r.body);
    if (slo) {
      const result = JSON.parse(r.body.toString('utf8') || '{}') as { 'Response Status'?: string; Errors?: unknown[] };
      if (result['Response Status'] && !/^200|^404/.test(result['Response Status'])) {
        throw new StoreError(`Swift DELETE ${path.join('/')}?multipart-manifest=delete: ${result['Response Status']} ${JSON.stringify(result.Errors ?? [])}`, 'failed');
      }
    }
  }

  /** Names in a container (all pages of the listing) under `prefix`. */
  async list(container: string, prefix: string): Promise<string[]> {
    const names: string[] = [];
    let marker = '';
    for (;;) {
      const query = `format=json&prefix=${encodeURIComponent(prefix)}${marker ? `&marker=${encodeURIComponent(marker)}` : ''}`;
      const r = await this.connection.request('GET', [container, undefined, query]);
      if (r.status === 404) return names;
      if (r.status !== 200 && r.status !== 204) throw statusError(`Swift GET ${container}?${query}`, r.status, r.body);
      const page = r.status === 204 ? [] : JSON.parse(r.body.toString('utf8')) as { name: string }[];
      if (page.length === 0) return names;
      for (const o of page) names.push(o.name);
      marker = page[page.length - 1]!.name;
    }
  }

  /** Delete objects (segments), ignoring those already gone. */
  async deleteObjects(container: string, names: string[]): Promise<void> {
    await Promise.all(names.map(async (name) => {
      const r = await this.connection.request('DELETE', [container, name]);
      if (r.status >= 300 && r.status !== 404) throw statusError(`Swift DELETE ${container}/${name}`, r.status, r.body);
    }));
  }

  /**
   * Delete the segments `<tempKey>/…` and the marker of an upload: those the writer knows it
   * wrote (a busy container server may list a new object late) and those the listing shows.
   */
  async dropUpload(segments: string, tempKey: string, written: string[] = []): Promise<void> {
    const listed = await this.list(segments, `${tempKey}/`);
    await this.deleteObjects(segments, [...new Set([...written, ...listed])]);
    await this.deleteObjects(segments, [MARKERS + tempKey]);
  }

  async sweep(live: LiveKeys): Promise<string[]> {
    const removed: string[] = [];
    for (const segments of await this.segmentContainers()) {
      for (const name of await this.list(segments, MARKERS)) {
        const tempKey = name.slice(MARKERS.length);
        if (live.has(tempKey)) continue;
        // A crash between the manifest PUT and the marker's removal leaves a marker for a
        // committed image: its segments are the image's data and stay.
        if (await this.isCommitted(segments, tempKey)) await this.deleteObjects(segments, [name]);
        else await this.dropUpload(segments, tempKey);
        removed.push(tempKey);
      }
    }
    return removed;
  }

  private async segmentContainers(): Promise<string[]> {
    if (this.seed === 0) return [`${this.container}_segments`];
    const out: string[] = [];
    let marker = '';
    for (;;) {
      const query = `format=json&prefix=${encodeURIComponent(`${this.container}_`)}${marker ? `&marker=${encodeURIComponent(marker)}` : ''}`;
      const r = await this.connection.request('GET', ['', undefined, query]);
      if (r.status === 204) return out;
      if (r.status !== 200) throw statusError('Swift account listing', r.status, r.body);
      const page = JSON.parse(r.body.toString('utf8')) as { name: string }[];
      if (page.length === 0) return out;
      for (const c of page) if (c.name.endsWith('_segments')) out.push(c.name);
      marker = page[page.length - 1]!.name;
    }
  }

  /** Whether the image of `tempKey` is an SLO made of that upload's segments. */
  private async isCommitted(segments: string, tempKey: string): Promise<boolean> {
    const imageId = imageIdOf(tempKey);
    const r = await this.connection.request('GET', [this.containerOf(imageId), imageId, 'multipart-manifest=get&format=raw']);
    if (r.status !== 200 || String(r.headers['x-static-large-object']).toLowerCase() !== 'true') return false;
    const manifest = JSON.parse(r.body.toString('utf8')) as { path: string }[];
    return manifest.some((s) => s.path.startsWith(`/${segments}/${tempKey}/`) || s.path.startsWith(`${segments}/${tempKey}/`));
  }

  detail(): Record<string, unknown> {
    return {
      auth_address: this.opts.authAddress, auth_version: this.opts.authVersion, container: this.container,
      multiple_containers_seed: this.seed, large_object_size: this.largeObjectSize, large_object_chunk_size: this.chunkSize,
      ...(this.opts.region ? { region: this.opts.region } : {}),
    };
  }

  async close(): Promise<void> {
    this.connection.close();
  }
}

/** A known-small image: one streamed PUT to its final name; ending the body is the commit. */
class SingleObjectWriter extends ObjectUploadWriter {
  constructor(private readonly store: SwiftStore, tempKey: string, private readonly container: string,
    private readonly object: string, private readonly put: StreamingPut) {
    super(tempKey);
  }

  async write(chunks: Buffer[]): Promise<void> {
    this.checkOpen();
    await this.put.write(chunks);
  }

  protected async finish(): Promise<string> {
    await this.put.end();
    return this.store.locationOf(this.container, this.object);
  }

  protected async drop(): Promise<void> {
    this.put.abort();
  }
}

/**
 * A static large object: segments streamed one after another (the next starts while Swift
 * still answers for the last), the manifest PUT as the commit.
 */
class LargeObjectWriter extends ObjectUploadWriter {
  private current: StreamingPut | null = null;
  private currentBytes = 0;
  private readonly finished: Promise<{ path: string; etag: string; size_bytes: number }>[] = [];

  constructor(private readonly store: SwiftStore, tempKey: string, private readonly container: string,
    private readonly object: string, private readonly segments: string, private readonly segmentSize: number) {
    super(tempKey);
  }

  private segmentName(n: number): string {
    return `${this.tempKey}/${String(n).padStart(8, '0')}`;
  }

  async write(chunks: Buffer[]): Promise<void> {
    this.checkOpen();
    for (let chunk of chunks) {
      while (chunk.length) {
        if (!this.current) {
          this.current = await this.store.connection.upload([this.segments, this.segmentName(this.finished.length + 1)]);
          this.currentBytes = 0;
        }
        const n = Math.min(chunk.length, this.segmentSize - this.currentBytes);
        await this.current.write([chunk.subarray(0, n)]);
        this.currentBytes += n;
        chunk = chunk.subarray(n);
        if (this.currentBytes === this.segmentSize) this.endSegment();
      }
    }
  }

  private endSegment(): void {
    const put = this.current!;
    const path = `/${this.segments}/${this.segmentName(this.finished.length + 1)}`;
    const size = this.currentBytes;
    this.current = null;
    const done = put.end().then((etag) => ({ path, etag, size_bytes: size }));
    done.catch(() => {});
    this.finished.push(done);
  }

  protected async finish(): Promise<string> {
    if (this.current) this.endSegment();
    const manifest = await Promise.all(this.finished);
    const conn = this.store.connection;
    if (manifest.length === 0) {
      // An empty image: an SLO needs at least one segment, so a plain empty object.
      const r = await conn.request('PUT', [this.container, this.object], {}, Buffer.alloc(0));
      if (r.status !== 201) throw statusError(`Swift PUT ${this.container}/${this.object}`, r.status, r.body);
    } else {
      const r = await conn.request('PUT', [this.container, this.object, 'multipart-manifest=put'],
        { 'Content-Type': 'application/octet-stream' }, Buffer.from(JSON.stringify(manifest)));
      if (r.status !== 201) throw statusError(`Swift PUT ${this.container}/${this.object}?multipart-manifest=put`, r.status, r.body);
    }
    // Committed: a marker left by a failure here is recognised by sweep (isCommitted).
    await this.store.deleteObjects(this.segments, [MARKERS + this.tempKey]).catch(() => {});
    return this.store.locationOf(this.container, this.object);
  }

  protected async drop(): Promise<void> {
    this.current?.abort();
    this.current = null;
    const ended = await Promise.allSettled(this.finished);
    const written = this.finished.map((_, i) => this.segmentName(i + 1)).filter((_, i) => ended[i]!.status === 'fulfilled');
    await this.store.dropUpload(this.segments, this.tempKey, written);
  }
}
