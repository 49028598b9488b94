export * from './errors.js';
export * from './blockdev.js';
export * from './source.js';
export * from './format.js';
export * from './formats.js';
export * from './open.js';
export { RawImage, rawDriver } from './raw/index.js';
export * from './ops/index.js';
export * from './partition/index.js';
