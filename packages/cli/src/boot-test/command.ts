/**
 * `diskhub img boot-test IMAGE`: boot an image in QEMU with a config drive and check what an
 * operator checks by hand (run.ts). Exit status 0 when every check passed, 1 when one failed,
 * 2 when the test could not be run (bad arguments, an image that cannot be opened or fetched,
 * a missing tool); 130/143 after Ctrl-C or SIGTERM (the VM and temporary files are gone then too).
 */
import { isDiskError } from '@diskhub/disk';
import { getopt, UsageError, type LongOption } from '../img/getopt.js';
import { errorMessage, err, out } from '../img/common.js';
import { parseSize } from '../img/output.js';
import { AUTH_OPTIONS, type AuthSettings } from '../compute/client.js';
import type { AccelMode } from './accel.js';
import { bootTest, type BootTestReport } from './run.js';

export const BOOT_TEST_USAGE = `usage: diskhub img boot-test [--accel kvm|tcg|auto] [--timeout SECONDS] [--disk-size [+]SIZE]
       [--memory MiB] [--cpus N] [--ssh-user USER] [--console-log FILE] [--json] IMAGE

Boots IMAGE (a file, an http(s) URL, or an image id in the image service) in qemu-system-x86_64
with a config drive (a new SSH key, a hostname, a user-data script) and checks that it boots,
cloud-init finishes without errors, the key logs in over SSH, the hostname and the script took
effect and the root filesystem grew to the disk. The image is never written: the VM's disk is
a qcow2 overlay on it.

  --accel MODE       kvm, tcg or auto (default: KVM when a probe guest boots under it, else TCG)
  --timeout SECONDS  from the VM's start to the verdict (default 600: TCG on a busy host)
  --disk-size SIZE   the guest's disk: SIZE, or +SIZE more than the image (default +1G)
  --memory MiB       guest memory (default 1024)
  --cpus N           virtual CPUs (default 2)
  --ssh-user USER    log in as USER (default: the user cloud-init gave the key to)
  --console-log FILE keep the serial console there (the firmware's log in FILE.firmware)
  --json             the report as JSON

Image service (for an image id): the openstack client's OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
OS_PROJECT_NAME, ... or --os-auth-url URL --os-username U ... --token T --os-image-url URL.

Exit status: 0 passed, 1 failed, 2 error.
`;

const LONG_OPTIONS: LongOption[] = [
  { name: 'help', hasArg: 0, val: 'h' },
  { name: 'accel', hasArg: 1, val: 'accel' },
  { name: 'timeout', hasArg: 1, val: 'timeout' },
  { name: 'disk-size', hasArg: 1, val: 'disk-size' },
  { name: 'memory', hasArg: 1, val: 'memory' },
  { name: 'cpus', hasArg: 1, val: 'cpus' },
  { name: 'ssh-user', hasArg: 1, val: 'ssh-user' },
  { name: 'console-log', hasArg: 1, val: 'console-log' },
  { name: 'json', hasArg: 0, val: 'json' },
  ...AUTH_OPTIONS.map((o) => ({ name: o.name, hasArg: 1 as const, val: `auth:${o.key}` })),
];

const DEFAULT_TIMEOUT = 600;

function positiveInteger(text: string, what: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > max) throw new UsageError(`invalid ${what} '${text}' (a whole number from 1 to ${max})`);
  return Number(text);
}

export async function bootTestCommand(argv: string[]): Promise<number> {
  const controller = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    // A second signal: leave now; the exit hook still kills the VM by its PID (run.ts).
    if (interrupted) process.exit(sig === 'SIGINT' ? 130 : 143);
    interrupted = sig;
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let json = false;
  try {
    const { options, positional } = getopt(argv, ':h', LONG_OPTIONS);
    let accel: AccelMode = 'auto';
    let timeout = DEFAULT_TIMEOUT;
    let diskSize = { bytes: 1024 ** 3, relative: true };
    let memoryMiB = 1024;
    let cpus = 2;
    let sshUser: string | undefined;
    let consoleLog: string | undefined;
    const auth: AuthSettings = {};
    for (const o of options) {
      const arg = o.arg ?? '';
      if (o.opt === 'h') { out(BOOT_TEST_USAGE); return 0; }
      if (o.opt.startsWith('auth:')) { auth[o.opt.slice(5) as keyof AuthSettings] = arg; continue; }
      switch (o.opt) {
        case 'accel':
          if (arg !== 'kvm' && arg !== 'tcg' && arg !== 'auto') throw new UsageError(`invalid --accel '${arg}' (kvm, tcg or auto)`);
          accel = arg;
          break;
        case 'timeout': timeout = positiveInteger(arg, '--timeout', 86400); break;
        case 'disk-size': {
          const bytes = parseSize(arg);
          if (bytes === null || bytes > BigInt(Number.MAX_SAFE_INTEGER) || (bytes === 0n && !arg.startsWith('+'))) throw new UsageError(`invalid --disk-size '${arg}' (a size such as 4G, or +1G for that much more than the image)`);
          diskSize = { bytes: Number(bytes), relative: arg.startsWith('+') };
          break;
        }
        case 'memory': memoryMiB = positiveInteger(arg, '--memory', 1 << 20); break;
        case 'cpus': cpus = positiveInteger(arg, '--cpus', 255); break;
        case 'ssh-user':
          if (!/^[a-z_][a-z0-9_.-]*$/i.test(arg)) throw new UsageError(`invalid --ssh-user '${arg}'`);
          sshUser = arg;
          break;
        case 'console-log': consoleLog = arg; break;
        case 'json': json = true; break;
      }
    }
    if (positional.length !== 1) throw new UsageError(positional.length === 0 ? 'Expecting one image (a file, a URL or an image id)' : `Invalid parameter '${positional[1]}'`);
    const report = await bootTest({
      image: positional[0]!, accel, timeout, diskSize, memoryMiB, cpus, auth, signal: controller.signal,
      ...(sshUser ? { sshUser } : {}), ...(consoleLog ? { consoleLog } : {}),
      progress: json ? () => undefined : (line) => err(`${line}\n`),
    });
    out(json ? `${JSON.stringify(report, null, 4)}\n` : humanReport(report));
    return report.passed ? 0 : 1;
  } catch (e) {
    if (interrupted) {
      err('diskhub img boot-test: interrupted; the VM and its files are removed\n');
      return interrupted === 'SIGINT' ? 130 : 143;
    }
    if (e instanceof UsageError) {
      err(`diskhub img boot-test: ${e.message}\nTry 'diskhub img boot-test --help' for more information.\n`);
      return 2;
    }
    // CliError, BootTestError, ComputeError, DiskError, a missing tool: the test could not run.
    if (e instanceof Error || isDiskError(e)) {
      err(`diskhub img boot-test: ${errorMessage(e)}\n`);
      return 2;
    }
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function humanReport(r: BootTestReport): string {
  const lines = [`boot-test of ${r.image} under ${r.accel.toUpperCase()} (${r.accel_reason}), disk ${r.disk_size} bytes`];
  for (const c of r.checks) lines.push(`${c.passed ? 'PASS' : 'FAIL'}  ${c.name.padEnd(16)} ${c.detail}  [${c.seconds.toFixed(1)} s]`);
  if (r.passed) lines.push(`PASSED in ${r.seconds.toFixed(1)} s`);
  else {
    lines.push(`FAILED in ${r.seconds.toFixed(1)} s: ${r.reason ?? 'a check failed'}`);
    if (r.console_excerpt) lines.push('console (last lines):', ...r.console_excerpt.split('\n').map((l) => `  | ${l}`));
  }
  return `${lines.join('\n')}\n`;
}
