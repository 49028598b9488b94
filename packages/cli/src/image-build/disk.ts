/**
 * The raw disk of a build: a GPT with a BIOS boot partition (GRUB's core.img), an EFI system
 * partition and the root filesystem last, so that growpart can extend it to the end of a bigger
 * disk. Partitions are written with sgdisk and read back with the engine's GPT reader.
 *
 * This machine's loop driver has no partition scanning (no /dev/loopNpM) and there is no
 * device-mapper (no kpartx), so a filesystem is reached through its own loop device over the
 * partition's byte range (`losetup --offset --sizelimit`).
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { openImage, readPartitionTable, type Partition } from '@diskhub/disk';
import type { Recipe } from './recipe.js';
import { BuildError, type BuildSession } from './session.js';

/** GPT partition type GUIDs (UEFI 2.10 table 5.7; GRUB's BIOS boot; the Linux filesystem data type). */
export const GPT_TYPES = {
  biosBoot: '21686148-6449-6E6F-744E-656564454649',
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

export interface DiskLayout {
  biosBoot?: Partition;
  esp?: Partition;
  root: Partition;
}

/** The first partition starts at 1 MiB, the alignment every partitioning tool uses now. */
const FIRST_SECTOR = 2048;

export async function partitionDisk(session: BuildSession, raw: string, recipe: Recipe): Promise<DiskLayout> {
  const fh = await open(raw, 'wx');
  try { await fh.truncate(recipe.disk.size); } finally { await fh.close(); }
  const MiB = 1 << 20;
  const args = ['--clear'];
  let n = 0;
  let next = `${FIRST_SECTOR}`;
  const add = (size: number, type: string, name: string) => {
    n++;
    args.push(`--new=${n}:${next}:${size === 0 ? '0' : `+${size / MiB}M`}`, `--typecode=${n}:${type}`, `--change-name=${n}:${name}`);
    next = '0';
  };
  if (recipe.bootloader.bios) add(recipe.disk.biosBoot, GPT_TYPES.biosBoot, 'BIOS boot');
  if (recipe.disk.esp > 0) add(recipe.disk.esp, GPT_TYPES.esp, 'EFI System');
  add(0, GPT_TYPES.linux, 'root');
  await session.run('sgdisk', [...args, raw]);
  return await readLayout(raw);
}

/** The partitions as the engine reads them (the GPT reader is what `diskhub img partitions` uses). */
export async function readLayout(raw: string): Promise<DiskLayout> {
  const image = await openImage(raw, { format: 'raw' });
  try {
    const table = await readPartitionTable(image);
    if (table?.type !== 'gpt') throw new BuildError(`${raw}: sgdisk wrote no GPT`);
    const byType = (t: string) => table.partitions.find((p) => p.type.toUpperCase() === t);
    const root = table.partitions[table.partitions.length - 1];
    if (!root || root.type.toUpperCase() !== GPT_TYPES.linux) throw new BuildError(`${raw}: no root partition at the end of the GPT`);
    const layout: DiskLayout = { root };
    const bios = byType(GPT_TYPES.biosBoot);
    const esp = byType(GPT_TYPES.esp);
    if (bios) layout.biosBoot = bios;
    if (esp) layout.esp = esp;
    return layout;
  } finally {
    await image.close();
  }
}

/** A loop device over [offset, offset + size) of the file, detached at tear-down. */
export async function attachLoop(session: BuildSession, file: string, offset: number, size: number): Promise<string> {
  session.checkInterrupted();
  // Not stopped by an interruption: a signal that came after the kernel attached the device but
  // before losetup printed its name would leave a loop device nobody detaches.
  const dev = (await session.runTeardown('losetup', ['--find', '--show', `--offset=${offset}`, `--sizelimit=${size}`, file], { capture: true })).trim();
  if (!/^\/dev\/loop\d+$/.test(dev)) throw new BuildError(`losetup printed ${JSON.stringify(dev)}, not a loop device`);
  session.note(`attached ${dev} at ${offset}+${size} of ${file}`);
  session.onTeardown(`losetup -d ${dev}`, () => detachLoop(session, dev));
  session.checkInterrupted();
  return dev;
}

async function detachLoop(session: BuildSession, dev: string): Promise<void> {
  // A device busy for a moment after its unmount (udev probing it) refuses to detach: retry.
  for (let i = 0; ; i++) {
    try { await session.runTeardown('losetup', ['--detach', dev]); return; } catch (e) {
      if (i >= 10) throw e;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/** Mount and register the unmount. */
export async function mountAt(session: BuildSession, source: string, target: string, args: string[] = []): Promise<void> {
  await mkdir(target, { recursive: true });
  // Registered before mount runs: a signal may stop mount after the kernel mounted the
  // filesystem (the unmount then finds it mounted; it does nothing when it is not).
  session.onTeardown(`umount ${target}`, () => unmount(session, target));
  await session.run('mount', [...args, source, target]);
}

async function unmount(session: BuildSession, target: string): Promise<void> {
  for (let i = 0; ; i++) {
    try { await session.runTeardown('umount', [target]); return; } catch (e) {
      if (!(await isMounted(target))) return;
      if (i >= 10) {
        // Still busy after 5 s: detach it from the tree now, the kernel lets go when it is idle.
        await session.runTeardown('umount', ['--lazy', target]);
        throw e;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

export async function isMounted(target: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[1] === target.replace(/ /g, '\\040'));
}

/** Remove a directory tree that must hold no mount any more (refuses to delete through a mount). */
export async function removeTree(dir: string): Promise<void> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  const inside = mounts.split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m === dir || m.startsWith(`${dir}/`));
  if (inside.length > 0) throw new BuildError(`not removing ${dir}: still mounted: ${inside.join(', ')}`);
  await rm(dir, { recursive: true, force: true });
}

/**
 * `diskhub img convert ARGS` run in this process (the engine's conversion, with its temporary
 * name and rename into place); its messages go to stderr as the command's would.
 */
export async function engineConvert(session: BuildSession, args: string[], what: string): Promise<void> {
  const { convertCommand } = await import('../img/convert.js');
  session.note(`$ diskhub img convert ${args.join(' ')}`);
  let code: number;
  try {
    code = await convertCommand(['convert', ...args]);
  } catch (e) {
    session.checkInterrupted();
    throw new BuildError(`${what}: ${(e as Error).message}`);
  }
  // convert stops on the same signal (and removes its temporary file): report the interruption.
  session.checkInterrupted();
  if (code !== 0) throw new BuildError(`${what}: diskhub img convert ${args.join(' ')} exited ${code}`);
}
