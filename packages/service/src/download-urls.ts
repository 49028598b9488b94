/**
 * diskhub extension: short-lived signed download URLs (as Swift's temporary URLs), so a browser
 * can hand an image download to its own download manager, which streams to disk, instead of
 * holding the whole image in page memory to attach a token header. A URL names one image and
 * an expiry at most MAX_TTL_SECONDS ahead; whoever holds it may download that image until then.
 * The key is shared by all API nodes through the database.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from './db/connect.js';
import { insertIgnore } from './identity.js';

export const MAX_TTL_SECONDS = 300;
export const EXPIRES_PARAM = 'x-diskhub-expires';
export const SIGNATURE_PARAM = 'x-diskhub-signature';

export class DownloadUrls {
  private constructor(private readonly key: Buffer) {}

  static async open(db: Db): Promise<DownloadUrls> {
    await insertIgnore(db, 'settings', { name: 'download_url_key', value: randomBytes(32).toString('base64url') });
    const row = await db.kysely.selectFrom('settings').select('value').where('name', '=', 'download_url_key').executeTakeFirstOrThrow();
    return new DownloadUrls(Buffer.from(row.value, 'base64url'));
  }

  private mac(imageId: string, expires: number): Buffer {
    return createHmac('sha256', this.key).update(`${imageId}\n${expires}`).digest();
  }

  /** The query string that authorises downloading `imageId` until `now + ttl`. */
  sign(imageId: string, ttlSeconds = MAX_TTL_SECONDS, now = Date.now()): { query: string; expires: number } {
    const expires = Math.floor(now / 1000) + Math.min(ttlSeconds, MAX_TTL_SECONDS);
    const q = new URLSearchParams({ [EXPIRES_PARAM]: String(expires), [SIGNATURE_PARAM]: this.mac(imageId, expires).toString('base64url') });
    return { query: q.toString(), expires };
  }

  /** Whether the URL's parameters authorise downloading `imageId` now. */
  verify(imageId: string, params: URLSearchParams, now = Date.now()): boolean {
    const expires = Number(params.get(EXPIRES_PARAM));
    const sig = params.get(SIGNATURE_PARAM) ?? '';
    const seconds = now / 1000;
    if (!Number.isSafeInteger(expires) || expires < seconds || expires > seconds + MAX_TTL_SECONDS + 5) return false;
    const got = Buffer.from(sig, 'base64url');
    const want = this.mac(imageId, expires);
    return got.length === want.length && timingSafeEqual(got, want);
  }
}
