/**
 * The SQL of delayed delete (Glance's scrub queue, glance/scrubber.py's ScrubDBQueue): which
 * pending_delete images are due, the lease a scrubber takes on one (image_scrubs), the end
 * of a scrub (the image becomes deleted) and an admin's restore (back to active).
 *
 * A claim and a restore both compare-and-set the image's revision, so on any of the three
 * databases exactly one of them wins; a restore also refuses an image that has a scrub row
 * at all, live or expired: its data may be partly removed.
 */
import type { Db } from '../db/connect.js';
import { num } from '../db/schema.js';
import { now } from '../identity.js';

/** A pending_delete image a scrubber holds: where its data is. */
/** A claimed image and the locations whose data the scrubber removes (image_locations rows still active). */
export interface ClaimedScrub { id: string; locations: { url: string; store_id: string | null }[] }

export type RestoreOutcome = 'restored' | 'not-found' | { status: string } | 'scrubbing';

export class ScrubRepo {
  constructor(private readonly db: Db) {}
  private get k() { return this.db.kysely; }

  /** Ids of pending_delete images deleted at or before `deletedBefore` (ISO time), oldest first. */
  async due(deletedBefore: string, limit: number): Promise<string[]> {
    const rows = await this.k.selectFrom('images').select('id').where('status', '=', 'pending_delete').where('deleted_at', '<=', deletedBefore)
      .orderBy('deleted_at').orderBy('id').limit(limit).execute();
    return rows.map((r) => r.id);
  }

  /**
   * Take the scrub lease on image `id` for `node` until `leaseUntil` (ms): false when it is
   * not pending_delete any more, or another scrubber's lease has not run out.
   */
  async claim(id: string, node: string, leaseUntil: number): Promise<ClaimedScrub | null> {
    return this.k.transaction().execute(async (tx) => {
      const img = await tx.selectFrom('images').select(['id', 'revision']).where('id', '=', id).where('status', '=', 'pending_delete').executeTakeFirst();
      if (!img) return null;
      const lease = await tx.selectFrom('image_scrubs').select('lease_until').where('image_id', '=', id).executeTakeFirst();
      const ts = Date.now();
      if (lease && num(lease.lease_until)! > ts) return null;
      // The revision bump is what a concurrent claim or restore collides on.
      const r = await tx.updateTable('images').set({ revision: img.revision + 1 })
        .where('id', '=', id).where('revision', '=', img.revision).where('status', '=', 'pending_delete').executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return null;
      if (lease) await tx.updateTable('image_scrubs').set({ node, lease_until: leaseUntil, started_at: now() }).where('image_id', '=', id).execute();
      else await tx.insertInto('image_scrubs').values({ image_id: id, node, lease_until: leaseUntil, started_at: now() }).execute();
      const locations = await tx.selectFrom('image_locations').select(['url', 'store_id']).where('image_id', '=', id).where('status', '=', 'active')
        .orderBy('position').execute();
      return { id: img.id, locations };
    });
  }

  /** Extend `node`'s lease on `id`; false when it is no longer this node's. */
  async renew(id: string, node: string, leaseUntil: number): Promise<boolean> {
    const r = await this.k.updateTable('image_scrubs').set({ lease_until: leaseUntil }).where('image_id', '=', id).where('node', '=', node).executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** End every lease `node` holds; returns how many. */
  async expireLeasesOf(node: string): Promise<number> {
    const r = await this.k.updateTable('image_scrubs').set({ lease_until: 0 }).where('node', '=', node).executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  /** The data is gone: the image becomes deleted, its properties, tags and members and its lease with it. */
  async finish(id: string): Promise<void> {
    await this.k.transaction().execute(async (tx) => {
      await tx.updateTable('images').set({ status: 'deleted', updated_at: now() }).where('id', '=', id).where('status', '=', 'pending_delete').execute();
      await tx.updateTable('image_locations').set({ status: 'deleted', updated_at: now() }).where('image_id', '=', id).where('status', '=', 'active').execute();
      await tx.deleteFrom('image_members').where('image_id', '=', id).execute();
      await tx.deleteFrom('image_tags').where('image_id', '=', id).execute();
      await tx.deleteFrom('image_properties').where('image_id', '=', id).execute();
      await tx.deleteFrom('image_scrubs').where('image_id', '=', id).execute();
    });
  }

  /** Put a pending_delete image no scrubber has touched back to active (Glance's image_restore). */
  async restore(id: string): Promise<RestoreOutcome> {
    return this.k.transaction().execute(async (tx) => {
      const img = await tx.selectFrom('images').select(['status', 'revision']).where('id', '=', id).executeTakeFirst();
      if (!img) return 'not-found';
      if (img.status !== 'pending_delete') return { status: img.status };
      if (await tx.selectFrom('image_scrubs').select('image_id').where('image_id', '=', id).executeTakeFirst()) return 'scrubbing';
      const ts = now();
      const r = await tx.updateTable('images').set({ status: 'active', deleted: 0, deleted_at: null, updated_at: ts, revision: img.revision + 1 })
        .where('id', '=', id).where('revision', '=', img.revision).where('status', '=', 'pending_delete').executeTakeFirst();
      return Number(r.numUpdatedRows) === 1 ? 'restored' : 'scrubbing';
    });
  }
}
