/**
 * Upload inspection: the disk engine's safety inspector runs on the bytes as they stream in
 * (no second read of the stored data, works the same for every store). At the end it says
 * the real virtual size, and why the data must be refused: not the declared disk_format, or
 * unsafe to hand to a hypervisor (a backing or external data file, vmdk extents in other
 * files, a differencing disk, metadata pointing outside the file, two formats at once).
 *
 * The container format does not exempt anything: the uploader chooses it, so a qcow2 with
 * a backing file labelled `compressed` or `docker` is still a qcow2 with a backing file.
 * The stored data is judged whatever the container format says; for an archive container
 * (ova, docker: tar; compressed: gzip) what is inside — each tar member, the inflated data —
 * is judged too, for the references to other files a reader of it would follow.
 */
import { createGunzip, type Gunzip } from 'node:zlib';
import { StreamInspector, checkDeclaredFormat, describeIssues, type InspectionReport, type Issue, type IssueCode } from '@diskhub/disk';

export interface Inspection {
  virtualSize: number | null;
  /** Why the content must be refused. */
  refusal?: string;
  report?: InspectionReport;
}

/** Container formats whose data is an archive rather than a disk image: no disk format check of the data itself. */
const ARCHIVES = new Set(['ova', 'docker', 'compressed']);

/** Disk formats Glance takes as opaque bytes (EC2 kernel, ramdisk, machine images). */
const OPAQUE = new Set(['aki', 'ari', 'ami']);

export class UploadInspection {
  private readonly inspector: StreamInspector;
  /** What is inside, for an archive container. */
  private readonly contents: ContentInspector | null;

  constructor(name: string, containerFormat: string | null) {
    this.inspector = new StreamInspector(name);
    this.contents = containerFormat && ARCHIVES.has(containerFormat) ? new ContentInspector(name, 0) : null;
  }

  async write(chunk: Uint8Array): Promise<void> {
    await this.inspector.write(chunk);
    await this.contents?.write(chunk);
  }

  async finish(diskFormat: string | null, containerFormat: string | null): Promise<Inspection> {
    let report = await this.inspector.end();
    const inside = await this.contents?.end() ?? [];
    const refuse = (why: string): Inspection => ({ virtualSize: null, report, refusal: `Image data was refused: ${why}` });
    if (containerFormat && ARCHIVES.has(containerFormat)) {
      if (containerFormat === 'ova' && report.format !== 'ova' && report.format !== 'tar') {
        return refuse(`the data is ${report.format === 'raw' ? 'not a tar archive' : `in ${report.format} format`}, not an OVA (a tar archive) as container_format ova declares`);
      }
      // The data as stored: whatever it is, it must not be an image that reads other files.
      if (!report.safe) return refuse(describeIssues(report));
      if (inside.length) return refuse(inside.map((i) => `${i.code}: ${i.message}`).join('; '));
      return { virtualSize: null, report };
    }
    if (diskFormat && OPAQUE.has(diskFormat)) {
      // Glance accepts any bytes as aki/ari/ami; what is refused is data that is a known
      // format of its own (a qcow2 declared ari), which a reader might open as that format.
      if (report.format !== 'raw') {
        return refuse([`format-mismatch: the data is in ${report.format} format, not the declared ${diskFormat}`, describeIssues(report)].filter(Boolean).join('; '));
      }
      return report.safe ? { virtualSize: report.virtualSize, report } : refuse(describeIssues(report));
    }
    if (diskFormat) report = checkDeclaredFormat(report, diskFormat);
    if (!report.safe) return { virtualSize: report.virtualSize, report, refusal: `Image data was refused: ${describeIssues(report)}` };
    return { virtualSize: report.virtualSize, report };
  }
}

/** Issues of content inside a container that make it unsafe: it names other files to read. */
const EXTERNAL: ReadonlySet<IssueCode> = new Set(['backing-file', 'data-file', 'extents', 'parent']);
/** How deep archives are opened (a gzip of a tar of a member: 2). */
const MAX_DEPTH = 2;
/**
 * Inflated bytes inspected per compressed stream. The references that matter are in the
 * headers at the start of every format; the cap keeps a decompression bomb from costing
 * more than this much CPU.
 */
const INFLATE_LIMIT = 64 << 20;
const BLOCK = 512;

/**
 * What is inside a byte stream that may be a tar archive or gzip data: every tar member and
 * the inflated data are inspected (depth 1 and below) for references to other files. Memory
 * is bounded: one member at a time, each inspector keeps only a head and a tail.
 */
class ContentInspector {
  private readonly issues: Issue[] = [];
  /** The first block, until the kind of data is known. */
  private head: Buffer[] = [];
  private headLength = 0;
  private kind: 'unknown' | 'tar' | 'gzip' | 'other' = 'unknown';
  private readonly self: StreamInspector | null;
  private tar: TarWalker | null = null;
  private gunzip: Gunzip | null = null;
  private inflated: ContentInspector | null = null;
  private inflatedBytes = 0;
  private inflating: Promise<void> = Promise.resolve();

  constructor(private readonly label: string, private readonly depth: number) {
    // The top level's own inspection is the upload's main one.
    this.self = depth > 0 ? new StreamInspector(label) : null;
  }

  async write(chunk: Uint8Array): Promise<void> {
    await this.self?.write(chunk);
    if (this.depth >= MAX_DEPTH) return;
    if (this.kind === 'unknown') {
      this.head.push(Buffer.from(chunk));
      this.headLength += chunk.length;
      if (this.headLength < BLOCK) return;
      const head = Buffer.concat(this.head);
      this.head = [];
      this.decide(head);
      return this.feed(head);
    }
    return this.feed(chunk);
  }

  private decide(head: Buffer): void {
    if (head[0] === 0x1f && head[1] === 0x8b) {
      this.kind = 'gzip';
      this.inflated = new ContentInspector(`${this.label} (inflated)`, this.depth + 1);
      this.gunzip = createGunzip();
      this.gunzip.on('data', (data: Buffer) => {
        if (this.inflatedBytes >= INFLATE_LIMIT) return;
        const part = data.subarray(0, INFLATE_LIMIT - this.inflatedBytes);
        this.inflatedBytes += part.length;
        const child = this.inflated!;
        this.inflating = this.inflating.then(() => child.write(part));
      });
      // Data that only looks like gzip is judged as what it is (the stored data's own inspection).
      this.gunzip.on('error', () => { this.gunzip = null; });
    } else if (head.toString('latin1', 257, 262) === 'ustar') {
      this.kind = 'tar';
      this.tar = new TarWalker((name) => new ContentInspector(`${this.label}: ${name}`, this.depth + 1), (issues) => this.issues.push(...issues));
    } else {
      this.kind = 'other';
    }
  }

  private async feed(chunk: Uint8Array): Promise<void> {
    if (this.tar) await this.tar.write(chunk);
    else if (this.gunzip && this.inflatedBytes < INFLATE_LIMIT) {
      const gz = this.gunzip;
      await new Promise<void>((resolve) => gz.write(chunk, () => resolve()));
      await this.inflating;
    }
  }

  /** The issues found inside (and, below the top level, of this content itself). */
  async end(): Promise<Issue[]> {
    if (this.kind === 'unknown' && this.headLength > 0 && this.depth < MAX_DEPTH) {
      const head = Buffer.concat(this.head);
      this.decide(head);
      await this.feed(head);
    }
    if (this.tar) await this.tar.end();
    if (this.gunzip) {
      const gz = this.gunzip;
      await new Promise<void>((resolve) => { gz.once('end', resolve); gz.once('error', () => resolve()); gz.end(); gz.resume(); });
    }
    await this.inflating;
    if (this.inflated) this.issues.push(...await this.inflated.end());
    if (this.self) {
      const report = await this.self.end().catch(() => null);
      for (const i of report?.issues ?? []) if (EXTERNAL.has(i.code)) this.issues.push({ code: i.code, message: `${this.label}: ${i.message}` });
    }
    return this.issues;
  }
}

/**
 * A streaming walk over a tar archive (POSIX ustar, with GNU long names and pax headers):
 * each regular member's data goes to its own inspector, one member at a time.
 */
class TarWalker {
  private header: Buffer[] = [];
  private headerLength = 0;
  /** Data bytes of the current entry still to come, and the padding after them. */
  private remaining = 0;
  private padding = 0;
  private current: ContentInspector | null = null;
  /** The current entry's data when it is a long name or pax record (kept, it is small). */
  private meta: { type: string; chunks: Buffer[] } | null = null;
  private longName: string | null = null;
  private paxSize: number | null = null;
  private done = false;

  constructor(private readonly open: (name: string) => ContentInspector, private readonly report: (issues: Issue[]) => void) {}

  async write(chunk: Uint8Array): Promise<void> {
    let at = 0;
    while (at < chunk.length && !this.done) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - at);
        const part = chunk.subarray(at, at + n);
        if (this.meta) this.meta.chunks.push(Buffer.from(part));
        else if (this.current) await this.current.write(part);
        this.remaining -= n;
        at += n;
        if (this.remaining === 0) await this.finishEntry();
        continue;
      }
      if (this.padding > 0) {
        const n = Math.min(this.padding, chunk.length - at);
        this.padding -= n;
        at += n;
        continue;
      }
      const n = Math.min(BLOCK - this.headerLength, chunk.length - at);
      this.header.push(Buffer.from(chunk.subarray(at, at + n)));
      this.headerLength += n;
      at += n;
      if (this.headerLength === BLOCK) {
        const block = Buffer.concat(this.header);
        this.header = [];
        this.headerLength = 0;
        await this.startEntry(block);
      }
    }
  }

  private async startEntry(block: Buffer): Promise<void> {
    if (block.every((b) => b === 0)) { this.done = true; return; }
    const str = (from: number, len: number) => { const s = block.subarray(from, from + len); const z = s.indexOf(0); return s.toString('utf8', 0, z < 0 ? len : z); };
    const type = String.fromCharCode(block[156] || 0x30);
    let size = octalOrBase256(block.subarray(124, 136));
    if (this.paxSize !== null && type !== 'x' && type !== 'g') size = this.paxSize;
    const prefix = str(345, 155);
    const name = this.longName ?? (prefix ? `${prefix}/${str(0, 100)}` : str(0, 100));
    this.remaining = size;
    this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
    if (type === 'L' || type === 'x' || type === 'g') {
      this.meta = { type, chunks: [] };
    } else {
      this.longName = null;
      this.paxSize = null;
      if (type === '0' || type === '7') this.current = this.open(name);
    }
    if (size === 0) await this.finishEntry();
  }

  private async finishEntry(): Promise<void> {
    if (this.meta) {
      const text = Buffer.concat(this.meta.chunks).toString('utf8');
      if (this.meta.type === 'L') this.longName = text.replace(/\0.*$/s, '');
      if (this.meta.type === 'x') {
        // pax records: "LEN key=value\n"
        for (const m of text.matchAll(/\d+ (path|size)=([^\n]*)\n/g)) {
          if (m[1] === 'path') this.longName = m[2]!;
          else this.paxSize = Number(m[2]);
        }
      }
      this.meta = null;
    } else if (this.current) {
      const member = this.current;
      this.current = null;
      this.report(await member.end());
    }
  }

  async end(): Promise<void> {
    // An archive cut short: what arrived of the last member is judged as it is.
    if (this.current) { const member = this.current; this.current = null; this.report(await member.end()); }
  }
}

/** A tar numeric field: octal text, or (GNU) base-256 when the high bit of the first byte is set. */
function octalOrBase256(field: Buffer): number {
  if (field[0]! & 0x80) {
    let n = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = field.toString('latin1').replace(/\0.*$/s, '').trim();
  return text ? parseInt(text, 8) || 0 : 0;
}
