/** ISO 9660 (with Rock Ridge and Joliet): the on-disk layout and the read-only filesystem. */
export * from './layout.js';
export { Iso9660, openIso9660, isoName, jolietName, type IsoNode } from './reader.js';
export { writeIso9660, MAX_ISO_BYTES, type IsoFile, type IsoWriteOptions } from './writer.js';
