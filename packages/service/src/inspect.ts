/**
 * Upload inspection: the disk engine's safety inspector runs on the bytes as they stream in
 * (no second read of the stored data, works the same for every store). At the end it says
 * the real virtual size, and why the data must be refused: not the declared disk_format, or
 * unsafe to hand to a hypervisor (a backing or external data file, vmdk extents in other
 * files, a differencing disk, metadata pointing outside the file, two formats at once).
 */
import { StreamInspector, checkDeclaredFormat, describeIssues, type InspectionReport } from '@diskhub/disk';

export interface Inspection {
  virtualSize: number | null;
  /** Why the content must be refused. */
  refusal?: string;
  report?: InspectionReport;
}

/** Container formats whose data is an archive rather than a disk image: no disk format check. */
const ARCHIVES = new Set(['ova', 'docker', 'compressed']);

export class UploadInspection {
  private readonly inspector: StreamInspector;
  constructor(name: string) {
    this.inspector = new StreamInspector(name);
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.inspector.write(chunk);
  }

  async finish(diskFormat: string | null, containerFormat: string | null): Promise<Inspection> {
    let report = await this.inspector.end();
    if (containerFormat && ARCHIVES.has(containerFormat)) {
      if (containerFormat === 'ova' && report.format !== 'ova' && report.format !== 'tar') {
        return { virtualSize: null, report, refusal: `Image data was refused: the data is ${report.format === 'raw' ? 'not a tar archive' : `in ${report.format} format`}, not an OVA (a tar archive) as container_format ova declares` };
      }
      return { virtualSize: null, report };
    }
    if (diskFormat) report = checkDeclaredFormat(report, diskFormat);
    if (!report.safe) return { virtualSize: report.virtualSize, report, refusal: `Image data was refused: ${describeIssues(report)}` };
    return { virtualSize: report.virtualSize, report };
  }
}
