/**
 * The task repository: all SQL of tasks (Glance's `tasks` + `task_info`, one row here) and of
 * the image changes that must commit together with a task's (the import's status change,
 * its os_glance_* properties and `uploads` row). Claiming is a lease: a row whose
 * `lease_until` has passed belongs to nobody. PostgreSQL and MariaDB (10.6+, SKIP LOCKED)
 * pick the row with `SELECT … FOR UPDATE SKIP LOCKED`, so nodes polling at once take
 * different tasks; on every database the claim itself is a compare-and-set on the lease
 * (SQLite has one writer at a time, and two processes on one file cannot both win it).
 * Nodes' heartbeats (api_nodes) decide which stage hosts' tasks other nodes may claim.
 */
import type { ExpressionBuilder, Transaction } from 'kysely';
import type { Db } from '../db/connect.js';
import { insertIgnore } from '../db/insert-ignore.js';
import { num, type Database, type TasksTable } from '../db/schema.js';
import { badRequest } from '../http.js';
import { now } from '../identity.js';
import { setProperties, type Viewer } from './images.js';

export type TaskStatus = 'pending' | 'processing' | 'success' | 'failure';
export const TASK_STATUSES: readonly TaskStatus[] = ['pending', 'processing', 'success', 'failure'];

export interface TaskRecord {
  id: string; type: string; status: TaskStatus; owner: string | null; image_id: string | null;
  request_id: string | null; user_id: string | null;
  input: Record<string, unknown> | null; result: Record<string, unknown> | null; message: string;
  expires_at: string | null; created_at: string; updated_at: string;
  node: string | null; lease_until: number | null; progress: number; attempts: number;
  /** The worker_self_reference_url of the one node that may run the task (a glance-direct import's stage host); null: any node. */
  stage_host: string | null;
}

/** A new task: pending, nobody's (`stage_host`: only that node claims it). */
export type NewTask = Pick<TaskRecord, 'id' | 'type' | 'owner' | 'image_id' | 'request_id' | 'user_id' | 'input'> & { stage_host?: string | null };

/** Image changes committed with a task change: a status move (from one of `from`), properties to set or (null) remove. */
export interface ImageChange {
  id: string;
  status?: { from: string[]; to: string };
  /** Compare-and-set on the image's revision (the request that starts an import). */
  revision?: number;
  properties?: Record<string, string | null>;
  /** Formats the import changed (image_conversion), or put back. */
  formats?: { disk_format: string; container_format: string };
  /** Record `node` writing `tempKey` for the image (replacing earlier rows), or drop its rows. */
  upload?: { node: string; tempKey: string } | 'release';
}

/** Sort keys Glance's task list accepts. */
const SORT_KEYS = ['created_at', 'updated_at', 'id', 'status', 'type', 'owner', 'expires_at'] as const;
type SortKey = typeof SORT_KEYS[number];

type Tx = Transaction<Database>;

function record(r: TasksTable): TaskRecord {
  const json = (s: string | null) => (s ? JSON.parse(s) as Record<string, unknown> : null);
  return {
    id: r.id, type: r.type, status: r.status as TaskStatus, owner: r.owner, image_id: r.image_id,
    request_id: r.request_id, user_id: r.user_id, input: json(r.input), result: json(r.result), message: r.message ?? '',
    expires_at: r.expires_at, created_at: r.created_at, updated_at: r.updated_at,
    node: r.node, lease_until: num(r.lease_until), progress: num(r.progress) ?? 0, attempts: r.attempts, stage_host: r.stage_host ?? null,
  };
}

/**
 * The claim's filter by stage host: a task tied to none, or to this node (`stageHost`), or to a
 * stage host that is not running — whose heartbeat is not among `alive` (it died before it
 * claimed the task, or while it ran it, or stopped and has not come back within a lease):
 * another node takes it to fail it, rather than it waiting forever. A task whose stage host
 * runs is that node's alone, even when the node lost its lease or gave the task back.
 */
function claimableHere(eb: ExpressionBuilder<Database, 'tasks'>, stageHost: string | undefined, alive: string[]) {
  return eb.or([
    eb('stage_host', 'is', null),
    ...(stageHost ? [eb('stage_host', '=', stageHost)] : []),
    alive.length ? eb('stage_host', 'not in', alive) : eb('stage_host', 'is not', null),
  ]);
}

/** Names the claim's temporary data key(s) for its upload row, told the temp_key columns of the rows it replaces. */
export type ClaimUpload = (claimed: TaskRecord, replaced: string[]) => string;

export class TaskRepo {
  constructor(private readonly db: Db) {}
  private get k() { return this.db.kysely; }

  /**
   * Apply `change` to its image inside `tx`; false when the image is not (or no longer) in a
   * status the change starts from, or changed since `revision`.
   */
  private async changeImage(tx: Tx, change: ImageChange): Promise<boolean> {
    const ts = now();
    let q = tx.updateTable('images').set((eb) => ({
      updated_at: ts, revision: eb('revision', '+', 1),
      ...(change.status ? { status: change.status.to } : {}),
      ...(change.formats ?? {}),
    })).where('id', '=', change.id).where('deleted', '=', 0);
    if (change.status) q = q.where('status', 'in', change.status.from);
    if (change.revision !== undefined) q = q.where('revision', '=', change.revision);
    const r = await q.executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return false;
    await setProperties(tx, change.id, change.properties ?? {});
    if (change.upload) await tx.deleteFrom('uploads').where('image_id', '=', change.id).execute();
    if (change.upload && change.upload !== 'release') {
      await tx.insertInto('uploads').values({ image_id: change.id, node: change.upload.node, temp_key: change.upload.tempKey, started_at: ts }).execute();
    }
    return true;
  }

  /** Apply an image change on its own (a step of a running task); false when the image is not in a status it starts from. */
  updateImage(change: ImageChange): Promise<boolean> {
    return this.k.transaction().execute((tx) => this.changeImage(tx, change));
  }

  /** A new task and the image change that starts it, in one transaction; false (nothing written) when the image changed first. */
  async create(task: NewTask, image?: ImageChange): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      if (image && !(await this.changeImage(tx, image))) return false;
      const ts = now();
      await tx.insertInto('tasks').values({
        ...task, stage_host: task.stage_host ?? null, input: task.input ? JSON.stringify(task.input) : null, status: 'pending', result: null, message: '',
        expires_at: null, created_at: ts, updated_at: ts, deleted: 0, deleted_at: null, node: null, lease_until: null, progress: 0, attempts: 0,
      }).execute();
      return true;
    });
  }

  async get(id: string): Promise<TaskRecord | undefined> {
    const row = await this.k.selectFrom('tasks').selectAll().where('id', '=', id).where('deleted', '=', 0).executeTakeFirst();
    return row && record(row);
  }

  /**
   * Take one runnable task (pending, or processing with its lease run out) for `node` until
   * `leaseUntil`; `upload` names the temporary data key(s) its image's upload row records
   * (taken in the same transaction, so a sweep on another node never deletes it), and is told
   * the keys of the rows it replaces: an earlier run's, whose node died mid-write.
   * `stageHost` is the node's worker_self_reference_url: a task tied to a stage host is
   * claimed by that node only — by another only when that stage host's heartbeat ran out
   * (beat()), so that the task is failed rather than left forever.
   */
  async claim(node: string, nowMs: number, leaseUntil: number, upload: ClaimUpload, stageHost?: string): Promise<TaskRecord | undefined> {
    // (read before the claim, on its own: a locking read would skip a heartbeat row being renewed)
    const alive = await this.aliveStageHosts(nowMs);
    if (this.db.dialect === 'sqlite') return this.claimSqlite(node, nowMs, leaseUntil, upload, stageHost, alive);
    for (;;) {
      const outcome = await this.k.transaction().execute(async (tx): Promise<TaskRecord | 'raced' | undefined> => {
        let q = tx.selectFrom('tasks').selectAll()
          .where('deleted', '=', 0).where('status', 'in', ['pending', 'processing'])
          .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', nowMs)]))
          .where((eb) => claimableHere(eb, stageHost, alive))
          .orderBy('created_at').orderBy('id').limit(1);
        if (this.db.dialect !== 'sqlite') q = q.forUpdate().skipLocked();
        const row = await q.executeTakeFirst();
        if (!row) return undefined;
        // The compare-and-set that makes the claim exclusive where no row lock was taken.
        const r = await tx.updateTable('tasks').set((eb) => ({
          status: 'processing', node, lease_until: leaseUntil, progress: 0, attempts: eb('attempts', '+', 1), updated_at: now(),
        })).where('id', '=', row.id).where('attempts', '=', row.attempts).where('status', 'in', ['pending', 'processing'])
          .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', nowMs)])).executeTakeFirst();
        if (Number(r.numUpdatedRows) !== 1) return 'raced';
        const claimed = record({ ...row, status: 'processing', node, lease_until: leaseUntil, progress: 0, attempts: row.attempts + 1 });
        if (row.image_id) {
          await this.replaceUpload(tx, claimed, node, upload);
        }
        return claimed;
      });
      if (outcome !== 'raced') return outcome;
    }
  }

  /**
   * SQLite: the transaction's first statement is the claiming UPDATE (picking the row in a
   * subquery), so it takes the write lock at once — a transaction that read first and then
   * wrote would fail with SQLITE_BUSY when another process (a second node on the same file)
   * wrote in between, whatever the busy timeout.
   */
  private claimSqlite(node: string, nowMs: number, leaseUntil: number, upload: ClaimUpload, stageHost: string | undefined, alive: string[]): Promise<TaskRecord | undefined> {
    return this.k.transaction().execute(async (tx) => {
      const runnable = tx.selectFrom('tasks').select('id')
        .where('deleted', '=', 0).where('status', 'in', ['pending', 'processing'])
        .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', nowMs)]))
        .where((eb) => claimableHere(eb, stageHost, alive))
        .orderBy('created_at').orderBy('id').limit(1);
      const row = await tx.updateTable('tasks').set((eb) => ({
        status: 'processing', node, lease_until: leaseUntil, progress: 0, attempts: eb('attempts', '+', 1), updated_at: now(),
      })).where('id', '=', runnable).returningAll().executeTakeFirst();
      if (!row) return undefined;
      const claimed = record(row);
      if (row.image_id) {
        await this.replaceUpload(tx, claimed, node, upload);
      }
      return claimed;
    });
  }

  /** The claim's upload row for the task's image, in place of the earlier run's (whose temp_key columns `upload` is told). */
  private async replaceUpload(tx: Tx, claimed: TaskRecord, node: string, upload: ClaimUpload): Promise<void> {
    const imageId = claimed.image_id!;
    const replaced = (await tx.selectFrom('uploads').select('temp_key').where('image_id', '=', imageId).execute()).map((r) => r.temp_key);
    await tx.deleteFrom('uploads').where('image_id', '=', imageId).execute();
    await tx.insertInto('uploads').values({ image_id: imageId, node, temp_key: upload(claimed, replaced), started_at: now() }).execute();
  }

  /**
   * `node`'s heartbeat, with its worker_self_reference_url (`url`, if any): it counts as running
   * until `aliveUntil` (ms). Returns whether its last one had run out before this beat (other
   * nodes may have failed its staged imports and put back its uploads meanwhile).
   */
  async beat(node: string, url: string | null, nowMs: number, aliveUntil: number): Promise<boolean> {
    const before = await this.k.selectFrom('api_nodes').select('alive_until').where('node', '=', node).executeTakeFirst();
    const r = await this.k.updateTable('api_nodes').set({ url, alive_until: aliveUntil }).where('node', '=', node).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) {
      await insertIgnore(this.db, 'api_nodes', { node, url, alive_until: aliveUntil });
      await this.k.updateTable('api_nodes').set({ url, alive_until: aliveUntil }).where('node', '=', node).execute();
    }
    return before !== undefined && num(before.alive_until)! < nowMs;
  }

  /** The worker_self_reference_urls of the nodes whose heartbeat has not run out at `nowMs`. */
  async aliveStageHosts(nowMs: number): Promise<string[]> {
    const rows = await this.k.selectFrom('api_nodes').select('url').where('alive_until', '>=', nowMs).where('url', 'is not', null).execute();
    return rows.map((r) => r.url!);
  }

  /** Extend `node`'s lease and record progress (and the message showing it); false when the node no longer holds it (it ran out and another node took the task). */
  async renew(id: string, node: string, leaseUntil: number, progress: number, message?: string): Promise<boolean> {
    const r = await this.k.updateTable('tasks').set({ lease_until: leaseUntil, progress, ...(message === undefined ? {} : { message }), updated_at: now() })
      .where('id', '=', id).where('node', '=', node).where('status', '=', 'processing').executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  /** Give the task back (this node stops): any node may claim it at once. */
  async release(id: string, node: string): Promise<void> {
    await this.k.updateTable('tasks').set({ node: null, lease_until: 0, updated_at: now() })
      .where('id', '=', id).where('node', '=', node).where('status', '=', 'processing').execute();
  }

  /** Tasks `node` was running when it stopped (a restart under the same name): released, their upload rows dropped. */
  async releaseNode(node: string): Promise<string[]> {
    return this.k.transaction().execute(async (tx) => {
      const rows = await tx.selectFrom('tasks').select(['id', 'image_id']).where('node', '=', node).where('status', '=', 'processing').execute();
      if (!rows.length) return [];
      await tx.updateTable('tasks').set({ node: null, lease_until: 0, updated_at: now() }).where('node', '=', node).where('status', '=', 'processing').execute();
      const images = rows.map((r) => r.image_id).filter((i): i is string => !!i);
      if (images.length) await tx.deleteFrom('uploads').where('image_id', 'in', images).where('node', '=', node).execute();
      return rows.map((r) => r.id);
    });
  }

  /**
   * End the task (success or failure) with its image's change, in one transaction. With
   * `node`, only while that node holds the task; false when it does not.
   */
  async finish(id: string, node: string | null, outcome: { status: 'success' | 'failure'; result: Record<string, unknown> | null; message: string; expiresAt: string }, image?: ImageChange): Promise<boolean> {
    return this.k.transaction().execute(async (tx) => {
      let q = tx.updateTable('tasks').set({
        status: outcome.status, result: outcome.result ? JSON.stringify(outcome.result) : null, message: outcome.message,
        expires_at: outcome.expiresAt, node: null, lease_until: null, updated_at: now(),
      }).where('id', '=', id).where('status', 'in', ['pending', 'processing']);
      if (node !== null) q = q.where('node', '=', node);
      const r = await q.executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
      // (the image may be gone or already moved on: the task's end is recorded regardless)
      if (image) await this.changeImage(tx, image);
      return true;
    });
  }

  /** Glance's task list: filters (status, type), sort, keyset paging by marker; only the viewer's own unless admin; expired tasks are gone. */
  async list(viewer: Viewer, q: { status?: string; type?: string; sortKey: string; sortDir: 'asc' | 'desc'; marker?: string; limit: number }): Promise<TaskRecord[]> {
    if (!(SORT_KEYS as readonly string[]).includes(q.sortKey)) throw badRequest(`Invalid sort key: ${q.sortKey}. You cannot sort by it.`);
    const key = q.sortKey as SortKey;
    let sel = this.visible(viewer);
    if (q.status) sel = sel.where('status', '=', q.status);
    if (q.type) sel = sel.where('type', '=', q.type);
    if (q.marker) {
      const m = await this.visible(viewer).selectAll().where('id', '=', q.marker).executeTakeFirst();
      if (!m) throw badRequest(`Unable to find task ${q.marker}`);
      const op = q.sortDir === 'desc' ? '<' : '>';
      const mv = m[key];
      sel = sel.where((eb) => eb.or([
        eb(key, op, mv as never),
        eb.and([eb(key, '=', mv as never), eb('id', op, m.id)]),
      ]));
    }
    const rows = await sel.selectAll().orderBy(key, q.sortDir).orderBy('id', q.sortDir).limit(q.limit).execute();
    return rows.map(record);
  }

  /** The image's tasks the viewer may see (Glance's tasks_get_by_image), oldest first. */
  async ofImage(viewer: Viewer, imageId: string): Promise<TaskRecord[]> {
    const rows = await this.visible(viewer).selectAll().where('image_id', '=', imageId).orderBy('created_at').orderBy('id').execute();
    return rows.map(record);
  }

  private visible(viewer: Viewer) {
    let sel = this.k.selectFrom('tasks').where('deleted', '=', 0)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>=', now())]));
    if (!viewer.isAdmin) sel = sel.where((eb) => eb.or([eb('owner', '=', viewer.projectId ?? ''), eb('owner', 'is', null)]));
    return sel;
  }

  /**
   * Glance's usage counters for a project (glance/db/sqlalchemy/api.py): bytes of its
   * images, its images, and those being written (saving, uploading, importing) — with their
   * ids, whose staged data the caller measures.
   */
  async usage(owner: string): Promise<{ stored: number; images: number; writing: { id: string; status: string }[] }> {
    const row = await this.k.selectFrom('images')
      .select((eb) => [eb.fn.sum<number | string | null>('size').as('stored'), eb.fn.countAll<number | string>().as('images')])
      .where('owner', '=', owner).where('deleted', '=', 0).executeTakeFirstOrThrow();
    const writing = await this.k.selectFrom('images').select(['id', 'status'])
      .where('owner', '=', owner).where('deleted', '=', 0).where('status', 'in', ['saving', 'uploading', 'importing']).execute();
    return { stored: Number(row.stored ?? 0), images: Number(row.images), writing };
  }
}
