/** ext2/ext3/ext4, read-only: the reader and its on-disk layout. */
export { ExtFilesystem, ExtNode, openExt, type ExtInode, type Timestamp } from './reader.js';
