/** Helpers of the delayed-delete tests: the store's file of an image, its row, `diskhub scrub`'s environment. */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { api, type TestService } from './helpers.js';

export const exists = (path: string) => access(path).then(() => true, () => false);
export const dataFile = (svc: TestService, id: string) => join(svc.dataDir, 'images', id);
export const scrubEnv = (svc: TestService, env: Record<string, string> = {}) => ({ ...process.env, DISKHUB_DATA_DIR: svc.dataDir, DISKHUB_LOG_LEVEL: 'silent', ...env });
export const statusOf = async (svc: TestService, id: string) =>
  (await svc.db.kysely.selectFrom('images').select(['status', 'deleted']).where('id', '=', id).executeTakeFirst());

/** An image with `bytes` as its data, through the API. */
export async function upload(url: string, tok: string, bytes: Buffer, extra: Record<string, unknown> = {}): Promise<string> {
  const a = api(url, tok);
  const c = await a('POST', '/v2/images', { body: { name: 'x', disk_format: 'raw', container_format: 'bare', ...extra } });
  assert.equal(c.status, 201, c.text);
  const u = await a('PUT', `/v2/images/${c.json.id}/file`, { raw: bytes });
  assert.equal(u.status, 204, u.text);
  return c.json.id;
}
