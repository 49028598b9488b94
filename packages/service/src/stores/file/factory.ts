/** The file store's configuration: `path` (Glance's filesystem_store_datadir), relative to the data dir. */
import { resolve } from 'node:path';
import { stringOption, StoreConfigError, type StoreFactory } from '../registry.js';
import { FileStore } from './file-store.js';

const OPTIONS = new Set(['id', 'type', 'description', 'path']);

export const fileStoreFactory: StoreFactory = (spec, ctx) => {
  for (const k of Object.keys(spec)) if (!OPTIONS.has(k)) throw new StoreConfigError(`store '${spec.id}' (file): unknown option '${k}' (file stores take: path, description)`);
  const path = stringOption(spec, 'path', true);
  return new FileStore({ id: spec.id, dir: resolve(ctx.dataDir, path), description: stringOption(spec, 'description') });
};
