/**
 * The store types the service can configure: one `register` line each (registry.ts). Importing
 * this module registers them.
 */
import { register } from './registry.js';
import { fileStoreFactory } from './file/factory.js';
import { rbdStoreFactory } from './rbd/factory.js';
import { swiftStoreFactory } from './swift/factory.js';
import { s3StoreFactory } from './s3/factory.js';

register('file', fileStoreFactory);
register('rbd', rbdStoreFactory);
register('swift', swiftStoreFactory);
register('s3', s3StoreFactory);
