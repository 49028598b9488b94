/**
 * Opening a vmdk (QEMU 7.2 block/vmdk.c semantics): a sparse file (monolithicSparse,
 * streamOptimized, an ESX vmfsSparse "COWD" file) is one extent with its descriptor embedded;
 * a text descriptor file (monolithicFlat, twoGbMaxExtent*, vmfs, vmfsSparse) lists extents in
 * other files, which are opened through OpenOptions.openRelated. Extent names that leave the
 * descriptor's folder (absolute, or climbing with ..) need OpenOptions.allowExternalData.
 */
import { posix } from 'node:path';
import { DiskError } from '../errors.js';
import type { OpenOptions } from '../format.js';
import type { ByteSource } from '../source.js';
import {
  COMPRESSION_DEFLATE, COWD_MAGIC, FLAG_MARKERS, FLAG_RGD, FLAG_ZERO_GRAIN, MARKER_EOS, MARKER_FOOTER, SECTOR,
  SESPARSE_GDE_ALLOCATED, SESPARSE_GRAIN_SECTORS, SESPARSE_GT_SECTORS, SPARSE_MAGIC, checkSeSparseVolatileHeader,
  descriptorCid, parseCowdHeader, parseDescriptor, parseSeSparseHeader, parseSparseHeader, type SparseHeader,
} from './header.js';

/** QEMU reads at most this much descriptor text (1 MiB - 1); a longer descriptor file is refused. */
export const DESCRIPTOR_MAX = (1 << 20) - 1;
/** The embedded descriptor of a sparse file is read from here (QEMU's fixed desc_offset), this long. */
export const EMBEDDED_DESCRIPTOR_OFFSET = 0x200;
export const EMBEDDED_DESCRIPTOR_SIZE = 20 * SECTOR;
/** QEMU's caps: a grain of more than 1 GiB, more than 32 Mi grain directory entries, more than 512 entries a grain table. */
export const MAX_GRAIN_SECTORS = 0x200000;
export const MAX_GD_ENTRIES = 32 * 1024 * 1024;
export const MAX_GT_ENTRIES = 512;
/** The most extents one descriptor may list, and how deep descriptors may nest (a sparse file whose header points at another descriptor). */
export const MAX_EXTENTS = 1024;
export const MAX_DESCRIPTOR_DEPTH = 2;

/** createTypes QEMU opens from a text descriptor file. */
const DESCRIPTOR_FILE_TYPES = ['monolithicFlat', 'vmfs', 'vmfsSparse', 'seSparse', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'];

interface ExtentBase {
  file: ByteSource;
  /** True when the extent lives in a file of its own (closed with the image). */
  ownFile: boolean;
  /** First virtual byte and length in bytes. */
  start: number;
  bytes: number;
  /** The descriptor's type word (FLAT, SPARSE, VMFS, ...); '' for the extent of a sparse file opened directly. */
  type: string;
}

export interface FlatExtent extends ExtentBase {
  kind: 'flat';
  /** Byte offset of the extent's data in its file. */
  fileOffset: number;
}

export interface SparseExtent extends ExtentBase {
  kind: 'sparse';
  grainBytes: number;
  gtEntries: number;
  /**
   * Grain directory: sector offsets of the grain tables (0 = none). seSparse directories are
   * resolved from table indexes to sectors when opened; an entry QEMU would refuse is -1.
   */
  gd: Uint32Array | Float64Array;
  /** The redundant grain directory, when the header has one. */
  rgd?: Uint32Array;
  compressed: boolean;
  markers: boolean;
  zeroGrain: boolean;
  version: number;
  /** Sector where the next grain is appended. */
  nextGrainSector: number;
  /** Bytes of the sparse header, for rewriting (0 for COWD). */
  header?: SparseHeader;
  /** An seSparse extent (read-only): 64-bit grain table entries naming grains by index from this sector. */
  seSparse?: { grainsSector: number };
}

export type VmdkExtent = FlatExtent | SparseExtent;

export interface OpenedVmdk {
  createType: string;
  extents: VmdkExtent[];
  size: number;
  cid: number;
  parentCid: number;
  parentFileNameHint?: string;
  /** Where the descriptor text lives (to rewrite the CID on the first write). */
  descriptorFile: ByteSource;
  descriptorOffset: number;
  /** The file is a text descriptor (its length is the text's). */
  descriptorIsFile: boolean;
}

/** Read exactly `n` bytes at `at`, zero-filling past the end of the file (as QEMU's file layer does). */
async function readPadded(src: ByteSource, at: number, n: number): Promise<Uint8Array> {
  const b = new Uint8Array(n);
  await src.read(b, at);
  return b;
}

const latin1 = new TextDecoder('latin1');

/** Text up to the first NUL. */
function cText(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return latin1.decode(nul >= 0 ? b.subarray(0, nul) : b);
}

/** Does `name` stay inside the descriptor's folder? */
export function isContainedPath(name: string): boolean {
  if (name === '' || name.startsWith('/') || name.includes('\\') || /^[a-z][a-z0-9+.-]*:/i.test(name)) return false;
  const norm = posix.normalize(name);
  return norm !== '..' && !norm.startsWith('../');
}

export async function openVmdk(source: ByteSource, options: OpenOptions): Promise<OpenedVmdk> {
  const ctx = new OpenContext(source, options);
  try {
    return await ctx.open();
  } catch (e) {
    await ctx.closeOwned();
    throw e;
  }
}

class OpenContext {
  readonly extents: VmdkExtent[] = [];
  private end = 0;
  constructor(private readonly source: ByteSource, private readonly options: OpenOptions) {}

  async closeOwned(): Promise<void> {
    for (const e of this.extents) if (e.ownFile) await e.file.close().catch(() => {});
  }

  async open(): Promise<OpenedVmdk> {
    const src = this.source;
    const fileSize = await src.size();
    if (fileSize < 4) throw new DiskError('EFORMAT', `${src.name}: File is too small, not a valid image`);
    const head = await readPadded(src, 0, SECTOR);
    const magic = new DataView(head.buffer).getUint32(0, true);
    let createType: string;
    let descText: string;
    let descriptorOffset = 0;
    let descriptorIsFile = false;
    if (magic === SPARSE_MAGIC || magic === COWD_MAGIC) {
      const nested = await this.openSparse(src, false, '', 0, head);
      if (nested) {
        createType = nested.createType;
        descText = nested.text;
      } else {
        const ext = this.extents[0] as SparseExtent;
        createType = ext.compressed ? 'streamOptimized' : 'monolithicSparse';
        descriptorOffset = EMBEDDED_DESCRIPTOR_OFFSET;
        descText = cText(await readPadded(src, EMBEDDED_DESCRIPTOR_OFFSET, EMBEDDED_DESCRIPTOR_SIZE));
      }
    } else {
      descText = await this.readDescriptorFile(src, 0, fileSize);
      createType = await this.openDescriptor(descText, 0);
      descriptorIsFile = true;
    }
    // QEMU refuses a descriptor without a CID / parentCID (an extent file opened on its own).
    const cid = descriptorCid(descText, false);
    const parentCid = descriptorCid(descText, true);
    if (cid === undefined || parentCid === undefined) {
      throw new DiskError('EFORMAT', `${src.name}: vmdk descriptor has no ${cid === undefined ? 'CID' : 'parentCID'} (is this one extent of a multi-file disk?)`);
    }
    const hint = /parentFileNameHint\s*=\s*"([^"\n]*)"/.exec(descText)?.[1];
    if (this.extents.length === 0) throw new DiskError('ECORRUPT', `${src.name}: vmdk descriptor lists no usable extent`);
    return {
      createType, extents: this.extents, size: this.end, cid, parentCid,
      ...(hint ? { parentFileNameHint: hint } : {}),
      descriptorFile: src, descriptorOffset, descriptorIsFile,
    };
  }

  private async readDescriptorFile(src: ByteSource, at: number, fileSize: number): Promise<string> {
    if (fileSize - at > DESCRIPTOR_MAX) {
      throw new DiskError('ELIMIT', `${src.name}: vmdk descriptor of ${fileSize - at} bytes is larger than the ${DESCRIPTOR_MAX}-byte limit`);
    }
    return cText(await readPadded(src, at, Math.max(0, Math.min(fileSize - at, DESCRIPTOR_MAX))));
  }

  /** Open the extents a descriptor lists; returns its createType. */
  private async openDescriptor(text: string, depth: number): Promise<string> {
    const name = this.source.name;
    const ct = /createType\s*=\s*"([^"]*)"/.exec(text)?.[1];
    if (ct === undefined) throw new DiskError('EFORMAT', `${name}: invalid VMDK image descriptor`);
    if (!DESCRIPTOR_FILE_TYPES.includes(ct)) throw new DiskError('EUNSUPPORTED', `${name}: Unsupported image type '${ct}'`);
    const d = parseDescriptor(text, name);
    // As QEMU: only RW extents count; lines of other types or sizes are skipped.
    const lines = d.extents.filter((e) => e.access === 'RW' && e.filename !== undefined);
    if (lines.length > MAX_EXTENTS) throw new DiskError('ELIMIT', `${name}: vmdk descriptor lists ${lines.length} extents (limit ${MAX_EXTENTS})`);
    for (const e of lines) {
      if (e.type === 'FLAT' && !e.hasOffset) throw new DiskError('ECORRUPT', `${name}: Invalid extent line: FLAT extent "${e.filename}" has no offset`);
      if (e.type !== 'FLAT' && e.hasOffset) throw new DiskError('ECORRUPT', `${name}: Invalid extent line: ${e.type} extent "${e.filename}" has an offset`);
      if (e.sectors <= 0 || !['FLAT', 'SPARSE', 'VMFS', 'VMFSSPARSE', 'SESPARSE'].includes(e.type)) continue;
      const file = await this.openExtentFile(e.filename!);
      try {
        if (e.type === 'FLAT' || e.type === 'VMFS') {
          this.addFlat(file, e.sectors, e.offset, e.type);
        } else if (e.type === 'SESPARSE') {
          await this.addSeSparse(file, e.type);
        } else {
          const fileSize = await file.size();
          if (fileSize < 4) throw new DiskError('EFORMAT', `${file.name}: File is too small, not a valid image`);
          const head = await readPadded(file, 0, SECTOR);
          const magic = new DataView(head.buffer).getUint32(0, true);
          if (magic !== SPARSE_MAGIC && magic !== COWD_MAGIC) throw new DiskError('EFORMAT', `${file.name}: Image not in VMDK format`);
          if (await this.openSparse(file, true, e.type, depth + 1, head)) {
            // The extent was a descriptor itself: its own extents were added, this file is not one.
            await file.close();
          }
        }
      } catch (err) {
        if (!this.extents.some((x) => x.file === file)) await file.close().catch(() => {});
        throw err;
      }
    }
    return ct;
  }

  private async openExtentFile(filename: string): Promise<ByteSource> {
    const name = this.source.name;
    if (!isContainedPath(filename) && !this.options.allowExternalData) {
      throw new DiskError('EUNSAFE', `${name}: the vmdk descriptor names the extent '${filename}' outside the image's folder; opening it needs an explicit opt-in`);
    }
    if (!this.options.openRelated) {
      throw new DiskError('EUNSAFE', `${name}: the vmdk descriptor names the extent file '${filename}', which cannot be opened here`);
    }
    return this.options.openRelated(filename, !!this.options.writable);
  }

  private addFlat(file: ByteSource, sectors: number, offsetSectors: number, type: string): void {
    const bytes = sectors * SECTOR;
    const fileOffset = offsetSectors * SECTOR;
    if (!Number.isSafeInteger(bytes) || !Number.isSafeInteger(fileOffset) || !Number.isSafeInteger(this.end + bytes)) {
      throw new DiskError('ELIMIT', `${this.source.name}: vmdk extent of ${sectors} sectors at ${offsetSectors} is too large`);
    }
    this.extents.push({ kind: 'flat', file, ownFile: file !== this.source, start: this.end, bytes, type, fileOffset });
    this.end += bytes;
  }

  /**
   * Add the sparse extent in `file`; when its header says it is only a carrier of a
   * descriptor (capacity 0, a descriptor offset), open that descriptor instead and return it.
   */
  private async openSparse(file: ByteSource, ownFile: boolean, type: string, depth: number, head: Uint8Array): Promise<{ createType: string; text: string } | undefined> {
    const name = file.name;
    const fileSize = await file.size();
    const fileSectors = Math.ceil(fileSize / SECTOR);
    const magic = new DataView(head.buffer).getUint32(0, true);
    if (magic === COWD_MAGIC) {
      const h = parseCowdHeader(head, name);
      await this.addSparse(file, ownFile, type, {
        capacity: h.capacity, grainSectors: h.grainSize, gtEntries: 4096, gdSector: h.gdOffset, gdEntries: h.gdEntries,
        compressed: false, markers: false, zeroGrain: false, version: h.version, fileSectors,
      });
      return undefined;
    }
    let h = parseSparseHeader(head, name);
    if (h.capacity === 0 && h.descriptorOffset) {
      if (depth >= MAX_DESCRIPTOR_DEPTH) throw new DiskError('ELOOP', `${name}: vmdk descriptors nest deeper than ${MAX_DESCRIPTOR_DEPTH} levels`);
      const at = h.descriptorOffset * SECTOR;
      if (!Number.isSafeInteger(at) || at >= fileSize) throw new DiskError('ECORRUPT', `${name}: vmdk descriptor offset ${h.descriptorOffset} is outside the file`);
      const text = await this.readDescriptorFile(file, at, Math.min(fileSize, at + DESCRIPTOR_MAX));
      return { createType: await this.openDescriptor(text, depth + 1), text };
    }
    if (h.gdOffset < 0) {
      // streamOptimized with the grain directory at the end: the footer (a copy of the
      // header with the real gdOffset) sits between a footer marker and the end-of-stream marker.
      if (fileSize < 1536 + SECTOR) throw new DiskError('ETRUNCATED', `${name}: streamOptimized vmdk is too short to hold its footer`);
      const tail = await readPadded(file, Math.floor(fileSize / SECTOR) * SECTOR - 1536, 1536);
      const v = new DataView(tail.buffer);
      const ok = v.getUint32(512, true) === SPARSE_MAGIC && v.getUint32(8, true) === 0 && v.getUint32(12, true) === MARKER_FOOTER
        && v.getBigUint64(1024, true) === 0n && v.getUint32(1032, true) === 0 && v.getUint32(1036, true) === MARKER_EOS;
      if (!ok) throw new DiskError('ECORRUPT', `${name}: Invalid footer`);
      h = parseSparseHeader(tail.subarray(512, 1024), name);
      if (h.gdOffset < 0) throw new DiskError('ECORRUPT', `${name}: vmdk footer does not give the grain directory offset`);
    }
    const compressed = h.compressAlgorithm === COMPRESSION_DEFLATE;
    if (h.version > 3) throw new DiskError('EUNSUPPORTED', `${name}: Unsupported VMDK version ${h.version}`);
    if (h.version === 3 && this.options.writable && !compressed) throw new DiskError('EUNSUPPORTED', `${name}: VMDK version 3 must be read only`);
    if (h.numGTEsPerGT > MAX_GT_ENTRIES) throw new DiskError('ECORRUPT', `${name}: L2 table size too big`);
    if (h.numGTEsPerGT * h.grainSize === 0) throw new DiskError('ECORRUPT', `${name}: L1 entry size is invalid`);
    if (fileSectors < h.overHead) throw new DiskError('ETRUNCATED', `${name}: File truncated, expecting at least ${h.overHead * SECTOR} bytes`);
    const entrySectors = h.numGTEsPerGT * h.grainSize;
    await this.addSparse(file, ownFile, type, {
      capacity: h.capacity, grainSectors: h.grainSize, gtEntries: h.numGTEsPerGT, gdSector: h.gdOffset,
      gdEntries: Math.ceil(h.capacity / entrySectors),
      ...(h.flags & FLAG_RGD ? { rgdSector: h.rgdOffset } : {}),
      compressed, markers: !!(h.flags & FLAG_MARKERS), zeroGrain: !!(h.flags & FLAG_ZERO_GRAIN), version: h.version, fileSectors, header: h,
    });
    return undefined;
  }

  /**
   * An seSparse extent file (QEMU's vmdk_open_se_sparse): the const and volatile headers are
   * checked as strictly as QEMU checks them; the grain directory must lie inside the file.
   * Like QEMU, the extent is read-only and takes its size from the const header's capacity,
   * not from the descriptor line.
   */
  private async addSeSparse(file: ByteSource, type: string): Promise<void> {
    const name = file.name;
    if (this.options.writable) throw new DiskError('EUNSUPPORTED', `${name}: No write support for seSparse images available`);
    const h = parseSeSparseHeader(await readPadded(file, 0, SECTOR), name);
    const volatileAt = h.volatileHeaderOffset * SECTOR;
    if (!Number.isSafeInteger(volatileAt)) throw new DiskError('ECORRUPT', `${name}: seSparse volatile header offset ${h.volatileHeaderOffset} is out of range`);
    checkSeSparseVolatileHeader(await readPadded(file, volatileAt, SECTOR), name);
    const gdEntries = h.grainDirSectors * (SECTOR / 8);
    if (!Number.isSafeInteger(gdEntries) || gdEntries > MAX_GD_ENTRIES) throw new DiskError('ELIMIT', `${name}: L1 size too big`);
    const bytes = h.capacity * SECTOR;
    if (!Number.isSafeInteger(bytes) || !Number.isSafeInteger(this.end + bytes)) {
      throw new DiskError('ELIMIT', `${name}: seSparse capacity of ${h.capacity} sectors is too large`);
    }
    const fileSize = await file.size();
    const gdAt = h.grainDirOffset * SECTOR;
    if (gdEntries > 0 && (!Number.isSafeInteger(gdAt) || gdAt + gdEntries * 8 > fileSize)) {
      throw new DiskError('ECORRUPT', `${name}: seSparse grain directory (${gdEntries} entries at sector ${h.grainDirOffset}) lies outside the file (${fileSize} bytes)`);
    }
    const raw = await readPadded(file, gdAt, gdEntries * 8);
    const v = new DataView(raw.buffer);
    const gd = new Float64Array(gdEntries);
    for (let i = 0; i < gdEntries; i++) {
      const lo = v.getUint32(i * 8, true);
      const hi = v.getUint32(i * 8 + 4, true);
      if (lo === 0 && hi === 0) continue;
      // An allocated table has 0x10000000 in the high word (QEMU is this strict: nothing else
      // is valid below 64 TiB); its sector is the table area plus index times a table's size.
      const sector = h.grainTablesOffset + lo * SESPARSE_GT_SECTORS;
      gd[i] = hi === SESPARSE_GDE_ALLOCATED && sector <= 0xffffffff ? sector : -1;
    }
    this.extents.push({
      kind: 'sparse', file, ownFile: true, start: this.end, bytes, type,
      grainBytes: SESPARSE_GRAIN_SECTORS * SECTOR, gtEntries: SESPARSE_GT_SECTORS * (SECTOR / 8), gd,
      compressed: false, markers: false, zeroGrain: false, version: 0,
      nextGrainSector: Math.ceil(fileSize / SECTOR / SESPARSE_GRAIN_SECTORS) * SESPARSE_GRAIN_SECTORS,
      seSparse: { grainsSector: h.grainsOffset },
    });
    this.end += bytes;
  }

  private async addSparse(file: ByteSource, ownFile: boolean, type: string, g: {
    capacity: number; grainSectors: number; gtEntries: number; gdSector: number; gdEntries: number; rgdSector?: number;
    compressed: boolean; markers: boolean; zeroGrain: boolean; version: number; fileSectors: number; header?: SparseHeader;
  }): Promise<void> {
    const name = file.name;
    if (g.grainSectors > MAX_GRAIN_SECTORS) throw new DiskError('ECORRUPT', `${name}: Invalid granularity, image may be corrupt`);
    if (g.grainSectors === 0 || g.gtEntries === 0) throw new DiskError('ECORRUPT', `${name}: L1 entry size is invalid`);
    // The specification requires a power of two (at least 8 sectors for hosted disks); other
    // values are damage, and would make the grain arithmetic meaningless.
    if ((g.grainSectors & (g.grainSectors - 1)) !== 0) throw new DiskError('ECORRUPT', `${name}: vmdk grain size of ${g.grainSectors} sectors is not a power of two`);
    if (g.gdEntries > MAX_GD_ENTRIES) throw new DiskError('ELIMIT', `${name}: L1 size too big`);
    const bytes = g.capacity * SECTOR;
    if (!Number.isSafeInteger(bytes) || !Number.isSafeInteger(this.end + bytes)) {
      throw new DiskError('ELIMIT', `${name}: vmdk capacity of ${g.capacity} sectors is too large`);
    }
    const fileSize = await file.size();
    const readGd = async (sector: number, what: string): Promise<Uint32Array> => {
      const at = sector * SECTOR;
      const len = g.gdEntries * 4;
      if (len > 0 && (!Number.isSafeInteger(at) || at + len > fileSize)) {
        throw new DiskError('ECORRUPT', `${name}: vmdk ${what} (${g.gdEntries} entries at sector ${sector}) lies outside the file (${fileSize} bytes)`);
      }
      const raw = await readPadded(file, at, len);
      const v = new DataView(raw.buffer);
      const out = new Uint32Array(g.gdEntries);
      for (let i = 0; i < out.length; i++) out[i] = v.getUint32(i * 4, true);
      return out;
    };
    const gd = await readGd(g.gdSector, 'grain directory');
    const rgd = g.rgdSector !== undefined && g.rgdSector > 0 ? await readGd(g.rgdSector, 'redundant grain directory') : undefined;
    this.extents.push({
      kind: 'sparse', file, ownFile, start: this.end, bytes, type,
      grainBytes: g.grainSectors * SECTOR, gtEntries: g.gtEntries, gd, ...(rgd ? { rgd } : {}),
      compressed: g.compressed, markers: g.markers, zeroGrain: g.zeroGrain, version: g.version,
      nextGrainSector: Math.ceil(g.fileSectors / g.grainSectors) * g.grainSectors,
      ...(g.header ? { header: g.header } : {}),
    });
    this.end += bytes;
  }
}
