/** An OVA is a tar archive (POSIX ustar) whose first member is the OVF descriptor; a plain tar is reported as such. */
import { ascii, finding, type FormatInspection } from '../inspect/finding.js';

export const inspectOva: FormatInspection = async (r) => {
  const head = await r.read(0, 512);
  if (ascii(head, 257, 262) !== 'ustar') return null;
  const nameEnd = head.indexOf(0);
  const first = ascii(head, 0, nameEnd >= 0 && nameEnd < 100 ? nameEnd : 100);
  const f = finding(first.toLowerCase().endsWith('.ovf') ? 'ova' : 'tar', 'elsewhere');
  f.details['first-member'] = first;
  return f;
};
