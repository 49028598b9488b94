import type { Db } from './connect.js';

/** INSERT that does nothing when the row's key already exists (another node got there first). */
export async function insertIgnore(db: Db, table: any, row: object): Promise<void> {
  const q = (db.kysely as any).insertInto(table).values(row);
  if (db.dialect === 'mysql') await q.ignore().execute();
  else await q.onConflict((oc: any) => oc.doNothing()).execute();
}
