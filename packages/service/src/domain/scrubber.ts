/**
 * Delayed delete's scrubber (glance/scrubber.py): images deleted while delayed_delete is on
 * wait in pending_delete with their data; once `scrubTime` seconds have passed since the
 * delete, a scrubber removes the data from the store and marks the image deleted. An admin
 * may restore a pending_delete image to active before that (glance-scrubber --restore).
 *
 * Unlike Glance's, this scrubber runs in every API node (and as `diskhub scrub`) at once:
 * each image is scrubbed under a lease (repo/scrubs.ts), renewed while the store works, so
 * two nodes never scrub the same image; a scrubber that dies leaves a lease that runs out
 * (or that its node takes back when it starts again), and the next run finishes the image
 * — deleting data that is already gone is not an error. The image is marked deleted only
 * after the store has removed its data.
 */
import { hostname } from 'node:os';
import type { Logger } from '../log.js';
import type { ScrubRepo } from '../repo/scrubs.js';

/** What a scrubber needs of the store that holds an image's data. */
export interface ScrubStore { delete(location: string): Promise<void> }

export interface ScrubberOptions {
  /** Glance's scrub_time: seconds an image stays pending_delete before its data is removed. */
  scrubTime: number;
  /** This scrubber's name in leases (an API node's node id, or the `diskhub scrub` process's). */
  node: string;
  /** How long a lease lasts without renewal (default 300 s); renewed every third of it. */
  leaseSeconds?: number;
}

/** A restore that cannot be done, in glance-scrubber's words. */
export class RestoreError extends Error {}

/** Images claimed per query (Glance's REASONABLE_DB_PAGE_SIZE). */
const PAGE = 1000;

export class Scrubber {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private stopped = false;

  constructor(
    private readonly repo: ScrubRepo,
    /** The store holding a location's data (by its store id, else the store whose URL it is); undefined: none configured. */
    private readonly storeFor: (storeId: string | null, url: string) => ScrubStore | undefined,
    private readonly opts: ScrubberOptions,
    private readonly log: Logger,
  ) {}

  private get leaseMs(): number { return (this.opts.leaseSeconds ?? 300) * 1000; }

  /**
   * Leases held under this scrubber's node name were left by an earlier run of it that died
   * (a node name is used by one process at a time): they end now, so this run takes them over.
   */
  async recover(): Promise<void> {
    const n = await this.repo.expireLeasesOf(this.opts.node);
    if (n) this.log.info('took over scrub leases of an earlier run', { count: n });
  }

  /** One pass: scrub every pending_delete image that is due. */
  async runOnce(): Promise<{ scrubbed: string[]; failed: string[] }> {
    const scrubbed: string[] = [];
    const failed: string[] = [];
    const cutoff = new Date(Date.now() - this.opts.scrubTime * 1000).toISOString();
    const skip = new Set<string>();
    for (;;) {
      const ids = (await this.repo.due(cutoff, PAGE + skip.size)).filter((id) => !skip.has(id));
      if (ids.length === 0 || this.stopped) break;
      for (const id of ids) {
        if (this.stopped) break;
        skip.add(id);
        const outcome = await this.scrub(id);
        if (outcome === 'scrubbed') scrubbed.push(id);
        else if (outcome === 'failed') failed.push(id);
      }
    }
    if (scrubbed.length || failed.length) this.log.info('scrubber run', { scrubbed: scrubbed.length, failed: failed.length });
    return { scrubbed, failed };
  }

  /** Scrub one image under a lease: 'busy' when another scrubber holds it (or it is no longer pending_delete). */
  private async scrub(id: string): Promise<'scrubbed' | 'failed' | 'busy'> {
    const claimed = await this.repo.claim(id, this.opts.node, Date.now() + this.leaseMs);
    if (!claimed) return 'busy';
    const renew = setInterval(() => { void this.repo.renew(id, this.opts.node, Date.now() + this.leaseMs).catch(() => {}); }, this.leaseMs / 3);
    renew.unref();
    try {
      for (const loc of claimed.locations) {
        const store = this.storeFor(loc.store_id, loc.url);
        // Data no configured store holds cannot be removed: the image stays pending_delete.
        if (!store) throw new Error(`no configured store holds its data (store ${loc.store_id ?? 'unknown'})`);
        await store.delete(loc.url);
      }
      await this.repo.finish(id);
      this.log.info('image scrubbed', { image: id });
      return 'scrubbed';
    } catch (e) {
      // Glance leaves the image pending_delete for the next run; the lease ends now so that
      // run need not wait for it (the row stays: this image's data may be partly gone).
      this.log.warn('image could not be scrubbed; it stays pending_delete', { image: id, error: (e as Error).message });
      await this.repo.renew(id, this.opts.node, Date.now()).catch(() => {});
      return 'failed';
    } finally {
      clearInterval(renew);
    }
  }

  /** Run now and then every `intervalSeconds` (Glance's wakeup_time) until stop(). */
  start(intervalSeconds: number): void {
    const tick = () => {
      const first = this.running === null && this.timer === null;
      this.running = (first ? this.recover() : Promise.resolve()).then(() => this.runOnce())
        .catch((e) => this.log.error('scrubber run failed', { error: (e as Error).message }))
        .finally(() => {
          this.running = null;
          if (!this.stopped) { this.timer = setTimeout(tick, intervalSeconds * 1000); this.timer.unref(); }
        });
    };
    tick();
  }

  /** Stop the periodic runs; resolves when the run in progress (if any) has ended its current image. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  /** An admin's restore: pending_delete → active, if no scrubber has begun removing the data. */
  async restore(id: string): Promise<void> {
    const outcome = await this.repo.restore(id);
    if (outcome === 'not-found') throw new RestoreError(`No image found with ID ${id}`);
    if (outcome === 'scrubbing') throw new RestoreError(`cannot restore the image ${id}: a scrubber has begun removing its data`);
    if (typeof outcome === 'object') throw new RestoreError(`cannot restore the image from ${outcome.status} to active (wanted from_state=pending_delete)`);
    this.log.info('image restored', { image: id });
  }
}

/** The lease name of the `diskhub scrub` command on this host. */
export const commandScrubberNode = (dataDir: string) => `${hostname()}:${dataDir}:scrub`;
