/**
 * The store types the service can configure: one `register` line each (registry.ts). Importing
 * this module registers them.
 */
import { register } from './registry.js';
import { fileStoreFactory } from './file/factory.js';

register('file', fileStoreFactory);
