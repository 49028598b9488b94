/**
 * Real LVM2 tools on loop devices without device-mapper: `--driverloaded n` lets pvcreate,
 * vgcreate and lvcreate write PV labels and VG metadata (LVs are created inactive), and a
 * device filter keeps the commands to the loop devices a test attached. Nothing is written
 * to /etc/lvm (backup and archive off, no devices file, no hints).
 */
import { spawnSync } from 'node:child_process';
import { runOk, run } from './run.js';

let loopUsable: boolean | undefined;

/** Can this machine attach loop devices (root, /dev/loop-control)? */
export function loopDevicesUsable(): boolean {
  if (loopUsable === undefined) loopUsable = spawnSync('losetup', ['-f'], { stdio: 'ignore' }).status === 0;
  return loopUsable;
}

/** node:test options for tests that need loop devices: skipped locally without them, failing under CI. */
export function needsLoopDevices(): { skip?: string } {
  if (loopDevicesUsable() || process.env.CI === 'true') return {};
  return { skip: 'loop devices are not usable here (losetup -f failed)' };
}

/** Attach files to loop devices for the duration of `fn`, always detaching them afterwards. */
export async function withLoopDevices<T>(files: string[], fn: (devices: string[]) => Promise<T>): Promise<T> {
  const devices: string[] = [];
  try {
    for (const f of files) devices.push((await runOk('losetup', ['--show', '-f', f])).trim());
    return await fn(devices);
  } finally {
    for (const d of devices) await run('losetup', ['-d', d]);
  }
}

/** Run an LVM command (pvcreate, vgcreate, lvcreate, lvs, ...) restricted to `devices`. */
export async function lvm(command: string, args: string[], devices: string[]): Promise<string> {
  const accept = devices.map((d) => `"a|^${d}$|"`).join(',');
  const config = `devices { filter=[${accept},"r|.*|"] global_filter=[${accept},"r|.*|"] use_devicesfile=0 hints="none" obtain_device_list_from_udev=0 } ` +
    'activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }';
  return runOk('lvm', [command, '--driverloaded', 'n', '--config', config, ...args], {
    env: { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1' },
  });
}
