/**
 * The configured stores (Glance's enabled_backends): a registry of store types, each a factory
 * that builds a store from its configuration, and the set of stores the service runs with, one
 * of them the default (Glance's default_backend).
 *
 * A store type plugs in with one line in builtin.ts:
 *
 *     register('rbd', (spec, ctx) => new RbdStore(...spec options...));
 *
 * A factory validates its options itself (StoreConfigError for anything wrong: the service does
 * not start) and never puts a credential in the store's description, detail or locations.
 */
import type { Store } from './store.js';
import { rememberCredentials } from './credentials.js';

/** One store's configuration: its id, its type and the type's own options (from the config file). */
export interface StoreSpec {
  id: string;
  type: string;
  description?: string;
  [option: string]: unknown;
}

export interface StoreContext {
  /** The service's data directory (relative file-store paths resolve against it). */
  dataDir: string;
}

export type StoreFactory = (spec: StoreSpec, ctx: StoreContext) => Store;

export class StoreConfigError extends Error {}

const factories = new Map<string, StoreFactory>();

/** Make a store type configurable (`type` is the name the configuration uses). */
export function register(type: string, factory: StoreFactory): void {
  if (factories.has(type)) throw new Error(`store type '${type}' is registered twice`);
  factories.set(type, factory);
}

export function registeredTypes(): string[] {
  return [...factories.keys()];
}

/** A string option of a store's configuration (`required`: a StoreConfigError when absent). */
export function stringOption(spec: StoreSpec, name: string, required: true): string;
export function stringOption(spec: StoreSpec, name: string, required?: false): string | undefined;
export function stringOption(spec: StoreSpec, name: string, required = false): string | undefined {
  const v = spec[name];
  if (v === undefined || v === null || v === '') {
    if (required) throw new StoreConfigError(`store '${spec.id}' (${spec.type}) needs the option '${name}'`);
    return undefined;
  }
  if (typeof v !== 'string') throw new StoreConfigError(`store '${spec.id}': option '${name}' must be a string`);
  return v;
}

/** A store id as Glance accepts backend names: letters, digits, '_' and '-' (they appear in URL paths and headers). */
const STORE_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function buildStore(spec: StoreSpec, ctx: StoreContext): Store {
  if (!STORE_ID.test(spec.id)) throw new StoreConfigError(`store id '${spec.id}' must be 1-64 letters, digits, '_' or '-'`);
  if (spec.id.startsWith('os_glance_')) throw new StoreConfigError(`store id '${spec.id}': the os_glance_ prefix is reserved`);
  const factory = factories.get(spec.type);
  if (!factory) throw new StoreConfigError(`store '${spec.id}': unknown store type '${spec.type}' (known: ${registeredTypes().join(', ')})`);
  // Credentials of the configuration are cut from every message the service writes (credentials.ts).
  rememberCredentials(spec);
  const store = factory(spec, ctx);
  rememberCredentials(store.detail());
  return store;
}

/** The stores the service runs with, in configuration order. */
export class StoreSet {
  private readonly byId: Map<string, Store>;
  readonly default: Store;

  constructor(readonly all: readonly Store[], defaultId?: string) {
    if (all.length === 0) throw new StoreConfigError('no stores are configured');
    this.byId = new Map();
    for (const s of all) {
      if (this.byId.has(s.id)) throw new StoreConfigError(`store id '${s.id}' is configured twice`);
      this.byId.set(s.id, s);
    }
    const d = defaultId === undefined ? all[0] : this.byId.get(defaultId);
    if (!d) throw new StoreConfigError(`the default store '${defaultId}' is not one of the configured stores (${this.ids().join(', ')})`);
    this.default = d;
  }

  get(id: string): Store | undefined {
    return this.byId.get(id);
  }

  ids(): string[] {
    return this.all.map((s) => s.id);
  }

  /** The store a location URL belongs to (Store.owns), if any. */
  ownerOf(url: string): Store | undefined {
    return this.all.find((s) => s.owns(url));
  }

  /** Connect every store; a store that cannot be used stops the start, naming it. */
  async init(): Promise<void> {
    for (const s of this.all) await s.init();
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all.map((s) => s.close()));
  }
}
