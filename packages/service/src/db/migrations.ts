/**
 * Schema migrations, in order. Kysely's Migrator records what ran (kysely_migration) and
 * takes a lock, so several API nodes starting at once migrate exactly once.
 */
import { randomUUID } from 'node:crypto';
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';
import type { Db } from './connect.js';

// Key columns are bounded VARCHARs: MariaDB cannot index TEXT without a prefix length.
const ID = 'varchar(64)';
const NAME = 'varchar(255)';
const TS = 'varchar(32)';

const TABLES = ['images', 'image_properties', 'image_tags', 'image_members', 'domains', 'projects', 'users', 'roles', 'role_assignments', 'revoked_tokens', 'settings', 'uploads'];

const migrations = (dialect: Db['dialect']): Record<string, Migration> => ({
  '0001_initial': {
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.createTable('images')
        .addColumn('id', sql`varchar(36)`, (c) => c.primaryKey())
        .addColumn('name', sql`varchar(255)`)
        .addColumn('disk_format', sql`varchar(32)`)
        .addColumn('container_format', sql`varchar(32)`)
        .addColumn('size', 'bigint')
        .addColumn('virtual_size', 'bigint')
        .addColumn('status', sql`varchar(32)`, (c) => c.notNull())
        .addColumn('visibility', sql`varchar(16)`, (c) => c.notNull())
        .addColumn('protected', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('os_hidden', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('checksum', sql`varchar(32)`)
        .addColumn('os_hash_algo', sql`varchar(64)`)
        .addColumn('os_hash_value', sql`varchar(128)`)
        .addColumn('min_disk', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('min_ram', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('owner', sql`varchar(255)`)
        .addColumn('location', sql`varchar(1024)`)
        .addColumn('store', sql`varchar(64)`)
        .addColumn('created_at', sql`varchar(32)`, (c) => c.notNull())
        .addColumn('updated_at', sql`varchar(32)`, (c) => c.notNull())
        .addColumn('revision', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('deleted', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('deleted_at', sql`varchar(32)`)
        .execute();
      await db.schema.createIndex('ix_images_owner').on('images').columns(['owner', 'deleted']).execute();
      await db.schema.createIndex('ix_images_visibility').on('images').columns(['visibility', 'deleted']).execute();
      await db.schema.createIndex('ix_images_created').on('images').columns(['created_at', 'id']).execute();

      await db.schema.createTable('image_properties')
        .addColumn('image_id', sql`varchar(36)`, (c) => c.notNull())
        .addColumn('name', sql`varchar(255)`, (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('pk_image_properties', ['image_id', 'name'])
        .execute();
      await db.schema.createTable('image_tags')
        .addColumn('image_id', sql`varchar(36)`, (c) => c.notNull())
        .addColumn('value', sql`varchar(255)`, (c) => c.notNull())
        .addPrimaryKeyConstraint('pk_image_tags', ['image_id', 'value'])
        .execute();
      await db.schema.createIndex('ix_image_tags_value').on('image_tags').column('value').execute();
      await db.schema.createTable('image_members')
        .addColumn('image_id', sql`varchar(36)`, (c) => c.notNull())
        .addColumn('member', sql`varchar(255)`, (c) => c.notNull())
        .addColumn('status', sql`varchar(20)`, (c) => c.notNull())
        .addColumn('created_at', sql`varchar(32)`, (c) => c.notNull())
        .addColumn('updated_at', sql`varchar(32)`, (c) => c.notNull())
        .addPrimaryKeyConstraint('pk_image_members', ['image_id', 'member'])
        .execute();
      await db.schema.createIndex('ix_image_members_member').on('image_members').column('member').execute();

      await db.schema.createTable('domains')
        .addColumn('id', sql.raw(ID), (c) => c.primaryKey())
        .addColumn('name', sql.raw(NAME), (c) => c.notNull().unique())
        .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('description', 'text')
        .execute();
      await db.schema.createTable('projects')
        .addColumn('id', sql.raw(ID), (c) => c.primaryKey())
        .addColumn('name', sql.raw(NAME), (c) => c.notNull())
        .addColumn('domain_id', sql.raw(ID), (c) => c.notNull())
        .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('description', 'text')
        .addColumn('created_at', sql.raw(TS), (c) => c.notNull())
        .addUniqueConstraint('uq_projects_domain_name', ['domain_id', 'name'])
        .execute();
      await db.schema.createTable('users')
        .addColumn('id', sql.raw(ID), (c) => c.primaryKey())
        .addColumn('name', sql.raw(NAME), (c) => c.notNull())
        .addColumn('domain_id', sql.raw(ID), (c) => c.notNull())
        .addColumn('enabled', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('password_hash', sql`varchar(512)`)
        .addColumn('default_project_id', sql.raw(ID))
        .addColumn('email', sql.raw(NAME))
        .addColumn('created_at', sql.raw(TS), (c) => c.notNull())
        .addUniqueConstraint('uq_users_domain_name', ['domain_id', 'name'])
        .execute();
      await db.schema.createTable('roles')
        .addColumn('id', sql.raw(ID), (c) => c.primaryKey())
        .addColumn('name', sql.raw(NAME), (c) => c.notNull().unique())
        .execute();
      await db.schema.createTable('role_assignments')
        .addColumn('user_id', sql.raw(ID), (c) => c.notNull())
        .addColumn('project_id', sql.raw(ID), (c) => c.notNull())
        .addColumn('role_id', sql.raw(ID), (c) => c.notNull())
        .addPrimaryKeyConstraint('pk_role_assignments', ['user_id', 'project_id', 'role_id'])
        .execute();
      await db.schema.createTable('revoked_tokens')
        .addColumn('audit_id', sql.raw(ID), (c) => c.primaryKey())
        .addColumn('expires_at', sql.raw(TS), (c) => c.notNull())
        .execute();
      await db.schema.createTable('settings')
        .addColumn('name', sql.raw(NAME), (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createTable('uploads')
        .addColumn('image_id', sql`varchar(36)`, (c) => c.primaryKey())
        .addColumn('node', sql.raw(NAME), (c) => c.notNull())
        .addColumn('temp_key', sql`varchar(1024)`, (c) => c.notNull())
        .addColumn('started_at', sql.raw(TS), (c) => c.notNull())
        .execute();
      if (dialect === 'postgres') {
        // Sort names by code point whatever locale the cluster was created with (as the others do).
        await sql`ALTER TABLE images ALTER COLUMN name TYPE varchar(255) COLLATE "C"`.execute(db);
      }
      if (dialect === 'mysql') {
        // Names, tags and ids compare exactly (as on SQLite and PostgreSQL), not case-folded.
        for (const t of TABLES) await sql`ALTER TABLE ${sql.table(t)} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`.execute(db);
      }
    },
  },
  '0002_metadefs': {
    // Metadata definitions: a namespace and everything in it (properties, objects, tags,
    // resource type associations) is one JSON document, read and replaced as a whole under a
    // revision check; resource types are shared by name.
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.createTable('metadef_namespaces')
        .addColumn('namespace', sql.raw(NAME), (c) => c.primaryKey())
        .addColumn('owner', sql.raw(NAME))
        .addColumn('visibility', sql`varchar(16)`, (c) => c.notNull())
        .addColumn('protected', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('display_name', 'text')
        .addColumn('description', 'text')
        .addColumn('document', 'text', (c) => c.notNull())
        .addColumn('created_at', sql.raw(TS), (c) => c.notNull())
        .addColumn('updated_at', sql.raw(TS), (c) => c.notNull())
        .addColumn('revision', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createTable('metadef_resource_types')
        .addColumn('name', sql.raw(NAME), (c) => c.primaryKey())
        .addColumn('protected', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', sql.raw(TS), (c) => c.notNull())
        .addColumn('updated_at', sql.raw(TS), (c) => c.notNull())
        .execute();
      if (dialect === 'mysql') {
        for (const t of ['metadef_namespaces', 'metadef_resource_types']) await sql`ALTER TABLE ${sql.table(t)} CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`.execute(db);
      }
    },
  },
  '0003_identity_lockout_revocation': {
    // Keystone's lockout counters (local_user.failed_auth_count / failed_auth_at), the instant
    // before which a user's tokens are revoked (password change, disable), and the identity
    // epoch every API node compares its token cache against (any identity change bumps it).
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.alterTable('users').addColumn('failed_auth_count', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable('users').addColumn('failed_auth_at', 'bigint').execute();
      await db.schema.alterTable('users').addColumn('tokens_revoked_before', 'bigint').execute();
    },
  },
  '0004_image_locations': {
    // Several locations per image, as Glance's image_locations keeps them (multi-store: one per
    // store holding a copy, in the order downloads try them). The images' location/store
    // columns move here; a bare key (written before locations were URLs) is kept as it is and
    // rewritten as its file store's URL at start, where the store's directory is known.
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.createTable('image_locations')
        .addColumn('id', sql`varchar(36)`, (c) => c.primaryKey())
        .addColumn('image_id', sql`varchar(36)`, (c) => c.notNull())
        .addColumn('url', 'text', (c) => c.notNull())
        .addColumn('store_id', sql`varchar(64)`)
        .addColumn('status', sql`varchar(30)`, (c) => c.notNull())
        .addColumn('metadata', 'text', (c) => c.notNull())
        .addColumn('position', 'integer', (c) => c.notNull())
        .addColumn('created_at', sql.raw(TS), (c) => c.notNull())
        .addColumn('updated_at', sql.raw(TS), (c) => c.notNull())
        .execute();
      await db.schema.createIndex('ix_image_locations_image_id').on('image_locations').column('image_id').execute();
      if (dialect === 'mysql') await sql`ALTER TABLE image_locations CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`.execute(db);
      const rows = await db.selectFrom('images').select(['id', 'location', 'store', 'updated_at']).where('location', 'is not', null).where('deleted', '=', 0).execute();
      for (const r of rows) {
        await db.insertInto('image_locations').values({
          id: randomUUID(), image_id: r.id, url: r.location, store_id: r.store ?? 'file', status: 'active',
          metadata: JSON.stringify({ store: r.store ?? 'file' }), position: 0, created_at: r.updated_at, updated_at: r.updated_at,
        }).execute();
      }
      await db.schema.alterTable('images').dropColumn('location').execute();
      await db.schema.alterTable('images').dropColumn('store').execute();
    },
  },
  '0005_tasks': {
    // Glance's tasks + task_info in one row, plus the lease a worker holds while it runs the
    // task (node, lease_until in ms since the epoch, bytes done): a task whose lease has run
    // out belongs to no live node, and any API node may claim it (domain/tasks.ts).
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.createTable('tasks')
        .addColumn('id', sql`varchar(36)`, (c) => c.primaryKey())
        .addColumn('type', sql`varchar(32)`, (c) => c.notNull())
        .addColumn('status', sql`varchar(32)`, (c) => c.notNull())
        .addColumn('owner', sql.raw(NAME))
        .addColumn('image_id', sql`varchar(36)`)
        .addColumn('request_id', sql.raw(NAME))
        .addColumn('user_id', sql.raw(ID))
        .addColumn('input', 'text')
        .addColumn('result', 'text')
        .addColumn('message', 'text')
        .addColumn('expires_at', sql.raw(TS))
        .addColumn('created_at', sql.raw(TS), (c) => c.notNull())
        .addColumn('updated_at', sql.raw(TS), (c) => c.notNull())
        .addColumn('deleted', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('deleted_at', sql.raw(TS))
        .addColumn('node', sql.raw(NAME))
        .addColumn('lease_until', 'bigint')
        .addColumn('progress', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex('ix_tasks_runnable').on('tasks').columns(['status', 'lease_until']).execute();
      await db.schema.createIndex('ix_tasks_image').on('tasks').column('image_id').execute();
      await db.schema.createIndex('ix_tasks_owner').on('tasks').columns(['owner', 'created_at']).execute();
      if (dialect === 'mysql') await sql`ALTER TABLE tasks CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`.execute(db);
    },
  },
  '0006_image_scrubs': {
    // Delayed delete (Glance's delayed_delete): the lease a scrubber holds on a pending_delete
    // image while it removes the data, so two API nodes (or a `diskhub scrub`) never scrub the
    // same image at once, one that died is taken over when its lease runs out, and an image
    // whose data a scrubber has begun to remove is never restored.
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.createTable('image_scrubs')
        .addColumn('image_id', sql`varchar(36)`, (c) => c.primaryKey())
        .addColumn('node', sql.raw(NAME), (c) => c.notNull())
        .addColumn('lease_until', 'bigint', (c) => c.notNull())
        .addColumn('started_at', sql.raw(TS), (c) => c.notNull())
        .execute();
      if (dialect === 'mysql') await sql`ALTER TABLE image_scrubs CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`.execute(db);
    },
  },
  '0007_upload_temp_key_text': {
    // An import into several stores records one temporary key per store, joined, in one
    // uploads row: more than varchar(1024) holds for enough stores. SQLite does not enforce
    // varchar lengths; PostgreSQL and MariaDB widen the column to text (it is not indexed).
    async up(db: Kysely<any>): Promise<void> {
      if (dialect === 'postgres') await sql`ALTER TABLE uploads ALTER COLUMN temp_key TYPE text`.execute(db);
      if (dialect === 'mysql') await sql`ALTER TABLE uploads MODIFY temp_key text CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL`.execute(db);
    },
  },
  '0008_task_stage_host': {
    // The stage host of a glance-direct import (the os_glance_stage_host of its image, the
    // worker_self_reference_url of the node holding the staged data): only that node claims
    // the task (domain/tasks.ts). Null: any node may.
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.alterTable('tasks').addColumn('stage_host', 'text').execute();
    },
  },
  '0009_api_nodes': {
    // Each API node's heartbeat (its name, its worker_self_reference_url if any, until when it
    // counts as running, ms). A task tied to a stage host whose heartbeat ran out is no longer
    // that node's alone — another node claims it to fail it (domain/tasks.ts), instead of it
    // waiting forever for a node that died before it claimed the task; an upload or a staging
    // a dead node was writing is put back to queued by another node (domain/image-data.ts).
    async up(db: Kysely<any>): Promise<void> {
      await db.schema.createTable('api_nodes')
        .addColumn('node', sql.raw(NAME), (c) => c.primaryKey())
        .addColumn('url', sql`varchar(512)`)
        .addColumn('alive_until', 'bigint', (c) => c.notNull())
        .execute();
      if (dialect === 'mysql') await sql`ALTER TABLE api_nodes CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`.execute(db);
    },
  },
});

/** Bring the schema to the latest migration (or, for upgrade tests, to `target`). */
export async function migrate(db: Db, target?: string): Promise<void> {
  const migrator = new Migrator({ db: db.kysely, provider: { getMigrations: async () => migrations(db.dialect) } satisfies MigrationProvider });
  const { error, results } = await (target === undefined ? migrator.migrateToLatest() : migrator.migrateTo(target));
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${(error as Error).message ?? error}`, { cause: error });
  }
}
