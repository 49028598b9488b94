/**
 * What the boot test asks the running guest over SSH, in one session (each SSH handshake costs
 * seconds under TCG), and how the answers become checks: cloud-init's own result
 * (/run/cloud-init/result.json, written when its last stage ends: the errors of every stage),
 * the hostname, the user-data script's marker, and the root filesystem against the disk.
 */

/** Where the generated user-data script writes its marker (any user may read it). */
export const MARKER_PATH = '/var/tmp/diskhub-boot-test.marker';

/** The user-data: a shell script (cloud-init runs it once, as root, in its final stage). */
export function userDataScript(token: string): string {
  return `#!/bin/sh\n# diskhub img boot-test: shows that the user-data script ran\nprintf '%s\\n' '${token}' > ${MARKER_PATH}\n`;
}

/**
 * Prints `key=value` lines; values are single lines. result.json moved from /var/lib/cloud/data
 * to /run/cloud-init (a link remains in the old place), so both are tried.
 */
export const GUEST_FACTS_SCRIPT = [
  'export LC_ALL=C PATH="$PATH:/sbin:/usr/sbin"',
  'echo "hostname=$(hostname)"',
  `echo "marker=$(cat ${MARKER_PATH} 2>&1)"`,
  'echo "result=$( (cat /run/cloud-init/result.json || cat /var/lib/cloud/data/result.json) 2>&1 | tr -d "\\n")"',
  'root=$(findmnt -nvo SOURCE /)',
  'dev=${root##*/}',
  'echo "root=$root"',
  'echo "fstype=$(findmnt -nvo FSTYPE /)"',
  'echo "fssize=$(df -B1 --output=size / | tail -n 1 | tr -d " ")"',
  'echo "rootsize=$(lsblk -bndo SIZE "$root")"',
  'echo "rootstart=$(cat /sys/class/block/$dev/start 2>/dev/null || echo 0)"',
  'parent=$(lsblk -ndo PKNAME "$root")',
  'echo "disk=${parent:-$dev}"',
  'echo "disksize=$(lsblk -bndo SIZE "/dev/${parent:-$dev}")"',
].join('\n');

export type GuestFacts = Record<string, string>;

export function parseFacts(stdout: string): GuestFacts {
  const facts: GuestFacts = {};
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) facts[line.slice(0, eq)] = line.slice(eq + 1).trim();
  }
  return facts;
}

export interface Verdict { passed: boolean; detail: string }

/**
 * cloud-init's result.json: `{"v1": {"datasource": ..., "errors": [...]}}`; since 23.4 also
 * `recoverable_errors` by level (WARNING and DEPRECATED entries are not errors). A run on the
 * fallback DataSourceNone found no config drive: the key and user-data were never seen.
 */
export function cloudInitVerdict(resultJson: string | undefined, finishedLine: string): Verdict {
  let result: { v1?: { datasource?: string | null; errors?: unknown[]; recoverable_errors?: Record<string, unknown[]> } };
  try {
    result = JSON.parse(resultJson ?? '') as typeof result;
  } catch {
    return { passed: false, detail: `no readable cloud-init result.json (${(resultJson ?? '').slice(0, 200) || 'empty'}); console: ${finishedLine}` };
  }
  const v1 = result.v1 ?? {};
  const errors = [...(v1.errors ?? []), ...(v1.recoverable_errors?.ERROR ?? []), ...(v1.recoverable_errors?.CRITICAL ?? [])].map(String);
  const datasource = v1.datasource ?? 'none';
  if (errors.length) return { passed: false, detail: `cloud-init reported ${errors.length} error(s): ${errors.join('; ').slice(0, 1000)}` };
  if (/DataSourceNone/.test(datasource) || datasource === 'none') return { passed: false, detail: `cloud-init found no datasource (it ran on ${datasource}): the config drive was not read` };
  return { passed: true, detail: `${finishedLine.replace(/\s+/g, ' ')}; no errors` };
}

export function hostnameVerdict(facts: GuestFacts, expected: string): Verdict {
  const actual = facts.hostname ?? '';
  // The short name: an image may qualify it with a domain from DHCP.
  const passed = actual.split('.')[0] === expected;
  return { passed, detail: passed ? `hostname is ${actual}` : `hostname is '${actual}', the config drive said '${expected}'` };
}

export function markerVerdict(facts: GuestFacts, token: string): Verdict {
  const marker = facts.marker ?? '';
  const passed = marker === token;
  return { passed, detail: passed ? `the script wrote ${MARKER_PATH}` : `${MARKER_PATH}: ${marker ? `'${marker.slice(0, 200)}'` : 'empty'} (the script did not run, or failed)` };
}

/** How far from the disk's end the root partition may end (a GPT's backup header, alignment). */
const PARTITION_END_SLACK = 16 << 20;
/** The share of its partition a filled filesystem reports (df leaves out the journal, inode tables, the log). */
const FILLED_RATIO = 0.9;

/**
 * The root filesystem grew when the disk is the size the test gave it, the root partition
 * reaches the disk's end, the filesystem fills the partition, and (when the disk grew) the
 * filesystem is larger than anything the original image had room for.
 */
export function growthVerdict(facts: GuestFacts, diskSize: number, imageSize: number): Verdict {
  const num = (k: string) => Number(facts[k]);
  const disk = num('disksize');
  const part = num('rootsize');
  const fs = num('fssize');
  const start = num('rootstart') * 512;
  if (![disk, part, fs, start].every(Number.isFinite) || !disk || !part || !fs) {
    return { passed: false, detail: `cannot read the sizes (root ${facts.root ?? '?'}: disk ${facts.disksize ?? '?'}, partition ${facts.rootsize ?? '?'}, filesystem ${facts.fssize ?? '?'})` };
  }
  const mib = (n: number) => `${(n / 1048576).toFixed(0)} MiB`;
  const sizes = `${facts.root} (${facts.fstype}) ${mib(fs)} in a ${mib(part)} partition on ${facts.disk} of ${mib(disk)}`;
  if (disk !== diskSize) return { passed: false, detail: `the guest's disk is ${disk} bytes, not the ${diskSize} given: ${sizes}` };
  const partEnd = facts.disk === facts.root?.split('/').pop() ? disk : start + part;
  if (disk - partEnd > PARTITION_END_SLACK) return { passed: false, detail: `the root partition was not grown (it ends ${mib(disk - partEnd)} before the disk's end): ${sizes}` };
  if (fs < part * FILLED_RATIO) return { passed: false, detail: `the root filesystem was not grown to its partition: ${sizes}` };
  if (diskSize > imageSize && fs + start > imageSize) return { passed: true, detail: `${sizes} (the image was ${mib(imageSize)})` };
  if (diskSize > imageSize) return { passed: false, detail: `the root filesystem is no larger than the image's ${mib(imageSize)}: ${sizes}` };
  return { passed: true, detail: sizes };
}
