/**
 * One inspection per format: recognise the format's signature, then read (through an
 * InspectReader, so the same code runs over a file and over a stream) just the structures
 * that decide whether the image is safe to open on a server, and its virtual size. An
 * inspection never opens another file and never follows a name it finds.
 *
 * An inspection returns null when the signature is absent; once the signature matched, any
 * DiskError from parsing becomes a `malformed` (or `unknown-features`) issue of the finding.
 */
import { DiskError, isDiskError } from '../errors.js';
import {
  QCOW2_MAGIC, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, INCOMPAT_DATA_FILE, INCOMPAT_DIRTY, INCOMPAT_CORRUPT,
  OFFSET_MASK, L1E_RESERVED_MASK, parseHeader,
} from '../qcow2/layout.js';
import { COWD_MAGIC, GD_AT_END, NO_PARENT_CID, SECTOR, isSparseHeader, looksLikeDescriptor, parseDescriptor, parseSparseHeader, type Descriptor } from '../vmdk/header.js';
import { DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, DYNAMIC_HEADER_SIZE, FOOTER_SIZE, isFooter, parseDynamicHeader, parseFooter, vpcVirtualSize } from '../vpc/header.js';
import {
  BAT_GUID, FILE_PARAMETERS_GUID, HEADER_OFFSETS, HEADER_SIZE, METADATA_GUID, METADATA_TABLE_SIZE, PARENT_LOCATOR_GUID,
  REGION_TABLE_OFFSETS, REGION_TABLE_SIZE, VIRTUAL_DISK_SIZE_GUID, ZERO_GUID, currentHeader, isVhdx, parseFileParameters,
  parseMetadataTable, parseParentLocator, parseRegionTable, parseVhdxHeader,
} from '../vhdx/header.js';
import { VDI_HEADER_SIZE, VDI_TYPE_DYNAMIC, VDI_TYPE_STATIC, isVdi, parseVdiHeader } from '../vdi/header.js';
import { QED_F_BACKING_FILE, QED_F_NEED_CHECK, isQed, parseQedHeader } from '../qed/header.js';
import { MAX_READ, type InspectReader } from './reader.js';
import type { FormatFinding, Issue, IssueCode } from './report.js';

export type FormatInspection = (r: InspectReader, file: string) => Promise<FormatFinding | null>;

const latin1 = new TextDecoder('latin1');
const ascii = (b: Uint8Array, from: number, to: number) => latin1.decode(b.subarray(from, Math.min(to, b.length)));
const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const hasBytes = (b: Uint8Array, at: number, bytes: number[]) => b.length >= at + bytes.length && bytes.every((x, i) => b[at + i] === x);

function finding(format: string, anchor: FormatFinding['anchor']): FormatFinding {
  return { format, virtualSize: null, anchor, issues: [], details: {} };
}

function issue(f: FormatFinding, code: IssueCode, message: string): void {
  if (!f.issues.some((i) => i.code === code && i.message === message)) f.issues.push({ code, message });
}

/** Run the rest of an inspection; parse errors become issues of the finding, never exceptions. */
async function guard(f: FormatFinding, body: () => Promise<void>): Promise<FormatFinding> {
  try {
    await body();
  } catch (e) {
    if (!isDiskError(e)) throw e;
    const code: IssueCode = e.code === 'EUNSUPPORTED' ? 'unknown-features'
      : e.code === 'ELIMIT' && /after the stream passed|larger than the inspector/.test(e.message) ? 'geometry'
      : 'malformed';
    issue(f, code, e.message);
  }
  return f;
}

/** A name found inside an image, quoted for a message (bounded, control characters escaped). */
function quoted(name: string): string {
  const s = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return JSON.stringify(s);
}

/** Table entries (big-endian u64) whose offsets must lie inside the file and be aligned. */
function checkOffsets(f: FormatFinding, table: Uint8Array, what: string, fileSize: number, align: number, mask = OFFSET_MASK, reserved = 0n): void {
  const v = view(table);
  for (let i = 0; i + 8 <= table.length; i += 8) {
    const e = v.getBigUint64(i, false);
    if (e === 0n) continue;
    if (reserved && (e & reserved)) {
      issue(f, 'geometry', `${what} entry ${i / 8} has reserved bits set (0x${e.toString(16)})`);
      return;
    }
    const off = Number(e & mask);
    if (off === 0) continue;
    if (off % align !== 0) {
      issue(f, 'geometry', `${what} entry ${i / 8} points to unaligned offset ${off}`);
      return;
    }
    if (off + align > fileSize) {
      issue(f, 'geometry', `${what} entry ${i / 8} points to offset ${off}, outside the file (${fileSize} bytes)`);
      return;
    }
  }
}

// --- qcow2 (QEMU docs/interop/qcow2.txt) and its predecessor qcow (v1) ---

export const inspectQcow2: FormatInspection = async (r, file) => {
  const head = await r.read(0, 512);
  if (head.length < 8 || view(head).getUint32(0, false) !== QCOW2_MAGIC) return null;
  const version = view(head).getUint32(4, false);
  if (version === 1) return null; // qcow (v1), below
  const f = finding('qcow2', 'start');
  return guard(f, async () => {
    f.details.version = version;
    if (head.length < 24) throw new DiskError('ETRUNCATED', `${file}: qcow2 header is truncated`);
    const clusterBits = view(head).getUint32(20, false);
    if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
      throw new DiskError('ECORRUPT', `${file}: qcow2 cluster size 2^${clusterBits} is invalid`);
    }
    const clusterSize = 2 ** clusterBits;
    // The header, its extensions and the backing file name all live in the first cluster.
    const cluster0 = await r.read(0, clusterSize);
    const h = parseHeader(cluster0, Number.MAX_SAFE_INTEGER, file);
    f.virtualSize = h.size;
    Object.assign(f.details, {
      'cluster-size': clusterSize,
      compat: h.version === 2 ? '0.10' : '1.1',
      encrypted: h.cryptMethod !== 0,
      dirty: (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
      corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      snapshots: h.nbSnapshots,
    });
    if (h.backingFile !== undefined) {
      f.details['backing-filename'] = h.backingFile;
      if (h.backingFormat) f.details['backing-format'] = h.backingFormat;
      issue(f, 'backing-file', `qcow2 image names a backing file ${quoted(h.backingFile)}; a standalone image must not read another file`);
    }
    if (h.dataFile !== undefined || (h.incompatibleFeatures & INCOMPAT_DATA_FILE)) {
      if (h.dataFile !== undefined) f.details['data-file'] = h.dataFile;
      issue(f, 'data-file', `qcow2 image keeps its data in an external data file${h.dataFile !== undefined ? ` ${quoted(h.dataFile)}` : ''}`);
    }
    // Ask for the tables now, so a stream captures them as it passes.
    const l1Bytes = h.l1Size * 8;
    const reftableBytes = h.refcountTableClusters * clusterSize;
    const l1 = l1Bytes > 0 && l1Bytes <= MAX_READ ? r.read(h.l1TableOffset, l1Bytes) : undefined;
    const reftable = reftableBytes <= MAX_READ ? r.read(h.refcountTableOffset, reftableBytes) : undefined;
    l1?.catch(() => {});
    reftable?.catch(() => {});
    const size = await r.size();
    for (const [what, off, len] of [
      ['L1 table', h.l1TableOffset, l1Bytes],
      ['refcount table', h.refcountTableOffset, reftableBytes],
    ] as const) {
      if (len > 0 && off + len > size) issue(f, 'geometry', `qcow2 ${what} (offset ${off}, ${len} bytes) extends past the end of the file (${size} bytes)`);
      if (len > 0 && off < clusterSize) issue(f, 'geometry', `qcow2 ${what} (offset ${off}) overlaps the header cluster`);
    }
    if (h.nbSnapshots > 0 && h.snapshotsOffset >= size) {
      issue(f, 'geometry', `qcow2 snapshot table (offset ${h.snapshotsOffset}) lies past the end of the file (${size} bytes)`);
    }
    if (f.issues.some((i) => i.code === 'geometry')) return;
    if (l1) checkOffsets(f, await l1, 'qcow2 L1 table', size, clusterSize, OFFSET_MASK, L1E_RESERVED_MASK);
    else if (l1Bytes > 0) issue(f, 'geometry', `qcow2 L1 table of ${l1Bytes} bytes is too large to verify`);
    if (reftable) checkOffsets(f, await reftable, 'qcow2 refcount table', size, clusterSize, OFFSET_MASK, 0x1ffn);
    else issue(f, 'geometry', `qcow2 refcount table of ${reftableBytes} bytes is too large to verify`);
  });
};

export const inspectQcow1: FormatInspection = async (r, file) => {
  const head = await r.read(0, 512);
  if (head.length < 8 || view(head).getUint32(0, false) !== QCOW2_MAGIC || view(head).getUint32(4, false) !== 1) return null;
  const f = finding('qcow', 'start');
  return guard(f, async () => {
    if (head.length < 48) throw new DiskError('ETRUNCATED', `${file}: qcow header is truncated`);
    const v = view(head);
    const backingOffset = Number(v.getBigUint64(8, false));
    const backingSize = v.getUint32(16, false);
    f.virtualSize = Number(v.getBigUint64(24, false));
    f.details.encrypted = v.getUint32(36, false) !== 0;
    if (backingOffset !== 0) {
      if (backingSize > 1023) throw new DiskError('ECORRUPT', `${file}: qcow backing file name of ${backingSize} bytes is too long`);
      const name = latin1.decode(await r.read(backingOffset, backingSize));
      f.details['backing-filename'] = name;
      issue(f, 'backing-file', `qcow image names a backing file ${quoted(name)}; a standalone image must not read another file`);
    }
  });
};

// --- vmdk (VMware Virtual Disk Format 5.0) ---

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

/** A descriptor is text: stop at the first NUL (the embedded descriptor area is zero-padded). */
function descriptorText(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return latin1.decode(nul >= 0 ? b.subarray(0, nul) : b);
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
      if (desc) checkDescriptor(f, parseDescriptor(descriptorText(await desc), file), true);
    });
  }
  if (looksLikeDescriptor(head)) {
    const f = finding('vmdk', 'start');
    return guard(f, async () => {
      const text = descriptorText(await r.read(0, 64 * 1024));
      const d = parseDescriptor(text, file);
      f.virtualSize = d.extents.reduce((s, e) => s + e.sectors, 0) * SECTOR;
      checkDescriptor(f, d, false);
      if (d.extents.length === 0) issue(f, 'extents', 'vmdk descriptor file lists no extents');
    });
  }
  return null;
};

// --- vhd ("vpc" in QEMU): Virtual Hard Disk Image Format Specification ---

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

// --- vhdx ([MS-VHDX]) ---

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

// --- vdi (VirtualBox) ---

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

// --- qed (QEMU docs/interop/qed_spec.txt) ---

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

// --- LUKS (cryptsetup on-disk formats 1 and 2): qemu-img's "luks" format ---

export const inspectLuks: FormatInspection = async (r, file) => {
  const head = await r.read(0, 512);
  if (!hasBytes(head, 0, [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe])) return null;
  const f = finding('luks', 'start');
  return guard(f, async () => {
    const v = view(head);
    const version = v.getUint16(6, false);
    f.details.version = version;
    f.details.encrypted = true;
    let payload: number;
    if (version === 1) {
      payload = v.getUint32(104, false) * 512;
    } else if (version === 2) {
      // The JSON area follows the 4 KiB binary header, up to hdr_size; segment 0 is the payload.
      const hdrSize = Number(v.getBigUint64(8, false));
      if (hdrSize < 4096 + 2 || hdrSize - 4096 > MAX_READ) throw new DiskError('ECORRUPT', `${file}: LUKS2 header size ${hdrSize} is invalid`);
      const json = descriptorText(await r.read(4096, hdrSize - 4096));
      let meta: { segments?: Record<string, { offset?: string }> };
      try { meta = JSON.parse(json); } catch { throw new DiskError('ECORRUPT', `${file}: LUKS2 JSON metadata does not parse`); }
      payload = Number(meta.segments?.['0']?.offset ?? NaN);
      if (!Number.isSafeInteger(payload)) throw new DiskError('ECORRUPT', `${file}: LUKS2 metadata has no data segment`);
    } else {
      throw new DiskError('EUNSUPPORTED', `${file}: LUKS version ${version} is not supported`);
    }
    const size = await r.size();
    f.virtualSize = Math.max(0, size - payload);
  });
};

// --- read-only legacy formats, recognised by their signatures ---

export const inspectParallels: FormatInspection = async (r) => {
  const head = await r.read(0, 64);
  const magic = ascii(head, 0, 16);
  if (magic !== 'WithoutFreeSpace' && magic !== 'WithouFreSpacExt') return null;
  const f = finding('parallels', 'start');
  if (head.length >= 44) f.virtualSize = Number(view(head).getBigUint64(36, true)) * 512;
  return f;
};

export const inspectBochs: FormatInspection = async (r) => {
  const head = await r.read(0, 512);
  if (ascii(head, 0, 23) !== 'Bochs Virtual HD Image\0') return null;
  const f = finding('bochs', 'start');
  if (head.length >= 96) {
    const v = view(head);
    // Version 1 keeps the disk size right after the extent field, version 2 after a reserved word.
    f.virtualSize = Number(v.getBigUint64(v.getUint32(64, true) === 0x00010000 ? 84 : 88, true));
  }
  return f;
};

export const inspectCloop: FormatInspection = async (r) => {
  const head = await r.read(0, 136);
  if (!ascii(head, 0, 23).startsWith('#!/bin/sh\n#V2.0 Format\n')) return null;
  const f = finding('cloop', 'start');
  if (head.length >= 136) f.virtualSize = view(head).getUint32(128, false) * view(head).getUint32(132, false);
  return f;
};

export const inspectDmg: FormatInspection = async (r) => {
  // Apple's UDIF trailer ("koly" block) is the last 512 bytes.
  const tail = await r.tail(512);
  if (tail.length < 512 || ascii(tail, 0, 4) !== 'koly') return null;
  const f = finding('dmg', 'elsewhere');
  f.virtualSize = Number(view(tail).getBigUint64(0x1ec, false)) * 512;
  return f;
};

// --- formats recognised away from byte 0 ---

/** UDF's volume recognition sequence (ECMA-167 §2/9.1): BEA01, then NSR02 or NSR03, from sector 16. */
function isUdf(sectors: Uint8Array[]): boolean {
  const ids = sectors.map((s) => ascii(s, 1, 6));
  return ids.includes('BEA01') && (ids.includes('NSR02') || ids.includes('NSR03'));
}

export const inspectIso: FormatInspection = async (r) => {
  const [pvd, boot, s18] = await Promise.all([r.read(32768, 2048), r.read(34816, 2048), r.read(36864, 2048)]);
  const iso9660 = pvd.length >= 2048 && pvd[0] === 1 && ascii(pvd, 1, 6) === 'CD001';
  if (!iso9660) {
    // A UDF-only disc image (no ISO 9660 bridge) is still an ISO in Glance's sense.
    if (!isUdf([pvd, boot, s18])) return null;
    const f = finding('iso', 'elsewhere');
    f.subformat = 'udf';
    f.virtualSize = await r.size();
    return f;
  }
  const f = finding('iso', 'elsewhere');
  f.details['volume-id'] = ascii(pvd, 40, 72).replace(/[ \0]+$/, '');
  // El Torito (the "El Torito" Bootable CD-ROM Format Specification 1.0): a boot record
  // volume descriptor (type 0) at sector 17.
  f.details.bootable = boot.length >= 39 && boot[0] === 0 && ascii(boot, 1, 6) === 'CD001' && ascii(boot, 7, 30) === 'EL TORITO SPECIFICATION';
  f.virtualSize = await r.size();
  return f;
};

/** A disk label (MBR or GPT) makes a raw image recognisable; alone it is still raw. */
export const inspectPartitionTable: FormatInspection = async (r) => {
  const [mbr, gpt512, gpt4k] = await Promise.all([r.read(0, 512), r.read(512, 8), r.read(4096, 8)]);
  if (ascii(gpt512, 0, 8) === 'EFI PART' || ascii(gpt4k, 0, 8) === 'EFI PART') {
    const f = finding('raw', 'elsewhere');
    f.subformat = 'gpt';
    return f;
  }
  if (mbr.length === 512 && mbr[510] === 0x55 && mbr[511] === 0xaa) {
    // A partition table, not just any boot sector: every entry's status is 0x00 or 0x80 and
    // at least one entry has a type.
    let used = 0;
    for (let i = 0; i < 4; i++) {
      const at = 446 + i * 16;
      if (mbr[at] !== 0 && mbr[at] !== 0x80) return null;
      if (mbr[at + 4] !== 0) used++;
    }
    if (!used) return null;
    const f = finding('raw', 'elsewhere');
    f.subformat = 'mbr';
    return f;
  }
  return null;
};

/** An OVA is a tar archive (POSIX ustar) whose first member is the OVF descriptor. */
export const inspectOva: FormatInspection = async (r) => {
  const head = await r.read(0, 512);
  if (ascii(head, 257, 262) !== 'ustar') return null;
  const nameEnd = head.indexOf(0);
  const first = ascii(head, 0, nameEnd >= 0 && nameEnd < 100 ? nameEnd : 100);
  const f = finding(first.toLowerCase().endsWith('.ovf') ? 'ova' : 'tar', 'elsewhere');
  f.details['first-member'] = first;
  return f;
};

export const FORMAT_INSPECTIONS: FormatInspection[] = [
  inspectQcow2, inspectQcow1, inspectVmdk, inspectVpc, inspectVhdx, inspectVdi, inspectQed, inspectLuks,
  inspectParallels, inspectBochs, inspectCloop, inspectDmg, inspectIso, inspectPartitionTable, inspectOva,
];

/** What the first bytes say about a raw image's content (for Glance's aki / ari disk formats). */
export function bootFileKind(head: Uint8Array): { kernel?: string; ramdisk?: string } {
  if (ascii(head, 0x202, 0x206) === 'HdrS') return { kernel: 'bzImage' };
  if (hasBytes(head, 0, [0x7f, 0x45, 0x4c, 0x46])) return { kernel: 'elf' };
  const cpio = ascii(head, 0, 6);
  if (cpio === '070701' || cpio === '070702' || cpio === '070707') return { ramdisk: 'cpio' };
  if (hasBytes(head, 0, [0x1f, 0x8b])) return { ramdisk: 'gzip' };
  if (hasBytes(head, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return { ramdisk: 'xz' };
  if (hasBytes(head, 0, [0x28, 0xb5, 0x2f, 0xfd])) return { ramdisk: 'zstd' };
  if (hasBytes(head, 0, [0x02, 0x21, 0x4c, 0x18])) return { ramdisk: 'lz4' };
  if (ascii(head, 0, 3) === 'BZh') return { ramdisk: 'bzip2' };
  return {};
}

export type { Issue };
