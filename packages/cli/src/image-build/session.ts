/**
 * What a build runs on the machine, and how it always cleans up after itself: every program
 * started goes through `run` (its output into the log file), and every mount and loop device is
 * registered with `onTeardown` as it is made. The tear-down runs in reverse order on success,
 * on failure and on SIGINT/SIGTERM/SIGHUP: the running program is stopped first, then any process
 * still running inside the chroot (a daemon a package's script started), then the mounts are
 * unmounted and the loop devices detached.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';

export class BuildError extends Error {}

/** A build stopped by a signal: the exit code is 128 + the signal's number, as a shell reports it. */
export class Interrupted extends BuildError {
  constructor(readonly signal: NodeJS.Signals) { super(`interrupted by ${signal}`); }
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };
export const signalExitCode = (s: NodeJS.Signals) => 128 + (SIGNAL_NUMBERS[s] ?? 0);

export interface RunOptions {
  /** Run inside this directory as the root (chroot). */
  chroot?: string;
  env?: Record<string, string>;
  input?: string | Buffer;
  /** Keep stdout and return it (it is not logged). */
  capture?: boolean;
}

export class BuildSession {
  /** Null: no log file (`diskhub img sysprep`), the notes go to stderr when verbose. */
  private readonly log: WriteStream | null;
  private readonly teardown: { what: string; fn: () => Promise<void> }[] = [];
  private child: ChildProcess | null = null;
  private interrupted: NodeJS.Signals | null = null;
  private readonly onSignal = (s: NodeJS.Signals) => this.interrupt(s);
  private readonly started = Date.now();
  /** Directories programs were chrooted into: what the tear-down searches for stray processes. */
  private readonly chroots = new Set<string>();
  private step = 0;

  constructor(readonly logPath: string | null, private readonly totalSteps: number, private readonly quiet: boolean, private readonly verbose = false) {
    this.log = logPath === null ? null : createWriteStream(logPath, { flags: 'w' });
    for (const s of SIGNALS) process.on(s, this.onSignal);
  }

  private elapsed(): string {
    const s = Math.round((Date.now() - this.started) / 1000);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }

  /** A line in the log file only. */
  note(text: string): void { this.write(`${text}\n`); }

  private write(data: string | Buffer): void {
    if (this.log) this.log.write(data);
    else if (this.verbose) process.stderr.write(data);
  }

  /** The next step: on the terminal ([3/12] ...) and in the log. */
  progress(text: string): void {
    this.checkInterrupted();
    this.step++;
    const line = `[${this.step}/${this.totalSteps} ${this.elapsed()}] ${text}`;
    if (!this.quiet) process.stderr.write(`${line}\n`);
    this.note(`==> ${line}`);
  }

  /** A remark on the terminal and in the log. */
  info(text: string): void {
    if (!this.quiet) process.stderr.write(`${text}\n`);
    this.note(text);
  }

  private readonly abort = new AbortController();
  /** Aborted on SIGINT/SIGTERM/SIGHUP: for work done in this process (the engine's conversions). */
  get signal(): AbortSignal { return this.abort.signal; }

  private interrupt(signal: NodeJS.Signals): void {
    if (this.interrupted) return;
    this.interrupted = signal;
    this.abort.abort();
    this.note(`*** ${signal} received: stopping`);
    // The program in the foreground is in its own process group (detached): stop all of it.
    if (this.child?.pid) try { process.kill(-this.child.pid, 'SIGTERM'); } catch { /* already gone */ }
  }

  checkInterrupted(): void {
    if (this.interrupted) throw new Interrupted(this.interrupted);
  }

  /** Run a program to completion; its output goes to the log (stdout returned with capture). */
  async run(cmd: string, args: string[], options: RunOptions = {}): Promise<string> {
    this.checkInterrupted();
    return await this.exec(cmd, args, options, true);
  }

  /** Run an undo program (umount, losetup -d): also after an interruption, and not stopped by one. */
  async runTeardown(cmd: string, args: string[], options: RunOptions = {}): Promise<string> {
    return await this.exec(cmd, args, options, false);
  }

  private async exec(cmd: string, args: string[], options: RunOptions, interruptible: boolean): Promise<string> {
    const argv = options.chroot ? ['chroot', options.chroot, cmd, ...args] : [cmd, ...args];
    if (options.chroot) this.chroots.add(options.chroot);
    this.note(`$ ${argv.join(' ')}`);
    const env = { ...process.env, LC_ALL: 'C.UTF-8', LANG: 'C.UTF-8', ...(options.chroot ? { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', DEBCONF_NONINTERACTIVE_SEEN: 'true' } : {}), ...options.env };
    return await new Promise<string>((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), { env, detached: interruptible, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
      if (interruptible) this.child = child;
      const out: Buffer[] = [];
      let tail = '';
      const keepTail = (b: Buffer) => { tail = (tail + b.toString('utf8')).slice(-2000); };
      child.stdout!.on('data', (b: Buffer) => { if (options.capture) out.push(b); else { this.write(b); keepTail(b); } });
      child.stderr!.on('data', (b: Buffer) => { this.write(b); keepTail(b); });
      if (options.input !== undefined) child.stdin!.end(options.input);
      child.on('error', (e) => { if (interruptible) this.child = null; reject(new BuildError(`${argv[0]}: ${e.message}`)); });
      child.on('close', (code, signal) => {
        if (interruptible) this.child = null;
        if (interruptible && this.interrupted) return reject(new Interrupted(this.interrupted));
        if (code === 0) return resolve(Buffer.concat(out).toString('utf8'));
        const last = tail.trim().split('\n').slice(-5).join('\n  ');
        reject(new BuildError(`${argv.join(' ').slice(0, 300)} failed (${signal ?? `exit status ${code}`})${last ? `:\n  ${last}` : ''}${this.logPath ? `\n  (the whole output is in ${this.logPath})` : ''}`));
      });
    });
  }

  /** Register an undo step (umount, losetup -d ...), run in reverse order by close(). */
  onTeardown(what: string, fn: () => Promise<void>): void {
    this.teardown.push({ what, fn });
  }

  /** Run the undo steps registered after `mark` now (a phase that ends early: unmount the chroot's binds). */
  async unwindTo(mark: number): Promise<void> {
    while (this.teardown.length > mark) await this.undoLast();
  }

  get teardownMark(): number { return this.teardown.length; }

  private async undoLast(): Promise<string | null> {
    const t = this.teardown.pop()!;
    this.note(`teardown: ${t.what}`);
    try { await t.fn(); return null; } catch (e) { this.note(`teardown: ${t.what} failed: ${(e as Error).message}`); return `${t.what}: ${(e as Error).message}`; }
  }

  /** Stop stray processes in the chroots, then undo everything; returns what could not be undone. */
  async close(): Promise<string[]> {
    const failures: string[] = [];
    if (this.teardown.length > 0) await this.killChrootProcesses();
    while (this.teardown.length > 0) {
      const f = await this.undoLast();
      if (f) failures.push(f);
    }
    for (const s of SIGNALS) process.off(s, this.onSignal);
    this.note(`finished after ${this.elapsed()}`);
    if (this.log) await new Promise<void>((resolve) => this.log!.end(resolve));
    return failures;
  }

  /** Processes whose root directory is one of our chroots (as diskimage-builder does before unmounting). */
  private async killChrootProcesses(): Promise<void> {
    if (this.chroots.size === 0) return;
    for (let round = 0; round < 2; round++) {
      const found: number[] = [];
      for (const p of await readdir('/proc').catch(() => [] as string[])) {
        if (!/^\d+$/.test(p)) continue;
        const root = await readlink(`/proc/${p}/root`).catch(() => null);
        if (root !== null && this.chroots.has(root)) found.push(Number(p));
      }
      if (found.length === 0) return;
      this.note(`teardown: stopping processes still running in the chroot: ${found.join(' ')}`);
      for (const pid of found) try { process.kill(pid, round === 0 ? 'SIGTERM' : 'SIGKILL'); } catch { /* gone */ }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
