/**
 * All SQL of the metadata definitions: a namespace and everything in it is one JSON document
 * (replaced as a whole under a revision check); resource types are shared by name.
 */
import type { Db } from '../db/connect.js';
import { insertIgnore } from '../db/insert-ignore.js';
import type { MetadefNamespacesTable, MetadefResourceTypesTable } from '../db/schema.js';

export type NamespaceRow = MetadefNamespacesTable;
export type ResourceTypeRow = MetadefResourceTypesTable;
const SEEDED = 'metadefs_seeded';

export class MetadefRepo {
  constructor(private readonly db: Db) {}
  private get k() { return this.db.kysely; }

  async isSeeded(): Promise<boolean> {
    return !!(await this.k.selectFrom('settings').select('name').where('name', '=', SEEDED).executeTakeFirst());
  }
  markSeeded(at: string): Promise<void> { return insertIgnore(this.db, 'settings', { name: SEEDED, value: at }); }

  namespace(name: string): Promise<NamespaceRow | undefined> {
    return this.k.selectFrom('metadef_namespaces').selectAll().where('namespace', '=', name).executeTakeFirst();
  }
  namespaces(): Promise<NamespaceRow[]> { return this.k.selectFrom('metadef_namespaces').selectAll().execute(); }

  /** Inserts a namespace; false when the name is taken. */
  async insertNamespace(row: NamespaceRow): Promise<boolean> {
    if (await this.namespace(row.namespace)) return false;
    try { await this.k.insertInto('metadef_namespaces').values(row).execute(); return true; } catch {
      if (await this.namespace(row.namespace)) return false;
      throw new Error(`cannot store metadata definition namespace ${row.namespace}`);
    }
  }
  /** Seeds a standard namespace unless another node did. */
  ensureNamespace(row: NamespaceRow): Promise<void> { return insertIgnore(this.db, 'metadef_namespaces', row); }

  /** Replaces a namespace's row fields if it is still at `revision`; false when someone changed it first. */
  async updateNamespace(name: string, revision: number, set: Partial<Omit<NamespaceRow, 'revision' | 'created_at'>>): Promise<boolean> {
    const r = await this.k.updateTable('metadef_namespaces').set({ ...set, revision: revision + 1 })
      .where('namespace', '=', name).where('revision', '=', revision).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async deleteNamespace(name: string): Promise<void> { await this.k.deleteFrom('metadef_namespaces').where('namespace', '=', name).execute(); }

  resourceTypes(): Promise<ResourceTypeRow[]> { return this.k.selectFrom('metadef_resource_types').selectAll().orderBy('name').execute(); }
  ensureResourceType(name: string, isProtected: boolean, at: string): Promise<void> {
    return insertIgnore(this.db, 'metadef_resource_types', { name, protected: isProtected ? 1 : 0, created_at: at, updated_at: at });
  }
}
