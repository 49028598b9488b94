/**
 * Helpers shared by the test suites: real peer tools (qemu-img, qemu-io, nbdinfo, ...),
 * temporary directories, and the CI rule that a missing peer fails rather than skips.
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';

const execFileP = promisify(execFile);

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

export interface RunResult { stdout: string; stderr: string; code: number }

/**
 * QEMU times its LUKS key derivation with the thread's CPU clock and gives up with this message
 * when its first measurement reads 0 ms — which happens on kernels with tick-based CPU
 * accounting when the machine is busy, whatever iter-time says. It is a property of the
 * measurement, not of the command: such runs are retried, after a pause that grows (a burst of
 * load from parallel test files can last several attempts).
 */
const QEMU_PBKDF_TIMING = 'Unable to get accurate CPU usage';

/** Run a program; never throws on a non-zero exit (the code is returned). */
export async function run(cmd: string, args: string[], opts: { input?: string | Uint8Array; env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  for (let attempt = 1; ; attempt++) {
    const r = await runOnce(cmd, args, opts);
    if (r.code === 0 || attempt >= 8 || !cmd.startsWith('qemu-') || !r.stderr.includes(QEMU_PBKDF_TIMING)) return r;
    await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
  }
}

async function runOnce(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  try {
    const p = execFileP(cmd, args, { maxBuffer: 256 << 20, env: opts.env ?? process.env, cwd: opts.cwd, timeout: opts.timeoutMs ?? 120_000, encoding: 'utf8' });
    if (opts.input !== undefined) { p.child.stdin?.end(opts.input); }
    const { stdout, stderr } = await p;
    return { stdout, stderr, code: 0 };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; code?: number | string; message: string };
    if (typeof err.code !== 'number') throw new Error(`${cmd} ${args.join(' ')}: ${err.message}`);
    return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: err.code };
  }
}

/** Run a program and throw (with its stderr) unless it exits 0. */
export async function runOk(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

export const qemuImg = (...args: string[]) => runOk('qemu-img', args);
export const qemuIo = (...args: string[]) => runOk('qemu-io', args);
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
