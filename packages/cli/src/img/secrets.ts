/**
 * qemu-img's `--object secret,id=ID,data=...|file=...[,format=raw|base64]` and
 * `--image-opts` (an image named by "driver=qcow2,file.filename=X,encrypt.key-secret=ID"):
 * the secrets a command may use, and how an image argument turns into a path, a format and
 * the passphrase of an encrypted image. Secret values never go into messages.
 */
import { readFileSync } from 'node:fs';
import type { OpenImageOptions } from '@diskhub/disk';
import { CliError } from './common.js';
import { parseOptionString } from './createopts.js';
import { qdictOrder, qemuJsonString } from './output.js';
import type { ParsedOption } from './getopt.js';

/** Options every image-taking command accepts for secrets and image options. */
export const SECRET_LONG_OPTIONS = [
  { name: 'object', hasArg: 1 as const, val: 'object' },
  { name: 'image-opts', hasArg: 0 as const, val: 'image-opts' },
];

/** An image as a command line names it, resolved. */
export interface ImageArg {
  path: string;
  /** What qemu-img calls the image in messages (the option string with --image-opts). */
  display: string;
  format?: string;
  secret?: Uint8Array;
  /** The "json:{...}" name `info` shows for an image given with options beyond driver and file. */
  jsonName?: string;
}

export class Secrets {
  private readonly values = new Map<string, Uint8Array>();
  /** --image-opts was given: image arguments are option strings. */
  imageOpts = false;

  /** Take --object and --image-opts; false for any other option. */
  option(o: ParsedOption): boolean {
    if (o.opt === 'object') { this.addObject(o.arg ?? ''); return true; }
    if (o.opt === 'image-opts') { this.imageOpts = true; return true; }
    return false;
  }

  /** `--object secret,id=...`. */
  addObject(text: string): void {
    const { options } = parseOptionString(text);
    const props = new Map<string, string>();
    let type: string | undefined;
    options.forEach(([k, v], i) => {
      // "secret,id=x" names the type first; "qom-type=secret,id=x" does so explicitly.
      if (i === 0 && v === 'on' && !text.startsWith(`${k}=`)) type = k;
      else if (k === 'qom-type') type = v;
      else props.set(k, v);
    });
    if (type === undefined) throw new CliError("Parameter 'qom-type' is missing");
    if (type !== 'secret') throw new CliError(`invalid object type: ${type}`);
    const id = props.get('id');
    if (!id) throw new CliError("Parameter 'id' is missing");
    for (const k of props.keys()) {
      if (k === 'keyid' || k === 'iv') throw new CliError(`secret '${id}': encrypted secrets (keyid, iv) are not supported`);
      if (!['id', 'data', 'file', 'format', 'loaded'].includes(k)) throw new CliError(`Property 'secret.${k}' not found`);
    }
    const data = props.get('data'), file = props.get('file');
    if (data !== undefined && file !== undefined) throw new CliError("'data' and 'file' are mutually exclusive");
    let raw: Uint8Array;
    if (data !== undefined) raw = new TextEncoder().encode(data);
    else if (file !== undefined) {
      try {
        raw = readFileSync(file);
      } catch (e) {
        throw new CliError(`Unable to read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (e as Error).message}`);
      }
    } else throw new CliError("Either 'file' or 'data' must be provided");
    const format = props.get('format') ?? 'raw';
    if (format === 'base64') {
      const text = new TextDecoder().decode(raw);
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text.trim())) throw new CliError('Unable to decode base64 data');
      raw = Buffer.from(text.trim(), 'base64');
    } else if (format !== 'raw') throw new CliError(`Parameter 'format' does not accept value '${format}'`);
    if (this.values.has(id)) throw new CliError(`attempt to add duplicate property '${id}' to object (type 'container')`);
    this.values.set(id, raw);
  }

  /** The bytes of secret `id`, as a passphrase (UTF-8, as QEMU requires of passphrases). */
  passphrase(id: string): Uint8Array {
    const v = this.values.get(id);
    if (!v) throw new CliError(`No secret with id '${id}'`);
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(v);
    } catch {
      throw new CliError(`Data from secret ${id} is not valid UTF-8`);
    }
    return v;
  }

  /** An image argument: a file name, or with --image-opts an option string. */
  image(arg: string, format?: string): ImageArg {
    if (!this.imageOpts) return { path: arg, display: arg, ...(format !== undefined ? { format } : {}) };
    if (format !== undefined) throw new CliError('--image-opts and --format are mutually exclusive');
    return this.imageFromOptions(arg);
  }

  /** "driver=qcow2,file.filename=X,encrypt.key-secret=sec0" → path, format, passphrase. */
  imageFromOptions(text: string): ImageArg {
    const { options } = parseOptionString(text);
    let path: string | undefined, driver: string | undefined, secretId: string | undefined;
    // QEMU's flattened view of the options: file.* nested under "file", the rest as given.
    const tree: Record<string, unknown> = {};
    for (const [k, v] of options) {
      if (k.startsWith('file.') || k === 'file') {
        const file = (tree.file ??= { driver: 'file' }) as Record<string, string>;
        file[k === 'file' ? 'filename' : k.slice(5)] = v;
      } else tree[k] = v;
    }
    for (const [k, v] of options) {
      switch (k) {
        case 'driver': driver = v; break;
        case 'file.filename': case 'file': path = v; break;
        case 'file.driver': if (v !== 'file') throw new CliError(`Unknown protocol '${v}'`); break;
        case 'encrypt.key-secret': case 'key-secret': secretId = v; break;
        case 'encrypt.format': if (v !== 'luks' && v !== 'aes') throw new CliError(`Parameter 'encrypt.format' does not accept value '${v}'`); break;
        case 'file.locking': case 'force-share': case 'read-only': break;
        default: throw new CliError(`Block format '${driver ?? 'file'}' does not support the option '${k}'`);
      }
    }
    if (path === undefined) throw new CliError(`Could not open '${text}': A block device must be specified for "file"`);
    let secret: Uint8Array | undefined;
    try {
      if (secretId !== undefined) secret = this.passphrase(secretId);
    } catch (e) {
      throw new CliError(`Could not open '${text}': ${(e as Error).message}`);
    }
    const plain = Object.keys(tree).every((k) => k === 'driver' || k === 'file');
    return {
      path, display: text,
      ...(driver !== undefined ? { format: driver } : {}),
      ...(secret ? { secret } : {}),
      ...(plain ? {} : { jsonName: `json:${compactJson(tree)}` }),
    };
  }

  /** The passphrase a create option (-o key-secret=ID or encrypt.key-secret=ID) names, if any. */
  createSecret(values: Map<string, string>, key: string): Uint8Array | undefined {
    const id = values.get(key);
    return id === undefined ? undefined : this.passphrase(id);
  }
}

/** QEMU's one-line JSON ("{"a": 1, "b": {...}}"), keys in QDict order. */
function compactJson(v: unknown): string {
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${qdictOrder(o).map((k) => `${qemuJsonString(k)}: ${compactJson(o[k])}`).join(', ')}}`;
  }
  return qemuJsonString(String(v));
}

/** Open options for a resolved image argument. */
export function openOptionsOf(arg: ImageArg): OpenImageOptions {
  return {
    ...(arg.format !== undefined ? { format: arg.format } : {}),
    ...(arg.secret !== undefined ? { secret: arg.secret } : {}),
  };
}
