/**
 * A key/value editor for custom properties that knows the properties the metadata
 * definitions API describes (their types and allowed values), like Horizon's "Update
 * Metadata", and refuses reserved keys before the service has to.
 */
import { useEffect, useState } from 'preact/hooks';
import { imagePropertyDefs, isReservedKey, type ImageSchemaInfo, type PropertyDef } from '../api.js';
import { useApp } from '../context.js';
import type { Translate } from '../i18n.js';

export interface PropertyRow { key: string; value: string }
export type Defs = Map<string, PropertyDef & { namespace: string }>;

let defsCache: Promise<Defs> | null = null;

export function usePropertyDefs(): Defs {
  const [defs, setDefs] = useState<Defs>(new Map());
  useEffect(() => {
    defsCache ??= imagePropertyDefs();
    defsCache.then(setDefs, () => { defsCache = null; });
  }, []);
  return defs;
}

/** What is wrong with the rows, in words (empty: all good). */
export function validateProperties(t: Translate, rows: PropertyRow[], defs: Defs, schema: ImageSchemaInfo | null): string[] {
  const errors: string[] = [];
  const seen = new Set<string>();
  for (const { key, value } of rows) {
    const k = key.trim();
    if (!k) { errors.push(t('props.empty')); continue; }
    if (schema && isReservedKey(k, schema)) errors.push(t('props.reserved', { key: k }));
    if (seen.has(k)) errors.push(t('props.duplicate', { key: k }));
    seen.add(k);
    const def = defs.get(k);
    if (!def || value === '') continue;
    if (def.enum && !def.enum.includes(value)) errors.push(t('props.notAllowed', { key: k, values: def.enum.join(', ') }));
    if (def.type === 'boolean' && !['true', 'false'].includes(value)) errors.push(t('props.notAllowed', { key: k, values: 'true, false' }));
    if (def.type === 'integer' || def.type === 'number') {
      const n = Number(value);
      if (def.type === 'integer' ? !/^-?\d+$/.test(value) : !Number.isFinite(n)) errors.push(t(def.type === 'integer' ? 'props.notInteger' : 'props.notNumber', { key: k }));
      else if (def.minimum !== undefined && n < def.minimum) errors.push(t('props.tooSmall', { key: k, min: def.minimum }));
      else if (def.maximum !== undefined && n > def.maximum) errors.push(t('props.tooLarge', { key: k, max: def.maximum }));
    }
  }
  return errors;
}

export function PropertyEditor({ rows, onChange, defs }: { rows: PropertyRow[]; onChange(rows: PropertyRow[]): void; defs: Defs }) {
  const { t } = useApp();
  const set = (i: number, patch: Partial<PropertyRow>) => onChange(rows.map((r, j) => (j === i ? { ...r, ...patch } : r)));
  const known = [...defs.entries()].filter(([, d]) => !d.readonly).sort(([a], [b]) => a.localeCompare(b));
  return (
    <fieldset class="properties">
      <legend>{t('props.heading')}</legend>
      <datalist id="known-properties">
        {known.map(([k, d]) => <option key={k} value={k}>{`${d.title} — ${d.namespace}`}</option>)}
      </datalist>
      {rows.map((r, i) => {
        const def = defs.get(r.key.trim());
        const keyId = `prop-key-${i}`;
        const valueId = `prop-value-${i}`;
        const choices = def?.enum ?? (def?.type === 'boolean' ? ['true', 'false'] : null);
        return (
          <div class="property-row" key={i} data-property-row={i}>
            <label for={keyId} class="visually-hidden">{t('props.key')}</label>
            <input id={keyId} name={`key-${i}`} placeholder={t('props.key')} list="known-properties" value={r.key}
              onInput={(e) => set(i, { key: (e.target as HTMLInputElement).value })} />
            <label for={valueId} class="visually-hidden">{t('props.value')}</label>
            {choices ? (
              <select id={valueId} name={`value-${i}`} value={r.value} onChange={(e) => set(i, { value: (e.target as HTMLSelectElement).value })}>
                <option value="">{t('props.choose')}</option>
                {choices.map((c) => <option key={c} value={c}>{c}</option>)}
              </select>
            ) : (
              <input id={valueId} name={`value-${i}`} placeholder={t('props.value')} value={r.value}
                inputMode={def?.type === 'integer' || def?.type === 'number' ? 'numeric' : undefined}
                onInput={(e) => set(i, { value: (e.target as HTMLInputElement).value })} />
            )}
            <button type="button" class="link" aria-label={t('props.remove', { key: r.key || String(i + 1) })} onClick={() => onChange(rows.filter((_, j) => j !== i))}>✕</button>
            {def?.description && <small class="hint">{def.title}: {def.description}</small>}
          </div>
        );
      })}
      <button type="button" onClick={() => onChange([...rows, { key: '', value: '' }])}>{t('props.add')}</button>
    </fieldset>
  );
}
