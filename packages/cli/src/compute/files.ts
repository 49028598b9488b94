/** File steps the compute commands share. */
import { rename, stat, unlink } from 'node:fs/promises';

/**
 * `make` writes `<path>.part`, which becomes `path` only once complete and is removed on
 * failure: `path` never names a half-made file. Callers hold the lock that makes `.part` theirs
 * (a leftover from a killed run is removed first).
 */
export async function writeThenRename(path: string, make: (temp: string) => Promise<void>): Promise<void> {
  const temp = `${path}.part`;
  await unlink(temp).catch(() => undefined);
  try {
    await make(temp);
    await rename(temp, path);
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

export async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
