/**
 * The configured stores as the Images API shows them: /v2/info/stores (anyone) and its admin
 * detail (Glance 25's InfoController.get_stores / get_stores_detail, with the properties its
 * per-type mappers print — each store's Store.detail(), which never holds a credential).
 */
import type { AuthContext } from '../identity.js';
import { DiscoveryApiPolicy, type Policy } from '../policy/index.js';
import type { StoreSet } from '../stores/registry.js';
import { credentials } from './images.js';
import { publicDetail } from '../stores/credentials.js';

export interface StoreInfoEntry { id: string; description?: string; default?: 'true'; type?: string; properties?: Record<string, unknown> }

export class StoreInfo {
  constructor(private readonly stores: StoreSet, private readonly policy: Policy) {}

  /** Every store: its id, its description when it has one, and "default": "true" on the default only (Glance's strings). */
  list(): { stores: StoreInfoEntry[] } {
    return {
      stores: this.stores.all.map((s) => {
        const entry: StoreInfoEntry = { id: s.id };
        if (s.description) entry.description = s.description;
        if (s === this.stores.default) entry.default = 'true';
        return entry;
      }),
    };
  }

  /** The list with each store's type and properties (policy stores_info_detail: admins by default). */
  detail(a: AuthContext): { stores: StoreInfoEntry[] } {
    new DiscoveryApiPolicy(this.policy, credentials(a)).storesInfoDetail();
    const { stores } = this.list();
    return { stores: stores.map((e) => {
      const store = this.stores.get(e.id)!;
      return { ...e, type: store.type, properties: publicDetail(store.detail()) };
    }) };
  }

  /** The store ids for the OpenStack-image-store-ids header. */
  ids(): string {
    return this.stores.ids().join(',');
  }
}
