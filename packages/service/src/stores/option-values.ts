/** Number and boolean options of a store's configuration, as JSON values or strings (the environment, oslo.config habits). */
import { StoreConfigError, type StoreSpec } from './registry.js';

export function numberOption(spec: StoreSpec, name: string, min = 0): number | undefined {
  const v = spec[name];
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min) throw new StoreConfigError(`store '${spec.id}': option '${name}' must be a number of at least ${min}, not ${JSON.stringify(v)}`);
  return n;
}

export function boolOption(spec: StoreSpec, name: string): boolean | undefined {
  const v = spec[name];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|yes|on|1)$/i.test(v)) return true;
  if (typeof v === 'string' && /^(false|no|off|0)$/i.test(v)) return false;
  throw new StoreConfigError(`store '${spec.id}': option '${name}' must be true or false, not ${JSON.stringify(v)}`);
}

/** Refuse options the type does not know (a misspelt option would otherwise be ignored). */
export function checkOptionNames(spec: StoreSpec, known: readonly string[]): void {
  const allowed = new Set(['id', 'type', 'description', ...known]);
  for (const k of Object.keys(spec)) {
    if (!allowed.has(k)) throw new StoreConfigError(`store '${spec.id}' (${spec.type}): unknown option '${k}' (${spec.type} stores take: ${known.join(', ')}, description)`);
  }
}
