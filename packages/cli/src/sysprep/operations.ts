/**
 * The sysprep operations: what each removes or changes in a Linux guest's mounted root. Names,
 * headings, default selection and the paths touched follow virt-sysprep 1.48 (libguestfs
 * guestfs-tools, sysprep/sysprep_operation_*.ml) for the operations it has; `cloud-init-state`
 * and `random-seed` are diskhub's own (virt-sysprep has no operation for cloud-init, and it
 * refreshes the random seed from its `customize` operation, see below). Differences from
 * virt-sysprep are said at the operation.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { InspectedOs } from '@diskhub/disk';
import type { GuestFiles } from './guest-files.js';

export interface SysprepOperation {
  name: string;
  /** Run when no --enable/--operations chooses (the `*` of --list-operations). */
  enabledByDefault: boolean;
  /** virt-sysprep's heading style: no final period. */
  heading: string;
  /** Only Linux guests are changed; virt-sysprep's operations that apply to Windows are not among these. */
  perform(files: GuestFiles, os: Pick<InspectedOs, 'packageManagement'>): Promise<void>;
}

/** sysprep_operation_logfiles.ml's list, in its (sorted) order. */
const LOG_GLOBS = [
  '/var/log/*.log*', '/var/log/audit/*', '/var/log/btmp*', '/var/log/cron*', '/var/log/dmesg*', '/var/log/lastlog*',
  '/var/log/maillog*', '/var/log/mail/*', '/var/log/messages*', '/var/log/secure*', '/var/log/spooler*', '/var/log/tallylog*',
  '/var/log/wtmp*', '/var/log/apache2/*_log', '/var/log/apache2/*_log-*', '/var/log/ntp', '/var/log/tuned/tuned.log',
  '/var/log/debug*', '/var/log/syslog*', '/var/log/faillog*', '/var/log/firewalld*', '/var/log/grubby*', '/var/log/xferlog*',
  // Files configured by /etc/logrotate.d/*, and logrotate's own state.
  '/var/log/BackupPC/LOG', '/var/log/ceph/*.log', '/var/log/chrony/*.log', '/var/log/cups/*_log*', '/var/log/glusterfs/*glusterd.vol.log',
  '/var/log/glusterfs/glusterfs.log', '/var/log/httpd/*log', '/var/log/jetty/jetty-console.log', '/var/log/libvirt/libxl/*.log',
  '/var/log/libvirt/libvirtd.log', '/var/log/libvirt/lxc/*.log', '/var/log/libvirt/qemu/*.log', '/var/log/libvirt/uml/*.log',
  '/var/named/data/named.run', '/var/log/ppp/connect-errors', '/var/log/setroubleshoot/*.log', '/var/log/squid/*.log', '/var/lib/logrotate.status',
  // Installers' files (anaconda, debian-installer).
  '/root/install.log', '/root/install.log.syslog', '/root/anaconda-ks.cfg', '/root/anaconda-post.log', '/root/initial-setup-ks.cfg',
  '/root/original-ks.cfg', '/var/log/anaconda.syslog', '/var/log/anaconda/*', '/var/log/installer/*',
  // Desktop session state and caches.
  '/var/cache/gdm/*', '/var/lib/AccountService/users/*', '/var/lib/fprint/*', '/var/cache/fontconfig/*', '/var/cache/man/*',
  '/var/log/sa/*', '/var/log/gdm/*', '/var/log/lightdm/*', '/var/log/ntpstats/*',
  '/etc/Pegasus/*.cnf', '/etc/Pegasus/*.crt', '/etc/Pegasus/*.csr', '/etc/Pegasus/*.pem', '/etc/Pegasus/*.srl',
  '/var/log/rhsm/*', '/var/log/journal/*', '/var/log/aptitude*', '/var/log/apt/*', '/var/log/exim4/*', '/var/log/ConsoleKit/*',
].sort();

/** Where distributions keep the saved random seed (the list of virt-customize's random_seed.ml). */
const RANDOM_SEEDS = ['/var/lib/random-seed', '/var/lib/systemd/random-seed', '/var/lib/urandom/random-seed', '/var/lib/misc/random-seed', '/etc/random-seed'];

const removeGlobs = async (files: GuestFiles, globs: string[]) => {
  for (const g of globs) for (const p of await files.glob(g)) await files.removeTree(p);
};

const ALL: SysprepOperation[] = [
  {
    name: 'bash-history', enabledByDefault: true, heading: 'Remove the bash history in the guest',
    // As virt-sysprep: /root and /home/* only.
    async perform(files) {
      for (const p of [...await files.glob('/home/*/.bash_history'), '/root/.bash_history']) await files.removeFile(p);
    },
  },
  {
    name: 'cloud-init-state', enabledByDefault: true, heading: 'Remove cloud-init instance state (as cloud-init clean)',
    // virt-sysprep has no cloud-init operation. `cloud-init clean` removes everything in its
    // cloud_dir but the seed directory (its logs are the logfiles operation's): a clone then
    // runs its first boot as a new instance instead of reusing another machine's data and semaphores.
    async perform(files) {
      for (const n of await files.list('/var/lib/cloud')) if (n !== 'seed') await files.removeTree(`/var/lib/cloud/${n}`);
    },
  },
  {
    name: 'dhcp-client-state', enabledByDefault: true, heading: 'Remove DHCP client leases',
    async perform(files) { await removeGlobs(files, ['/var/lib/dhclient/*', '/var/lib/dhcp/*']); },
  },
  {
    name: 'logfiles', enabledByDefault: true, heading: 'Remove many log files from the guest',
    async perform(files) { await removeGlobs(files, LOG_GLOBS); },
  },
  {
    name: 'machine-id', enabledByDefault: true, heading: 'Remove the local machine ID',
    // Emptied, not removed: systemd generates a new one at the next boot when the file is empty
    // (and treats the first boot as such), while a missing file is not recreated on a read-only /etc.
    async perform(files) { for (const p of ['/etc/machine-id', '/var/lib/dbus/machine-id']) await files.empty(p); },
  },
  {
    name: 'net-hwaddr', enabledByDefault: true, heading: 'Remove HWADDR (hard-coded MAC address) configuration',
    // virt-sysprep does this for RHEL-family distribution names only; here every Linux guest's
    // ifcfg files are cleaned (`img lint` flags an HWADDR line in any of them), and a file is
    // rewritten only when it had such a line.
    async perform(files) {
      for (const p of await files.glob('/etc/sysconfig/network-scripts/ifcfg-*')) {
        const st = await files.lstat(p);
        if (!st?.isFile()) continue;
        const host = await files.host(p);
        const lines = (await readFile(host, 'utf8')).split('\n');
        if (lines[lines.length - 1] === '') lines.pop();
        const kept = lines.filter((l) => !l.startsWith('HWADDR='));
        if (kept.length === lines.length) continue;
        await writeFile(host, `${kept.join('\n')}\n`);
        files.changes.push(`edited ${p} (removed ${lines.length - kept.length} HWADDR= line${lines.length - kept.length === 1 ? '' : 's'})`);
      }
    },
  },
  {
    name: 'package-manager-cache', enabledByDefault: true, heading: 'Remove package manager cache',
    async perform(files, os) {
      const dirs: Record<string, string[]> = { apt: ['/var/cache/apt/archives/'], dnf: ['/var/cache/dnf/'], yum: ['/var/cache/yum/'] };
      const chosen = os.packageManagement === 'zypper' ? await files.glob('/var/cache/zypp*') : dirs[os.packageManagement ?? ''] ?? [];
      for (const d of chosen) await files.removeFilesBelow(d);
    },
  },
  {
    name: 'passwd-backups', enabledByDefault: true, heading: 'Remove /etc/passwd- and similar backup files',
    async perform(files) { for (const p of ['/etc/group-', '/etc/gshadow-', '/etc/passwd-', '/etc/shadow-', '/etc/subgid-', '/etc/subuid-']) await files.removeFile(p); },
  },
  {
    name: 'random-seed', enabledByDefault: true, heading: 'Remove the saved random seed',
    // virt-sysprep's customize operation (run last, by default) refills these files with the
    // host's randomness: every instance started from one cloud image would still share that
    // seed. Removed instead: systemd-random-seed and the urandom script start without one and
    // save a new seed at the first boot of each instance.
    async perform(files) { for (const p of RANDOM_SEEDS) await files.removeFile(p); },
  },
  {
    name: 'ssh-hostkeys', enabledByDefault: true, heading: 'Remove the SSH host keys in the guest',
    async perform(files) { for (const p of await files.glob('/etc/ssh/*_host_*')) await files.removeFile(p); },
  },
  {
    name: 'tmp-files', enabledByDefault: true, heading: 'Remove temporary files',
    // Everything in /tmp and /var/tmp, dot files included (virt-sysprep lists the directories too).
    async perform(files) { for (const d of ['/tmp', '/var/tmp']) for (const n of await files.list(d)) await files.removeTree(`${d}/${n}`); },
  },
  {
    name: 'udev-persistent-net', enabledByDefault: true, heading: 'Remove udev persistent net rules',
    async perform(files) { await files.removeFile('/etc/udev/rules.d/70-persistent-net.rules'); },
  },
  {
    name: 'utmp', enabledByDefault: true, heading: 'Remove the utmp file',
    async perform(files) { await files.removeFile('/var/run/utmp'); },
  },
];

/** In name order, as virt-sysprep lists and runs them. */
export const OPERATIONS = ALL.sort((a, b) => (a.name < b.name ? -1 : 1));

export const operationNames = new Set(OPERATIONS.map((o) => o.name));

/** `--list-operations`: virt-sysprep's lines, "NAME * HEADING" (the * for a default operation, else a space). */
export function listOperations(): string {
  return OPERATIONS.map((o) => `${o.name} ${o.enabledByDefault ? '*' : ' '} ${o.heading}\n`).join('');
}

export class OperationError extends Error {}

/**
 * The operations chosen by --enable and --operations, as virt-sysprep's main.ml combines them:
 * --enable (once only) names the set; each --operations adds to or (with a leading '-')
 * removes from the set so far, with `defaults` and `all` as groups. Null: the defaults.
 */
export class OperationChoice {
  private set: Set<string> | null = null;
  private enabled = false;

  enable(list: string): void {
    if (this.enabled) throw new OperationError('--enable option can only be given once');
    if (list === '') throw new OperationError('you cannot pass an empty argument to --enable');
    this.enabled = true;
    const set = new Set<string>();
    for (const n of list.split(',')) {
      if (!operationNames.has(n)) throw new OperationError(`--enable: ‘${n}’ is not a known operation`);
      set.add(n);
    }
    this.set = set;
  }

  operations(list: string): void {
    const set = this.set ?? new Set<string>();
    for (const item of list.split(',')) {
      const remove = item.startsWith('-');
      const n = remove ? item.slice(1) : item;
      if (n === '') throw new OperationError('--operations: empty operation name');
      const group = n === 'defaults' ? OPERATIONS.filter((o) => o.enabledByDefault).map((o) => o.name) : n === 'all' ? [...operationNames] : null;
      if (!group && !operationNames.has(n)) throw new OperationError(`--operations: ‘${n}’ is not a known operation`);
      for (const m of group ?? [n]) if (remove) set.delete(m); else set.add(m);
    }
    this.set = set;
  }

  /** The operations to run, in name order (virt-sysprep runs them alphabetically). */
  chosen(): SysprepOperation[] {
    return OPERATIONS.filter((o) => (this.set ? this.set.has(o.name) : o.enabledByDefault));
  }
}
