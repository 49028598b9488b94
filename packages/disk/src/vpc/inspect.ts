/** The vhd (QEMU's vpc) safety inspection (Virtual Hard Disk Image Format Specification): no differencing disks, footers and tables that agree with the file. */
import { DiskError } from '../errors.js';
import { finding, guard, issue, quoted, type FormatInspection } from '../inspect/finding.js';
import { DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, DYNAMIC_HEADER_SIZE, FOOTER_SIZE, isFooter, parseDynamicHeader, parseFooter, vpcVirtualSize } from './header.js';

const VHD_TYPES: Record<number, string> = { [DISK_FIXED]: 'fixed', [DISK_DYNAMIC]: 'dynamic', [DISK_DIFFERENCING]: 'differencing' };

export const inspectVpc: FormatInspection = async (r, file) => {
  const head = await r.read(0, FOOTER_SIZE);
  const atStart = isFooter(head);
  let footerBytes = head;
  if (!atStart) {
    // A fixed VHD is the raw disk followed by the footer (no copy at the start).
    const tail = await r.tail(FOOTER_SIZE);
    if (!isFooter(tail)) return null;
    footerBytes = tail;
  }
  const f = finding('vpc', atStart ? 'start' : 'elsewhere');
  return guard(f, async () => {
    const footer = parseFooter(footerBytes, file);
    f.subformat = VHD_TYPES[footer.diskType] ?? `type ${footer.diskType}`;
    f.virtualSize = vpcVirtualSize(footer);
    Object.assign(f.details, { 'creator-app': footer.creatorApp.replace(/\0/g, ''), 'current-size': footer.currentSize });
    if (!footer.checksumOk) issue(f, 'malformed', 'vhd footer checksum does not match its contents');
    if (!VHD_TYPES[footer.diskType]) issue(f, 'malformed', `vhd disk type ${footer.diskType} is not fixed, dynamic or differencing`);
    if (!atStart && footer.diskType !== DISK_FIXED) issue(f, 'malformed', `vhd with a ${f.subformat} footer must also carry it at the start of the file`);
    if (atStart && footer.diskType === DISK_FIXED) issue(f, 'malformed', 'vhd footer at the start of the file describes a fixed disk');
    if (atStart && (footer.diskType === DISK_DYNAMIC || footer.diskType === DISK_DIFFERENCING)) {
      if (footer.dataOffset < 0) throw new DiskError('ECORRUPT', `${file}: dynamic vhd has no dynamic header offset`);
      const dyn = parseDynamicHeader(await r.read(footer.dataOffset, DYNAMIC_HEADER_SIZE), file);
      if (!dyn.checksumOk) issue(f, 'malformed', 'vhd dynamic header checksum does not match its contents');
      f.details['block-size'] = dyn.blockSize;
      if (footer.diskType === DISK_DIFFERENCING || dyn.parentName || dyn.parentLocators.length) {
        issue(f, 'parent', `vhd is a differencing disk of ${quoted(dyn.parentName || '(unnamed parent)')}`);
      }
      const size = await r.size();
      if (dyn.tableOffset < 0 || dyn.tableOffset + dyn.maxTableEntries * 4 > size) {
        issue(f, 'geometry', `vhd block allocation table (offset ${dyn.tableOffset}, ${dyn.maxTableEntries} entries) extends past the end of the file`);
      }
    } else if (!atStart) {
      const size = await r.size();
      if (footer.currentSize > size - FOOTER_SIZE) {
        issue(f, 'geometry', `fixed vhd claims ${footer.currentSize} bytes but the file holds ${size - FOOTER_SIZE}`);
      }
    }
  });
};
