/** ISO 9660 (with Rock Ridge and Joliet): the on-disk layout and the read-only filesystem. */
export * from './layout.js';
export { Iso9660, openIso9660, isoName, jolietName, type IsoNode } from './reader.js';
