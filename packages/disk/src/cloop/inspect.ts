/** The cloop safety inspection: the header as the reader decodes it, an offsets table inside the file. */
import { finding, guard, issue, type FormatInspection } from '../inspect/finding.js';
import { CLOOP_HEADER_BYTES, CLOOP_PREAMBLE, parseCloopHeader, probeCloop } from './header.js';

export const inspectCloop: FormatInspection = async (r, file) => {
  const head = await r.read(0, CLOOP_HEADER_BYTES);
  // The whole preamble: a shorter match is any shell script.
  if (head.length < CLOOP_PREAMBLE.length || !probeCloop(head)) return null;
  const f = finding('cloop', 'start');
  return guard(f, async () => {
    const h = parseCloopHeader(head, file);
    f.virtualSize = h.blockSize * h.blocks;
    f.details['block-size'] = h.blockSize;
    const size = await r.size();
    const offsetsEnd = CLOOP_HEADER_BYTES + (h.blocks + 1) * 8;
    if (offsetsEnd > size) issue(f, 'geometry', `cloop offsets table (${h.blocks + 1} entries) extends past the end of the file (${size} bytes)`);
  });
};
