/**
 * Helpers shared by the test suites: real peer tools (qemu-img, qemu-io, nbdinfo, ...),
 * temporary directories, and the CI rule that a missing peer fails rather than skips.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { run } from './run.js';


/** Repository root (packages/testkit/dist/src → ../../../..). */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
/** The built diskhub launcher. */
export const diskhubBin = join(repoRoot, 'packages', 'cli', 'bin', 'diskhub.js');

const found = new Map<string, boolean>();
export function hasTool(tool: string): boolean {
  let ok = found.get(tool);
  if (ok === undefined) {
    ok = spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
    found.set(tool, ok);
  }
  return ok;
}

/**
 * Options for node:test that skip a test when a peer tool is missing, except under CI=true,
 * where the test runs and fails loudly: interop tests never silently skip in CI.
 */
export function needs(...tools: string[]): { skip?: string } {
  const missing = tools.filter((t) => !hasTool(t));
  if (missing.length === 0) return {};
  if (process.env.CI === 'true') return {}; // let it run and fail with ENOENT
  return { skip: `peer tool(s) not installed: ${missing.join(', ')}` };
}

export * from './run.js';

/** Run the built `diskhub` CLI. */
export const diskhub = (args: string[], opts: Parameters<typeof run>[2] = {}) => run(process.execPath, [diskhubBin, ...args], opts);

/** A fresh temporary directory, removed when the test (or suite) ends. */
export async function tempDir(t: TestContext | { after(fn: () => unknown): void }, prefix = 'diskhub-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
export * from './lvm.js';
export * from './vhdx.js';
export * from './dmg.js';
export * from './fstree.js';
export * from './rpm.js';
export * from './osimage.js';
export * from './debian-rootfs.js';
