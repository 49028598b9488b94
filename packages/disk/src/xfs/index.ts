/** XFS v4 and v5: the on-disk layout and the read-only filesystem. */
export * from './layout.js';
export { Xfs, openXfs, MAX_EXTENTS, type XfsNode } from './reader.js';
