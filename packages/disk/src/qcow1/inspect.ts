/** The qcow (version 1) safety inspection: the header as the reader decodes it, no backing file, an L1 table inside the file. */
import { finding, guard, issue, quoted, type FormatInspection } from '../inspect/finding.js';
import { QCOW1_HEADER_BYTES, isQcow1, parseQcow1Header } from './header.js';

export const inspectQcow1: FormatInspection = async (r, file) => {
  const head = await r.read(0, QCOW1_HEADER_BYTES);
  if (!isQcow1(head)) return null;
  const f = finding('qcow', 'start');
  return guard(f, async () => {
    const h = parseQcow1Header(head, file);
    f.virtualSize = h.size;
    f.details.encrypted = h.cryptMethod !== 0;
    if (h.backingOffset !== 0) {
      const name = new TextDecoder().decode(await r.read(h.backingOffset, h.backingSize));
      f.details['backing-filename'] = name;
      issue(f, 'backing-file', `qcow image names a backing file ${quoted(name)}; a standalone image must not read another file`);
    }
    const l1Bytes = Math.ceil(h.size / 2 ** (h.clusterBits + h.l2Bits)) * 8;
    const size = await r.size();
    if (h.l1Offset + l1Bytes > size) issue(f, 'geometry', `qcow L1 table (offset ${h.l1Offset}, ${l1Bytes} bytes) extends past the end of the file (${size} bytes)`);
  });
};
