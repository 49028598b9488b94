/**
 * Nova's external locks (oslo.concurrency lockutils with the "nova-" prefix): the file
 * `<lock_path>/nova-<name>` held with a POSIX record lock (fcntl F_SETLK, what oslo's
 * fcntl.lockf takes), so diskhub and a Nova compute service on the same host exclude each
 * other. The kernel drops the lock when its holder dies: no stale lock files to clean up. As
 * in lockutils, an in-process queue comes first, since record locks do not exclude within a
 * process.
 */
import { mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { hostio } from '@diskhub/hostio';
import { ComputeError } from './errors.js';

/** lockutils.synchronized_with_prefix('nova-'), as nova/utils.py sets it up. */
export const LOCK_PREFIX = 'nova-';
const POLL_FIRST_MS = 10;
const POLL_MAX_MS = 200;

const inProcess = new Map<string, Promise<unknown>>();

export function lockFilePath(lockDir: string, name: string): string {
  return join(lockDir, LOCK_PREFIX + name);
}

/** Run `body` holding the external lock `name` in `lockDir` (created if missing). */
export async function withExternalLock<T>(lockDir: string, name: string, body: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  const path = lockFilePath(lockDir, name);
  const before = inProcess.get(path) ?? Promise.resolve();
  const mine = before.catch(() => undefined).then(() => holdFileLock(path, body, signal));
  inProcess.set(path, mine);
  try {
    return await mine;
  } finally {
    if (inProcess.get(path) === mine) inProcess.delete(path);
  }
}

async function holdFileLock<T>(path: string, body: () => Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!hostio?.tryLock) throw new ComputeError(`cannot take the lock ${path}: the hostio addon (fcntl locks) is not available`);
  await mkdir(join(path, '..'), { recursive: true });
  const fh = await open(path, 'a');
  try {
    for (let wait = POLL_FIRST_MS; !hostio.tryLock(fh.fd); wait = Math.min(POLL_MAX_MS, wait * 2)) {
      if (signal?.aborted) throw new ComputeError('Operation cancelled', 'cancelled');
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    return await body();
  } finally {
    await fh.close(); // closing the descriptor releases the record lock
  }
}

/** lockutils.remove_external_lock_file: the lock file goes once its object is gone. */
export async function removeLockFile(lockDir: string, name: string): Promise<void> {
  await unlink(lockFilePath(lockDir, name)).catch(() => undefined);
}
