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

/**
 * Make `pv` (a file) an LVM physical volume of a new volume group `vg` with the given logical
 * volumes, created inactive (no device-mapper needed), and return each LV's byte offset in
 * the file (its first extent), so a test can put a filesystem there (mkfs.ext4 -E offset=).
 */
export async function inactiveLogicalVolumes(pv: string, vg: string, lvs: { name: string; size: string }[]): Promise<Map<string, number>> {
  return withLoopDevices([pv], async (loops) => {
    await lvm('pvcreate', ['-q', loops[0]!], loops);
    await lvm('vgcreate', ['-q', vg, loops[0]!], loops);
    for (const lv of lvs) await lvm('lvcreate', ['-q', '-an', '-Zn', '-L', lv.size, '-n', lv.name, vg], loops);
    const report = JSON.parse(await lvm('lvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '--segments', '-o', 'lv_name,seg_pe_ranges,vg_extent_size'], loops));
    const pvs = JSON.parse(await lvm('pvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'pe_start'], loops));
    const peStart = Number(pvs.report[0].pv[0].pe_start);
    const offsets = new Map<string, number>();
    for (const seg of report.report[0].seg as { lv_name: string; seg_pe_ranges: string; vg_extent_size: string }[]) {
      offsets.set(seg.lv_name, peStart + Number(/:(\d+)-/.exec(seg.seg_pe_ranges)![1]) * Number(seg.vg_extent_size));
    }
    return offsets;
  });
}
