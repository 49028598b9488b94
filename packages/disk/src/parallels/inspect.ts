/** The Parallels safety inspection: the header as the reader decodes it, a BAT inside the file. */
import { finding, guard, issue, type FormatInspection } from '../inspect/finding.js';
import { PARALLELS_HEADER_BYTES, hasParallelsMagic, parseParallelsHeader } from './header.js';

export const inspectParallels: FormatInspection = async (r, file) => {
  const head = await r.read(0, PARALLELS_HEADER_BYTES);
  if (!hasParallelsMagic(head)) return null;
  const f = finding('parallels', 'start');
  return guard(f, async () => {
    const h = parseParallelsHeader(head, file);
    f.virtualSize = h.size;
    f.details['cluster-size'] = h.tracks * 512;
    f.details['in-use'] = h.inUse;
    const size = await r.size();
    const batEnd = PARALLELS_HEADER_BYTES + h.batEntries * 4;
    if (batEnd > size) issue(f, 'geometry', `parallels BAT (${h.batEntries} entries) extends past the end of the file (${size} bytes)`);
  });
};
