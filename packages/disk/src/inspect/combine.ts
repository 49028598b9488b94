/**
 * Combining the per-format findings into one report, and checking a declared format. Pure
 * (no Node APIs): the dashboard bundles this with the format inspections to tell a user, in
 * the browser and before any upload, what the file they picked is.
 */
import { FORMAT_INSPECTIONS } from './formats.js';
import { bootFileKind } from '../raw/inspect.js';
import type { InspectReader } from './reader.js';
import type { FormatFinding, InspectionReport, Issue } from './report.js';

/** Formats that a disk label or trailer may legitimately share a file with. */
function compatible(a: FormatFinding, b: FormatFinding): boolean {
  const pair = [a, b].map((f) => (f.format === 'raw' ? f.subformat : f.format)).sort().join('+');
  // A hybrid ISO carries an MBR and often a GPT; a fixed VHD is a raw disk (with its label) plus a footer.
  return ['gpt+iso', 'iso+mbr', 'gpt+vpc', 'mbr+vpc', 'gpt+mbr'].includes(pair);
}

/** Run every format inspection over a reader and combine the findings. */
export async function inspectReader(r: InspectReader, file = 'image'): Promise<InspectionReport> {
  const findings = (await Promise.all(FORMAT_INSPECTIONS.map((inspect) => inspect(r, file)))).filter((f): f is FormatFinding => f !== null);
  const actualSize = await r.size();
  const starts = findings.filter((f) => f.anchor === 'start');
  const others = findings.filter((f) => f.anchor === 'elsewhere');
  const issues: Issue[] = [];
  let main: FormatFinding | undefined = starts[0];
  const claims = main ? [main, ...others] : others;
  for (let i = 0; i < claims.length; i++) {
    for (let j = i + 1; j < claims.length; j++) {
      const [a, b] = [claims[i]!, claims[j]!];
      if (compatible(a, b)) continue;
      const name = (f: FormatFinding) => (f.format === 'raw' ? `a ${f.subformat?.toUpperCase()} disk` : f.format);
      issues.push({ code: 'ambiguous', message: `the data is both ${name(a)} and ${name(b)}; refusing to guess which one a reader would see` });
    }
  }
  if (!main) {
    // Preference when nothing claims byte 0: trailers and ISO over a bare disk label.
    main = ['vpc', 'dmg', 'iso', 'ova', 'tar'].map((fmt) => others.find((f) => f.format === fmt)).find(Boolean);
  }
  const label = others.find((f) => f.format === 'raw');
  const details: Record<string, unknown> = { ...(main?.details ?? {}) };
  if (label && main?.format !== 'raw') details['partition-table'] = label.subformat;
  const format = main?.format ?? 'raw';
  if (format === 'raw') Object.assign(details, bootFileKind(await r.read(0, 1024)));
  const allIssues = [...(main?.issues ?? []), ...issues];
  const subformat = main?.subformat ?? label?.subformat;
  return {
    format,
    virtualSize: main ? main.virtualSize : actualSize,
    actualSize,
    ...(subformat ? { subformat } : {}),
    detected: [...new Set(findings.map((f) => f.format))],
    details,
    issues: allIssues,
    safe: allIssues.length === 0,
  };
}

/** Glance disk_format → the formats (qemu-img names) the data may really be. */
const DECLARED: Record<string, string[]> = {
  raw: ['raw', 'iso'],
  ami: ['raw'],
  aki: ['raw'],
  ari: ['raw'],
  iso: ['iso'],
  qcow2: ['qcow2'],
  vmdk: ['vmdk'],
  vhd: ['vpc'],
  vpc: ['vpc'],
  vhdx: ['vhdx'],
  vdi: ['vdi'],
  ploop: ['parallels'],
  parallels: ['parallels'],
};

/**
 * Add a `format-mismatch` issue when the data is not what `declared` (a Glance disk_format or
 * a qemu-img format name) says. Returns a new report; `safe` is recomputed.
 */
export function checkDeclaredFormat(report: InspectionReport, declared: string): InspectionReport {
  const accepted = DECLARED[declared] ?? [declared];
  const issues = [...report.issues];
  if (!accepted.includes(report.format)) {
    issues.push({ code: 'format-mismatch', message: `the data is ${report.format === 'raw' ? 'a raw disk image' : `in ${report.format} format`}, not the declared ${declared}` });
  } else if (declared === 'aki' && !report.details.kernel) {
    issues.push({ code: 'format-mismatch', message: 'the data is not a kernel image (no bzImage or ELF header), as disk format aki declares' });
  } else if (declared === 'ari' && !report.details.ramdisk) {
    issues.push({ code: 'format-mismatch', message: 'the data is not a ramdisk (no cpio archive, plain or compressed), as disk format ari declares' });
  }
  return { ...report, issues, safe: issues.length === 0 };
}

/** One line per issue, for error messages and the CLI. */
export function describeIssues(report: InspectionReport): string {
  return report.issues.map((i) => `${i.code}: ${i.message}`).join('; ');
}
