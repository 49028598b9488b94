/** Side-by-side runs of `diskhub img` and the real qemu-img on the same inputs. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { diskhub, diskhubBin, run, type RunResult } from '@diskhub/testkit';

export async function both(args: string[], cwd: string): Promise<{ ours: RunResult; peer: RunResult }> {
  const ours = await diskhub(['img', ...args], { cwd });
  const peer = await run('qemu-img', args, { cwd });
  return { ours, peer };
}

/** Same stdout, stderr and exit code as qemu-img. */
export async function assertSame(args: string[], cwd: string, what = args.join(' ')): Promise<RunResult> {
  const { ours, peer } = await both(args, cwd);
  assert.equal(ours.stdout, peer.stdout, `stdout of '${what}'`);
  assert.equal(ours.stderr, peer.stderr, `stderr of '${what}'`);
  assert.equal(ours.code, peer.code, `exit code of '${what}'`);
  return ours;
}

/** Same exit code and stdout; stderr only needs the same first word class (used where messages legitimately differ). */
export async function assertSameExit(args: string[], cwd: string): Promise<{ ours: RunResult; peer: RunResult }> {
  const r = await both(args, cwd);
  assert.equal(r.ours.code, r.peer.code, `exit code of '${args.join(' ')}': ours ${r.ours.stderr} / qemu-img ${r.peer.stderr}`);
  return r;
}

/** Run diskhub with `args` and SIGKILL it after `delay` ms (if it is still running). */
export async function killedAfter(delay: number, args: string[]): Promise<void> {
  const child = spawn(process.execPath, [diskhubBin, ...args], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  await new Promise((r) => setTimeout(r, delay));
  child.kill('SIGKILL');
  await exited;
}

