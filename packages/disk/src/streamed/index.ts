/**
 * An image read as it streams in (a web-download import converted to raw): the guest data in
 * order, without staging the source first where its layout allows.
 *
 * - qcow2 whose tables come before the data they map (what qemu-img and QEMU write: an L2
 *   table is allocated before the clusters it maps, the header and L1 table first) is read by
 *   the engine's qcow2 reader over a StreamedSource: each data cluster (compressed ones too) is
 *   read as it arrives and passed on; what arrives before its table is kept in the spill file
 *   (a sparse partial copy, capped) and read from there when its turn comes.
 * - A vmdk sparse extent whose grain directory and tables come before its grains (qemu-img's
 *   streamOptimized and monolithicSparse) is read the same way by the engine's vmdk reader.
 * - Every other source (another format, a qcow2 whose header needs structures anywhere in the
 *   file: snapshots, bitmaps, encryption, a backing or data file; a vmdk stream with its grain
 *   directory at the end, as VMware writes them) is staged whole into the spill file, judged,
 *   and read from there by the engine.
 *
 * The safety inspector reads the source as it streams (the same StreamInspector uploads use);
 * `judge` gets its report before any byte of a staged source is given, and for a streamed
 * qcow2 before the last byte is (the image is then not complete until the judgement passes).
 */
import type { BlockDevice } from '../blockdev.js';
import { DiskError } from '../errors.js';
import { openSource } from '../open.js';
import { StreamInspector, type InspectionReport } from '../inspect/index.js';
import { readRaw } from '../ops/read-raw.js';
import { isQcow2, parseHeader, MAX_CLUSTER_BITS } from '../qcow2/layout.js';
import { metadataClusters, streamingObstacle } from '../qcow2/stream.js';
import { vmdkStreamingPlan } from '../vmdk/stream.js';
import { StreamedSource } from './source.js';

export { StreamedSource, type StreamedSourceOptions } from './source.js';

export interface StreamedImageOptions {
  /** Where data that cannot be passed on yet is kept (the file is created; the caller removes it). */
  spillPath: string;
  /** Most bytes kept there. */
  spillCap: number;
  name?: string;
  signal?: AbortSignal;
  /** Throws when the source must not be converted (the inspection report of the whole source). */
  judge: (report: InspectionReport) => void;
}

export interface StreamedImage {
  /** The source's format (as probed from its header; the inspector confirms it at the end). */
  readonly format: string;
  /** Virtual size: the length of data(). */
  readonly size: number;
  /** streamed: read as it arrives; staged: the whole source was kept first. */
  readonly mode: 'streamed' | 'staged';
  /** Why a qcow2 source was staged rather than streamed. */
  readonly stagedBecause?: string;
  /**
   * The guest data as raw bytes, in order; ends only once the whole source was read and judged.
   * `reuse`: readRaw's: a slice is valid only until the next is asked for.
   */
  data(options?: { reuse?: boolean }): AsyncGenerator<Uint8Array>;
  /** How many bytes went to the spill file. */
  readonly spilled: number;
  close(): Promise<void>;
}

export async function openStreamedImage(input: AsyncIterable<Uint8Array>, o: StreamedImageOptions): Promise<StreamedImage> {
  const name = o.name ?? 'stream';
  const inspector = new StreamInspector(name);
  const source = await StreamedSource.open(input, { spillPath: o.spillPath, spillCap: o.spillCap, name, onChunk: (c) => inspector.write(c) });
  // Everything read while the header is looked at stays (a staged source needs it all).
  source.keep = () => true;
  let image: BlockDevice | undefined;
  try {
    const head = new Uint8Array(512);
    const got = await source.read(head, 0);
    let obstacle = 'not a qcow2 image';
    if (isQcow2(head.subarray(0, got))) {
      const bits = new DataView(head.buffer).getUint32(20, false);
      const cluster = new Uint8Array(2 ** Math.min(Math.max(bits, 9), MAX_CLUSTER_BITS));
      const n = await source.read(cluster, 0);
      let header;
      try {
        header = parseHeader(cluster.subarray(0, n), Number.MAX_SAFE_INTEGER, name);
        obstacle = streamingObstacle(header) ?? '';
      } catch (e) {
        // The engine and the inspector say what is wrong, from the whole source.
        obstacle = `its header: ${(e as Error).message}`;
      }
      if (!obstacle && header) {
        image = await openSource(source, { format: 'qcow2', backing: false });
        const cs = 2 ** header.clusterBits;
        const metadata = await metadataClusters(source, header);
        source.keep = (offset, length) => {
          for (let c = Math.floor(offset / cs); c * cs < offset + length; c++) if (metadata.has(c)) return true;
          return false;
        };
        return streamed(image, 'qcow2', source, inspector, o);
      }
    } else {
      const plan = vmdkStreamingPlan(head.subarray(0, got));
      if ('metadataEnd' in plan) {
        image = await openSource(source, { format: 'vmdk', backing: false });
        source.keep = (offset) => offset < plan.metadataEnd;
        return streamed(image, 'vmdk', source, inspector, o);
      }
      if (plan.obstacle !== 'not a vmdk sparse extent') obstacle = plan.obstacle;
    }
    await source.stageRest();
    const report = await inspector.end();
    o.judge(report);
    image = await openSource(source.spillFile, { format: report.format, backing: false });
    return staged(image, report.format, source, obstacle, o);
  } catch (e) {
    await image?.close().catch(() => {});
    await source.close().catch(() => {});
    throw e;
  }
}

function streamed(image: BlockDevice, format: string, source: StreamedSource, inspector: StreamInspector, o: StreamedImageOptions): StreamedImage {
  return {
    format,
    size: image.size,
    mode: 'streamed',
    get spilled() { return source.spilledBytes; },
    async *data(options = {}) {
      yield* readRaw(image, { ...options, ...(o.signal ? { signal: o.signal } : {}) });
      // What follows the last data cluster (refcount blocks, nothing) is read for the inspector only.
      await source.discardRest();
      const report = await inspector.end();
      if (report.format !== format) throw new DiskError('EFORMAT', `${source.name}: the data was streamed as ${format} but is in ${report.format} format`);
      o.judge(report);
    },
    close: async () => {
      await image.close().catch(() => {});
      await source.close();
    },
  };
}

function staged(image: BlockDevice, format: string, source: StreamedSource, why: string, o: StreamedImageOptions): StreamedImage {
  return {
    format,
    size: image.size,
    mode: 'staged',
    stagedBecause: why,
    get spilled() { return source.spilledBytes; },
    data: (options = {}) => readRaw(image, { ...options, ...(o.signal ? { signal: o.signal } : {}) }),
    close: async () => {
      await image.close().catch(() => {});
      await source.close();
    },
  };
}

