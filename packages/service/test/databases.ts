/**
 * Fresh databases for tests, one per test: SQLite in a temporary directory, and PostgreSQL and
 * MariaDB from .ci/services/*.sh (a new database, dropped afterwards). Without those servers a
 * test skips locally and fails under CI=true.
 */
import type { TestContext } from 'node:test';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Kysely, PostgresDialect, MysqlDialect, sql } from 'kysely';
import pg from 'pg';
import mysql from 'mysql2';
import { tempDir } from '@diskhub/testkit';

const PG_URL = process.env.DISKHUB_TEST_POSTGRES_URL ?? 'postgres://diskhub:diskhub@127.0.0.1:5432/diskhub_test';
const MYSQL_URL = process.env.DISKHUB_TEST_MYSQL_URL ?? 'mysql://diskhub:diskhub@127.0.0.1:3306/diskhub_test';

/** A database URL and how to drop it (called after the services using it are closed). */
export type Provision = (t: TestContext) => Promise<{ url: string; drop: () => Promise<void> } | null>;

/** A fresh, empty database for one test (dropped afterwards), or null when the server is not there. */
export const provisioners: Record<string, Provision> = {
  sqlite: async (t) => ({ url: `sqlite:${join(await tempDir(t), 'db.sqlite')}`, drop: async () => {} }),
  postgres: async (t) => {
    const admin = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: PG_URL, max: 1, connectionTimeoutMillis: 3000 }) }) });
    const name = `diskhub_t_${randomBytes(6).toString('hex')}`;
    try { await sql`CREATE DATABASE ${sql.id(name)}`.execute(admin); } catch (e) {
      await admin.destroy();
      return unavailable(t, 'PostgreSQL', e);
    }
    const u = new URL(PG_URL); u.pathname = `/${name}`;
    return { url: u.toString(), drop: async () => { await sql`DROP DATABASE IF EXISTS ${sql.id(name)} WITH (FORCE)`.execute(admin).catch(() => {}); await admin.destroy(); } };
  },
  mariadb: async (t) => {
    const u = new URL(MYSQL_URL);
    const pool = mysql.createPool({ host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), connectionLimit: 1, connectTimeout: 3000 });
    const admin = new Kysely<any>({ dialect: new MysqlDialect({ pool }) });
    const name = `diskhub_t_${randomBytes(6).toString('hex')}`;
    try { await sql`CREATE DATABASE ${sql.id(name)} CHARACTER SET utf8mb4`.execute(admin); } catch (e) {
      await admin.destroy();
      return unavailable(t, 'MariaDB', e);
    }
    u.pathname = `/${name}`;
    return { url: u.toString(), drop: async () => { await sql`DROP DATABASE IF EXISTS ${sql.id(name)}`.execute(admin).catch(() => {}); await admin.destroy(); } };
  },
};

function unavailable(t: TestContext, what: string, e: unknown): null {
  const msg = `${what} is not reachable (${(e as Error).message}); run .ci/services/*.sh`;
  if (process.env.CI === 'true') throw new Error(msg);
  t.skip(msg);
  return null;
}
