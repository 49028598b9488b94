/**
 * `diskhub build RECIPE -o OUTPUT`: a bootable cloud image from a declarative recipe, as
 * diskimage-builder makes one, on this machine (as root: loop devices, mounts, chroot).
 *
 * The steps: a raw disk with a GPT (BIOS boot, EFI system, root last); the root filesystem on a
 * loop device over its partition; the base system (debootstrap, cached; an image; a tarball);
 * packages, users, files, services and cloud-init in a chroot; the clean-up a cloud image needs;
 * GRUB for BIOS and UEFI written by hand; the conversion to the output format by the engine
 * (`diskhub img convert`); an optional upload to the image service.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { randomBytes, randomUUID } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { getopt, UsageError, type LongOption } from '../img/getopt.js';
import { AUTH_OPTIONS, authFromEnv, ImageServiceClient, type AuthSettings } from '../compute/client.js';
import { loadRecipe, RecipeError, type Recipe } from './recipe.js';
import { BuildError, BuildSession, Interrupted, signalExitCode } from './session.js';
import { attachLoop, engineConvert, isMounted, mountAt, partitionDisk, removeTree, type DiskLayout } from './disk.js';
import { unpackBase } from './base.js';
import { cleanImage, configureSystem, finishChroot, installPackages, mountChrootFilesystems, prepareChroot, readOsRelease, writeFstab } from './configure.js';
import { installBiosBoot, installEfiBoot, makeEsp, writeGrubFiles } from './grub.js';

export const BUILD_USAGE = `usage: diskhub build [options] RECIPE -o OUTPUT

Build a bootable cloud image from RECIPE (YAML or JSON; see the README's "diskhub build" and
examples/). Runs as root: it needs loop devices, mount and chroot, and debootstrap, sgdisk,
mkfs.ext4 or mkfs.xfs, grub-mkimage (grub-pc-bin, grub-efi-amd64-bin) and mtools.

  -o, --output FILE    the image to write (its format comes from the recipe's output section)
  --force              replace OUTPUT if it exists
  --log FILE           the build log (default: OUTPUT.log)
  --work-dir DIR       where the raw disk and mount points are made (default: OUTPUT's directory)
  --check              check the recipe and print it as the build reads it; build nothing
  --no-upload          do not upload even if the recipe has an upload section
  -q, --quiet          no progress on the terminal
  --os-auth-url URL ... the openstack client's options (or OS_* variables), for the upload

Environment: DISKHUB_BUILD_CACHE  debootstrap tarballs and package downloads
             (default /var/cache/diskhub/build)
Exit status: 0 built, 1 the build failed, 2 a usage or recipe error, 128+N stopped by signal N.
`;

const OPTIONS: LongOption[] = [
  { name: 'help', hasArg: 0, val: 'h' },
  { name: 'output', hasArg: 1, val: 'o' },
  { name: 'force', hasArg: 0, val: 'force' },
  { name: 'log', hasArg: 1, val: 'log' },
  { name: 'work-dir', hasArg: 1, val: 'work-dir' },
  { name: 'check', hasArg: 0, val: 'check' },
  { name: 'no-upload', hasArg: 0, val: 'no-upload' },
  { name: 'quiet', hasArg: 0, val: 'q' },
  ...AUTH_OPTIONS.map((o) => ({ name: o.name, hasArg: 1 as const, val: `auth:${o.key}` })),
];

interface BuildArgs {
  recipePath: string;
  output: string;
  force: boolean;
  log: string;
  workDir: string;
  upload: boolean;
  quiet: boolean;
  auth: AuthSettings;
}

export async function buildMain(argv: string[]): Promise<number> {
  let args: BuildArgs;
  let check = false;
  try {
    const { options, positional } = getopt(['build', ...argv], ':ho:q', OPTIONS);
    const auth: AuthSettings = {};
    let output: string | undefined;
    let log: string | undefined;
    let workDir: string | undefined;
    let force = false, upload = true, quiet = false;
    for (const o of options) {
      if (o.opt === 'h') { process.stdout.write(BUILD_USAGE); return 0; }
      if (o.opt === 'o') output = o.arg!;
      else if (o.opt === 'force') force = true;
      else if (o.opt === 'log') log = o.arg!;
      else if (o.opt === 'work-dir') workDir = o.arg!;
      else if (o.opt === 'check') check = true;
      else if (o.opt === 'no-upload') upload = false;
      else if (o.opt === 'q') quiet = true;
      else if (o.opt.startsWith('auth:')) auth[o.opt.slice(5) as keyof AuthSettings] = o.arg!;
    }
    if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'a RECIPE is needed' : `one RECIPE only, got ${positional.length} arguments`);
    if (!output && !check) throw new UsageError('-o OUTPUT is needed');
    const out = resolve(output ?? 'image');
    args = { recipePath: positional[0]!, output: out, force, log: resolve(log ?? `${out}.log`), workDir: resolve(workDir ?? dirname(out)), upload, quiet, auth };
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`diskhub build: ${e.message}\n${BUILD_USAGE}`); return 2; }
    throw e;
  }

  let recipe: Recipe;
  try {
    recipe = await loadRecipe(args.recipePath);
  } catch (e) {
    if (e instanceof RecipeError) { process.stderr.write(`diskhub build: ${e.message}\n`); return 2; }
    process.stderr.write(`diskhub build: ${args.recipePath}: ${(e as Error).message}\n`);
    return 2;
  }
  if (check) {
    const shown = { ...recipe, files: recipe.files.map((f) => ({ ...f, content: `${f.content.length} bytes`, mode: f.mode.toString(8).padStart(4, '0') })) };
    process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) { process.stderr.write('diskhub build: must run as root (loop devices, mount, chroot)\n'); return 1; }
  if (!args.force && (await stat(args.output).then(() => true, () => false))) {
    process.stderr.write(`diskhub build: ${args.output} exists (--force replaces it)\n`);
    return 1;
  }
  return await build(recipe, args);
}

async function build(recipe: Recipe, args: BuildArgs): Promise<number> {
  const uploading = recipe.upload !== undefined && args.upload;
  const session = new BuildSession(args.log, 10 + (uploading ? 1 : 0), args.quiet);
  const work = await mkdtemp(join(args.workDir, '.diskhub-build-'));
  session.note(`diskhub build ${args.recipePath} -> ${args.output} (work directory ${work})`);
  let failure: unknown = null;
  const started = Date.now();
  try {
    await buildImage(session, recipe, args, work);
    if (uploading) {
      session.progress(`uploading to the image service as '${recipe.upload!.name}'`);
      const id = await uploadImage(recipe, args);
      session.info(`  uploaded: image ${id}`);
    }
  } catch (e) {
    failure = e;
  }
  const leftovers = await session.close();
  // The work directory holds the raw disk and the mount points: removed when nothing is mounted there.
  const removed = await removeTree(work).then(() => true, (e: Error) => { leftovers.push(e.message); return false; });
  if (leftovers.length > 0) process.stderr.write(`diskhub build: could not clean up:\n  ${leftovers.join('\n  ')}\n${removed ? '' : `  (left ${work})\n`}`);
  if (failure instanceof Interrupted) {
    process.stderr.write(`diskhub build: ${failure.message}; cleaned up (log: ${args.log})\n`);
    return signalExitCode(failure.signal);
  }
  if (failure) {
    process.stderr.write(`diskhub build: ${failure instanceof BuildError ? failure.message : (failure as Error).stack ?? String(failure)}\n  (log: ${args.log})\n`);
    return 1;
  }
  const size = (await stat(args.output)).size;
  if (!args.quiet) process.stderr.write(`built ${args.output} (${recipe.output.format}, ${size} bytes) in ${Math.round((Date.now() - started) / 1000)} s; log: ${args.log}\n`);
  return leftovers.length > 0 ? 1 : 0;
}

async function buildImage(session: BuildSession, recipe: Recipe, args: BuildArgs, work: string): Promise<void> {
  const raw = join(work, 'disk.raw');
  const root = join(work, 'root');
  const rootUuid = randomUUID();
  // A FAT volume id, which blkid and fstab write as XXXX-XXXX.
  const espVolumeId = randomBytes(4).toString('hex').toUpperCase();
  const espUuid = `${espVolumeId.slice(0, 4)}-${espVolumeId.slice(4)}`;

  session.progress(`partitioning a ${recipe.disk.size / (1 << 20)} MiB disk (GPT: ${[recipe.bootloader.bios ? 'BIOS boot' : '', recipe.disk.esp ? 'EFI system' : '', 'root'].filter(Boolean).join(', ')})`);
  const layout = await partitionDisk(session, raw, recipe);

  session.progress(`making the root filesystem (${recipe.disk.filesystem}, UUID ${rootUuid})`);
  const mark = session.teardownMark;
  const rootDev = await attachLoop(session, raw, layout.root.start, layout.root.size);
  if (recipe.disk.filesystem === 'ext4') await session.run('mkfs.ext4', ['-q', '-F', '-L', recipe.disk.label, '-U', rootUuid, rootDev]);
  else await session.run('mkfs.xfs', ['-q', '-f', '-L', recipe.disk.label, '-m', `uuid=${rootUuid}`, rootDev]);
  await mountAt(session, rootDev, root);
  // debootstrap mounts /proc and /sys in the target while it runs: an interruption can leave them.
  session.onTeardown(`unmount anything below ${root}`, () => unmountBelow(session, root));

  session.progress(`base system: ${describeBase(recipe)}`);
  await unpackBase(session, recipe.base, root, work);
  const title = await readOsRelease(root);

  session.progress(`installing packages: ${[recipe.kernel, ...(recipe.cloudInit.enabled ? ['cloud-init'] : []), ...recipe.packages].join(' ')}`);
  const chrootMark = session.teardownMark;
  await mountChrootFilesystems(session, root);
  await prepareChroot(root);
  await writeFstab(root, recipe, { rootUuid, ...(layout.esp ? { espUuid } : {}) });
  const kernel = await installPackages(session, root, recipe, recipe.base.kind === 'debootstrap' ? recipe.base.debootstrap.suite : 'other');

  session.progress(`configuring: ${recipe.users.length} users, ${recipe.groups.length} groups, ${recipe.files.length} files, ${recipe.services.enable.length + recipe.services.disable.length} services, cloud-init ${recipe.cloudInit.enabled ? recipe.cloudInit.datasources.join(', ') : 'off'}`);
  await configureSystem(session, root, recipe);
  await finishChroot(root);
  await session.unwindTo(chrootMark);

  session.progress('cleaning: SSH host keys, machine-id, logs, caches');
  await cleanImage(root);

  session.progress(`boot loader files: /boot/grub (${[recipe.bootloader.bios ? 'BIOS' : '', recipe.bootloader.uefi ? 'UEFI' : ''].filter(Boolean).join(' and ')})`);
  await writeGrubFiles(root, recipe, rootUuid, title, kernel);

  session.progress('unmounting the root filesystem');
  // Discarded blocks become holes in the raw file: the conversion skips them.
  await session.run('fstrim', [root]);
  await session.unwindTo(mark);
  if (await isMounted(root)) throw new BuildError(`${root} is still mounted`);

  session.progress('writing the boot code');
  await installBoot(session, raw, work, recipe, layout, rootUuid, espVolumeId);

  session.progress(`converting to ${recipe.output.format}${recipe.output.compress ? ' (compressed)' : ''}${recipe.output.options.length ? ` -o ${recipe.output.options.join(',')}` : ''}`);
  await convertOutput(session, raw, recipe, args.output);
}

async function installBoot(session: BuildSession, raw: string, work: string, recipe: Recipe, layout: DiskLayout, rootUuid: string, espVolumeId: string): Promise<void> {
  if (recipe.bootloader.bios) {
    const bios = layout.biosBoot!;
    await installBiosBoot(session, raw, work, recipe, layout.root.number, bios.start / 512, bios.size);
  }
  if (layout.esp) {
    if (recipe.bootloader.uefi) await installEfiBoot(session, raw, work, recipe, layout.esp, espVolumeId, rootUuid);
    else await makeEsp(session, raw, layout.esp, espVolumeId);
  }
}

async function convertOutput(session: BuildSession, raw: string, recipe: Recipe, output: string): Promise<void> {
  const argv = ['-f', 'raw', '-O', recipe.output.format, ...(recipe.output.compress ? ['-c'] : []), ...(recipe.output.options.length ? ['-o', recipe.output.options.join(',')] : []), raw, output];
  // convert writes under a temporary name and renames: an existing OUTPUT (--force) is replaced whole.
  await engineConvert(session, argv, 'output');
}

function describeBase(recipe: Recipe): string {
  const b = recipe.base;
  if (b.kind === 'debootstrap') return `debootstrap ${b.debootstrap.suite}${b.debootstrap.variant ? ` (${b.debootstrap.variant})` : ''}`;
  return `${b.kind} ${b.path}`;
}

async function unmountBelow(session: BuildSession, dir: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '');
  for (const m of mounts.filter((x) => x.startsWith(`${dir}/`)).reverse()) await session.runTeardown('umount', ['--lazy', m.replace(/\\040/g, ' ')]);
}

/** Glance's disk_format for an output format. */
const DISK_FORMAT: Record<string, string> = { qcow2: 'qcow2', raw: 'raw', vmdk: 'vmdk', vdi: 'vdi', vhdx: 'vhdx', vpc: 'vhd' };

async function uploadImage(recipe: Recipe, args: BuildArgs): Promise<string> {
  const up = recipe.upload!;
  const diskFormat = DISK_FORMAT[recipe.output.format];
  if (!diskFormat) throw new BuildError(`upload: the image service has no disk_format for ${recipe.output.format}`);
  const client = await ImageServiceClient.connect(authFromEnv(process.env, args.auth));
  const created = await client.createImage({ name: up.name, disk_format: diskFormat, container_format: up.container_format, ...(up.visibility ? { visibility: up.visibility } : {}), ...up.properties });
  try {
    const size = (await stat(args.output)).size;
    await client.upload(created.id, createReadStream(args.output, { highWaterMark: 1 << 20 }), size);
  } catch (e) {
    await client.deleteImage(created.id).catch(() => undefined);
    throw new BuildError(`upload of ${basename(args.output)} failed: ${(e as Error).message}`);
  }
  return created.id;
}
