/** `diskhub img --help` and `--version`. */
import { out } from './common.js';

/** The qemu-img release whose behaviour `diskhub img` reproduces. */
export const QEMU_IMG_COMPAT = '7.2';

export const VERSION = `diskhub img (qemu-img ${QEMU_IMG_COMPAT} compatible)\n`;

export const HELP = `${VERSION}usage: diskhub img [standard options] command [command options]
A drop-in for qemu-img: the same commands, options, output and exit codes.

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-i aio] [-w] [-U] filename
  amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] filename
  compare [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] filename1 filename2
  convert [-c] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]]
          [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W]
          [--target-is-zero] [-n] [-p] [-q] [-U] filename [filename2 [...]] output_filename
  commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  dd [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  map [-f fmt] [--output=ofmt] [--start-offset=offset] [--max-length=len] [-U] filename
  rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename
  snapshot [-l] [-U] filename
  resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size
  snapshot [--object objectdef] [--image-opts] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] [-U] filename
  partitions [-f fmt] [--output=ofmt] filename [filename2 [...]]
  probe [-f declared_fmt] [--output=ofmt] filename|-   (format detection and safety inspection; exit 0 safe, 2 unsafe)
  config-drive -o output [--meta-data F] [--user-data F] [--network-data F] [--vendor-data F] [--ssh-key F]
          [--hostname H] [--uuid U] [--nocloud]   (an OpenStack config drive, or a NoCloud seed, as ISO 9660)
  ls [-l] [-R] [--csv] [-h] [--uids] [--times|--time-t|--time-relative|--time-days] [--checksum[=type]] [-f fmt] filename dir [dir ...]   (virt-ls)
  cat [-f fmt] filename file [file ...]   (virt-cat)
  copy-out [-f fmt] filename path [path ...] localdir   (virt-copy-out)
  inspect [-f fmt] [--output=ofmt] filename   (virt-inspector; exit 0 inspected, 1 no operating system, 2 error)
  lint [-f fmt] [--output=ofmt] filename   (the cloud-image checklist; exit 0 no failure, 1 failures, 2 error)
  boot-test [--accel kvm|tcg|auto] [--timeout S] [--disk-size [+]size] [--json] filename|url|image-id
          (boots it in QEMU with a config drive and checks it as an operator would; exit 0 passed, 1 failed, 2 error)
  sysprep [--format fmt] [--list-operations] [--enable ops] [--operations ops] [-n] [-q] [-v] [-a] filename   (virt-sysprep's clean-up, in place; root)
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] [-l snapshot_param] filename]

Sizes take the suffixes k, M, G, T, P, E (powers of 1024) or b for bytes.
'--output' is 'human' (default) or 'json'.
info, map and convert take '--partition N' or '--lv VG/LV' to work on one partition or LVM logical volume;
ls, cat and copy-out take them to choose the filesystem (default: the operating system's root filesystem).
`;

/** Commands call this for -h/--help. */
export function printHelp(): number {
  out(HELP);
  return 0;
}
