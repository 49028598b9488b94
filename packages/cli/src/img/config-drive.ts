/**
 * `diskhub img config-drive`: an OpenStack config drive, as Nova writes one
 * (nova/virt/configdrive.py, nova/api/metadata/base.py metadata_for_config_drive): the
 * `openstack/<version>/` trees (meta_data.json, user_data, vendor_data.json,
 * network_data.json, each from the version that introduced it, and `latest`), the
 * `ec2/<version>/` trees (meta-data.json, user-data), in an ISO 9660 image with Rock Ridge
 * and Joliet labelled `config-2` — or, with --nocloud, cloud-init's NoCloud seed
 * (meta-data, user-data, network-config, vendor-data) labelled `cidata`. Written by the
 * engine's ISO writer.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { writeIso9660, type IsoFile } from '@diskhub/disk/iso9660/index';
import { getopt, UsageError } from './getopt.js';
import { CliError, stdoutStream } from './common.js';

/** The OpenStack metadata versions Nova serves, oldest first (base.py OPENSTACK_VERSIONS). */
const OPENSTACK_VERSIONS = ['2012-08-10', '2013-04-04', '2013-10-17', '2015-10-15', '2016-06-30', '2016-10-06', '2017-02-22', '2018-08-27', '2020-10-14'];
/** The first version carrying each optional file (base.py: VD_JSON_NAME from HAVANA, NW_JSON_NAME from LIBERTY). */
const VENDOR_DATA_SINCE = '2013-10-17';
const NETWORK_DATA_SINCE = '2015-10-15';
const RANDOM_SEED_SINCE = '2013-04-04';
/** The EC2 metadata versions Nova serves (base.py VERSIONS). */
const EC2_VERSIONS = ['1.0', '2007-01-19', '2007-03-01', '2007-08-29', '2007-10-10', '2007-12-15', '2008-02-01', '2008-09-01', '2009-04-04'];

export interface ConfigDriveInput {
  uuid: string;
  hostname: string;
  /** meta_data.json given by the user: its keys are kept, ours fill what it lacks. */
  metaData?: Record<string, unknown>;
  userData?: Uint8Array;
  networkData?: Uint8Array;
  vendorData?: Uint8Array;
  /** OpenSSH public keys (one per line of the --ssh-key file). */
  sshKeys: string[];
  nocloud: boolean;
  time?: number;
}

const enc = (s: string) => new TextEncoder().encode(s);
const json = (v: unknown) => enc(JSON.stringify(v));

/** The files of the drive. */
export function configDriveFiles(input: ConfigDriveInput): IsoFile[] {
  if (input.nocloud) return noCloudFiles(input);
  const keys = input.sshKeys.map((data, i) => ({ name: i === 0 ? 'default' : `key-${i}`, type: 'ssh', data }));
  const base: Record<string, unknown> = {
    uuid: input.uuid,
    meta: {},
    hostname: input.hostname,
    name: input.hostname,
    launch_index: 0,
    availability_zone: 'nova',
    ...(keys.length ? { public_keys: Object.fromEntries(keys.map((k) => [k.name, k.data])), keys } : {}),
    devices: [],
    ...input.metaData,
  };
  const files: IsoFile[] = [];
  const randomSeed = randomBytes(512).toString('base64');
  for (const v of [...OPENSTACK_VERSIONS, 'latest']) {
    const dir = `openstack/${v}`;
    const meta = v === 'latest' || v >= RANDOM_SEED_SINCE ? { random_seed: randomSeed, ...base } : base;
    files.push({ path: `${dir}/meta_data.json`, data: json(meta) });
    if (input.userData) files.push({ path: `${dir}/user_data`, data: input.userData });
    if (v === 'latest' || v >= VENDOR_DATA_SINCE) files.push({ path: `${dir}/vendor_data.json`, data: input.vendorData ?? json({}) });
    if (input.networkData && (v === 'latest' || v >= NETWORK_DATA_SINCE)) files.push({ path: `${dir}/network_data.json`, data: input.networkData });
  }
  const ec2: Record<string, unknown> = {
    'ami-id': 'ami-00000001',
    'ami-launch-index': 0,
    hostname: input.hostname,
    'instance-id': `i-${input.uuid.replace(/-/g, '').slice(0, 8)}`,
    'local-hostname': input.hostname,
    placement: { 'availability-zone': 'nova' },
    'reservation-id': 'r-00000000',
    'security-groups': [],
    ...(keys.length ? { 'public-keys': Object.fromEntries(keys.map((k, i) => [String(i), { 'openssh-key': k.data }])) } : {}),
  };
  for (const v of [...EC2_VERSIONS, 'latest']) {
    files.push({ path: `ec2/${v}/meta-data.json`, data: json(ec2) });
    if (input.userData) files.push({ path: `ec2/${v}/user-data`, data: input.userData });
  }
  return files;
}

/** cloud-init's NoCloud seed: meta-data (YAML), user-data, network-config, vendor-data at the root. */
function noCloudFiles(input: ConfigDriveInput): IsoFile[] {
  const quote = (s: string) => JSON.stringify(s); // a JSON string is a YAML double-quoted scalar
  const lines = [`instance-id: ${quote(String(input.metaData?.uuid ?? input.uuid))}`, `local-hostname: ${quote(input.hostname)}`];
  if (input.sshKeys.length) lines.push('public-keys:', ...input.sshKeys.map((k) => `  - ${quote(k)}`));
  const files: IsoFile[] = [
    { path: 'meta-data', data: enc(`${lines.join('\n')}\n`) },
    { path: 'user-data', data: input.userData ?? new Uint8Array(0) },
  ];
  if (input.networkData) files.push({ path: 'network-config', data: input.networkData });
  if (input.vendorData) files.push({ path: 'vendor-data', data: input.vendorData });
  return files;
}

/** The ISO image of a config drive. */
export function buildConfigDrive(input: ConfigDriveInput): Uint8Array {
  return writeIso9660(configDriveFiles(input), {
    volumeId: input.nocloud ? 'cidata' : 'config-2',
    publisherId: 'DISKHUB',
    applicationId: 'DISKHUB CONFIG DRIVE',
    ...(input.time !== undefined ? { time: input.time } : {}),
  });
}

/** Reads the command's file options into a ConfigDriveInput (also used by `diskhub compute create-disks`). */
export async function configDriveInput(opts: {
  metaData?: string; userData?: string; networkData?: string; vendorData?: string; sshKey?: string;
  hostname?: string; uuid?: string; nocloud?: boolean;
}): Promise<ConfigDriveInput> {
  const read = async (path: string | undefined, what: string) => {
    if (path === undefined) return undefined;
    try { return new Uint8Array(await readFile(path)); } catch (e) { throw new CliError(`cannot read the ${what} file '${path}': ${(e as Error).message}`); }
  };
  const parseJson = (bytes: Uint8Array | undefined, what: string, path?: string) => {
    if (!bytes) return undefined;
    try { return JSON.parse(new TextDecoder().decode(bytes)) as unknown; } catch (e) { throw new CliError(`the ${what} file '${path}' is not JSON: ${(e as Error).message}`); }
  };
  const metaData = parseJson(await read(opts.metaData, 'meta-data'), 'meta-data', opts.metaData);
  if (metaData !== undefined && (typeof metaData !== 'object' || metaData === null || Array.isArray(metaData))) {
    throw new CliError(`the meta-data file '${opts.metaData}' must hold a JSON object`);
  }
  const networkData = await read(opts.networkData, 'network-data');
  const vendorData = await read(opts.vendorData, 'vendor-data');
  // OpenStack's network_data.json and vendor_data.json are JSON; NoCloud's network-config may be YAML.
  if (!opts.nocloud) { parseJson(networkData, 'network-data', opts.networkData); parseJson(vendorData, 'vendor-data', opts.vendorData); }
  const keyText = await read(opts.sshKey, 'ssh-key');
  const sshKeys = keyText ? new TextDecoder().decode(keyText).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')) : [];
  const meta = metaData as Record<string, unknown> | undefined;
  const uuid = opts.uuid ?? (typeof meta?.uuid === 'string' ? meta.uuid : randomUUID());
  const hostname = opts.hostname ?? (typeof meta?.hostname === 'string' ? meta.hostname : `host-${uuid.slice(0, 8)}`);
  return {
    uuid, hostname, sshKeys, nocloud: opts.nocloud ?? false,
    ...(meta ? { metaData: { ...meta, uuid, hostname } } : {}),
    ...(await read(opts.userData, 'user-data').then((u) => (u ? { userData: u } : {}))),
    ...(networkData ? { networkData } : {}),
    ...(vendorData ? { vendorData } : {}),
  };
}

export const CONFIG_DRIVE_LONG_OPTIONS = [
  { name: 'meta-data', hasArg: 1, val: 'meta-data' },
  { name: 'user-data', hasArg: 1, val: 'user-data' },
  { name: 'network-data', hasArg: 1, val: 'network-data' },
  { name: 'vendor-data', hasArg: 1, val: 'vendor-data' },
  { name: 'ssh-key', hasArg: 1, val: 'ssh-key' },
  { name: 'hostname', hasArg: 1, val: 'hostname' },
  { name: 'uuid', hasArg: 1, val: 'uuid' },
  { name: 'nocloud', hasArg: 0, val: 'nocloud' },
] as const;

const USAGE = `usage: diskhub img config-drive -o OUT [--format iso] [--meta-data FILE] [--user-data FILE]
       [--network-data FILE] [--vendor-data FILE] [--ssh-key FILE] [--hostname H] [--uuid U] [--nocloud]
`;

export async function configDriveCommand(argv: string[]): Promise<number> {
  const { options, positional } = getopt(argv, ':ho:', [
    { name: 'help', hasArg: 0, val: 'h' },
    { name: 'output', hasArg: 1, val: 'o' },
    { name: 'format', hasArg: 1, val: 'format' },
    ...CONFIG_DRIVE_LONG_OPTIONS,
  ]);
  const opts: Record<string, string | true> = {};
  let out: string | undefined;
  for (const o of options) {
    if (o.opt === 'h') { stdoutStream().write(USAGE); return 0; }
    if (o.opt === 'o') { out = o.arg; continue; }
    opts[o.opt] = o.arg ?? true;
  }
  if (positional.length > 0) throw new UsageError(`unexpected argument '${positional[0]}'`);
  if (!out) throw new UsageError('config-drive needs -o OUT');
  if (opts.format !== undefined && opts.format !== 'iso') throw new CliError(`config-drive format '${String(opts.format)}' is not supported (iso)`);
  const str = (k: string) => (typeof opts[k] === 'string' ? (opts[k] as string) : undefined);
  const input = await configDriveInput({
    metaData: str('meta-data'), userData: str('user-data'), networkData: str('network-data'), vendorData: str('vendor-data'),
    sshKey: str('ssh-key'), hostname: str('hostname'), uuid: str('uuid'), nocloud: opts.nocloud === true,
  });
  await writeWhole(out, buildConfigDrive(input));
  return 0;
}

/** Written under a temporary name and renamed: never a half-written drive under the name. */
export async function writeWhole(path: string, data: Uint8Array): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString('hex')}.diskhub-tmp`);
  try {
    await writeFile(temp, data, { flag: 'wx' });
    await rename(temp, path);
  } catch (e) {
    await unlink(temp).catch(() => undefined);
    throw new CliError(`cannot write '${path}': ${(e as Error).message}`);
  }
}
