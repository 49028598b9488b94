/**
 * `-o` option strings (key=value,key=value; ",," is a literal comma) and the option lists
 * qemu-img shows for `-o help`, shared by create, convert and measure.
 */
import type { CreateOption, FormatDriver } from '@diskhub/disk';
import { parseSize } from './output.js';
import { CliError } from './common.js';

/**
 * Options of the host file itself (QEMU's "file" protocol level), which qemu-img merges with
 * the format's options. Listed in the order qemu-img prints them in "Formatting ..." lines.
 */
export const FILE_OPTIONS: readonly CreateOption[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'nocow', type: 'bool', help: 'Turn off copy-on-write (valid only on btrfs)' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, falloc, full)' },
  { name: 'extent_size_hint', type: 'size', help: 'Extent size hint for the image file, 0 to disable' },
];

/** Split one -o argument; "help" and "?" are reported as `help: true`. */
export function parseOptionString(text: string): { options: [string, string][]; help: boolean } {
  const options: [string, string][] = [];
  let help = false;
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === ',') {
      if (text[i + 1] === ',') { cur += ','; i++; continue; }
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  for (const p of parts) {
    if (p === '') continue;
    if (p === 'help' || p === '?') { help = true; continue; }
    const eq = p.indexOf('=');
    if (eq < 0) options.push([p, 'on']);
    else options.push([p.slice(0, eq), p.slice(eq + 1)]);
  }
  return { options, help };
}

/** The options `-o` accepts for `driver` on a host file: the format's first, then the file's. */
export function mergedOptions(driver: FormatDriver): CreateOption[] {
  const list = [...(driver.createOptions ?? [])];
  for (const o of FILE_OPTIONS) if (!list.some((x) => x.name === o.name)) list.push(o);
  return list;
}

const typeLabel: Record<CreateOption['type'], string> = {
  size: '<size>', number: '<num>', bool: '<bool (on/off)>', string: '<str>',
};

/** "  name=<type>  - help" lines, sorted by name, as qemu-img's -o help prints them. */
export function helpLines(list: readonly CreateOption[]): string {
  return [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((o) => `  ${`${o.name}=${typeLabel[o.type]}`.padEnd(22)} - ${o.help}\n`).join('');
}

/**
 * `-o help`: without a file name only the format's options (and a note about the host file
 * level); with one, the merged list.
 */
export function optionHelp(driver: FormatDriver, withFilename: boolean): string {
  if (withFilename) return 'Supported options:\n' + helpLines(mergedOptions(driver));
  return `Supported ${driver.name} options:\n` + helpLines(driver.createOptions ?? []) +
    '\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n';
}

/**
 * Check `-o` values against the driver's option list (unknown keys, sizes, on/off) and return
 * them normalised (sizes in bytes). Messages are qemu-img's.
 */
export function validateOptions(driver: FormatDriver, given: [string, string][]): Map<string, string> {
  const list = mergedOptions(driver);
  const values = new Map<string, string>();
  for (const [key, value] of given) {
    const desc = list.find((o) => o.name === key);
    if (!desc) throw new CliError(`Invalid parameter '${key}'`);
    if (desc.type === 'size') {
      const v = parseSize(value);
      if (v === null || v >= 1n << 64n) {
        throw new CliError(`Parameter '${key}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`);
      }
      values.set(key, String(v));
    } else if (desc.type === 'bool') {
      if (value !== 'on' && value !== 'off') throw new CliError(`Parameter '${key}' expects 'on' or 'off'`);
      values.set(key, value);
    } else if (desc.type === 'number') {
      if (!/^\d+$/.test(value)) throw new CliError(`Parameter '${key}' expects a number`);
      values.set(key, value);
    } else values.set(key, value);
  }
  return values;
}

/** "fmt=qcow2 cluster_size=65536 ..." as qemu-img prints it: declared order, set or default values. */
export function describeOptions(driver: FormatDriver, values: Map<string, string>): string {
  const parts = [`fmt=${driver.name}`];
  for (const o of mergedOptions(driver)) {
    const v = values.get(o.name) ?? o.default;
    if (v !== undefined) parts.push(`${o.name}=${v}`);
  }
  return parts.join(' ');
}
