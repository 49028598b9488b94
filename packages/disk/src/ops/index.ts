/** Operations: plain functions over block devices, each with progress and cancellation. */
export * from './common.js';
export * from './map.js';
export * from './info.js';
export * from './compare.js';
export * from './convert.js';
export * from './convert-file.js';
export * from './dispatch.js';
export * from './concat.js';
export * from './rebase.js';
export * from './commit.js';
export * from './read-raw.js';
