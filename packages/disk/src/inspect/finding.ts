/**
 * What every format's safety inspection (the `inspect.ts` of each format folder) shares: the
 * finding it returns, the issue list, and turning parse errors into issues. Pure (no Node
 * APIs): the dashboard runs the same inspections in the browser.
 */
import { isDiskError } from '../errors.js';
import type { InspectReader } from './reader.js';
import type { FormatFinding, IssueCode } from './report.js';

/**
 * A format's safety inspection: null when its signature is absent; once the signature matched,
 * a finding whose issues say what makes the image unsafe. It reads only through `r`, never
 * opens another file and never follows a name it finds.
 */
export type FormatInspection = (r: InspectReader, file: string) => Promise<FormatFinding | null>;

const latin1 = new TextDecoder('latin1');
export const ascii = (b: Uint8Array, from: number, to: number) => latin1.decode(b.subarray(from, Math.min(to, b.length)));
export const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
export const hasBytes = (b: Uint8Array, at: number, bytes: number[]) => b.length >= at + bytes.length && bytes.every((x, i) => b[at + i] === x);

/** Text stored in a fixed-size area: up to the first NUL (descriptor areas are zero-padded). */
export function textUntilNul(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return latin1.decode(nul >= 0 ? b.subarray(0, nul) : b);
}

export function finding(format: string, anchor: FormatFinding['anchor']): FormatFinding {
  return { format, virtualSize: null, anchor, issues: [], details: {} };
}

export function issue(f: FormatFinding, code: IssueCode, message: string): void {
  if (!f.issues.some((i) => i.code === code && i.message === message)) f.issues.push({ code, message });
}

/** Run the rest of an inspection; parse errors become issues of the finding, never exceptions. */
export async function guard(f: FormatFinding, body: () => Promise<void>): Promise<FormatFinding> {
  try {
    await body();
  } catch (e) {
    if (!isDiskError(e)) throw e;
    const code: IssueCode = e.code === 'EUNSUPPORTED' ? 'unknown-features'
      : e.code === 'ELIMIT' && /after the stream passed|larger than the inspector/.test(e.message) ? 'geometry'
      : 'malformed';
    issue(f, code, e.message);
  }
  return f;
}

/** A name found inside an image, quoted for a message (bounded, control characters escaped). */
export function quoted(name: string): string {
  const s = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return JSON.stringify(s);
}
