/**
 * What a file the user picked really is, decided in the browser from its own bytes with the
 * disk engine's format inspections (the same code the service runs on uploads), reading only
 * the slices the inspections ask for.
 */
import { inspectReader } from '@diskhub/disk/inspect/combine';
import type { InspectReader } from '@diskhub/disk/inspect/reader';
import type { InspectionReport } from '@diskhub/disk/inspect/report';

export type { InspectionReport };
/** Adds a format-mismatch issue when a declared Glance disk_format does not fit the data. */
export { checkDeclaredFormat } from '@diskhub/disk/inspect/combine';

/** Random access over a File through Blob.slice. */
class BlobReader implements InspectReader {
  constructor(private readonly blob: Blob) {}
  async read(offset: number, length: number): Promise<Uint8Array> {
    const end = Math.min(this.blob.size, offset + length);
    if (offset >= end) return new Uint8Array(0);
    return new Uint8Array(await this.blob.slice(offset, end).arrayBuffer());
  }
  async size(): Promise<number> {
    return this.blob.size;
  }
  async tail(length: number): Promise<Uint8Array> {
    const n = Math.min(length, 4096, this.blob.size);
    return this.read(this.blob.size - n, n);
  }
}

export function inspectBlob(file: Blob, name: string): Promise<InspectionReport> {
  return inspectReader(new BlobReader(file), name);
}

/** The Glance disk and container formats to suggest for what was detected. */
export function suggestedFormats(report: InspectionReport): { disk: string; container: string } {
  switch (report.format) {
    case 'ova': case 'tar': return { disk: 'vmdk', container: 'ova' };
    case 'vpc': return { disk: 'vhd', container: 'bare' };
    case 'parallels': return { disk: 'ploop', container: 'bare' };
    case 'qcow2': case 'vmdk': case 'vdi': case 'vhdx': case 'iso': return { disk: report.format, container: 'bare' };
    default:
      if (report.details.kernel) return { disk: 'aki', container: 'aki' };
      if (report.details.ramdisk) return { disk: 'ari', container: 'ari' };
      return { disk: 'raw', container: 'bare' };
  }
}
