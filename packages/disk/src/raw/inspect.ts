/** What makes a raw image recognisable without making it another format: an ISO 9660 / UDF file system, a disk label (MBR, GPT), a kernel or ramdisk (Glance's aki/ari). */
import { ascii, finding, hasBytes, type FormatInspection } from '../inspect/finding.js';

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
