/**
 * One query layer (Kysely) over three databases, chosen by URL:
 *   sqlite:PATH | sqlite:///ABS/PATH | sqlite::memory:   embedded (better-sqlite3)
 *   postgres://user:pass@host:port/db                     PostgreSQL (pg)
 *   mysql://user:pass@host:port/db (or mariadb://)        MariaDB / MySQL (mysql2)
 */
import { Kysely, MysqlDialect, PostgresDialect, SqliteDialect, type Dialect, type SqliteDatabase } from 'kysely';
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Database } from './schema.js';
import { migrate } from './migrations.js';

const require = createRequire(import.meta.url);

export type DialectName = 'sqlite' | 'postgres' | 'mysql';

export interface Db {
  kysely: Kysely<Database>;
  dialect: DialectName;
  /**
   * SQLite's PRAGMA data_version: a number that changes whenever another connection (another
   * API node on the same file) commits, read from the shared WAL index without a query plan
   * or a page read. Undefined for PostgreSQL and MariaDB, which have no such counter.
   */
  dataVersion?: () => number;
  close(): Promise<void>;
}

export class DatabaseUrlError extends Error {}

export function dialectOf(url: string): DialectName {
  const scheme = url.slice(0, url.indexOf(':')).toLowerCase();
  if (scheme === 'sqlite') return 'sqlite';
  if (scheme === 'postgres' || scheme === 'postgresql') return 'postgres';
  if (scheme === 'mysql' || scheme === 'mariadb') return 'mysql';
  throw new DatabaseUrlError(`unsupported database URL '${url.replace(/\/\/[^@]*@/, '//***@')}': use sqlite:, postgres:// or mysql://`);
}

/** The file a sqlite: URL names (relative names resolve against `baseDir`). */
export function sqlitePath(url: string, baseDir: string): string {
  let rest = url.slice('sqlite:'.length);
  if (rest === ':memory:' || rest === '//:memory:') return ':memory:';
  if (rest.startsWith('///')) rest = rest.slice(2);          // sqlite:///abs → /abs
  else if (rest.startsWith('//')) rest = rest.slice(2);      // sqlite://rel  → rel
  return resolve(baseDir, rest);
}

/** Prepared statements kept per SQL text (Kysely's SQLite driver prepares every query anew). */
const STATEMENT_CACHE_SIZE = 512;

/**
 * The better-sqlite3 connection as Kysely's SqliteDialect sees it, with its statements kept:
 * preparing is a tenth of a metadata request's CPU time, and the service issues a few dozen
 * distinct statements. Least recently used ones go past STATEMENT_CACHE_SIZE (the `in (?, ?, …)`
 * lists make a text per list length); a statement still iterating is not handed out twice.
 */
function cachingStatements(conn: import('better-sqlite3').Database): SqliteDatabase {
  const cache = new Map<string, import('better-sqlite3').Statement>();
  return {
    close: () => conn.close(),
    prepare(sql: string) {
      let stmt = cache.get(sql);
      if (stmt && !stmt.busy) {
        cache.delete(sql);
      } else {
        stmt = conn.prepare(sql);
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value!);
      }
      cache.set(sql, stmt);
      return stmt;
    },
  };
}

function makeDialect(url: string, baseDir: string): { dialect: Dialect; dataVersion?: () => number } {
  const kind = dialectOf(url);
  if (kind === 'sqlite') {
    const Sqlite = require('better-sqlite3') as typeof import('better-sqlite3');
    const path = sqlitePath(url, baseDir);
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const conn = new Sqlite(path);
    // WAL lets readers run while an upload's final update commits; busy_timeout rides out
    // the short write locks another process (a second API node on the same file) holds.
    conn.pragma('journal_mode = WAL');
    conn.pragma('busy_timeout = 5000');
    conn.pragma('synchronous = NORMAL');
    const version = conn.prepare('PRAGMA data_version').pluck();
    return { dialect: new SqliteDialect({ database: cachingStatements(conn) }), dataVersion: () => version.get() as number };
  }
  if (kind === 'postgres') {
    const pg = require('pg') as typeof import('pg');
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle connection the server drops (restart, failover) must not take the process down;
    // the pool replaces it on the next query.
    pool.on('error', () => {});
    return { dialect: new PostgresDialect({ pool }) };
  }
  const mysql = require('mysql2') as typeof import('mysql2');
  const u = new URL(url.replace(/^mariadb:/i, 'mysql:'));
  return {
    dialect: new MysqlDialect({
      pool: mysql.createPool({
        host: u.hostname, port: u.port ? Number(u.port) : 3306,
        user: decodeURIComponent(u.username), password: decodeURIComponent(u.password),
        database: u.pathname.replace(/^\//, ''), connectionLimit: 10,
        supportBigNumbers: true, charset: 'utf8mb4',
      }),
    }),
  };
}

/** Connect and bring the schema up to date (`migrateTo`: only up to that migration, for upgrade tests). */
export async function openDatabase(url: string, baseDir: string, options: { migrateTo?: string } = {}): Promise<Db> {
  const { dialect, dataVersion } = makeDialect(url, baseDir);
  const kysely = new Kysely<Database>({ dialect });
  const db: Db = { kysely, dialect: dialectOf(url), ...(dataVersion ? { dataVersion } : {}), close: () => kysely.destroy() };
  try {
    await migrate(db, options.migrateTo);
  } catch (e) {
    await kysely.destroy().catch(() => {});
    throw e;
  }
  return db;
}
