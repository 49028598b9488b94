/** The vdi (VirtualBox) safety inspection: no parent image, a block map inside the file. */
import { finding, guard, issue, type FormatInspection } from '../inspect/finding.js';
import { VDI_HEADER_SIZE, VDI_TYPE_DYNAMIC, VDI_TYPE_STATIC, isVdi, parseVdiHeader } from './header.js';

export const inspectVdi: FormatInspection = async (r, file) => {
  const head = await r.read(0, VDI_HEADER_SIZE);
  if (!isVdi(head)) return null;
  const f = finding('vdi', 'start');
  return guard(f, async () => {
    const h = parseVdiHeader(head, file);
    f.virtualSize = h.diskSize;
    f.subformat = h.imageType === VDI_TYPE_STATIC ? 'static' : h.imageType === VDI_TYPE_DYNAMIC ? 'dynamic' : `type ${h.imageType}`;
    if (h.hasParent) issue(f, 'parent', `vdi image links to a parent image (${h.uuidParent !== '00000000-0000-0000-0000-000000000000' ? h.uuidParent : h.uuidLink})`);
    if (h.imageType !== VDI_TYPE_STATIC && h.imageType !== VDI_TYPE_DYNAMIC && !h.hasParent) {
      issue(f, 'unknown-features', `vdi image type ${h.imageType} is not supported`);
    }
    const size = await r.size();
    if (h.offsetBmap + h.blocksInImage * 4 > size) issue(f, 'geometry', `vdi block map (offset ${h.offsetBmap}, ${h.blocksInImage} blocks) extends past the end of the file`);
    if (h.blockSize === 0 || h.blocksInImage * h.blockSize < h.diskSize) issue(f, 'geometry', `vdi blocks (${h.blocksInImage} of ${h.blockSize} bytes) do not cover the disk size ${h.diskSize}`);
  });
};
