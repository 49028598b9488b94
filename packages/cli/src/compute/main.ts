/**
 * `diskhub compute`: what a Nova compute node does with an image, as one tool — a client of
 * the image service (Keystone v3 token, Glance Image API v2) and the disk engine.
 */
import { writeFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { getopt, UsageError, type LongOption, type ParsedOption } from '../img/getopt.js';
import { parseSize } from '../img/output.js';
import { AUTH_OPTIONS, authFromEnv, ImageServiceClient, type AuthSettings } from './client.js';
import { ComputeError } from './errors.js';
import { cacheLayout, cachedImage, cleanCache, DEFAULT_INSTANCES_PATH } from './imagecache.js';
import { createDisks, deleteDisks, EPHEMERAL_FILESYSTEMS, DEFAULT_EPHEMERAL_FS } from './disks.js';
import { DEFAULT_RBD_POOL, type RbdSettings } from './rbd.js';
import { snapshotInstance } from './snapshot.js';
import { buildConfigDrive, configDriveInput, CONFIG_DRIVE_LONG_OPTIONS } from '../img/config-drive.js';

const AUTH_HELP = `authentication (the openstack client's variables, or these options):
  OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, OS_USER_DOMAIN_NAME,
  OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME, OS_INTERFACE, OS_TOKEN;
  --os-auth-url URL --os-username U --os-password P --os-project-name P ... --token T
  --os-image-url URL  use this image API instead of the catalog's`;

export const COMPUTE_USAGE = `usage: diskhub compute <command> [options]

What a Nova compute node does with an image (Nova's file names, locks and checks):

  fetch IMAGE_ID [--instances-path P] [--base-dir DIR] [--force-raw] [--output json]
      download into the image cache (<instances-path>/_base/<sha1 of the id>), verified
      against os_hash_value (else checksum); --force-raw converts it to raw (force_raw_images)
  create-disks INSTANCE_DIR --image ID [--root SIZE] [--ephemeral SIZE] [--ephemeral-fs FS]
      [--swap SIZE] [--force-raw] [--base-dir DIR] [--instances-path P]
      [--config-drive [--meta-data F] [--user-data F] [--network-data F] [--vendor-data F]
       [--ssh-key F] [--hostname H] [--nocloud]]
      disk (qcow2 overlay on the cached image, grown to --root), disk.eph0 (on a cached
      formatted base), disk.swap (on a cached swap base), disk.config (the config drive, as
      diskhub img config-drive makes it); sizes in G (root, ephemeral) and M (swap) unless
      suffixed; ephemeral filesystems: ${EPHEMERAL_FILESYSTEMS.join(', ')} (default ${DEFAULT_EPHEMERAL_FS})
      with --images-type rbd: RBD images <instance uuid>_disk, _disk.eph0, _disk.swap,
      _disk.config in the pool; the root disk a copy-on-write clone of the image's protected
      snapshot when Glance keeps it in the same cluster (else imported from the cache)
  snapshot INSTANCE_DIR --name NAME [--instance-uuid U] [--base-image-ref ID] [--instances-path P]
      flatten the root disk and upload it as a snapshot image; prints the new image's id
      (with --images-type rbd: the root disk's RBD image read through its parent, uploaded raw)
  delete-disks INSTANCE_DIR [--images-type rbd ...]
      remove the instance's disks: disk, disk.eph0, disk.swap, disk.config, disk.info, and with
      --images-type rbd every <instance uuid>_* image of the pool

RBD instance disks (Nova's [libvirt] options; create-disks, snapshot, delete-disks):
  --images-type qcow2|rbd         default qcow2
  --images-rbd-pool POOL          default ${DEFAULT_RBD_POOL}
  --images-rbd-ceph-conf FILE     default: librados's search path
  --rbd-user USER                 cephx user without "client." (default: the conf's, admin)
  --rbd-keyring FILE              default: the keyring the conf names
  cache-clean [--base-dir DIR] [--instances-path P] --max-age SECONDS [--output json]
      remove base files no instance disk uses and older than --max-age

The instances path defaults to the instance directory's parent (create-disks, snapshot), the
base directory's parent, or ${DEFAULT_INSTANCES_PATH}.

${AUTH_HELP}
`;

const RBD_OPTIONS: LongOption[] = [
  { name: 'images-type', hasArg: 1, val: 'images-type' },
  { name: 'images-rbd-pool', hasArg: 1, val: 'images-rbd-pool' },
  { name: 'images-rbd-ceph-conf', hasArg: 1, val: 'images-rbd-ceph-conf' },
  { name: 'rbd-user', hasArg: 1, val: 'rbd-user' },
  { name: 'rbd-keyring', hasArg: 1, val: 'rbd-keyring' },
];

/** The RBD settings when --images-type is rbd; undefined for qcow2 (refusing rbd options then). */
function rbdSettings(p: Parsed): RbdSettings | undefined {
  const type = p.values.get('images-type') ?? 'qcow2';
  if (type !== 'qcow2' && type !== 'rbd') throw new UsageError(`unknown --images-type '${type}' (qcow2 or rbd)`);
  if (type === 'qcow2') {
    const stray = RBD_OPTIONS.find((o) => o.val !== 'images-type' && p.values.has(o.val));
    if (stray) throw new UsageError(`--${stray.name} needs --images-type rbd`);
    return undefined;
  }
  return {
    pool: p.values.get('images-rbd-pool') ?? DEFAULT_RBD_POOL,
    conf: p.values.get('images-rbd-ceph-conf') ?? '',
    user: p.values.get('rbd-user') ?? '',
    keyring: p.values.get('rbd-keyring') ?? '',
  };
}

const COMMON: LongOption[] = [
  { name: 'help', hasArg: 0, val: 'h' },
  { name: 'instances-path', hasArg: 1, val: 'instances-path' },
  { name: 'base-dir', hasArg: 1, val: 'base-dir' },
  { name: 'output', hasArg: 1, val: 'output' },
  ...AUTH_OPTIONS.map((o) => ({ name: o.name, hasArg: 1 as const, val: `auth:${o.key}` })),
];

interface Parsed {
  positional: string[];
  values: Map<string, string>;
  flags: Set<string>;
  auth: AuthSettings;
}

function parse(argv: string[], extra: LongOption[], allowed: string[]): Parsed {
  const { options, positional } = getopt(argv, ':h', [...COMMON, ...extra]);
  const values = new Map<string, string>();
  const flags = new Set<string>();
  const auth: AuthSettings = {};
  for (const o of options as ParsedOption[]) {
    if (o.opt === 'h') { flags.add('help'); continue; }
    if (o.opt.startsWith('auth:')) { auth[o.opt.slice(5) as keyof AuthSettings] = o.arg!; continue; }
    if (!allowed.includes(o.opt)) {
      throw new UsageError(`option '--${o.opt}' does not apply to '${argv[0]}'`);
    }
    if (o.arg === undefined) flags.add(o.opt);
    else values.set(o.opt, o.arg);
  }
  const output = values.get('output');
  if (output !== undefined && output !== 'json' && output !== 'human') throw new UsageError('--output must be human or json');
  return { positional, values, flags, auth };
}

/** A size in bytes; a bare number is in `unit` (G for disks and M for swap, as flavors count them). */
function sizeOption(text: string, unit: 'G' | 'M', what: string): number {
  const v = parseSize(/^\d+$/.test(text) ? `${text}${unit}` : text);
  if (v === null || v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`invalid ${what} size '${text}'`);
  return Number(v);
}

function wholeUnits(bytes: number, unit: number, what: string, unitName: string): number {
  if (bytes % unit !== 0) throw new UsageError(`the ${what} size must be a whole number of ${unitName} (Nova names its cached base by it)`);
  return bytes / unit;
}

async function connect(p: Parsed, signal: AbortSignal): Promise<ImageServiceClient> {
  return ImageServiceClient.connect(authFromEnv(process.env, p.auth), signal);
}

/** Connects on first call only, once. */
function lazyConnect(p: Parsed, signal: AbortSignal): () => Promise<ImageServiceClient> {
  let client: Promise<ImageServiceClient> | undefined;
  return () => (client ??= connect(p, signal));
}

const print = (s: string) => { process.stdout.write(s); };

async function fetchCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const p = parse(argv, [{ name: 'force-raw', hasArg: 0, val: 'force-raw' }], ['force-raw', 'base-dir', 'instances-path', 'output']);
  if (p.flags.has('help')) { print(COMPUTE_USAGE); return 0; }
  if (p.positional.length !== 1) throw new UsageError('fetch takes one image id');
  const layout = cacheLayout({ baseDir: p.values.get('base-dir'), instancesPath: p.values.get('instances-path') });
  const imageId = p.positional[0]!;
  const base = await cachedImage(lazyConnect(p, signal), imageId, layout, { forceRaw: p.flags.has('force-raw'), signal });
  if (p.values.get('output') === 'json') {
    print(`${JSON.stringify({ image: imageId, path: base.path, downloaded: base.downloaded, ...(base.fetch ?? {}) }, null, 4)}\n`);
  } else if (base.fetch) {
    const f = base.fetch;
    print(`Fetched image ${imageId} into ${base.path} (${f.bytes} bytes verified${f.converted ? ', converted to raw' : ''}, ${f.format}, virtual size ${f.virtualSize})\n`);
  } else {
    print(`Image ${imageId} is cached at ${base.path}\n`);
  }
  return 0;
}

async function createDisksCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const extra: LongOption[] = [
    { name: 'image', hasArg: 1, val: 'image' },
    { name: 'root', hasArg: 1, val: 'root' },
    { name: 'ephemeral', hasArg: 1, val: 'ephemeral' },
    { name: 'ephemeral-fs', hasArg: 1, val: 'ephemeral-fs' },
    { name: 'swap', hasArg: 1, val: 'swap' },
    { name: 'force-raw', hasArg: 0, val: 'force-raw' },
    { name: 'config-drive', hasArg: 0, val: 'config-drive' },
    ...CONFIG_DRIVE_LONG_OPTIONS.filter((o) => o.val !== 'uuid'),
    ...RBD_OPTIONS,
  ];
  const p = parse(argv, extra, [...extra.map((e) => e.val), 'base-dir', 'instances-path']);
  if (p.flags.has('help')) { print(COMPUTE_USAGE); return 0; }
  if (p.positional.length !== 1) throw new UsageError('create-disks takes one instance directory');
  const imageId = p.values.get('image');
  if (!imageId) throw new UsageError('create-disks needs --image ID');
  const instanceDir = resolve(p.positional[0]!);
  const rootBytes = p.values.has('root') ? sizeOption(p.values.get('root')!, 'G', 'root') : 0;
  const ephemeralGB = p.values.has('ephemeral') ? wholeUnits(sizeOption(p.values.get('ephemeral')!, 'G', 'ephemeral'), 1024 ** 3, 'ephemeral', 'GiB') : 0;
  const swapMB = p.values.has('swap') ? wholeUnits(sizeOption(p.values.get('swap')!, 'M', 'swap'), 1024 ** 2, 'swap', 'MiB') : 0;
  const ephemeralFs = p.values.get('ephemeral-fs');
  if (ephemeralFs !== undefined && !(EPHEMERAL_FILESYSTEMS as readonly string[]).includes(ephemeralFs)) {
    throw new UsageError(`unknown ephemeral filesystem '${ephemeralFs}' (one of ${EPHEMERAL_FILESYSTEMS.join(', ')})`);
  }
  if (ephemeralFs !== undefined && !ephemeralGB) throw new UsageError('--ephemeral-fs needs --ephemeral');
  const driveOptions = CONFIG_DRIVE_LONG_OPTIONS.map((o) => o.val).filter((v) => p.values.has(v) || p.flags.has(v));
  if (driveOptions.length > 0 && !p.flags.has('config-drive')) throw new UsageError(`--${driveOptions[0]} needs --config-drive`);
  // The drive's instance uuid is the instance directory's name, as Nova names that directory.
  const drive = p.flags.has('config-drive') ? await configDriveInput({
    metaData: p.values.get('meta-data'), userData: p.values.get('user-data'), networkData: p.values.get('network-data'),
    vendorData: p.values.get('vendor-data'), sshKey: p.values.get('ssh-key'), hostname: p.values.get('hostname'),
    uuid: basename(instanceDir), nocloud: p.flags.has('nocloud'),
  }) : undefined;
  const layout = cacheLayout({ baseDir: p.values.get('base-dir'), instancesPath: p.values.get('instances-path') ?? (p.values.has('base-dir') ? undefined : dirname(instanceDir)) });
  const rbd = rbdSettings(p);
  const disks = await createDisks(lazyConnect(p, signal), instanceDir, layout, {
    ...(rbd ? { rbd } : {}),
    imageId, rootBytes, ephemeralGB, swapMB, forceRaw: p.flags.has('force-raw'), signal, ...(ephemeralFs ? { ephemeralFs } : {}),
    ...(drive ? { configDrive: (path: string) => writeFile(path, buildConfigDrive(drive), { flag: 'wx' }) } : {}),
  });
  for (const d of disks) {
    print(`${d.name}: ${d.created ? 'created' : 'kept'} ${d.path} (${d.format}, ${d.size} bytes${d.backingFile ? `, backed by ${d.backingFile}` : ''})\n`);
  }
  return 0;
}

async function snapshotCommand(argv: string[], signal: AbortSignal): Promise<number> {
  const extra: LongOption[] = [
    { name: 'name', hasArg: 1, val: 'name' },
    { name: 'instance-uuid', hasArg: 1, val: 'instance-uuid' },
    { name: 'base-image-ref', hasArg: 1, val: 'base-image-ref' },
    ...RBD_OPTIONS,
  ];
  const p = parse(argv, extra, [...extra.map((e) => e.val), 'instances-path', 'output']);
  if (p.flags.has('help')) { print(COMPUTE_USAGE); return 0; }
  if (p.positional.length !== 1) throw new UsageError('snapshot takes one instance directory');
  const name = p.values.get('name');
  if (!name) throw new UsageError('snapshot needs --name NAME');
  const instanceDir = resolve(p.positional[0]!);
  const layout = cacheLayout({ instancesPath: p.values.get('instances-path') ?? dirname(instanceDir) });
  const rbd = rbdSettings(p);
  const client = await connect(p, signal);
  const image = await snapshotInstance(client, instanceDir, layout, {
    name, ...(rbd ? { rbd } : {}), instanceUuid: p.values.get('instance-uuid'), baseImageRef: p.values.get('base-image-ref'), signal,
  });
  print(p.values.get('output') === 'json' ? `${JSON.stringify(image, null, 4)}\n` : `${image.id}\n`);
  return 0;
}

async function deleteDisksCommand(argv: string[]): Promise<number> {
  const p = parse(argv, RBD_OPTIONS, [...RBD_OPTIONS.map((o) => o.val), 'output']);
  if (p.flags.has('help')) { print(COMPUTE_USAGE); return 0; }
  if (p.positional.length !== 1) throw new UsageError('delete-disks takes one instance directory');
  const removed = await deleteDisks(resolve(p.positional[0]!), rbdSettings(p));
  if (p.values.get('output') === 'json') print(`${JSON.stringify({ removed }, null, 4)}\n`);
  else for (const r of removed) print(`removed ${r}\n`);
  return 0;
}

async function cacheCleanCommand(argv: string[]): Promise<number> {
  const p = parse(argv, [{ name: 'max-age', hasArg: 1, val: 'max-age' }], ['max-age', 'base-dir', 'instances-path', 'output']);
  if (p.flags.has('help')) { print(COMPUTE_USAGE); return 0; }
  if (p.positional.length !== 0) throw new UsageError('cache-clean takes no arguments');
  const maxAgeText = p.values.get('max-age');
  if (maxAgeText === undefined) throw new UsageError('cache-clean needs --max-age SECONDS');
  if (!/^\d+$/.test(maxAgeText)) throw new UsageError(`invalid --max-age '${maxAgeText}' (seconds)`);
  const layout = cacheLayout({ baseDir: p.values.get('base-dir'), instancesPath: p.values.get('instances-path') });
  const json = p.values.get('output') === 'json';
  const report = await cleanCache(layout, Number(maxAgeText), json ? () => undefined : (line) => print(`${line}\n`));
  if (json) print(`${JSON.stringify(report, null, 4)}\n`);
  return 0;
}

const COMMANDS: Record<string, (argv: string[], signal: AbortSignal) => Promise<number>> = {
  fetch: fetchCommand,
  'create-disks': createDisksCommand,
  snapshot: snapshotCommand,
  'cache-clean': cacheCleanCommand,
  'delete-disks': deleteDisksCommand,
};

export async function computeMain(argv: string[]): Promise<number> {
  const [cmd] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    print(COMPUTE_USAGE);
    return cmd === undefined ? 1 : 0;
  }
  const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  // SIGINT/SIGTERM cancel the work, which unwinds through its clean-ups (temporary files,
  // a half-made snapshot image); a second signal ends the process at once.
  const controller = new AbortController();
  let interrupted: NodeJS.Signals | undefined;
  const signalExit = (sig: NodeJS.Signals) => (sig === 'SIGINT' ? 130 : 143);
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(signalExit(sig));
    interrupted = sig;
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    if (!command) throw new UsageError(`unknown command '${cmd}'`);
    return await command(argv, controller.signal);
  } catch (e) {
    if (interrupted) {
      process.stderr.write('diskhub compute: Operation cancelled\n');
      return signalExit(interrupted);
    }
    if (e instanceof UsageError) {
      process.stderr.write(`diskhub compute: ${e.message}\nTry 'diskhub compute --help' for more information\n`);
      return 1;
    }
    if (e instanceof ComputeError) {
      process.stderr.write(`diskhub compute: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`diskhub compute: ${(e as Error).message ?? String(e)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
