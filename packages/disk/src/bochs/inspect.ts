/** The Bochs safety inspection: the header as the reader decodes it, a catalog inside the file. */
import { finding, guard, issue, type FormatInspection } from '../inspect/finding.js';
import { BOCHS_HEADER_BYTES, hasBochsMagic, parseBochsHeader } from './header.js';

export const inspectBochs: FormatInspection = async (r, file) => {
  const head = await r.read(0, BOCHS_HEADER_BYTES);
  if (!hasBochsMagic(head)) return null;
  const f = finding('bochs', 'start');
  return guard(f, async () => {
    const h = parseBochsHeader(head, file);
    f.virtualSize = h.size;
    f.details['extent-size'] = h.extentSize;
    const size = await r.size();
    const catalogEnd = h.headerSize + h.catalogEntries * 4;
    if (catalogEnd > size) issue(f, 'geometry', `bochs catalog (offset ${h.headerSize}, ${h.catalogEntries} entries) extends past the end of the file (${size} bytes)`);
  });
};
