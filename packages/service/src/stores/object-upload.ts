/**
 * What the object stores (Swift, S3) share about uploads.
 *
 * Temporary keys are `<image id>.<12 hex digits>`: fresh for each upload and naming the image
 * it was begun for, so that a write can stream straight to the image's own object (which the
 * store makes visible only at commit) and a sweep after a crash knows which image an orphan
 * belonged to.
 */
import { randomBytes } from 'node:crypto';
import { StoreError, type StoreWriter } from './store.js';

export function newObjectTempKey(imageId: string): string {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(imageId)) throw new StoreError(`bad image id '${imageId}'`, 'failed');
  return `${imageId}.${randomBytes(6).toString('hex')}`;
}

/** The image id a temporary key was made for. */
export function imageIdOf(tempKey: string): string {
  const m = /^([A-Za-z0-9-]{1,64})\.[0-9a-f]{12}$/.exec(tempKey);
  if (!m) throw new StoreError(`bad temporary key '${tempKey}'`, 'failed');
  return m[1]!;
}

/**
 * A writer's life: open until commit or discard; a commit that fails discards what was
 * written (the contract's "discard after a failed commit" is then a no-op), a second discard
 * does nothing, and an upload is committed only as the image it was begun for.
 */
export abstract class ObjectUploadWriter implements StoreWriter {
  protected state: 'open' | 'committed' | 'discarded' = 'open';

  constructor(readonly tempKey: string) {}

  abstract write(chunks: Buffer[]): Promise<void>;
  /** Make the data visible; returns its location. */
  protected abstract finish(): Promise<string>;
  /** Throw away whatever was written. */
  protected abstract drop(): Promise<void>;

  protected checkOpen(): void {
    if (this.state !== 'open') throw new StoreError(`write to an upload already ${this.state}`, 'failed');
  }

  async commit(imageId: string): Promise<string> {
    if (imageIdOf(this.tempKey) !== imageId) throw new StoreError(`the upload ${this.tempKey} was begun for another image than ${imageId}`, 'failed');
    this.checkOpen();
    try {
      const location = await this.finish();
      this.state = 'committed';
      return location;
    } catch (e) {
      await this.discard().catch(() => {});
      throw e;
    }
  }

  async discard(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'discarded';
    await this.drop();
  }
}
