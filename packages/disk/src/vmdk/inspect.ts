/** The vmdk safety inspection (VMware Virtual Disk Format 5.0): only self-contained create types, no extents in other files, no parents. */
import { DiskError } from '../errors.js';
import { finding, guard, issue, quoted, textUntilNul, view, type FormatInspection } from '../inspect/finding.js';
import type { FormatFinding } from '../inspect/report.js';
import { COWD_MAGIC, GD_AT_END, NO_PARENT_CID, SECTOR, isSparseHeader, looksLikeDescriptor, parseDescriptor, parseSparseHeader, type Descriptor } from './header.js';

/** createTypes whose data is entirely inside the one file a service receives. */
const SELF_CONTAINED_VMDK = ['monolithicSparse', 'streamOptimized'];

function checkDescriptor(f: FormatFinding, d: Descriptor, embedded: boolean): void {
  f.subformat = d.createType;
  f.details['create-type'] = d.createType;
  if (d.ddb.adapterType) f.details['adapter-type'] = d.ddb.adapterType;
  if (d.ddb.virtualHWVersion) f.details.hwversion = d.ddb.virtualHWVersion;
  f.details.extents = d.extents.map((e) => ({ access: e.access, sectors: e.sectors, type: e.type, ...(e.filename !== undefined ? { filename: e.filename } : {}) }));
  if (!d.createType || !SELF_CONTAINED_VMDK.includes(d.createType)) {
    issue(f, 'create-type', `vmdk createType ${quoted(d.createType ?? '(none)')} is not accepted (only ${SELF_CONTAINED_VMDK.join(' and ')} images are self-contained)`);
  }
  const named = d.extents.filter((e) => e.filename !== undefined);
  const dangerous = named.filter((e) => /^[/\\]|^[A-Za-z]:|(^|[/\\])\.\.([/\\]|$)|[/\\]/.test(e.filename!));
  for (const e of dangerous) issue(f, 'extents', `vmdk descriptor names the extent ${quoted(e.filename!)}, a path outside the image`);
  if (!embedded) {
    for (const e of named) if (!dangerous.includes(e)) issue(f, 'extents', `vmdk descriptor file names the extent ${quoted(e.filename!)}, another file`);
  } else if (d.extents.length !== 1 || d.extents[0]!.type !== 'SPARSE') {
    issue(f, 'extents', `vmdk descriptor lists ${d.extents.length} extent(s) (${d.extents.map((e) => e.type).join(', ') || 'none'}); a self-contained image has exactly one SPARSE extent`);
  }
  if ((d.parentCid && d.parentCid.toLowerCase() !== NO_PARENT_CID) || d.parentFileNameHint) {
    issue(f, 'parent', `vmdk image is a delta disk of ${quoted(d.parentFileNameHint ?? `CID ${d.parentCid}`)}`);
  }
}


const DESCRIPTOR_MAX = 1 << 20;

export const inspectVmdk: FormatInspection = async (r, file) => {
  const head = await r.read(0, 512);
  if (head.length >= 4 && view(head).getUint32(0, true) === COWD_MAGIC) {
    const f = finding('vmdk', 'start');
    f.subformat = 'vmfsSparse';
    issue(f, 'create-type', 'vmdk vmfsSparse (COWD) extents are ESX delta disks, not standalone images');
    return f;
  }
  if (isSparseHeader(head)) {
    const f = finding('vmdk', 'start');
    return guard(f, async () => {
      let h = parseSparseHeader(head, file);
      if (h.descriptorSize === 0 || h.descriptorOffset === 0) {
        issue(f, 'create-type', 'vmdk sparse extent has no embedded descriptor (it is one extent of a multi-file disk)');
      }
      const descBytes = h.descriptorSize * SECTOR;
      if (descBytes > DESCRIPTOR_MAX) throw new DiskError('ELIMIT', `${file}: vmdk descriptor of ${descBytes} bytes is too large`);
      const desc = descBytes ? r.read(h.descriptorOffset * SECTOR, descBytes) : undefined;
      if (h.gdOffset === -1 || BigInt(h.gdOffset) === GD_AT_END) {
        // streamOptimized: the real header is the footer, 1 KiB before the end (footer marker,
        // footer, end-of-stream marker; VMDK spec §"Stream-Optimized Compressed Sparse Extents").
        const tail = await r.tail(3 * SECTOR);
        if (tail.length < 3 * SECTOR || !isSparseHeader(tail.subarray(SECTOR))) {
          throw new DiskError('ECORRUPT', `${file}: streamOptimized vmdk has no footer`);
        }
        h = parseSparseHeader(tail.subarray(SECTOR, 2 * SECTOR), file);
      }
      f.virtualSize = h.capacity * SECTOR;
      f.details.compressed = h.compressAlgorithm !== 0;
      if (desc) checkDescriptor(f, parseDescriptor(textUntilNul(await desc), file), true);
    });
  }
  if (looksLikeDescriptor(head)) {
    const f = finding('vmdk', 'start');
    return guard(f, async () => {
      const text = textUntilNul(await r.read(0, 64 * 1024));
      const d = parseDescriptor(text, file);
      f.virtualSize = d.extents.reduce((s, e) => s + e.sectors, 0) * SECTOR;
      checkDescriptor(f, d, false);
      if (d.extents.length === 0) issue(f, 'extents', 'vmdk descriptor file lists no extents');
    });
  }
  return null;
};
