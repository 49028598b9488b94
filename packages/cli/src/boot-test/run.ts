/**
 * One boot test, what an operator checks by hand on a devstack after uploading an image:
 * it boots, cloud-init finishes without errors, the metadata's SSH key logs in, the hostname
 * and the user-data script took effect, and the root filesystem grew to the disk. The VM's
 * disk is a qcow2 overlay on the image (QEMU opens the image read-only as its backing file),
 * the config drive is made by `diskhub img config-drive`'s code, and everything — the VM by
 * its PID, the overlay, the key, the drive — is removed on every way out.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImage } from '@diskhub/disk';
import { buildConfigDrive } from '../img/config-drive.js';
import type { AuthSettings } from '../compute/client.js';
import { chooseAccelerator, type AccelMode, type Accel } from './accel.js';
import { cloudInitFinished, excerpt, fatalEvent, kernelStarted, keyUser, loginWithoutCloudInit, SerialConsole } from './console.js';
import { cloudInitVerdict, GUEST_FACTS_SCRIPT, growthVerdict, hostnameVerdict, markerVerdict, parseFacts, userDataScript, type Verdict } from './guest.js';
import { resolveImage } from './image-source.js';
import { generateKey, sshRun, type SshResult, type SshTarget } from './ssh.js';
import { freeLoopbackPort, PORT_TAKEN, Vm } from './vm.js';

export interface BootTestOptions {
  image: string;
  accel: AccelMode;
  /** Seconds from the VM's start to the verdict. */
  timeout: number;
  /** The disk the guest sees: bytes, or bytes added to the image's size. */
  diskSize: { bytes: number; relative: boolean };
  memoryMiB: number;
  cpus: number;
  /** The user the key logs in as; by default the one cloud-init names on the console. */
  sshUser?: string;
  /** Keep the whole serial console (and the firmware's log beside it) here. */
  consoleLog?: string;
  auth: AuthSettings;
  signal: AbortSignal;
  /** Progress for a person (not in --json). */
  progress: (line: string) => void;
}

export const CHECK_NAMES = ['boot', 'cloud-init', 'ssh', 'hostname', 'user-data', 'root-filesystem'] as const;
export type CheckName = typeof CHECK_NAMES[number];

export interface Check { name: CheckName; passed: boolean; detail: string; seconds: number }

export interface BootTestReport {
  image: string;
  passed: boolean;
  accel: Accel;
  accel_reason: string;
  disk_size: number;
  /** Boots started (more than 1: the kernel's timer check failed under TCG and the VM was booted again). */
  boot_attempts: number;
  checks: Check[];
  /** Why it failed, in one line. */
  reason?: string;
  /** The console lines that show it. */
  console_excerpt?: string;
  seconds: number;
}

/**
 * Linux's check_timer() waits a few ticks for the PIT's interrupt through the IO-APIC and
 * panics when none came. Under TCG on a loaded host QEMU's timer thread can be starved for
 * that long: the same image boots on the next try. Only that panic, only under TCG, is
 * retried, and the report says so.
 */
const TCG_TIMER_CHECK = /IO-APIC \+ timer doesn't work/;
const MAX_BOOT_ATTEMPTS = 3;
/** QEMU bind races on the forwarded port: a new port is tried this many times. */
const PORT_ATTEMPTS = 3;
const POLL_MS = 500;
/** An SSH command's own limit (the test's deadline bounds the retries). */
const SSH_COMMAND_MS = 60_000;

export async function bootTest(options: BootTestOptions): Promise<BootTestReport> {
  const started = Date.now();
  const since = () => Math.round((Date.now() - started) / 100) / 10;
  const { signal } = options;
  const work = await mkdtemp(join(tmpdir(), 'diskhub-boot-test-'));
  let vm: Vm | undefined;
  let serial: SerialConsole | undefined;
  let firmware: SerialConsole | undefined;
  // A crash must not leave the VM running either.
  const killOnExit = () => { if (vm && !vm.status) process.kill(vm.pid, 'SIGKILL'); };
  process.once('exit', killOnExit);
  try {
    const image = await resolveImage(options.image, work, options.auth, signal);
    const diskSize = options.diskSize.relative ? image.virtualSize + options.diskSize.bytes : options.diskSize.bytes;
    if (diskSize < image.virtualSize) throw new BootTestError(`--disk-size ${diskSize} is smaller than the image (${image.virtualSize} bytes)`);
    const key = await generateKey(work, signal);
    const token = randomBytes(16).toString('hex');
    const hostname = `boot-test-${token.slice(0, 8)}`;
    const configDrive = join(work, 'config.iso');
    await writeFile(configDrive, buildConfigDrive({
      uuid: randomUUID(), hostname, sshKeys: [key.publicKey], userData: new TextEncoder().encode(userDataScript(token)), nocloud: false,
    }));
    const disk = join(work, 'disk.qcow2');
    const accel = await chooseAccelerator(options.accel, { signal });
    signal.throwIfAborted();
    options.progress(`booting ${image.display} (${image.format}, disk ${diskSize} bytes) under ${accel.accel.toUpperCase()}: ${accel.reason}`);

    const consoleLog = join(work, 'console.log');
    const firmwareLog = join(work, 'firmware.log');
    let sshPort = 0;
    let bootAttempts = 0;
    /** A fresh overlay and console files, and QEMU started on them (a new port if its was taken). */
    const boot = async () => {
      bootAttempts++;
      await vm?.stop();
      await serial?.close();
      await firmware?.close();
      await rm(disk, { force: true });
      await createImage(disk, 'qcow2', { size: diskSize, options: {}, backingFile: image.path, backingFormat: image.format }, { exclusive: true });
      for (let attempt = 1; ; attempt++) {
        await writeFile(consoleLog, '');
        await writeFile(firmwareLog, '');
        sshPort = await freeLoopbackPort();
        vm = await Vm.start({ accelArgs: accel.qemuArgs, disk, configDrive, consoleLog, firmwareLog, memoryMiB: options.memoryMiB, cpus: options.cpus, sshPort });
        await delay(POLL_MS, signal).catch(() => undefined);
        if (!vm.status || attempt >= PORT_ATTEMPTS || !PORT_TAKEN.test(vm.stderr)) break;
      }
      serial = await SerialConsole.open(consoleLog);
      firmware = await SerialConsole.open(firmwareLog);
      return { vm, serial, firmware };
    };
    let running = await boot();
    const vmStarted = Date.now();
    const deadline = vmStarted + options.timeout * 1000;
    const checks: Check[] = [];
    const check = (name: CheckName, v: Verdict) => { checks.push({ name, passed: v.passed, detail: v.detail, seconds: since() }); };
    const report = (reason: string, text: string, at?: number): BootTestReport => {
      for (const name of CHECK_NAMES) if (!checks.some((c) => c.name === name)) checks.push({ name, passed: false, detail: 'not reached', seconds: since() });
      return { image: image.display, passed: false, accel: accel.accel, accel_reason: accel.reason, disk_size: diskSize, boot_attempts: bootAttempts, checks, reason, console_excerpt: excerpt(text, 40, at), seconds: since() };
    };

    // Watch the console until cloud-init's last line, a fatal sign, QEMU's exit or the deadline.
    let finished: ReturnType<typeof cloudInitFinished>;
    for (;;) {
      signal.throwIfAborted();
      const text = await running.serial.poll();
      const firmwareText = await running.firmware.poll();
      if (!checks.length) {
        const kernel = kernelStarted(text);
        if (kernel) { check('boot', { passed: true, detail: `kernel ${kernel} started` }); options.progress(`kernel ${kernel} started`); }
      }
      const fatal = fatalEvent(text) ?? fatalEvent(firmwareText);
      if (fatal && accel.accel === 'tcg' && TCG_TIMER_CHECK.test(fatal.line) && bootAttempts < MAX_BOOT_ATTEMPTS) {
        options.progress(`${fatal.line}: the kernel's timer check failed under TCG (a loaded host starves QEMU's timer thread); booting again`);
        checks.length = 0;
        running = await boot();
        continue;
      }
      if (fatal) {
        const inFirmware = !fatalEvent(text);
        return report(`${fatal.reason}: ${fatal.line}`, inFirmware ? `${firmwareText}\n${text}` : text, inFirmware ? undefined : fatal.at);
      }
      finished = cloudInitFinished(text);
      if (finished) break;
      const prompt = loginWithoutCloudInit(text);
      if (prompt) return report(`cloud-init did not run: the login prompt ('${prompt}') came with no cloud-init output before it (not installed, or disabled)`, text);
      if (running.vm.status) {
        const stderr = running.vm.stderr.trim();
        return report(`qemu-system-x86_64 exited (${running.vm.status.code ?? running.vm.status.signal}) before cloud-init finished${stderr ? `: ${stderr.split('\n')[0]}` : ''}`, text || firmwareText);
      }
      if (Date.now() > deadline) {
        const waiting = checks.length ? 'cloud-init to finish' : 'the kernel to start';
        return report(`timed out after ${options.timeout} s waiting for ${waiting}`, text || firmwareText);
      }
      await delay(POLL_MS, signal);
    }
    options.progress(`cloud-init finished: ${finished.line}`);
    if (!checks.length) check('boot', { passed: true, detail: 'the guest booted (no kernel banner on the serial console)' });

    const text = running.serial.current;
    const user = options.sshUser ?? keyUser(text);
    if (!user) return report('cloud-init named no user for the SSH key on the console (give --ssh-user)', text);
    const target: SshTarget = { port: sshPort, user, key };
    const session = await sshSession(target, GUEST_FACTS_SCRIPT, deadline, signal);
    check('ssh', session.login);
    if (!session.login.passed) return report(`SSH as ${user} with the generated key failed: ${session.login.detail}`, text);
    if (session.result.code !== 0) return report(`the checks over SSH failed (exit ${session.result.code}): ${session.result.stderr.trim().slice(0, 500)}`, text);
    const facts = parseFacts(session.result.stdout);
    check('cloud-init', cloudInitVerdict(facts.result, finished.line));
    check('hostname', hostnameVerdict(facts, hostname));
    check('user-data', markerVerdict(facts, token));
    check('root-filesystem', growthVerdict(facts, diskSize, image.virtualSize));
    checks.sort((a, b) => CHECK_NAMES.indexOf(a.name) - CHECK_NAMES.indexOf(b.name));
    const failed = checks.filter((c) => !c.passed);
    if (failed.length) return report(failed.map((c) => `${c.name}: ${c.detail}`).join('; '), text);
    return { image: image.display, passed: true, accel: accel.accel, accel_reason: accel.reason, disk_size: diskSize, boot_attempts: bootAttempts, checks, seconds: since() };
  } finally {
    await vm?.stop();
    process.off('exit', killOnExit);
    await serial?.close();
    await firmware?.close();
    if (options.consoleLog) {
      await copyFile(join(work, 'console.log'), options.consoleLog).catch(() => undefined);
      await copyFile(join(work, 'firmware.log'), `${options.consoleLog}.firmware`).catch(() => undefined);
    }
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Log in and run `command` (one session: each SSH handshake costs seconds under TCG). Retried
 * while sshd does not answer yet (ssh's own failures exit 255), not when the key is refused.
 */
async function sshSession(target: SshTarget, command: string, deadline: number, signal: AbortSignal): Promise<{ login: Verdict; result: SshResult }> {
  for (;;) {
    const r = await sshRun(target, command, SSH_COMMAND_MS, signal);
    if (r.code !== null && r.code !== SSH_FAILED) return { login: { passed: true, detail: `logged in as ${target.user} with the generated ed25519 key` }, result: r };
    const last = r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`;
    if (/Permission denied/.test(last)) return { login: { passed: false, detail: last }, result: r };
    if (Date.now() > deadline) return { login: { passed: false, detail: `no SSH login before the timeout: ${last}` }, result: r };
    await delay(2000, signal);
  }
}

/** ssh's exit status for its own errors (connection, authentication), as opposed to the command's. */
const SSH_FAILED = 255;

export class BootTestError extends Error {}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) { reject(signal.reason as Error); return; }
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(timer); reject(signal.reason as Error); };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
