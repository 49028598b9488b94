/**
 * What the disk engine says about uploaded data: the virtual size, and whether the content
 * is safe to hand to a hypervisor. The service knows nothing of formats; it asks @diskhub/disk.
 */
import { DiskError, FileSource, getFormat, probeFormat, readHead } from '@diskhub/disk';
import { INCOMPAT_DATA_FILE, isQcow2, parseHeader } from '@diskhub/disk/qcow2/layout';

export interface Inspection {
  virtualSize: number | null;
  /** Why the content must be refused (declared format contradicted, or unsafe features). */
  refusal?: string;
}

/** Inspect a complete file whose declared format is `diskFormat`. */
export async function inspectFile(path: string, diskFormat: string | null, size: number): Promise<Inspection> {
  if (diskFormat === 'raw' || diskFormat === 'iso') return { virtualSize: size };
  const source = await FileSource.open(path, { readOnly: true });
  try {
    const head = await readHead(source);
    if (diskFormat === 'qcow2') {
      if (!isQcow2(head)) return { virtualSize: null, refusal: 'Image data is not in the declared disk format qcow2.' };
      let header;
      try { header = parseHeader(head, size, 'upload'); } catch (e) {
        if (e instanceof DiskError) return { virtualSize: null, refusal: `Image data is not a valid qcow2 image: ${e.message}` };
        throw e;
      }
      if (header.backingFile) return { virtualSize: header.size, refusal: 'Image data names a backing file; refusing an image that would read another file.' };
      if (header.dataFile !== undefined || (header.incompatibleFeatures & INCOMPAT_DATA_FILE)) {
        return { virtualSize: header.size, refusal: 'Image data names an external data file; refusing an image that would read another file.' };
      }
      if (header.cryptMethod !== 0) return { virtualSize: header.size, refusal: 'Encrypted qcow2 images are not accepted.' };
      return { virtualSize: header.size };
    }
    if (!diskFormat) return { virtualSize: null };
    // Other formats: use a registered driver when the engine has one.
    let driver;
    try { driver = getFormat(diskFormat); } catch { return { virtualSize: null }; }
    if (driver.probe(head, path) === 0 && probeFormat(head, path).name !== diskFormat) {
      return { virtualSize: null, refusal: `Image data is not in the declared disk format ${diskFormat}.` };
    }
    try {
      const img = await driver.open(source, { allowExternalData: false });
      try {
        if (img.backingRef) return { virtualSize: img.size, refusal: 'Image data refers to a backing file; refusing an image that would read another file.' };
        return { virtualSize: img.size };
      } finally { await img.close(); }
    } catch (e) {
      if (e instanceof DiskError) return { virtualSize: null, refusal: `Image data is not a valid ${diskFormat} image: ${e.message}` };
      throw e;
    }
  } finally {
    await source.close().catch(() => {});
  }
}
