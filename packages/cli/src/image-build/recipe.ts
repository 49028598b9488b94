/**
 * The build recipe: a small declarative file (YAML or JSON) saying what goes into the image.
 * Checked against the schema below before anything runs: an unknown key, a wrong type or a bad
 * value is reported with the path of the key (`disk.partitions.esp: ...`), all of them at once.
 * The fields and their defaults are documented in the README ("diskhub build").
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { parseSize } from '../img/output.js';

export type Filesystem = 'ext4' | 'xfs';

export type Distribution = 'debian' | 'ubuntu';

export interface DebootstrapBase {
  suite: string;
  /** Absent: the machine's debootstrap knows the suite (its script names the distribution). */
  distribution?: Distribution;
  /** Absent: the machine's apt configuration decides for Debian, archive.ubuntu.com for Ubuntu. */
  mirror?: string;
  variant?: 'minbase' | 'buildd' | 'default';
  components: string[];
}

export type Base =
  | { kind: 'debootstrap'; debootstrap: DebootstrapBase }
  | { kind: 'image'; path: string; format?: string }
  | { kind: 'tarball'; path: string };

export interface UserSpec {
  name: string;
  uid?: number;
  groups: string[];
  shell: string;
  home?: string;
  /** A crypt(3) hash for /etc/shadow; absent: the password is locked. */
  password_hash?: string;
  ssh_authorized_keys: string[];
  /** A sudoers.d entry giving the user passwordless sudo. */
  sudo: boolean;
}

export interface GroupSpec { name: string; gid?: number; system: boolean }

export interface FileSpec {
  path: string;
  content: Buffer;
  mode: number;
  owner: string;
}

export interface CloudInitSpec {
  enabled: boolean;
  datasources: string[];
  /** Written as /etc/cloud/cloud.cfg.d/99-diskhub.cfg together with datasource_list. */
  config: Record<string, unknown>;
}

export interface OutputSpec {
  format: string;
  compress: boolean;
  /** -o of `diskhub img convert` (subformat=streamOptimized, compat=1.1, ...). */
  options: string[];
}

export interface UploadSpec {
  name: string;
  visibility?: string;
  container_format: string;
  properties: Record<string, string>;
}

export interface Recipe {
  name: string;
  base: Base;
  /** The kernel package installed in the image. */
  kernel: string;
  packages: string[];
  groups: GroupSpec[];
  users: UserSpec[];
  services: { enable: string[]; disable: string[] };
  files: FileSpec[];
  cloudInit: CloudInitSpec;
  kernelCmdline: string;
  hostname: string;
  disk: { size: number; filesystem: Filesystem; label: string; biosBoot: number; esp: number };
  bootloader: { bios: boolean; uefi: boolean };
  output: OutputSpec;
  upload?: UploadSpec;
}

/** One problem of a recipe: where (a dotted path) and what. */
export interface RecipeIssue { path: string; message: string }

export class RecipeError extends Error {
  constructor(readonly file: string, readonly issues: RecipeIssue[]) {
    super(`${file}: invalid recipe:\n${issues.map((i) => `  ${i.path || '(top level)'}: ${i.message}`).join('\n')}`);
  }
}

export const DEFAULT_CMDLINE = 'console=ttyS0,115200n8';
export const DEFAULT_DATASOURCES = ['ConfigDrive', 'OpenStack', 'NoCloud', 'None'];
/** The datasources a recipe may list (cloud-init's names; None is its fall-back). */
const DATASOURCES = ['ConfigDrive', 'OpenStack', 'NoCloud', 'Ec2', 'None'];
const MiB = 1 << 20;

// ---- a small schema checker: each checker returns the value or records issues ----

type Issues = RecipeIssue[];
type Value = unknown;

const typeName = (v: Value): string => v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a mapping' : typeof v === 'string' ? 'a string' : typeof v === 'number' ? 'a number' : typeof v === 'boolean' ? 'a boolean' : typeof v;
const join = (path: string, key: string | number) => typeof key === 'number' ? `${path}[${key}]` : path ? `${path}.${key}` : key;

class Checker {
  readonly issues: Issues = [];
  bad(path: string, message: string): undefined { this.issues.push({ path, message }); return undefined; }

  /** A mapping with exactly these keys allowed. */
  object(v: Value, path: string, keys: readonly string[], required: readonly string[] = []): Record<string, Value> | undefined {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return this.bad(path, `expected a mapping, got ${typeName(v)}`);
    const o = v as Record<string, Value>;
    for (const k of Object.keys(o)) if (!keys.includes(k)) this.bad(join(path, k), `unknown key (expected one of: ${keys.join(', ')})`);
    for (const k of required) if (o[k] === undefined) this.bad(join(path, k), 'missing (required)');
    return o;
  }
  string(v: Value, path: string, pattern?: RegExp, what?: string): string | undefined {
    if (typeof v !== 'string') return this.bad(path, `expected a string, got ${typeName(v)}`);
    if (pattern && !pattern.test(v)) return this.bad(path, `${JSON.stringify(v)} is not ${what}`);
    return v;
  }
  boolean(v: Value, path: string): boolean | undefined {
    if (typeof v !== 'boolean') return this.bad(path, `expected true or false, got ${typeName(v)}`);
    return v;
  }
  integer(v: Value, path: string, min: number, max: number): number | undefined {
    if (typeof v !== 'number' || !Number.isInteger(v)) return this.bad(path, `expected an integer, got ${typeName(v)}`);
    if (v < min || v > max) return this.bad(path, `${v} is out of range ${min}..${max}`);
    return v;
  }
  oneOf<T extends string>(v: Value, path: string, values: readonly T[]): T | undefined {
    if (typeof v !== 'string') return this.bad(path, `expected one of ${values.join(', ')}, got ${typeName(v)}`);
    if (!values.includes(v as T)) return this.bad(path, `${JSON.stringify(v)} is not one of ${values.join(', ')}`);
    return v as T;
  }
  list<T>(v: Value, path: string, item: (x: Value, p: string) => T | undefined): T[] | undefined {
    if (!Array.isArray(v)) return this.bad(path, `expected a list, got ${typeName(v)}`);
    const out: T[] = [];
    v.forEach((x, i) => { const r = item(x, join(path, i)); if (r !== undefined) out.push(r); });
    return out;
  }
  /** A size: a number of bytes or a string with a K/M/G/T suffix, whole MiB. */
  size(v: Value, path: string, min: number, max: number): number | undefined {
    const bytes = typeof v === 'number' && Number.isInteger(v) ? BigInt(v) : typeof v === 'string' ? parseSize(v) : null;
    if (bytes === null) return this.bad(path, `expected a size (bytes, or a number with a K, M, G or T suffix), got ${typeof v === 'string' ? JSON.stringify(v) : typeName(v)}`);
    if (bytes % BigInt(MiB) !== 0n) return this.bad(path, `${String(v)} is not a whole number of MiB`);
    if (bytes < BigInt(min) || bytes > BigInt(max)) return this.bad(path, `${String(v)} is out of range ${min / MiB} MiB..${max / MiB} MiB`);
    return Number(bytes);
  }
}

const NAME = /^[a-z_][a-z0-9_-]*[$]?$/;
const PACKAGE = /^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$/;
const UNIT = /^[A-Za-z0-9@_.:\\-]+$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const ABSOLUTE = /^\/(?!.*(^|\/)\.\.?(\/|$)).+$/;

/** Check a parsed recipe document; throws RecipeError with every issue. */
export function checkRecipe(doc: Value, file: string, baseDir: string): Recipe {
  const c = new Checker();
  const top = c.object(doc, '', ['name', 'base', 'kernel', 'packages', 'groups', 'users', 'services', 'files', 'cloud_init', 'kernel_cmdline', 'hostname', 'disk', 'bootloader', 'output', 'upload'], ['base']);
  if (!top) throw new RecipeError(file, c.issues);
  const resolvePath = (p: string) => p.startsWith('/') ? p : `${baseDir}/${p}`;

  const name = top.name === undefined ? 'diskhub-image' : c.string(top.name, 'name', /^[\w.-]{1,128}$/, 'a name (letters, digits, . _ -)') ?? '';

  let base: Base | undefined;
  const b = top.base === undefined ? undefined : c.object(top.base, 'base', ['debootstrap', 'image', 'tarball']);
  if (b) {
    const given = Object.keys(b);
    if (given.length !== 1) c.bad('base', `exactly one of debootstrap, image, tarball is needed, got ${given.length === 0 ? 'none' : given.join(', ')}`);
    else if (b.debootstrap !== undefined) {
      const d = c.object(b.debootstrap, 'base.debootstrap', ['suite', 'distribution', 'mirror', 'variant', 'components'], ['suite']);
      if (d) {
        const suite = d.suite === undefined ? undefined : c.string(d.suite, 'base.debootstrap.suite', /^[a-z][a-z0-9-]*$/, 'a suite name (bookworm, trixie, jammy...)');
        const distribution = d.distribution === undefined ? undefined : c.oneOf(d.distribution, 'base.debootstrap.distribution', ['debian', 'ubuntu'] as const);
        const mirror = d.mirror === undefined ? undefined : c.string(d.mirror, 'base.debootstrap.mirror', /^(https?|file):\/\/\S+$/, 'an http(s):// or file:// URL');
        const variant = d.variant === undefined ? undefined : c.oneOf(d.variant, 'base.debootstrap.variant', ['minbase', 'buildd', 'default'] as const);
        const components = d.components === undefined ? ['main'] : c.list(d.components, 'base.debootstrap.components', (x, p) => c.string(x, p, /^[a-z][a-z0-9-]*$/, 'a component name'));
        if (suite && components) base = { kind: 'debootstrap', debootstrap: { suite, ...(distribution ? { distribution } : {}), ...(mirror ? { mirror } : {}), ...(variant ? { variant } : {}), components } };
      }
    } else if (b.image !== undefined) {
      const i = typeof b.image === 'string' ? { path: b.image } : c.object(b.image, 'base.image', ['path', 'format'], ['path']);
      const path = i?.path === undefined ? undefined : c.string(i.path, typeof b.image === 'string' ? 'base.image' : 'base.image.path');
      const format = i?.format === undefined ? undefined : c.string(i.format, 'base.image.format', /^[a-z0-9]+$/, 'a format name');
      if (path) base = { kind: 'image', path: resolvePath(path), ...(format ? { format } : {}) };
    } else {
      const path = c.string(b.tarball, 'base.tarball');
      if (path) base = { kind: 'tarball', path: resolvePath(path) };
    }
  }

  const kernel = top.kernel === undefined ? 'linux-image-cloud-amd64' : c.string(top.kernel, 'kernel', PACKAGE, 'a package name') ?? '';
  const packages = top.packages === undefined ? [] : c.list(top.packages, 'packages', (x, p) => c.string(x, p, PACKAGE, 'a package name')) ?? [];

  const groups = top.groups === undefined ? [] : c.list(top.groups, 'groups', (x, p) => {
    const g = typeof x === 'string' ? { name: x } : c.object(x, p, ['name', 'gid', 'system'], ['name']);
    if (!g) return undefined;
    const gname = c.string(g.name, typeof x === 'string' ? p : join(p, 'name'), NAME, 'a group name');
    const gid = g.gid === undefined ? undefined : c.integer(g.gid, join(p, 'gid'), 0, 2 ** 31 - 1);
    const system = g.system === undefined ? false : c.boolean(g.system, join(p, 'system'));
    return gname === undefined || system === undefined ? undefined : { name: gname, system, ...(gid !== undefined ? { gid } : {}) };
  }) ?? [];

  const users = top.users === undefined ? [] : c.list(top.users, 'users', (x, p) => {
    const u = c.object(x, p, ['name', 'uid', 'groups', 'shell', 'home', 'password_hash', 'ssh_authorized_keys', 'sudo'], ['name']);
    if (!u) return undefined;
    const uname = c.string(u.name, join(p, 'name'), NAME, 'a user name');
    const uid = u.uid === undefined ? undefined : c.integer(u.uid, join(p, 'uid'), 0, 2 ** 31 - 1);
    const ugroups = u.groups === undefined ? [] : c.list(u.groups, join(p, 'groups'), (y, q) => c.string(y, q, NAME, 'a group name'));
    const shell = u.shell === undefined ? '/bin/bash' : c.string(u.shell, join(p, 'shell'), ABSOLUTE, 'an absolute path');
    const home = u.home === undefined ? undefined : c.string(u.home, join(p, 'home'), ABSOLUTE, 'an absolute path');
    const hash = u.password_hash === undefined ? undefined : c.string(u.password_hash, join(p, 'password_hash'), /^\$[0-9a-z]+\$[^\s:]+$/, 'a crypt(3) hash ($6$..., $y$...)');
    const keys = u.ssh_authorized_keys === undefined ? [] : c.list(u.ssh_authorized_keys, join(p, 'ssh_authorized_keys'), (y, q) => c.string(y, q, /^(ssh-|ecdsa-|sk-)[\w@.-]+ [A-Za-z0-9+/=]+( [^\n]*)?$/, 'an OpenSSH public key line'));
    const sudo = u.sudo === undefined ? false : c.boolean(u.sudo, join(p, 'sudo'));
    if (uname === undefined || ugroups === undefined || shell === undefined || keys === undefined || sudo === undefined) return undefined;
    return { name: uname, groups: ugroups, shell, ssh_authorized_keys: keys, sudo, ...(uid !== undefined ? { uid } : {}), ...(home ? { home } : {}), ...(hash ? { password_hash: hash } : {}) };
  }) ?? [];

  const s = top.services === undefined ? {} : c.object(top.services, 'services', ['enable', 'disable']) ?? {};
  const unitList = (v: Value, p: string) => v === undefined ? [] : c.list(v, p, (x, q) => c.string(x, q, UNIT, 'a systemd unit name')) ?? [];
  const services = { enable: unitList(s.enable, 'services.enable'), disable: unitList(s.disable, 'services.disable') };

  const files = top.files === undefined ? [] : c.list(top.files, 'files', (x, p) => {
    const f = c.object(x, p, ['path', 'content', 'encoding', 'mode', 'owner'], ['path', 'content']);
    if (!f) return undefined;
    const path = f.path === undefined ? undefined : c.string(f.path, join(p, 'path'), ABSOLUTE, 'an absolute path without . or .. components');
    const encoding = f.encoding === undefined ? 'text' : c.oneOf(f.encoding, join(p, 'encoding'), ['text', 'base64'] as const);
    const text = f.content === undefined ? undefined : c.string(f.content, join(p, 'content'));
    const mode = f.mode === undefined ? 0o644 : typeof f.mode === 'string' && /^0?[0-7]{3,4}$/.test(f.mode) ? parseInt(f.mode, 8) : c.bad(join(p, 'mode'), `expected an octal mode string such as "0644", got ${typeof f.mode === 'string' ? JSON.stringify(f.mode) : typeName(f.mode)}`);
    const owner = f.owner === undefined ? 'root:root' : c.string(f.owner, join(p, 'owner'), /^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$/, 'user or user:group');
    if (encoding === 'base64' && text !== undefined && !/^[A-Za-z0-9+/=\s]*$/.test(text)) return c.bad(join(p, 'content'), 'is not base64');
    if (path === undefined || text === undefined || encoding === undefined || mode === undefined || owner === undefined) return undefined;
    return { path, content: encoding === 'base64' ? Buffer.from(text, 'base64') : Buffer.from(text, 'utf8'), mode, owner };
  }) ?? [];

  let cloudInit: CloudInitSpec = { enabled: true, datasources: DEFAULT_DATASOURCES, config: {} };
  if (top.cloud_init !== undefined) {
    const ci = c.object(top.cloud_init, 'cloud_init', ['enabled', 'datasources', 'config']);
    if (ci) {
      const enabled = ci.enabled === undefined ? true : c.boolean(ci.enabled, 'cloud_init.enabled') ?? true;
      const datasources = ci.datasources === undefined ? DEFAULT_DATASOURCES : c.list(ci.datasources, 'cloud_init.datasources', (x, p) => c.oneOf(x, p, DATASOURCES)) ?? [];
      const config = ci.config === undefined ? {} : c.object(ci.config, 'cloud_init.config', Object.keys(ci.config as object ?? {})) ?? {};
      if ('datasource_list' in config) c.bad('cloud_init.config.datasource_list', 'set it with cloud_init.datasources');
      cloudInit = { enabled, datasources, config };
    }
  }

  const kernelCmdline = top.kernel_cmdline === undefined ? DEFAULT_CMDLINE : c.string(top.kernel_cmdline, 'kernel_cmdline', /^[^\n"'`$\\;{}]*$/, 'a command line (no quotes, $, backslashes, ; or braces: it goes into grub.cfg)') ?? '';
  const hostname = top.hostname === undefined ? 'localhost' : c.string(top.hostname, 'hostname', HOSTNAME, 'a host name') ?? '';

  const d = top.disk === undefined ? {} : c.object(top.disk, 'disk', ['size', 'filesystem', 'label', 'partitions']) ?? {};
  const parts = d.partitions === undefined ? {} : c.object(d.partitions, 'disk.partitions', ['bios_boot', 'esp']) ?? {};
  const disk = {
    size: d.size === undefined ? 2048 * MiB : c.size(d.size, 'disk.size', 256 * MiB, 2 ** 40) ?? 0,
    filesystem: d.filesystem === undefined ? 'ext4' as const : c.oneOf(d.filesystem, 'disk.filesystem', ['ext4', 'xfs'] as const) ?? 'ext4',
    label: d.label === undefined ? 'cloudimg-rootfs' : c.string(d.label, 'disk.label', /^[\w.-]{1,12}$/, 'a filesystem label (up to 12 characters: xfs allows no more)') ?? '',
    biosBoot: parts.bios_boot === undefined ? MiB : c.size(parts.bios_boot, 'disk.partitions.bios_boot', MiB, 64 * MiB) ?? 0,
    esp: parts.esp === undefined ? 64 * MiB : parts.esp === 0 ? 0 : c.size(parts.esp, 'disk.partitions.esp', 33 * MiB, 4096 * MiB) ?? 0,
  };

  const bl = top.bootloader === undefined ? {} : c.object(top.bootloader, 'bootloader', ['bios', 'uefi']) ?? {};
  const bootloader = {
    bios: bl.bios === undefined ? true : c.boolean(bl.bios, 'bootloader.bios') ?? true,
    uefi: bl.uefi === undefined ? disk.esp > 0 : c.boolean(bl.uefi, 'bootloader.uefi') ?? false,
  };
  if (bootloader.uefi && disk.esp === 0) c.bad('bootloader.uefi', 'needs an EFI system partition (disk.partitions.esp is 0)');
  if (!bootloader.bios && !bootloader.uefi) c.bad('bootloader', 'at least one of bios and uefi must be true');

  const o = top.output === undefined ? {} : c.object(top.output, 'output', ['format', 'compress', 'options']) ?? {};
  const output: OutputSpec = {
    format: o.format === undefined ? 'qcow2' : c.string(o.format, 'output.format', /^[a-z0-9]+$/, 'a format name (qcow2, raw, vmdk, vdi, vhdx, vpc...)') ?? '',
    compress: o.compress === undefined ? false : c.boolean(o.compress, 'output.compress') ?? false,
    options: o.options === undefined ? [] : optionList(c, o.options, 'output.options'),
  };

  let upload: UploadSpec | undefined;
  if (top.upload !== undefined) {
    const u = c.object(top.upload, 'upload', ['name', 'visibility', 'container_format', 'properties']);
    if (u) {
      const props = u.properties === undefined ? {} : c.object(u.properties, 'upload.properties', Object.keys(u.properties as object ?? {})) ?? {};
      const properties: Record<string, string> = {};
      for (const [k, v] of Object.entries(props)) {
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') properties[k] = String(v);
        else c.bad(join('upload.properties', k), `expected a string, number or boolean, got ${typeName(v)}`);
      }
      const visibility = u.visibility === undefined ? undefined : c.oneOf(u.visibility, 'upload.visibility', ['public', 'private', 'shared', 'community'] as const);
      upload = {
        name: u.name === undefined ? name : c.string(u.name, 'upload.name') ?? '',
        container_format: u.container_format === undefined ? 'bare' : c.oneOf(u.container_format, 'upload.container_format', ['bare', 'ovf', 'ova'] as const) ?? 'bare',
        properties,
        ...(visibility ? { visibility } : {}),
      };
    }
  }

  if (c.issues.length > 0 || !base) throw new RecipeError(file, c.issues);
  return { name, base, kernel, packages, groups, users, services, files, cloudInit, kernelCmdline, hostname, disk, bootloader, output, ...(upload ? { upload } : {}) };
}

/** output.options: a mapping (compat: "1.1") or a list of key=value strings, as -o takes them. */
function optionList(c: Checker, v: Value, path: string): string[] {
  if (Array.isArray(v)) return c.list(v, path, (x, p) => c.string(x, p, /^[a-z0-9_.-]+=[^,]*$/, 'key=value')) ?? [];
  const o = c.object(v, path, Object.keys(v as object ?? {}));
  if (!o) return [];
  const out: string[] = [];
  for (const [k, x] of Object.entries(o)) {
    if (typeof x === 'string' && x.includes(',')) c.bad(join(path, k), 'a value may not contain a comma');
    else if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') out.push(`${k}=${typeof x === 'boolean' ? (x ? 'on' : 'off') : x}`);
    else c.bad(join(path, k), `expected a string, number or boolean, got ${typeName(x)}`);
  }
  return out;
}

/** Parse a recipe's text (JSON when it starts with `{`, else YAML). */
export function parseRecipe(text: string, file: string, baseDir: string): Recipe {
  let doc: Value;
  if (/^\s*\{/.test(text)) {
    try { doc = JSON.parse(text); } catch (e) { throw new RecipeError(file, [{ path: '', message: `not valid JSON: ${(e as Error).message}` }]); }
  } else {
    const parsed = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    if (parsed.errors.length > 0) throw new RecipeError(file, parsed.errors.map((e) => ({ path: '', message: `not valid YAML: ${e.message.split('\n')[0]}` })));
    doc = parsed.toJS({ maxAliasCount: 100 });
  }
  return checkRecipe(doc, file, baseDir);
}

export async function loadRecipe(path: string): Promise<Recipe> {
  const text = await readFile(path, 'utf8');
  const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) || '/' : '.';
  return parseRecipe(text, path, dir);
}
