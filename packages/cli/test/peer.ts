/** Side-by-side runs of `diskhub img` and the real qemu-img on the same inputs. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
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


/** qemu-img info --output=json without the keys that name the file or measure the host file. */
export async function infoWithoutHost(path: string): Promise<Record<string, unknown>> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout) as Record<string, unknown>;
  delete info.filename;
  delete info['actual-size'];
  return info;
}

/**
 * Run `args` (with the image name at IMG) on two copies of `image`: qemu-img on one, diskhub on
 * the other; the same output and exit code, identical results, both clean.
 */
export async function sideBySide(dir: string, image: string, args: string[], what: string, compareInfo = true): Promise<void> {
  const peer = image.replace(/(\.\w+)$/, '-peer$1');
  const ours = image.replace(/(\.\w+)$/, '-ours$1');
  const o2 = await diskhub(['img', ...args.map((a) => a === 'IMG' ? ours : a)], { cwd: dir });
  const p2 = await run('qemu-img', args.map((a) => a === 'IMG' ? peer : a), { cwd: dir });
  assert.equal(o2.code, p2.code, `exit of ${what}: ${o2.stderr} / ${p2.stderr}`);
  assert.equal(o2.stdout, p2.stdout, `stdout of ${what}`);
  assert.equal(o2.stderr.replaceAll(ours, peer), p2.stderr, `stderr of ${what}`);
  const fmt = image.endsWith('.qcow2') ? 'qcow2' : image.endsWith('.qed') ? 'qed' : 'raw';
  const cmp = await run('qemu-img', ['compare', '-f', fmt, '-F', fmt, join(dir, peer), join(dir, ours)]);
  assert.equal(cmp.code, 0, `compare after ${what}: ${cmp.stdout}${cmp.stderr}`);
  if (fmt !== 'raw') {
    const check = await run('qemu-img', ['check', join(dir, ours)]);
    assert.equal(check.code, 0, `check after ${what}: ${check.stdout}${check.stderr}`);
  }
  if (compareInfo) assert.deepEqual(await infoWithoutHost(join(dir, ours)), await infoWithoutHost(join(dir, peer)), `info after ${what}`);
}

export async function twoCopies(dir: string, image: string): Promise<void> {
  await copyFile(join(dir, image), join(dir, image.replace(/(\.\w+)$/, '-peer$1')));
  await copyFile(join(dir, image), join(dir, image.replace(/(\.\w+)$/, '-ours$1')));
}

