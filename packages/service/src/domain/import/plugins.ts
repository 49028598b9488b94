/**
 * Import plugins, as Glance names them in `[image_import_opts] image_import_plugins`
 * (glance/async_/flows/plugins/), run in the order configured, each on the stream the one
 * before it gives:
 *
 * - `image_decompression`: data that starts with a gzip, xz, zstd or zip magic number is
 *   decompressed as it streams (Glance's plugin knows gzip and zip; like it, nothing is done
 *   when the image's container_format is `compressed`, and a zip must hold exactly one file).
 *   A zip is read from its first local header (APPNOTE.TXT §4.3.7): the entry's data is
 *   inflated (or passed, when stored) as it arrives, and at the end the central directory at
 *   the tail (§4.3.12, §4.3.16) must list one entry whose CRC-32 and size match what came out. gzip is node:zlib; xz and zstd are
 *   the Debian `xz` and `zstd` tools through pipes (no npm package for either is as well kept,
 *   and a tool's exit status is checked after its output ends, so a corrupt archive fails the
 *   import instead of storing what was decoded before the damage). The decompressed size is
 *   the size the ingest caps, so a decompression bomb stops at image_size_cap / the quota.
 * - `image_conversion`: the image is stored in `[image_conversion] output_format` (raw, qcow2
 *   or vmdk) with the disk engine, and its disk_format becomes that (container_format bare),
 *   as Glance's plugin sets them. To raw (the usual choice, for Ceph) the source is converted
 *   as it streams (@diskhub/disk openStreamedImage): a qcow2 whose tables come before the data
 *   they map, as qemu-img writes them (and a vmdk sparse extent whose grain tables come before
 *   its grains), is read cluster by cluster as it arrives and its guest
 *   data goes on to the store in order, without staging (data that arrives before its table
 *   waits in a spill file, capped at image_size_cap); any other source is staged to that file
 *   first and read from it by the engine, with no second, converted copy. To qcow2 or vmdk
 *   the source is staged and converted to a temporary file (the writers fill their tables as
 *   data lands, so their output is a file, not a stream), which is then stored. Either way,
 *   the safety inspector judges the source as it streams (a backing file, an external data
 *   file, extents elsewhere: refused; a staged source before anything is converted) and,
 *   through the ingest, the converted data that is stored.
 * - `inject_image_metadata`: `[inject_metadata_properties] inject` properties set on the
 *   image when the import succeeds, unless the requester has one of `ignore_user_roles`
 *   (Glance's default: admin).
 */
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, pipeline } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { createGunzip, createInflateRaw } from 'node:zlib';
import { DiskError, convertFile, crc32, describeIssues, inspectFile, openStreamedImage, type InspectionReport, type StreamedImage } from '@diskhub/disk';
import { HttpError, badRequest } from '../../http.js';
import type { ImageRecord } from '../../images-model.js';
import type { Logger } from '../../log.js';

export const KNOWN_PLUGINS = ['image_decompression', 'image_conversion', 'inject_image_metadata'] as const;
/** Glance's [image_conversion] output_format choices. */
export const CONVERSION_FORMATS = ['raw', 'qcow2', 'vmdk'];

export interface ImportPluginOptions {
  /** Glance's image_import_plugins, in order. */
  enabled: string[];
  /** [inject_metadata_properties] inject. */
  inject: Record<string, string>;
  /** [inject_metadata_properties] ignore_user_roles. */
  ignoreUserRoles: string[];
  /** [image_conversion] output_format. */
  outputFormat: string;
  /** Where conversion stages its files (the staging area). */
  workDir: string;
  /** Largest source conversion stages (image_size_cap). */
  sizeCap: number;
}

export interface PluginContext {
  image: ImageRecord;
  /** The import requester's roles. */
  roles: string[];
  log: Logger;
  signal: AbortSignal;
}

/**
 * What the plugins made of the source: the stream to ingest, its length when known, the image
 * as it will be stored (formats), properties to set on success, and temporary files to remove
 * when the import ends.
 */
export interface PluginOutput { stream: ImportData; length: number | null; image: ImageRecord; properties: Record<string, string>; temporary: string[] }

/**
 * The data between plugins: a stream, or the streamed conversion's chunks themselves when no
 * later plugin reads the data — each chunk then valid only until the next is asked for (the
 * converter reads into two buffers in turn; the ingest copies every chunk into its hash batches
 * before it asks again), so a conversion allocates nothing per slice.
 */
export type ImportData = Readable | AsyncGenerator<Uint8Array>;

/** Stops `data` (a stream is destroyed, the chunks' generator returns and closes what it reads). */
export function closeData(data: ImportData, e?: Error): void {
  if (data instanceof Readable) data.destroy(e);
  else data.return(undefined).catch(() => {});
}

/** Plugins that read the data they are given (those that only set properties do not). */
const READS_DATA = new Set(['image_decompression', 'image_conversion']);

export async function applyPlugins(source: Readable, length: number | null, ctx: PluginContext, o: ImportPluginOptions): Promise<PluginOutput> {
  let out: PluginOutput = { stream: source, length, image: ctx.image, properties: {}, temporary: [] };
  for (const [i, name] of o.enabled.entries()) {
    if (name === 'image_decompression') out = await decompression(out);
    else if (name === 'image_conversion') out = await conversion(out, ctx, o, !o.enabled.slice(i + 1).some((n) => READS_DATA.has(n)));
    else if (name === 'inject_image_metadata') out = injectMetadata(out, ctx, o);
  }
  return out;
}

function injectMetadata(out: PluginOutput, ctx: PluginContext, o: ImportPluginOptions): PluginOutput {
  if (ctx.roles.some((r) => o.ignoreUserRoles.includes(r))) return out;
  return { ...out, properties: { ...out.properties, ...o.inject } };
}

// --- image_conversion

/** `last`: no later plugin reads the data (the streamed conversion may then hand its chunks on directly). */
async function conversion(out: PluginOutput, ctx: PluginContext, o: ImportPluginOptions, last: boolean): Promise<PluginOutput> {
  await mkdir(o.workDir, { recursive: true });
  if (o.outputFormat === 'raw') return convertStreamed(out, ctx, o, last);
  const src = join(o.workDir, `${ctx.image.id}.convert-source`);
  const dst = join(o.workDir, `${ctx.image.id}.convert-${o.outputFormat}`);
  try {
    return await convertStaged(out, ctx, o, src, dst);
  } catch (e) {
    // (on success the runner removes them when the import ends)
    await rm(src, { force: true });
    await rm(dst, { force: true });
    throw e;
  }
}

/** Glance's 413 for data past the image size cap. */
const overCap = (cap: number) => new HttpError(413, `Image exceeds the storage quota: the image size cap is ${cap} bytes.`);

/** The source, failing with Glance's 413 once it passes the image size cap. */
function capped(source: ImportData, cap: number): Transform {
  let size = 0;
  const t = new Transform({
    transform(chunk: Buffer, _e, cb) {
      size += chunk.length;
      cb(size > cap ? overCap(cap) : null, chunk);
    },
  });
  pipeline(source, t, () => {});
  return t;
}

/**
 * The source's chunks as the engine reads them, failing with Glance's 413 once they pass the
 * image size cap: counted as they are taken, with no stream between (a web download comes in
 * 64 KiB pieces, and a Transform's buffering costs each of them more than the count).
 */
async function* cappedChunks(source: ImportData, cap: number): AsyncGenerator<Uint8Array> {
  let size = 0;
  for await (const chunk of source as AsyncIterable<Uint8Array>) {
    size += chunk.length;
    if (size > cap) throw overCap(cap);
    yield chunk;
  }
}

const refuseUnsafe = (report: InspectionReport) => {
  if (!report.safe) throw badRequest(`Image data was refused: ${describeIssues(report)}`);
};

/** An engine error while converting, as the 400 the import task reports (the ingest passes HTTP errors on). */
function conversionFailure(e: unknown): unknown {
  return e instanceof DiskError ? badRequest(`Image conversion failed: ${e.message}`) : e;
}

/** To raw, as the source streams in: the guest data in order, straight into the ingest (`direct`: as chunks, not a stream). */
async function convertStreamed(out: PluginOutput, ctx: PluginContext, o: ImportPluginOptions, direct: boolean): Promise<PluginOutput> {
  const spill = join(o.workDir, `${ctx.image.id}.convert-source`);
  const input = out.stream;
  let image: StreamedImage;
  try {
    image = await openStreamedImage(cappedChunks(input, o.sizeCap), { spillPath: spill, spillCap: o.sizeCap, name: ctx.image.id, signal: ctx.signal, judge: refuseUnsafe });
  } catch (e) {
    closeData(input);
    await rm(spill, { force: true });
    throw conversionFailure(e);
  }
  // The raw data is the virtual size, known from the header: a disk larger than the cap is
  // refused now, before its data is read, spilled or stored.
  if (image.size > o.sizeCap) {
    closeData(input);
    await image.close().catch(() => {});
    await rm(spill, { force: true });
    throw overCap(o.sizeCap);
  }
  ctx.log.info('import converting', {
    image: ctx.image.id, from: image.format, to: 'raw', mode: image.mode, ...(image.stagedBecause ? { staged_because: image.stagedBecause } : {}),
  });
  const log = ctx.log;
  const chunks = (async function* () {
    try {
      yield* image.data({ reuse: direct });
      log.info('import converted', { image: ctx.image.id, from: image.format, to: 'raw', mode: image.mode, spilled: image.spilled });
    } catch (e) {
      throw conversionFailure(e);
    } finally {
      closeData(input);
      await image.close();
    }
  })();
  const stream = direct ? chunks : Readable.from(chunks, { objectMode: false });
  const converted = { ...ctx.image, ...out.image, disk_format: 'raw', container_format: 'bare' };
  return { ...out, stream, length: image.size, image: converted, temporary: [...out.temporary, spill] };
}

async function convertStaged(out: PluginOutput, ctx: PluginContext, o: ImportPluginOptions, src: string, dst: string): Promise<PluginOutput> {
  const temporary = [...out.temporary, src, dst];
  await rm(dst, { force: true });
  let size = 0;
  const cap = o.sizeCap;
  await pipelineAsync(capped(out.stream, cap), new Transform({
    transform(chunk: Buffer, _e, cb) { size += chunk.length; cb(null, chunk); },
  }), createWriteStream(src), { signal: ctx.signal });
  const report = await inspectFile(src);
  refuseUnsafe(report);
  const converted = { ...ctx.image, ...out.image, disk_format: o.outputFormat, container_format: 'bare' };
  if (report.format === o.outputFormat) {
    return { ...out, stream: createReadStream(src, { highWaterMark: 1 << 20 }), length: size, image: converted, temporary };
  }
  await convertFile(src, report.format, dst, o.outputFormat, { signal: ctx.signal });
  await rm(src, { force: true });
  ctx.log.info('import converted', { image: ctx.image.id, from: report.format, to: o.outputFormat });
  return { ...out, stream: createReadStream(dst, { highWaterMark: 1 << 20 }), length: null, image: converted, temporary };
}

// --- image_decompression

const MAGIC: { name: 'gzip' | 'xz' | 'zstd' | 'zip'; bytes: number[] }[] = [
  { name: 'zip', bytes: [0x50, 0x4b, 0x03, 0x04] },                  // APPNOTE.TXT §4.3.7 local file header signature
  { name: 'gzip', bytes: [0x1f, 0x8b, 0x08] },                       // RFC 1952 §2.3.1 (ID1 ID2 CM=deflate)
  { name: 'xz', bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },       // xz file format §2.1.1.1
  { name: 'zstd', bytes: [0x28, 0xb5, 0x2f, 0xfd] },                 // RFC 8878 §3.1.1
];
const HEADER = Math.max(...MAGIC.map((m) => m.bytes.length));

/** The first `n` bytes of `src` (fewer if it is shorter), and a stream of all of it. */
async function peek(src: ImportData, n: number): Promise<{ head: Buffer; all: Readable }> {
  const it = src[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let len = 0;
  let ended = false;
  while (len < n) {
    const r = await it.next();
    if (r.done) { ended = true; break; }
    chunks.push(r.value);
    len += r.value.length;
  }
  const head = Buffer.concat(chunks);
  const all = Readable.from((async function* () {
    if (head.length) yield head;
    if (ended) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  })(), { objectMode: false });
  return { head, all };
}

async function decompression(out: PluginOutput): Promise<PluginOutput> {
  if (out.image.container_format === 'compressed') return out;
  const { head, all } = await peek(out.stream, HEADER);
  const kind = MAGIC.find((m) => m.bytes.every((b, i) => head[i] === b))?.name;
  if (!kind) return { ...out, stream: all };
  if (kind === 'zip') return { ...out, stream: unzipSingle(all), length: null };
  if (kind === 'gzip') {
    const gunzip = createGunzip();
    pipeline(all, gunzip, () => {});
    return { ...out, stream: gunzip, length: null };
  }
  return { ...out, stream: throughTool(all, kind === 'xz' ? 'xz' : 'zstd', ['-d', '-c', '-q']), length: null };
}

/** `src` decompressed by a tool reading stdin; the stream fails when the tool exits with an error, after its last output. */
function throughTool(src: Readable, tool: string, args: string[]): Readable {
  const child = spawn(tool, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4096) stderr += d; });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (e) => reject(badRequest(`Image decompression failed: ${tool} could not be run (${e.message}).`)));
    child.on('close', (code) => resolve(code));
  });
  exited.catch(() => {});
  // (an EPIPE when the tool stops reading early is reported by its exit status)
  pipeline(src, child.stdin, () => {});
  return Readable.from((async function* () {
    try {
      for await (const chunk of child.stdout) yield chunk as Buffer;
      const code = await exited;
      if (code !== 0) throw badRequest(`Image decompression failed: ${tool} ${stderr.trim() || `exited with status ${code}`}`);
    } finally {
      // The consumer stopped early (the size cap, an error): the tool must not outlive the import.
      if (child.exitCode === null) child.kill('SIGKILL');
      src.destroy();
    }
  })(), { objectMode: false });
}

// --- zip (APPNOTE.TXT 6.3.x)

const LOCAL_HEADER = 30;
const EOCD = 22;
/** What is kept of the end of the archive: its central directory for one entry, and the EOCD with the longest comment. */
const TAIL = 64 * 1024 + EOCD + 1024;

const zipError = (why: string) => badRequest(`Image decompression failed: zip: ${why}`);

/** The one file of a zip archive, as it streams; fails unless the archive holds exactly one file that inflates to its recorded CRC-32 and size. */
function unzipSingle(src: Readable): Readable {
  return Readable.from((async function* () {
    const it = src[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let pending = Buffer.alloc(0);
    const need = async (n: number) => {
      while (pending.length < n) {
        const r = await it.next();
        if (r.done) throw zipError('the archive ends inside its first header');
        pending = Buffer.concat([pending, r.value]);
      }
    };
    await need(LOCAL_HEADER);
    const flags = pending.readUInt16LE(6);
    const method = pending.readUInt16LE(8);
    const storedSize = pending.readUInt32LE(18);
    const headerEnd = LOCAL_HEADER + pending.readUInt16LE(26) + pending.readUInt16LE(28);
    if (flags & 0x1) throw zipError('the file is encrypted');
    if (method !== 0 && method !== 8) throw zipError(`compression method ${method} is not supported (stored and deflate are)`);
    if (method === 0 && (flags & 0x8 || storedSize === 0xffffffff)) throw zipError('a stored file without its size in the local header');
    await need(headerEnd);
    // Everything after the header: the entry's data, then the rest of the archive (kept: its tail).
    let tail = Buffer.alloc(0);
    const keep = (b: Buffer) => { tail = tail.length + b.length > TAIL * 2 ? Buffer.concat([tail, b]).subarray(-TAIL) : Buffer.concat([tail, b]); };
    let crc = 0;
    let size = 0;
    const emit = (b: Buffer) => { crc = crc32(b, crc); size += b.length; return b; };
    const rest = async function* (): AsyncGenerator<Buffer> {
      const first = pending.subarray(headerEnd);
      if (first.length) yield first;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    };
    if (method === 0) {
      let left = storedSize;
      for await (const b of rest()) {
        keep(b);
        if (left > 0) { const part = b.subarray(0, left); left -= part.length; yield emit(part); }
      }
      if (left > 0) throw zipError('the archive ends inside its file');
    } else {
      const inflate = createInflateRaw();
      // The deflate stream ends before the archive does (the central directory follows): from
      // then on the inflater takes no more input, and the rest is only read for its tail.
      let inflated = false;
      const ended = new Promise<void>((r) => inflate.once('end', () => { inflated = true; r(); }));
      const feed = (async () => {
        for await (const b of rest()) {
          keep(b);
          if (!inflated && !inflate.write(b)) await Promise.race([new Promise((r) => inflate.once('drain', r)), ended]);
        }
        if (!inflated) inflate.end();
      })();
      feed.catch((e) => inflate.destroy(e));
      for await (const b of inflate) yield emit(b as Buffer);
      await feed;
    }
    tail = tail.subarray(-TAIL);
    const entry = singleEntry(tail);
    if ((entry.crc >>> 0) !== (crc >>> 0) || (entry.size !== 0xffffffff && entry.size !== size)) throw zipError('the file does not match its recorded CRC-32 and size');
  })(), { objectMode: false });
}

/** The central directory's one entry (CRC-32, uncompressed size) from the archive's tail. */
function singleEntry(tail: Buffer): { crc: number; size: number } {
  let eocd = -1;
  for (let i = tail.length - EOCD; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw zipError('no end of central directory record');
  const entries = tail.readUInt16LE(eocd + 10);
  // (0xffff: a ZIP64 archive, which one image file does not need; an archive of several files either way)
  if (entries !== 1) throw badRequest('Image decompression failed: Archive contains more than one file.');
  const cdSize = tail.readUInt32LE(eocd + 12);
  const cd = eocd - cdSize;
  if (cd < 0 || tail.readUInt32LE(cd) !== 0x02014b50) throw zipError('the central directory is not where its end record says');
  return { crc: tail.readUInt32LE(cd + 16), size: tail.readUInt32LE(cd + 24) };
}
