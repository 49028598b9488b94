/**
 * A store's failure as the API answers it, as Glance's image_data.py maps glance_store's
 * exceptions: a full store is 413 ("Image storage media is full"), a store that cannot be
 * reached or refuses the write is 503. Messages name the store, never its credentials (the
 * store contract keeps them out of StoreError messages; they are cut here once more).
 */
import { HttpError } from '../http.js';
import { StoreError } from '../stores/store.js';
import { redactCredentials } from '../stores/credentials.js';

/** `e` as an HTTP answer when it is a store's failure (null otherwise); `what` says what was being done. */
export function storeFailure(e: unknown, storeId: string | null, what: string): HttpError | null {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (!(e instanceof StoreError) && code !== 'ENOSPC' && code !== 'EDQUOT') return null;
  const detail = redactCredentials((e as Error).message);
  const store = storeId === null ? 'The image store' : `The image store '${storeId}'`;
  if (e instanceof StoreError && e.kind !== 'full') return new HttpError(503, `${store} is unavailable (${what}): ${detail}`);
  return new HttpError(413, `Image storage media is full: ${store.slice(4).toLowerCase()}: ${detail}; no data was kept.`);
}
