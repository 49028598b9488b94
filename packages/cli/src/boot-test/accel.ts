/**
 * Which accelerator the boot test's VM runs under. `/dev/kvm` existing is not enough: under
 * some nested hypervisors a KVM guest hangs (even in the firmware) or `-cpu host` makes
 * QEMU abort on an MSR it cannot set. So `auto` boots a one-sector probe under KVM the way
 * the real VM would boot (SeaBIOS, a virtio disk, `-cpu host`): the sector's real-mode code
 * writes a byte to the serial port and leaves through QEMU's isa-debug-exit device. Only a
 * probe that exits that way within PROBE_TIMEOUT_MS chooses KVM; anything else means TCG.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type AccelMode = 'kvm' | 'tcg' | 'auto';
export type Accel = 'kvm' | 'tcg';

export interface AccelChoice {
  accel: Accel;
  /** The QEMU arguments that select it and its CPU model. */
  qemuArgs: string[];
  /** Why: the probe's outcome, or "requested". */
  reason: string;
}

export const QEMU_SYSTEM = 'qemu-system-x86_64';
export const PROBE_TIMEOUT_MS = 5000;
/** The isa-debug-exit port, and QEMU's exit status for the value written: (value << 1) | 1. */
const DEBUG_EXIT_PORT = 0xf4;
const PROBE_EXIT_VALUE = 0x01;
const PROBE_EXIT_STATUS = (PROBE_EXIT_VALUE << 1) | 1;
const PROBE_BYTE = 0x4b; // 'K', written to COM1
/** SeaBIOS cannot read a one-sector virtio disk ("could not read the boot disk"): the probe disk is 1 MiB. */
const PROBE_DISK_SIZE = 1 << 20;

/**
 * A boot sector (loaded by the BIOS at 0000:7C00, run in real mode):
 *   mov dx, 0x3f8 ; mov al, 'K' ; out dx, al      COM1's data register
 *   mov al, 1 ; out 0xf4, al                      isa-debug-exit: QEMU exits with status 3
 *   hlt ; jmp $-1                                 never reached when the device exists
 * padded to 510 bytes and ended by the 0x55 0xAA boot signature.
 */
export function probeBootSector(): Uint8Array {
  const code = [0xba, 0xf8, 0x03, 0xb0, PROBE_BYTE, 0xee, 0xb0, PROBE_EXIT_VALUE, 0xe6, DEBUG_EXIT_PORT, 0xf4, 0xeb, 0xfd];
  const sector = new Uint8Array(512);
  sector.set(code);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

const KVM_ARGS = ['-accel', 'kvm', '-cpu', 'host'];
/** Multi-threaded TCG with every CPU feature it emulates (x86-64-v2+ userlands need them). */
const TCG_ARGS = ['-accel', 'tcg,thread=multi', '-cpu', 'max'];

export async function chooseAccelerator(mode: AccelMode, options: { kvmDevice?: string; signal?: AbortSignal } = {}): Promise<AccelChoice> {
  if (mode === 'kvm') return { accel: 'kvm', qemuArgs: KVM_ARGS, reason: 'requested (--accel kvm)' };
  if (mode === 'tcg') return { accel: 'tcg', qemuArgs: TCG_ARGS, reason: 'requested (--accel tcg)' };
  const device = options.kvmDevice ?? '/dev/kvm';
  try {
    await access(device, constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', qemuArgs: TCG_ARGS, reason: `${device} is not usable` };
  }
  const probe = await probeKvm(options.signal);
  if (probe.ok) return { accel: 'kvm', qemuArgs: KVM_ARGS, reason: `the KVM probe booted in ${probe.ms} ms` };
  return { accel: 'tcg', qemuArgs: TCG_ARGS, reason: `the KVM probe failed: ${probe.why}` };
}

/** Boot the probe sector under KVM; ok when it wrote its byte and exited through the device. */
export async function probeKvm(signal?: AbortSignal): Promise<{ ok: true; ms: number } | { ok: false; why: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'diskhub-kvm-probe-'));
  try {
    const disk = join(dir, 'probe.img');
    await writeFile(disk, probeBootSector());
    await truncate(disk, PROBE_DISK_SIZE);
    const started = Date.now();
    const child = spawn(QEMU_SYSTEM, [
      ...KVM_ARGS, '-machine', 'pc', '-m', '16', '-nodefaults', '-no-user-config', '-display', 'none',
      '-serial', 'stdio', '-device', `isa-debug-exit,iobase=0x${DEBUG_EXIT_PORT.toString(16)},iosize=4`,
      '-drive', `file=${disk},format=raw,if=virtio`,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString('latin1'); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    let timedOut = false;
    const kill = () => { child.kill('SIGKILL'); };
    const timer = setTimeout(() => { timedOut = true; kill(); }, PROBE_TIMEOUT_MS);
    signal?.addEventListener('abort', kill, { once: true });
    const status = await new Promise<{ code: number | null; killedBy?: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, error }));
      child.once('close', (code, killedBy) => resolve({ code, killedBy }));
    });
    clearTimeout(timer);
    signal?.removeEventListener('abort', kill);
    if (status.error) return { ok: false, why: `cannot run ${QEMU_SYSTEM}: ${status.error.message}` };
    if (status.code === PROBE_EXIT_STATUS && stdout.includes(String.fromCharCode(PROBE_BYTE))) return { ok: true, ms: Date.now() - started };
    if (timedOut) return { ok: false, why: `no answer within ${PROBE_TIMEOUT_MS / 1000} s (the guest hangs)` };
    // QEMU's own words first: "failed to set MSR 0x10a" says more than the assertion after it.
    const firstLine = stderr.split('\n').find((l) => l.trim() && !l.includes('warning:'));
    const how = status.code === null ? `was killed by ${status.killedBy ?? 'a signal'}` : `exited with status ${status.code}`;
    return { ok: false, why: `${QEMU_SYSTEM} ${how}${firstLine ? ` (${firstLine.trim()})` : ''}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
