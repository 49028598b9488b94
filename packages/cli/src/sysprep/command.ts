/**
 * `diskhub img sysprep [-a] IMAGE`: virt-sysprep's clean-up of a guest image, offline, with its
 * option and operation names (operations.ts) and its exit codes (0 done, 1 error; 128+N after
 * signal N, every mount and loop device gone). The guest's filesystems are mounted by the kernel
 * from loop devices (access.ts says how and why); mounts and loop devices go through the build's
 * session, which undoes them on every exit path, SIGINT, SIGTERM and SIGHUP included.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspectWithTrees, isDiskError, type Image, type InspectedOs } from '@diskhub/disk';
import { getopt, UsageError, type LongOption } from '../img/getopt.js';
import { CliError, errorMessage, openCliImage, stdoutStream } from '../img/common.js';
import { BuildError, BuildSession, Interrupted, signalExitCode } from '../image-build/session.js';
import { inRoot } from '../image-build/rootpath.js';
import { removeTree } from '../image-build/disk.js';
import { CopiedFilesystem, FilesystemDevices, SysprepError, imageUsers, mountInPlace, planFilesystems, type GuestFilesystem } from './access.js';
import { GuestFiles } from './guest-files.js';
import { listOperations, OperationChoice, OperationError } from './operations.js';

export const SYSPREP_USAGE = `diskhub img sysprep: reset or unconfigure a virtual machine image so clones can be made

 diskhub img sysprep [--options] [-a] disk.img

Options (virt-sysprep's):
  -a, --add FILE           the disk image (any writable format; changed in place)
  --format FMT             its format (default: probed); before -a, as virt-sysprep wants it
  --list-operations        list the operations ('*': run by default) and exit
  --enable OPS             run only these operations (comma-separated; once only)
  --operation(s) OPS       add operations to the set, or remove them with a leading '-';
                           'defaults' and 'all' name groups (e.g. --operations defaults,-logfiles)
  -n, --dry-run, --dryrun  do everything on a scratch copy: the image is not changed
  -q, --quiet              no progress messages
  -v, --verbose            list every file removed or changed, and the commands run
  -h, --help

Runs as root (loop devices and mount). Exit status: 0 done, 1 error.
`;

const LONG_OPTIONS: LongOption[] = [
  { name: 'help', hasArg: 0, val: 'h' },
  { name: 'add', hasArg: 1, val: 'a' },
  { name: 'format', hasArg: 1, val: 'format' },
  { name: 'list-operations', hasArg: 0, val: 'list-operations' },
  { name: 'enable', hasArg: 1, val: 'enable' },
  { name: 'operation', hasArg: 1, val: 'operations' },
  { name: 'operations', hasArg: 1, val: 'operations' },
  { name: 'dry-run', hasArg: 0, val: 'n' },
  { name: 'dryrun', hasArg: 0, val: 'n' },
  { name: 'quiet', hasArg: 0, val: 'q' },
  { name: 'verbose', hasArg: 0, val: 'v' },
];

const PROG = 'diskhub img sysprep';

interface SysprepArgs {
  image: string;
  format: string | undefined;
  choice: OperationChoice;
  dryRun: boolean;
  quiet: boolean;
  verbose: boolean;
}

export async function sysprepCommand(argv: string[]): Promise<number> {
  let args: SysprepArgs;
  try {
    const { options, positional } = getopt(argv, ':a:hnqvx', LONG_OPTIONS);
    const choice = new OperationChoice();
    const images: { path: string; format: string | undefined }[] = [];
    let format: string | undefined;
    let formatConsumed = true;
    let dryRun = false, quiet = false, verbose = false;
    for (const o of options) {
      if (o.opt === 'h') { stdoutStream().write(SYSPREP_USAGE); return 0; }
      if (o.opt === 'list-operations') { stdoutStream().write(listOperations()); return 0; }
      if (o.opt === 'a') { images.push({ path: o.arg!, format }); formatConsumed = true; }
      else if (o.opt === 'format') { format = o.arg === 'auto' ? undefined : o.arg!; formatConsumed = false; }
      else if (o.opt === 'enable') choice.enable(o.arg!);
      else if (o.opt === 'operations') choice.operations(o.arg!);
      else if (o.opt === 'n') dryRun = true;
      else if (o.opt === 'q') quiet = true;
      else if (o.opt === 'v' || o.opt === 'x') verbose = true;
    }
    for (const p of positional) { images.push({ path: p, format }); formatConsumed = true; }
    if (!formatConsumed) throw new OperationError('--format parameter must appear before -a parameter');
    if (images.length === 0) throw new OperationError('you must give a disk image (-a disk.img).  Read the usage (--help) for further information.');
    if (images.length > 1) throw new OperationError('one disk image only: a guest on several disks is not supported');
    args = { image: images[0]!.path, format: images[0]!.format, choice, dryRun, quiet, verbose };
  } catch (e) {
    if (e instanceof UsageError || e instanceof OperationError) {
      process.stderr.write(`${PROG}: error: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  if (process.getuid?.() !== 0) { process.stderr.write(`${PROG}: error: must run as root (loop devices and mount)\n`); return 1; }
  return await sysprep(args);
}

async function sysprep(args: SysprepArgs): Promise<number> {
  const session = new BuildSession(null, 0, args.quiet, args.verbose);
  const started = Date.now();
  // virt-sysprep's progress lines: "[   1.2] Examining the guest ...".
  const message = (text: string) => { if (!args.quiet) stdoutStream().write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}] ${text}\n`); };
  let work: string | null = null;
  let image: Image | null = null;
  let failure: unknown = null;
  try {
    message('Examining the guest ...');
    image = await openCliImage(args.image, { ...(args.format ? { format: args.format } : {}), writable: !args.dryRun }, args.image);
    if (!args.dryRun && !image.write) throw new SysprepError(`${args.image}: the ${image.format} format is read-only here: convert it to a writable format (qcow2, raw) first`);
    // A streamOptimized vmdk only appends grains: an allocated one cannot be rewritten (QEMU
    // refuses too), so the write-back would stop half-way. Refused before anything is changed.
    const specific = (await image.info())['format-specific'] as { data?: { 'create-type'?: string } } | undefined;
    if (!args.dryRun && image.format === 'vmdk' && specific?.data?.['create-type'] === 'streamOptimized') {
      throw new SysprepError(`${args.image}: a streamOptimized vmdk cannot be changed in place: convert it (to qcow2, or to a monolithicSparse vmdk) first`);
    }
    const users = await imageUsers(session, args.image);
    if (users.length > 0) throw new SysprepError(`${args.image} is in use (${users.join('; ')}): changing the disk of a running guest would corrupt it`);
    const { inspection } = await inspectWithTrees(image);
    const systems = inspection.operatingSystems;
    if (systems.length === 0) throw new SysprepError('no operating systems were found in the guest image');
    const windows = systems.filter((s) => s.type === 'windows');
    if (windows.length === systems.length) throw new SysprepError(`${windows[0]!.root} holds Windows: only Linux guests are supported`);
    // Plan every system's mounts before changing anything.
    const plans: { os: InspectedOs; filesystems: GuestFilesystem[] }[] = [];
    for (const os of systems.filter((s) => s.type === 'linux')) plans.push({ os, filesystems: await planFilesystems(image, os, inspection.filesystems) });
    work = await mkdtemp(join(tmpdir(), 'diskhub-sysprep-'));

    // A raw image's partitions are changed in place by the kernel; any other format, a logical
    // volume, and a dry run, through copies.
    const rawInPlace = image.format === 'raw' && !image.backing && !args.dryRun;
    const inPlace = (fs: GuestFilesystem) => rawInPlace && !fs.lv;
    const devices = new FilesystemDevices(image);
    const ops = args.choice.chosen();
    for (const [n, { os, filesystems }] of plans.entries()) {
      const root = join(work, `root${n}`);
      const mark = session.teardownMark;
      const copies: CopiedFilesystem[] = [];
      for (const [i, fs] of filesystems.entries()) {
        session.checkInterrupted();
        // Later mount points lie inside the guest's root: resolved there, as the guest would.
        const target = fs.mountpoint === '/' ? root : await inRoot(root, fs.mountpoint, { followLast: true });
        if (inPlace(fs)) await mountInPlace(session, args.image, fs, target);
        else {
          const copy = await CopiedFilesystem.copy(await devices.deviceOf(fs), fs, join(work, `fs${n}-${i}.raw`), session.signal);
          copies.push(copy);
          await copy.mount(session, target, false);
        }
        session.note(`mounted ${fs.device} (${fs.fstype}) on ${fs.mountpoint}`);
      }
      const files = new GuestFiles(root);
      for (const op of ops) {
        session.checkInterrupted();
        message(`Performing "${op.name}" ...`);
        const from = files.changes.length;
        await op.perform(files, os);
        if (args.verbose || args.dryRun) for (const c of files.changes.slice(from)) stdoutStream().write(`  ${args.dryRun ? 'would have ' : ''}${c}\n`);
      }
      // Unmount (the kernel writes everything out) and detach, then copy the changes back.
      await session.unwindTo(mark);
      if (!args.dryRun && copies.length > 0) {
        session.checkInterrupted();
        message('Writing the changed blocks back to the image ...');
        let bytes = 0;
        for (const c of copies) bytes += await c.writeBack(await devices.deviceOf(c.fs));
        await image.flush?.();
        session.note(`wrote ${bytes} bytes back`);
      }
      for (const c of copies) await rm(c.file, { force: true });
    }
  } catch (e) {
    failure = e;
  }
  if (image) await image.close().catch((e: unknown) => { failure ??= e; });
  const leftovers = await session.close();
  if (work) await removeTree(work).catch((e: Error) => leftovers.push(e.message));
  if (leftovers.length > 0) process.stderr.write(`${PROG}: could not clean up:\n  ${leftovers.join('\n  ')}\n`);
  if (failure instanceof Interrupted) {
    process.stderr.write(`${PROG}: ${failure.message}; cleaned up\n`);
    return signalExitCode(failure.signal);
  }
  if (failure) {
    const known = failure instanceof SysprepError || failure instanceof BuildError || isDiskError(failure) || failure instanceof CliError;
    process.stderr.write(`${PROG}: error: ${known ? errorMessage(failure) : (failure as Error).stack ?? String(failure)}\n`);
    return 1;
  }
  return leftovers.length > 0 ? 1 : 0;
}
