/**
 * Image data stores. The local file store keeps each image's data in one file under
 * <data dir>/images/; an upload is written to a temporary name in the same directory and
 * renamed into place only once it is complete and verified, so a reader (or a restart after
 * a crash) never sees partial data under an image's name.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';

export interface StagedWrite {
  /** The key the data will have once committed. */
  readonly tempKey: string;
  readonly path: string;
  readonly stream: Writable;
  /** Make the data visible under `key`. */
  commit(key: string): Promise<string>;
  /** Throw the partial data away. */
  discard(): Promise<void>;
}

export interface Store {
  readonly id: string;
  begin(imageId: string): Promise<StagedWrite>;
  open(location: string, range?: { start: number; end: number }): Readable;
  size(location: string): Promise<number>;
  /** Local path of committed data, for inspection by the disk engine. */
  pathOf(location: string): string;
  delete(location: string): Promise<void>;
  /** Remove temporary files whose name is not in `live` (left by a crash). */
  sweep(live: Set<string>): Promise<string[]>;
}

const TEMP_PREFIX = '.partial-';

export class FileStore implements Store {
  readonly id = 'file';
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  pathOf(location: string): string {
    // Locations are bare file names inside the store's directory; anything else is refused.
    if (!/^[A-Za-z0-9._-]+$/.test(location) || location.startsWith('.')) throw new Error(`bad store location '${location}'`);
    return join(this.dir, location);
  }

  async begin(imageId: string): Promise<StagedWrite> {
    const tempKey = `${TEMP_PREFIX}${imageId}-${randomBytes(6).toString('hex')}`;
    const path = join(this.dir, tempKey);
    const stream = createWriteStream(path, { flags: 'wx', highWaterMark: 1 << 20 });
    await new Promise<void>((resolve, reject) => { stream.once('open', () => resolve()); stream.once('error', reject); });
    let done = false;
    return {
      tempKey, path, stream,
      commit: async (key: string) => {
        done = true;
        await rename(path, this.pathOf(key));
        return key;
      },
      discard: async () => {
        if (done) return;
        done = true;
        stream.destroy();
        await rm(path, { force: true });
      },
    };
  }

  open(location: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.pathOf(location), { highWaterMark: 1 << 20, ...(range ?? {}) });
  }

  async size(location: string): Promise<number> {
    return (await stat(this.pathOf(location))).size;
  }

  async delete(location: string): Promise<void> {
    await rm(this.pathOf(location), { force: true });
  }

  async sweep(live: Set<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(this.dir)) {
      if (name.startsWith(TEMP_PREFIX) && !live.has(name)) {
        await rm(join(this.dir, name), { force: true });
        removed.push(name);
      }
    }
    return removed;
  }
}
