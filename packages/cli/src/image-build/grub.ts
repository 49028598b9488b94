/**
 * GRUB, installed without grub-install (which cannot probe a loop device that has no partition
 * devices): the build machine's GRUB images and modules (grub-pc-bin, grub-efi-amd64-bin) are
 * put in place by hand, as grub-install and grub-bios-setup would.
 *
 * BIOS: core.img (grub-mkimage -O i386-pc with the disk, GPT and filesystem modules and a prefix
 * naming the root partition of the boot disk) goes into the BIOS boot partition; boot.img into
 * the MBR's boot code area, told where core.img starts. The first sector of core.img
 * (diskboot.img) holds the list of sectors to load next, which grub-mkimage fills with the
 * length: the start sector is patched in here.
 *
 * UEFI: grub-mkimage -O x86_64-efi as the removable-media path EFI/BOOT/BOOTX64.EFI (UEFI 2.10
 * section 3.5.1.1) on the EFI system partition, written with mtools; an embedded configuration
 * finds the root filesystem by UUID.
 */
import { cp, mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Recipe } from './recipe.js';
import type { KernelLinks } from './configure.js';
import { BuildError, type BuildSession } from './session.js';
import { inRoot, writeInRoot } from './rootpath.js';

export const GRUB_LIB = '/usr/lib/grub';

/** boot.img offsets (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h). */
const KERNEL_SECTOR = 0x5c;
const BOOT_DRIVE_CHECK = 0x66;
/** The BIOS parameter block boot.img skips over: kept from the disk's sector. */
const BPB_START = 0x3;
const BPB_END = 0x5a;
/** The boot code ends where the disk signature and partition table begin. */
const BOOT_CODE_END = 0x1b8;
/** diskboot.img: the first blocklist entry ({ u64 start, u16 len, u16 segment }) ends the sector. */
const FIRST_BLOCKLIST = 512 - 12;

const FS_MODULE = { ext4: 'ext2', xfs: 'xfs' } as const;

/** The grub.cfg of the image: the kernel and initrd links, root=UUID and the recipe's command line. */
export function grubConfig(recipe: Recipe, rootUuid: string, title: string, kernel: KernelLinks): string {
  const speed = /console=ttyS\d+,(\d+)/.exec(recipe.kernelCmdline)?.[1] ?? '115200';
  return [
    `# written by diskhub build: boots ${kernel.linux} and ${kernel.initrd}, the links the kernel package`,
    '# keeps pointing at the newest kernel, so kernel updates need no change here.',
    `serial --unit=0 --speed=${speed}`,
    'terminal_input serial console',
    'terminal_output serial console',
    'set timeout=1',
    'insmod part_gpt',
    `insmod ${FS_MODULE[recipe.disk.filesystem]}`,
    `search --no-floppy --fs-uuid --set=root ${rootUuid}`,
    `menuentry '${title.replace(/'/g, '')}' {`,
    `\tlinux ${kernel.linux} root=UUID=${rootUuid} ro ${recipe.kernelCmdline}`.trimEnd(),
    `\tinitrd ${kernel.initrd}`,
    '}',
    '',
  ].join('\n');
}

/** The files under /boot/grub of the root filesystem: grub.cfg and the platforms' modules. */
export async function writeGrubFiles(root: string, recipe: Recipe, rootUuid: string, title: string, kernel: KernelLinks): Promise<void> {
  const dir = await inRoot(root, '/boot/grub', { followLast: true });
  await mkdir(dir, { recursive: true });
  for (const platform of platforms(recipe)) {
    await stat(join(GRUB_LIB, platform, 'normal.mod')).catch(() => { throw new BuildError(`${GRUB_LIB}/${platform} is missing: install ${platform === 'i386-pc' ? 'grub-pc-bin' : 'grub-efi-amd64-bin'} on this machine`); });
    // What grub-install copies for `insmod` at boot: the modules and their lists.
    const src = join(GRUB_LIB, platform);
    await cp(src, join(dir, platform), { recursive: true, filter: (s) => s === src || /\.(mod|lst)$/.test(s) });
  }
  await writeInRoot(root, '/boot/grub/grub.cfg', grubConfig(recipe, rootUuid, title, kernel));
}

function platforms(recipe: Recipe): string[] {
  return [...(recipe.bootloader.bios ? ['i386-pc'] : []), ...(recipe.bootloader.uefi ? ['x86_64-efi'] : [])];
}

/**
 * BIOS boot code: core.img into the BIOS boot partition (at `coreSector`), boot.img into the MBR.
 * `rootPartition` is the GPT number of the root partition (the prefix `(,gptN)/boot/grub`:
 * an empty device is the disk GRUB was loaded from).
 */
export async function installBiosBoot(session: BuildSession, raw: string, work: string, recipe: Recipe, rootPartition: number, coreSector: number, coreMaxBytes: number): Promise<void> {
  const core = join(work, 'core.img');
  await session.run('grub-mkimage', ['--format=i386-pc', `--directory=${GRUB_LIB}/i386-pc`, `--output=${core}`, `--prefix=(,gpt${rootPartition})/boot/grub`,
    '--compression=auto', 'biosdisk', 'part_gpt', FS_MODULE[recipe.disk.filesystem]]);
  // Padded to whole sectors: diskboot.img loads it sector by sector.
  const made = await readFile(core);
  const coreImg = Buffer.alloc(Math.ceil(made.length / 512) * 512);
  made.copy(coreImg);
  if (coreImg.length > coreMaxBytes) throw new BuildError(`core.img is ${coreImg.length} bytes: it does not fit the ${coreMaxBytes}-byte BIOS boot partition`);
  // The rest of core.img follows its first sector: the blocklist's start is the next sector.
  coreImg.writeBigUInt64LE(BigInt(coreSector + 1), FIRST_BLOCKLIST);
  const bootImg = await readFile(join(GRUB_LIB, 'i386-pc', 'boot.img'));
  if (bootImg.length !== 512) throw new BuildError(`${GRUB_LIB}/i386-pc/boot.img is ${bootImg.length} bytes, not 512`);
  const fh = await open(raw, 'r+');
  try {
    const mbr = Buffer.alloc(512);
    await fh.read(mbr, 0, 512, 0);
    const boot = Buffer.from(bootImg);
    mbr.copy(boot, BPB_START, BPB_START, BPB_END);
    boot.writeBigUInt64LE(BigInt(coreSector), KERNEL_SECTOR);
    // A hard disk: trust the BIOS's drive number (grub-bios-setup replaces the jump with two NOPs).
    boot[BOOT_DRIVE_CHECK] = 0x90;
    boot[BOOT_DRIVE_CHECK + 1] = 0x90;
    // Only the boot code: the disk signature and the protective MBR entry stay.
    boot.copy(mbr, 0, 0, BOOT_CODE_END);
    await fh.write(coreImg, 0, coreImg.length, coreSector * 512);
    await fh.write(mbr, 0, 512, 0);
  } finally {
    await fh.close();
  }
  session.note(`wrote boot.img to the MBR and ${coreImg.length} bytes of core.img at sector ${coreSector}`);
}

/** UEFI: a FAT32 EFI system partition holding EFI/BOOT/BOOTX64.EFI. */
export async function installEfiBoot(session: BuildSession, raw: string, work: string, recipe: Recipe, esp: { start: number; size: number }, espVolumeId: string, rootUuid: string): Promise<void> {
  const early = join(work, 'efi-early.cfg');
  await writeFile(early, `search --no-floppy --fs-uuid --set=root ${rootUuid}\nset prefix=($root)/boot/grub\n`);
  const efi = join(work, 'BOOTX64.EFI');
  await session.run('grub-mkimage', ['--format=x86_64-efi', `--directory=${GRUB_LIB}/x86_64-efi`, `--output=${efi}`, '--prefix=/boot/grub', `--config=${early}`,
    'part_gpt', FS_MODULE[recipe.disk.filesystem], 'fat', 'search', 'search_fs_uuid', 'normal', 'configfile', 'linux', 'echo', 'test', 'serial', 'terminal', 'efi_gop', 'gzio']);
  const at = `${raw}@@${esp.start}`;
  await makeEsp(session, raw, esp, espVolumeId);
  await session.run('mmd', ['-i', at, '::/EFI', '::/EFI/BOOT']);
  await session.run('mcopy', ['-i', at, efi, '::/EFI/BOOT/BOOTX64.EFI']);
}

/**
 * The EFI system partition's FAT32 filesystem, written in place in the raw file (mkfs.fat
 * --offset). One-sector clusters keep a small ESP above FAT32's minimum of 65525 clusters, which
 * mtools insists on (mkfs.fat's default cluster size would go below it).
 */
export async function makeEsp(session: BuildSession, raw: string, esp: { start: number; size: number }, volumeId: string): Promise<void> {
  const small = esp.size < 260 * (1 << 20);
  await session.run('mkfs.fat', ['-F', '32', ...(small ? ['-s', '1'] : []), '-n', 'ESP', '-i', volumeId, '--offset', String(esp.start / 512), raw, String(esp.size / 1024)]);
}
