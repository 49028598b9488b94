/**
 * The stores a service configuration names (one file store `file` in <data dir>/images
 * without configuration), built with every builtin store type registered and initialised:
 * a store that cannot be used stops the caller before anything else is opened.
 */
import './builtin.js';
import { StoreSet, buildStore } from './registry.js';
import type { ServiceConfig } from '../config.js';

export async function openConfiguredStores(cfg: Pick<ServiceConfig, 'stores' | 'defaultStore' | 'dataDir'>): Promise<StoreSet> {
  const stores = new StoreSet(cfg.stores.map((spec) => buildStore(spec, { dataDir: cfg.dataDir })), cfg.defaultStore);
  await stores.init();
  return stores;
}
