/**
 * OVA appliances (a tar of an OVF descriptor, an optional manifest and the disks): `info` lists
 * the disks the OVF declares; opening the appliance opens one disk (the first, or the one
 * OpenOptions.ovaDisk names) directly inside the tar, at its offset — nothing is extracted.
 * Read-only. Disks are usually streamOptimized vmdk; any format the engine reads works, but a
 * disk that names other files (a flat vmdk descriptor, a backing file) is refused.
 */
import { checkRange, type Extent } from '../blockdev.js';
import { DiskError } from '../errors.js';
import type { FormatDriver, Image, ImageInfo, OpenOptions } from '../format.js';
import { readHead, type ByteSource, type HostExtent } from '../source.js';
import { MAX_OVF_BYTES, parseOvf, type OvfDescriptor } from './ovf.js';
import { isTarHeader, listTar, type TarEntry } from './tar.js';
import { inspectOva } from './inspect.js';

/** A read-only window [offset, offset+length) of another source, named after it. */
export class SliceSource implements ByteSource {
  readonly readOnly = true;
  constructor(private readonly base: ByteSource, private readonly offset: number, private readonly length: number, readonly name = base.name) {}
  async size(): Promise<number> { return this.length; }
  async read(buf: Uint8Array, offset: number): Promise<number> {
    const n = Math.max(0, Math.min(buf.length, this.length - offset));
    if (n === 0) return 0;
    return this.base.read(buf.subarray(0, n), this.offset + offset);
  }
  private refuse(): never { throw new DiskError('EROFS', `${this.name}: a disk inside an archive is read-only`); }
  async write(): Promise<void> { this.refuse(); }
  async truncate(): Promise<void> { this.refuse(); }
  async punchHole(): Promise<void> { this.refuse(); }
  async allocate(): Promise<void> { this.refuse(); }
  async *hostExtents(offset: number, length: number): AsyncIterable<HostExtent> {
    const inside = Math.max(0, Math.min(length, this.length - offset));
    if (inside > 0) for await (const h of this.base.hostExtents(this.offset + offset, inside)) yield { ...h, offset: h.offset - this.offset };
    if (inside < length) yield { offset: offset + inside, length: length - inside, data: false };
  }
  async allocatedSize(): Promise<number> { return this.length; }
  async flush(): Promise<void> {}
  /** The archive is closed by its owner. */
  async close(): Promise<void> {}
}

export interface OvaContents {
  ovfName: string;
  ovf: OvfDescriptor;
  entries: TarEntry[];
}

export async function readOva(source: ByteSource): Promise<OvaContents> {
  const entries = await listTar(source);
  const ovfEntry = entries.find((e) => e.name.toLowerCase().endsWith('.ovf'));
  if (!ovfEntry) throw new DiskError('EFORMAT', `${source.name}: the archive holds no .ovf descriptor`);
  if (ovfEntry.size > MAX_OVF_BYTES) throw new DiskError('ELIMIT', `${source.name}: OVF descriptor of ${ovfEntry.size} bytes is too large`);
  const text = new Uint8Array(ovfEntry.size);
  await source.read(text, ovfEntry.offset);
  return { ovfName: ovfEntry.name, ovf: parseOvf(new TextDecoder().decode(text), `${source.name}:${ovfEntry.name}`), entries };
}

/** The disks of an appliance, in the OVF's order, with the tar entry that holds each. */
export function ovaDisks(c: OvaContents): { diskId: string; href?: string; capacity: number; format?: string; entry?: TarEntry }[] {
  return c.ovf.disks.map((d) => {
    const href = c.ovf.files.find((f) => f.id === d.fileRef)?.href;
    const entry = href === undefined ? undefined : c.entries.find((e) => e.name === href || e.name === `./${href}`);
    return { diskId: d.diskId, ...(href !== undefined ? { href } : {}), capacity: d.capacity, ...(d.format ? { format: d.format } : {}), ...(entry ? { entry } : {}) };
  });
}

export class OvaImage implements Image {
  readonly format = 'ova';
  readonly size: number;
  readonly clusterSize?: number;
  backing?: Image;
  constructor(readonly source: ByteSource, private readonly contents: OvaContents, private readonly index: number, private readonly disk: Image, private readonly diskOffset: number) {
    this.size = disk.size;
    if (disk.clusterSize) this.clusterSize = disk.clusterSize;
  }
  read(buf: Uint8Array, offset: number): Promise<void> { return this.disk.read(buf, offset); }
  async *blockStatus(offset: number, length: number): AsyncIterable<Extent> {
    checkRange(this.size, offset, length, 'block status');
    for await (const e of this.disk.blockStatus(offset, length)) {
      yield e.hostOffset !== undefined ? { ...e, hostOffset: e.hostOffset + this.diskOffset, hostFile: this.source.name } : e;
    }
  }
  async info(): Promise<ImageInfo> {
    const inner = await this.disk.info();
    return {
      'virtual-size': this.size,
      filename: this.source.name,
      format: 'ova',
      'actual-size': await this.source.allocatedSize(),
      'format-specific': {
        type: 'ova',
        data: {
          ovf: this.contents.ovfName,
          'selected-disk': this.index,
          'disk-format': inner.format,
          disks: ovaDisks(this.contents).map((d, i) => ({
            index: i, 'disk-id': d.diskId, ...(d.href !== undefined ? { file: d.href } : {}), capacity: d.capacity,
            ...(d.format ? { format: d.format } : {}), ...(d.entry ? { 'file-size': d.entry.size } : {}),
          })),
        },
      },
    };
  }
  async close(): Promise<void> {
    await this.disk.close();
    await this.source.close();
  }
}

export const ovaDriver: FormatDriver = {
  name: 'ova',
  inspections: [inspectOva],
  probe(head: Uint8Array): number {
    // OVF 1.x / 2.x: the .ovf descriptor is the first entry of the tar.
    if (!isTarHeader(head)) return 0;
    const nul = head.subarray(0, 100).indexOf(0);
    const name = new TextDecoder('latin1').decode(head.subarray(0, nul >= 0 ? nul : 100));
    return name.toLowerCase().endsWith('.ovf') ? 100 : 0;
  },
  async open(source: ByteSource, options: OpenOptions): Promise<Image> {
    if (options.writable) throw new DiskError('EROFS', `${source.name}: an OVA appliance is opened read-only (convert its disk to write)`);
    const contents = await readOva(source);
    const disks = ovaDisks(contents);
    if (disks.length === 0) throw new DiskError('ENOENT', `${source.name}: the OVF descriptor lists no disks`);
    const index = options.ovaDisk ?? 0;
    const d = disks[index];
    if (!d) throw new DiskError('ENOENT', `${source.name}: the appliance has ${disks.length} disk(s); there is no disk ${index}`);
    if (!d.entry) throw new DiskError('ENOENT', `${source.name}: disk ${index} (${d.href ?? d.diskId}) is not in the archive`);
    const slice = new SliceSource(source, d.entry.offset, d.entry.size, `${source.name}:${d.entry.name}`);
    if (!options.formats) throw new DiskError('EINVAL', `${source.name}: opening an appliance's disk needs the format registry (open it through openSource)`);
    const driver = options.formats.probe(await readHead(slice), d.entry.name);
    if (driver.name === 'ova') throw new DiskError('ELOOP', `${source.name}: disk ${index} is itself an appliance`);
    // No openRelated: a disk inside an archive may not name other files.
    const disk = await driver.open(slice, { headerOnly: options.headerOnly });
    if (disk.backingRef) {
      await disk.close();
      throw new DiskError('EUNSAFE', `${source.name}: disk ${index} names a backing file '${disk.backingRef.filename}'`);
    }
    return new OvaImage(source, contents, index, disk, d.entry.offset);
  },
};
