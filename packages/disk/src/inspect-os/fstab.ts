/**
 * /etc/fstab (fstab(5)) and which filesystem of the disk each entry names, as libguestfs's
 * inspection resolves them: UUID=, LABEL=, PARTUUID=, PARTLABEL=, /dev/disk/by-*, and device
 * names — /dev/sdXN, /dev/vdXN, /dev/hdXN, /dev/xvdXN, /dev/nvme0nYpN (all taken as the
 * first disk, which is what the inspected image is), /dev/VG/LV and /dev/mapper/VG-LV.
 */

export interface FstabEntry {
  spec: string;
  mountpoint: string;
  fstype: string;
  options: string;
}

/** Types that are not filesystems on a disk (pseudo filesystems, swap, network filesystems). */
const NOT_ON_DISK = new Set(['swap', 'proc', 'sysfs', 'devpts', 'tmpfs', 'devtmpfs', 'securityfs', 'cgroup', 'cgroup2', 'debugfs', 'nfs', 'nfs4', 'cifs', 'smbfs', 'none', 'bind', 'efivarfs', 'hugetlbfs', 'mqueue', 'configfs', 'fusectl', 'binfmt_misc']);

/** fstab's escapes: \040 is a space, \011 a tab, \134 a backslash (octal, as getmntent decodes them). */
function decode(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseFstab(text: string): FstabEntry[] {
  const out: FstabEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(/\s+/);
    if (f.length < 2) continue;
    out.push({ spec: decode(f[0]!), mountpoint: decode(f[1]!), fstype: f[2] ?? 'auto', options: f[3] ?? 'defaults' });
  }
  return out;
}

/** Whether an entry is a filesystem of a disk mounted into the tree (not swap, /proc, NFS, a bind mount). */
export function isDiskMount(e: FstabEntry): boolean {
  if (!e.mountpoint.startsWith('/')) return false;
  if (NOT_ON_DISK.has(e.fstype)) return false;
  if (e.options.split(',').includes('bind')) return false;
  return true;
}

/** What the resolver knows of one filesystem of the disk. */
export interface KnownFilesystem {
  /** libguestfs's device name: /dev/sda1, /dev/sda, /dev/VG/LV. */
  device: string;
  uuid?: string;
  label?: string;
  partuuid?: string;
  partlabel?: string;
  /** Partition number, when a partition. */
  partition?: number;
  /** VG and LV, when a logical volume. */
  lv?: { vg: string; name: string };
  wholeDisk?: boolean;
}

/** The filesystem an fstab spec names, or null when none of the disk's does. */
export function resolveSpec(spec: string, known: KnownFilesystem[]): KnownFilesystem | null {
  const eq = /^(UUID|LABEL|PARTUUID|PARTLABEL)=(.*)$/.exec(spec);
  const byId = /^\/dev\/disk\/by-(uuid|label|partuuid|partlabel)\/(.+)$/.exec(spec);
  const kind = eq ? eq[1]!.toLowerCase() : byId ? byId[1]! : null;
  if (kind !== null) {
    const value = unquote(eq ? eq[2]! : byId![2]!).replace(/\\x2f/g, '/');
    const find = (get: (k: KnownFilesystem) => string | undefined, fold: boolean) =>
      known.find((k) => { const v = get(k); return v !== undefined && (fold ? v.toLowerCase() === value.toLowerCase() : v === value); }) ?? null;
    if (kind === 'uuid') return find((k) => k.uuid, true);
    if (kind === 'label') return find((k) => k.label, false);
    if (kind === 'partuuid') return find((k) => k.partuuid, true);
    return find((k) => k.partlabel, false);
  }
  // A partition of the first disk, under any of the names Linux drivers give it.
  const part = /^\/dev\/(?:[shv]da|xvda|nvme0n1p|mmcblk0p)(\d+)$/.exec(spec);
  if (part) return known.find((k) => k.partition === Number(part[1])) ?? null;
  if (/^\/dev\/(?:[shv]da|xvda|nvme0n1|mmcblk0)$/.test(spec)) return known.find((k) => k.wholeDisk) ?? null;
  const vglv = /^\/dev\/([^/]+)\/([^/]+)$/.exec(spec);
  if (vglv && vglv[1] !== 'mapper') return known.find((k) => k.lv?.vg === vglv[1] && k.lv?.name === vglv[2]) ?? null;
  const mapper = /^\/dev\/mapper\/(.+)$/.exec(spec);
  if (mapper) {
    // device-mapper names double a dash inside a VG or LV name: "my--vg-root" is my-vg/root.
    return known.find((k) => k.lv !== undefined && `${k.lv.vg.replace(/-/g, '--')}-${k.lv.name.replace(/-/g, '--')}` === mapper[1]) ?? null;
  }
  return null;
}

function unquote(v: string): string {
  return v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0]) ? v.slice(1, -1) : v;
}
