/** The qed safety inspection (QEMU docs/interop/qed_spec.txt): no backing file, an L1 table inside the file. */
import { MAX_READ } from '../inspect/reader.js';
import { finding, guard, issue, quoted, view, type FormatInspection } from '../inspect/finding.js';
import { QED_F_BACKING_FILE, QED_F_NEED_CHECK, isQed, parseQedHeader } from './header.js';

export const inspectQed: FormatInspection = async (r, file) => {
  const head = await r.read(0, 64);
  if (!isQed(head)) return null;
  const f = finding('qed', 'start');
  return guard(f, async () => {
    // A file cut short inside the header: parseQedHeader says so.
    if (head.length < 64) parseQedHeader(head, file);
    const v = view(head);
    const clusterSize = v.getUint32(4, true), headerClusters = v.getUint32(12, true);
    const headerBytes = Math.min(MAX_READ, Math.max(64, clusterSize * Math.min(headerClusters, 16)));
    const h = parseQedHeader(await r.read(0, headerBytes), file);
    f.virtualSize = h.imageSize;
    f.details['cluster-size'] = h.clusterSize;
    f.details['need-check'] = (h.features & QED_F_NEED_CHECK) !== 0n;
    if (h.features & QED_F_BACKING_FILE) {
      f.details['backing-filename'] = h.backingFile;
      issue(f, 'backing-file', `qed image names a backing file ${quoted(h.backingFile ?? '')}; a standalone image must not read another file`);
    }
    const size = await r.size();
    if (h.l1TableOffset + h.tableSize * h.clusterSize > size) issue(f, 'geometry', `qed L1 table (offset ${h.l1TableOffset}) extends past the end of the file`);
  });
};
