/**
 * The boot test's virtual machine: `qemu-system-x86_64` as a Nova libvirt guest looks to the
 * image (a PC with SeaBIOS, the root disk and NIC on virtio, the config drive as an IDE CD-ROM,
 * a virtio RNG), with user-mode networking whose only way in is the guest's SSH port forwarded
 * to a free loopback port, and the first serial port written to a file. The VM is ours by PID:
 * stop() ends that process and no other.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { QEMU_SYSTEM } from './accel.js';

export interface VmSpec {
  /** -accel/-cpu arguments (accel.ts). */
  accelArgs: string[];
  /** The root disk (the qcow2 overlay) and the config drive. */
  disk: string;
  configDrive: string;
  consoleLog: string;
  /** SeaBIOS's log (its debug port), where it says why nothing booted. */
  firmwareLog: string;
  memoryMiB: number;
  cpus: number;
  sshPort: number;
}

export function qemuArgs(spec: VmSpec): string[] {
  return [
    '-name', 'diskhub-boot-test',
    '-machine', 'pc',
    ...spec.accelArgs,
    '-m', String(spec.memoryMiB),
    '-smp', String(spec.cpus),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    // Only the root disk boots: a disk that does not boot fails, rather than falling to the CD.
    '-boot', 'strict=on',
    // The overlay is thrown away after the test: the guest's flushes need not reach the disk.
    '-drive', `file=${spec.disk},format=qcow2,if=none,id=root,cache=unsafe,discard=unmap`,
    '-device', 'virtio-blk-pci,drive=root,bootindex=0',
    '-drive', `file=${spec.configDrive},format=raw,if=none,id=config,media=cdrom,readonly=on`,
    '-device', 'ide-cd,drive=config',
    '-netdev', `user,id=net0,hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22`,
    '-device', 'virtio-net-pci,netdev=net0',
    '-device', 'virtio-rng-pci',
    '-chardev', `file,id=serial0,path=${spec.consoleLog}`,
    '-serial', 'chardev:serial0',
    '-chardev', `file,id=firmware,path=${spec.firmwareLog}`,
    '-device', 'isa-debugcon,iobase=0x402,chardev=firmware',
    '-monitor', 'none',
  ];
}

export class Vm {
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitStatus: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private stderrText = '';

  private constructor(private readonly child: ChildProcess, readonly pid: number) {
    child.stderr?.on('data', (d: Buffer) => { if (this.stderrText.length < 65536) this.stderrText += d.toString(); });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => { this.exitStatus = { code, signal }; resolve(this.exitStatus); });
    });
  }

  static async start(spec: VmSpec): Promise<Vm> {
    const child = spawn(QEMU_SYSTEM, qemuArgs(spec), { stdio: ['ignore', 'ignore', 'pipe'] });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', (e: NodeJS.ErrnoException) => reject(new Error(e.code === 'ENOENT' ? `${QEMU_SYSTEM} is not installed (Debian: qemu-system-x86)` : `${QEMU_SYSTEM}: ${e.message}`)));
      child.once('spawn', () => resolve(child.pid!));
    });
    return new Vm(child, pid);
  }

  /** Exit status once QEMU has exited, else undefined. */
  get status(): { code: number | null; signal: NodeJS.Signals | null } | undefined { return this.exitStatus; }
  get stderr(): string { return this.stderrText; }

  /** End QEMU: SIGTERM (it closes its files), SIGKILL if it has not gone within `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.exitStatus) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => { if (!this.exitStatus) this.child.kill('SIGKILL'); }, graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** A loopback port free right now (the OS picks it); QEMU binds it a moment later. */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve); });
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (!address || typeof address === 'string') throw new Error('cannot find a free loopback port');
  return address.port;
}

/** QEMU's message when the forwarded port was taken between freeLoopbackPort() and its bind. */
export const PORT_TAKEN = /Could not set up host forwarding rule/;
