/**
 * The rpm sqlite database reader of OS inspection (inspect-os/sqlite.ts, rpm.ts) against a
 * database made by rpmbuild and `rpm --justdb` and listed by `rpm -qa`; and hostile copies
 * of it (random byte flips, a b-tree page pointing at itself) giving DiskErrors only.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, rpmDatabase } from '@diskhub/testkit';
import { DiskError, readRpmSqlite } from '../src/index.js';
import { SqliteFile } from '../src/inspect-os/sqlite.js';

const memoryRead = (b: Uint8Array) => async (offset: number, length: number) => b.subarray(offset, Math.min(b.length, offset + length));

function asText(p: { name: string; version: string; arch: string | null }[]): string[] {
  return p.map((x) => `${x.name} ${x.version} ${x.arch}`).sort();
}

test('rpmdb.sqlite: the packages rpm -qa lists, and mutated databases give DiskErrors only', needs('rpm', 'rpmbuild'), async (t) => {
  const dir = await tempDir(t);
  const dbpath = join(dir, 'db');
  await mkdir(dbpath);
  const oracle = await rpmDatabase(dir, dbpath, 120);
  const db = await readFile(join(dbpath, 'rpmdb.sqlite'));
  assert.deepEqual(asText(await readRpmSqlite(memoryRead(db), db.length)), oracle);

  // A page pointing at itself: the Packages b-tree root (an interior page: 121 rows of headers do not fit one page) made its own right child.
  const root = (await (await SqliteFile.open(memoryRead(db), db.length)).tableRoot('Packages'))!;
  const at = (root - 1) * db.readUInt16BE(16);
  assert.equal(db[at], 0x05, 'the Packages root is an interior table page');
  const looped = Buffer.from(db);
  looped.writeUInt32BE(root, at + 8);
  await assert.rejects(readRpmSqlite(memoryRead(looped), looped.length), (e: unknown) => e instanceof DiskError && e.code === 'ECORRUPT' && /reached twice/.test(e.message));

  // A cell count larger than the page holds.
  const tooMany = Buffer.from(db);
  tooMany.writeUInt16BE(0xffff, at + 3);
  await assert.rejects(readRpmSqlite(memoryRead(tooMany), tooMany.length), (e: unknown) => e instanceof DiskError && /cells do not fit the page/.test(e.message));

  // Random damage: a result or a DiskError, never another exception.
  let rng = 12345;
  const rand = (n: number) => { rng = (rng * 1103515245 + 12345) & 0x7fffffff; return rng % n; };
  let errors = 0;
  for (let i = 0; i < 300; i++) {
    const bad = Buffer.from(db);
    for (let k = 0, flips = 1 + rand(8); k < flips; k++) bad[i < 100 ? rand(4 * 4096) : rand(bad.length)] = rand(256);
    const len = i % 10 === 0 ? rand(bad.length) : bad.length;
    try {
      await readRpmSqlite(memoryRead(bad.subarray(0, len)), len);
    } catch (e) {
      if (!(e instanceof DiskError)) throw e;
      errors++;
    }
  }
  assert.ok(errors > 0);
});
