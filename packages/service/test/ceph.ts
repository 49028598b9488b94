/**
 * The Ceph cluster the RBD store's tests use: the one .ci/services/ceph.sh starts, described by
 * the env file it writes ($DISKHUB_CEPH_ENV, default /var/tmp/diskhub-ceph/env). Without it a
 * test is skipped, except under CI=true, where a missing Ceph is a failure.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import { run, runOk } from '@diskhub/testkit';
import { RbdStore, type RbdStoreOptions } from '../src/stores/rbd/rbd-store.js';

export interface CephCluster {
  conf: string;
  fsid: string;
  adminKeyring: string;
  glanceKeyring: string;
  user: string;
  pool: string;
  clonePool: string;
  /** The compute node's user (client.nova: rbd on the clone pool, read-only on the images pool) and its keyring. */
  novaUser: string;
  novaKeyring: string;
}

const execFileP = promisify(execFile);
const ENV_FILE = process.env.DISKHUB_CEPH_ENV ?? '/var/tmp/diskhub-ceph/env';

function load(): CephCluster | string {
  let text: string;
  try {
    text = readFileSync(ENV_FILE, 'utf8');
  } catch {
    return `no Ceph cluster (${ENV_FILE} is missing: run .ci/services/ceph.sh as root)`;
  }
  const env = Object.fromEntries(text.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return {
    conf: env['CEPH_CONF'] ?? '',
    fsid: env['DISKHUB_CEPH_FSID'] ?? '',
    adminKeyring: env['DISKHUB_CEPH_ADMIN_KEYRING'] ?? '',
    glanceKeyring: env['DISKHUB_CEPH_GLANCE_KEYRING'] ?? '',
    user: env['DISKHUB_CEPH_USER'] ?? 'glance',
    pool: env['DISKHUB_CEPH_POOL'] ?? 'images',
    clonePool: env['DISKHUB_CEPH_CLONE_POOL'] ?? 'vms',
    novaUser: env['DISKHUB_CEPH_NOVA_USER'] ?? 'nova',
    novaKeyring: env['DISKHUB_CEPH_NOVA_KEYRING'] ?? '',
  };
}

const loaded = load();

/** The cluster, or null after skipping `t` (outside CI); under CI=true a missing cluster throws. */
export function ceph(t: TestContext): CephCluster | null {
  if (typeof loaded !== 'string') return loaded;
  if (process.env.CI === 'true') throw new Error(loaded);
  t.skip(loaded);
  return null;
}

/**
 * This test process's partial-upload tag (rbd_store_partial_tag): every test shares the one
 * pool, and other test processes (other test files, other checkouts) run at the same time; a
 * store sweep — a test's, or a service's start-up sweep — removes only the partial uploads of
 * its own tag, never another test's upload in flight.
 */
export const PARTIAL_TAG = `test${process.pid}-${randomBytes(4).toString('hex')}`;

/** An RBD store on the test cluster as client.glance (not yet initialised), with this process's partial-upload tag. */
export function glanceStore(c: CephCluster, opts: RbdStoreOptions = {}): RbdStore {
  return new RbdStore({ id: 'ceph', pool: c.pool, user: c.user, confFile: c.conf, keyring: c.glanceKeyring, connectTimeout: 20, partialTag: PARTIAL_TAG, ...opts });
}

/** The real rbd CLI, as client.glance (or client.admin). */
export function rbdCli(c: CephCluster, args: string[], as: 'glance' | 'admin' = 'glance'): Promise<string> {
  return runOk('rbd', ['--conf', c.conf, '--id', as, '--keyring', as === 'admin' ? c.adminKeyring : c.glanceKeyring, ...args], { timeoutMs: 60_000 });
}

/** `rbd export <spec> -`: an image's bytes as the rbd CLI reads them. */
export async function rbdExport(c: CephCluster, spec: string, as: 'glance' | 'admin' = 'glance'): Promise<Buffer> {
  const { stdout } = await execFileP('rbd', ['--conf', c.conf, '--id', as, '--keyring', as === 'admin' ? c.adminKeyring : c.glanceKeyring, 'export', '--no-progress', spec, '-'], { encoding: 'buffer', maxBuffer: 1 << 30, timeout: 60_000 });
  return stdout;
}

/** Removes `pool/name` and its snapshots with the rbd CLI as the admin, if it exists (clean-up after a failed test). */
export async function removeImageWithCli(c: CephCluster, spec: string): Promise<void> {
  const admin = ['--conf', c.conf, '--id', 'admin', '--keyring', c.adminKeyring];
  const info = await run('rbd', [...admin, 'snap', 'ls', '--format', 'json', spec]);
  if (info.code !== 0) return; // gone
  for (const snap of JSON.parse(info.stdout) as { name: string; protected?: string }[]) {
    await run('rbd', [...admin, 'snap', 'unprotect', `${spec}@${snap.name}`]);
  }
  await runOk('rbd', [...admin, 'snap', 'purge', '--no-progress', spec]);
  await runOk('rbd', [...admin, 'rm', '--no-progress', spec]);
}
