/** FAT12/16/32 with VFAT long names: the on-disk layout and the read-only filesystem. */
export * from './layout.js';
export { Fat, openFat, shortNameOf, type FatNode } from './reader.js';
