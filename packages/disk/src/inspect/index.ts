/**
 * Format detection and the safety inspector. Given a file or a stream (an upload), say what
 * format the data really is, its virtual size, and every feature that makes it unsafe to open
 * on a server: a backing or external data file, vmdk extents in other files, differencing
 * images, metadata pointing outside the file, data that parses as two formats at once, or a
 * format other than the one declared. It never opens another file.
 *
 *   const report = await inspectFile('/path/img');                 // random access
 *   const insp = new StreamInspector(); for await (c of body) await insp.write(c);
 *   const report = await insp.end();                              // a stream, one pass
 *
 * The stream inspector holds at most the first HEAD_KEEP and last TAIL_KEEP bytes plus the
 * structures it asked for (each at most MAX_READ): memory stays flat whatever the upload size.
 */
import { FileSource, type ByteSource } from '../source.js';
import { SourceReader, StreamReader } from './reader.js';
import { inspectReader } from './combine.js';
import type { InspectionReport } from './report.js';

export type { FormatFinding, InspectionReport, Issue, IssueCode } from './report.js';
export { SourceReader, StreamReader, MAX_READ, HEAD_KEEP, TAIL_KEEP, type InspectReader } from './reader.js';
export { inspectReader, checkDeclaredFormat, describeIssues } from './combine.js';

/** Inspect an open byte source (never written, never closed here). */
export function inspectSource(source: ByteSource): Promise<InspectionReport> {
  return inspectReader(new SourceReader(source), source.name);
}

/** Inspect a file by path. */
export async function inspectFile(path: string): Promise<InspectionReport> {
  const source = await FileSource.open(path, { readOnly: true });
  try {
    return await inspectSource(source);
  } finally {
    await source.close();
  }
}

/** Feed slices of at most this size, letting inspections queue their next reads in between. */
const SLICE = 256 * 1024;
const yieldToInspections = () => new Promise<void>((resolve) => setImmediate(resolve));

/** One-pass inspection of a stream: write() every chunk in order, then end(). */
export class StreamInspector {
  private readonly reader = new StreamReader();
  private readonly result: Promise<InspectionReport>;
  private failure: unknown;

  constructor(readonly name = 'upload') {
    this.result = inspectReader(this.reader, name);
    // Keep a rejection observed until end() hands it over.
    this.result.catch((e) => { this.failure = e; });
  }

  /** Bytes written so far. */
  get position(): number { return this.reader.position; }

  /**
   * Feed the next chunk. While an inspection waits for bytes ahead, the chunk goes in slices
   * with a turn of the event loop between them, so a structure located by one just read (a
   * vmdk descriptor after its header, a qcow2 L1 table after the header cluster) is asked for
   * before the stream passes it. Once nothing waits, chunks only update the retained tail.
   */
  async write(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length; at += SLICE) {
      const slice = chunk.subarray(at, Math.min(chunk.length, at + SLICE));
      const early = this.reader.position < SLICE * 2;
      this.reader.push(slice);
      if (this.reader.waiting || early) await yieldToInspections();
    }
  }

  /** The stream is complete: the report. */
  async end(): Promise<InspectionReport> {
    this.reader.end();
    if (this.failure) throw this.failure;
    return this.result;
  }
}
