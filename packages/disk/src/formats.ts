/**
 * The format registry: every driver the engine has, in probe order. Adding a format is its
 * folder and one line here. Drivers never import this module (it imports them all): one that
 * must probe another file gets the registry passed in (OpenOptions.formats, CreateRequest.formats).
 */
import type { FormatDriver, FormatRegistry } from './format.js';
import { DiskError } from './errors.js';
import { rawDriver } from './raw/index.js';
import { qcow2Driver } from './qcow2/index.js';
import { vdiDriver } from './vdi/index.js';
import { vpcDriver } from './vpc/index.js';
import { qedDriver } from './qed/index.js';
import { luksDriver } from './luks/index.js';
import { vmdkDriver } from './vmdk/index.js';
import { ovaDriver } from './ova/index.js';
import { vhdxDriver } from './vhdx/index.js';
import { dmgDriver } from './dmg/index.js';
import { qcow1Driver } from './qcow1/index.js';
import { parallelsDriver } from './parallels/index.js';
import { bochsDriver } from './bochs/index.js';
import { cloopDriver } from './cloop/index.js';

const drivers = new Map<string, FormatDriver>();

export function registerFormat(driver: FormatDriver): void {
  drivers.set(driver.name, driver);
}

export function getFormat(name: string): FormatDriver {
  const d = drivers.get(name);
  if (!d) throw new DiskError('EFORMAT', `Unknown driver '${name}'`);
  return d;
}

export function listFormats(): FormatDriver[] {
  return [...drivers.values()];
}

/** Pick the driver that scores highest on the first bytes of a file (raw if none claims it). */
export function probeFormat(head: Uint8Array, filename?: string): FormatDriver {
  let best: FormatDriver = rawDriver;
  let bestScore = 0;
  for (const d of drivers.values()) {
    const score = d.probe(head, filename);
    if (score > bestScore) { best = d; bestScore = score; }
  }
  return best;
}

/** The registry as one value, to pass to drivers. */
export const formats: FormatRegistry = { get: getFormat, probe: probeFormat, list: listFormats };

registerFormat(rawDriver);
registerFormat(qcow2Driver);
registerFormat(vdiDriver);
registerFormat(vpcDriver);
registerFormat(qedDriver);
registerFormat(luksDriver);
registerFormat(vmdkDriver);
registerFormat(ovaDriver);
registerFormat(vhdxDriver);
registerFormat(dmgDriver);
registerFormat(qcow1Driver);
registerFormat(parallelsDriver);
registerFormat(bochsDriver);
registerFormat(cloopDriver);
