/** The vhdx safety inspection ([MS-VHDX]): no unknown required regions or metadata, no parent, regions inside the file. */
import { DiskError } from '../errors.js';
import { finding, guard, issue, quoted, view, type FormatInspection } from '../inspect/finding.js';
import {
  BAT_GUID, FILE_PARAMETERS_GUID, HEADER_OFFSETS, HEADER_SIZE, METADATA_GUID, METADATA_TABLE_SIZE, PARENT_LOCATOR_GUID,
  REGION_TABLE_OFFSETS, REGION_TABLE_SIZE, VIRTUAL_DISK_SIZE_GUID, ZERO_GUID, currentHeader, isVhdx, parseFileParameters,
  parseMetadataTable, parseParentLocator, parseRegionTable, parseVhdxHeader,
} from './header.js';

export const inspectVhdx: FormatInspection = async (r, file) => {
  const head = await r.read(0, 8);
  if (!isVhdx(head)) return null;
  const f = finding('vhdx', 'start');
  return guard(f, async () => {
    const [h1, h2, rt1, rt2] = await Promise.all([
      r.read(HEADER_OFFSETS[0], HEADER_SIZE), r.read(HEADER_OFFSETS[1], HEADER_SIZE),
      r.read(REGION_TABLE_OFFSETS[0], REGION_TABLE_SIZE), r.read(REGION_TABLE_OFFSETS[1], REGION_TABLE_SIZE),
    ]);
    const header = currentHeader(parseVhdxHeader(h1), parseVhdxHeader(h2), file);
    f.details['log-replay-needed'] = header.logGuid !== ZERO_GUID;
    const regions = parseRegionTable(rt1, file) ?? parseRegionTable(rt2, file);
    if (!regions) throw new DiskError('ECORRUPT', `${file}: vhdx has no valid region table`);
    const known = [BAT_GUID, METADATA_GUID];
    for (const reg of regions) {
      if (reg.required && !known.includes(reg.guid)) issue(f, 'unknown-features', `vhdx requires an unknown region ${reg.guid}`);
    }
    const meta = regions.find((x) => x.guid === METADATA_GUID);
    const bat = regions.find((x) => x.guid === BAT_GUID);
    if (!meta || !bat) throw new DiskError('ECORRUPT', `${file}: vhdx region table lacks the ${!meta ? 'metadata' : 'BAT'} region`);
    const table = parseMetadataTable(await r.read(meta.fileOffset, Math.min(meta.length, METADATA_TABLE_SIZE)), file);
    const item = async (guid: string) => {
      const e = table.find((x) => x.itemId === guid);
      if (!e) return undefined;
      if (e.offset + e.length > meta.length) throw new DiskError('ECORRUPT', `${file}: vhdx metadata item ${guid} lies outside the metadata region`);
      return r.read(meta.fileOffset + e.offset, e.length);
    };
    const known_items = [FILE_PARAMETERS_GUID, VIRTUAL_DISK_SIZE_GUID, PARENT_LOCATOR_GUID,
      '8141BF1D-A96F-4709-BA47-F233A8FAAB5F', 'CDA348C7-445D-4471-9CC9-E9885251C556', 'BECA12AB-B2E6-4523-93EF-C309E000C746'];
    for (const e of table) {
      if (e.isRequired && !e.isUser && !known_items.includes(e.itemId)) issue(f, 'unknown-features', `vhdx requires an unknown metadata item ${e.itemId}`);
    }
    const [params, vds, locator] = await Promise.all([item(FILE_PARAMETERS_GUID), item(VIRTUAL_DISK_SIZE_GUID), item(PARENT_LOCATOR_GUID)]);
    if (!params || params.length < 8 || !vds || vds.length < 8) throw new DiskError('ECORRUPT', `${file}: vhdx metadata lacks the file parameters or virtual disk size`);
    const p = parseFileParameters(params);
    f.details['block-size'] = p.blockSize;
    const size = Number(view(vds).getBigUint64(0, true));
    f.virtualSize = size;
    f.subformat = p.hasParent ? 'differencing' : p.leaveBlocksAllocated ? 'fixed' : 'dynamic';
    if (p.hasParent || locator) {
      const entries = locator ? parseParentLocator(locator, file).entries : {};
      const name = entries.relative_path ?? entries.absolute_win32_path ?? entries.volume_path ?? '(unnamed parent)';
      issue(f, 'parent', `vhdx is a differencing disk of ${quoted(name)}`);
    }
    const fileSize = await r.size();
    for (const reg of regions) {
      if (reg.fileOffset + reg.length > fileSize) issue(f, 'geometry', `vhdx region ${reg.guid} (offset ${reg.fileOffset}, ${reg.length} bytes) extends past the end of the file`);
    }
    if (header.logLength && header.logOffset + header.logLength > fileSize) {
      issue(f, 'geometry', `vhdx log (offset ${header.logOffset}, ${header.logLength} bytes) extends past the end of the file`);
    }
  });
};
