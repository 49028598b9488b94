/**
 * The fields an image has in both the create and the edit form: name, visibility,
 * protected, minimum disk and RAM, tags and custom properties, with their validation.
 */
import { useState } from 'preact/hooks';
import { isAdmin, type ImageSchemaInfo } from '../api.js';
import { useApp } from '../context.js';
import type { MessageKey, Translate } from '../i18n.js';
import { PropertyEditor, validateProperties, type Defs, type PropertyRow } from './PropertyEditor.js';

const VISIBILITIES = ['private', 'shared', 'community', 'public'];

export interface ImageFieldValues {
  name: string;
  visibility: string;
  protected: boolean;
  minDisk: string;
  minRam: string;
  tags: string[];
  properties: PropertyRow[];
}

export const EMPTY_FIELDS: ImageFieldValues = { name: '', visibility: 'private', protected: false, minDisk: '0', minRam: '0', tags: [], properties: [] };

/** What is wrong with the values, in words (empty: all good). */
export function validateFields(t: Translate, v: ImageFieldValues, defs: Defs, schema: ImageSchemaInfo | null): string[] {
  const problems = validateProperties(t, v.properties, defs, schema);
  for (const [label, n] of [['detail.minDisk', v.minDisk], ['detail.minRam', v.minRam]] as const) {
    if (!/^\d+$/.test(n.trim())) problems.push(t('props.notInteger', { key: t(label) }));
  }
  return problems;
}

function TagEditor({ tags, onChange }: { tags: string[]; onChange(tags: string[]): void }) {
  const { t } = useApp();
  const [draft, setDraft] = useState('');
  const add = () => {
    const v = draft.trim();
    if (v && !tags.includes(v)) onChange([...tags, v]);
    setDraft('');
  };
  return (
    <fieldset>
      <legend>{t('edit.tags')}</legend>
      <ul class="tags">
        {tags.map((tag) => (
          <li key={tag}>{tag} <button type="button" class="link" aria-label={t('edit.removeTag', { tag })} onClick={() => onChange(tags.filter((x) => x !== tag))}>✕</button></li>
        ))}
      </ul>
      <div class="inline-form">
        <label class="visually-hidden" for="new-tag">{t('edit.tagPlaceholder')}</label>
        <input id="new-tag" placeholder={t('edit.tagPlaceholder')} value={draft} onInput={(e) => setDraft((e.target as HTMLInputElement).value)}
          onKeyDown={(e) => { if (e.key === 'Enter') { e.preventDefault(); add(); } }} />
        <button type="button" onClick={add}>{t('edit.addTag')}</button>
      </div>
    </fieldset>
  );
}

/** The fields, without the name (forms place it first, before what is specific to them). */
export function ImageFields({ values, onChange, defs, currentVisibility }: {
  values: ImageFieldValues; onChange(v: ImageFieldValues): void; defs: Defs; currentVisibility?: string;
}) {
  const { session, t } = useApp();
  const set = (patch: Partial<ImageFieldValues>) => onChange({ ...values, ...patch });
  const text = (e: Event) => (e.target as HTMLInputElement).value;
  // Only admins publicise images; an image that is already public keeps the option.
  const choices = VISIBILITIES.filter((v) => v !== 'public' || (session && isAdmin(session)) || currentVisibility === 'public');
  return (
    <>
      <label>{t('create.visibility')}
        <select name="visibility" value={values.visibility} onChange={(e) => set({ visibility: text(e) })}>
          {choices.map((v) => <option key={v} value={v}>{t(`visibility.${v}` as MessageKey)}</option>)}
        </select>
      </label>
      <label class="check"><input type="checkbox" name="protected" checked={values.protected} onChange={(e) => set({ protected: (e.target as HTMLInputElement).checked })} />{t('create.protected')}</label>
      <div class="pair">
        <label>{t('create.minDisk')}<input name="min_disk" inputMode="numeric" value={values.minDisk} onInput={(e) => set({ minDisk: text(e) })} /></label>
        <label>{t('create.minRam')}<input name="min_ram" inputMode="numeric" value={values.minRam} onInput={(e) => set({ minRam: text(e) })} /></label>
      </div>
      <TagEditor tags={values.tags} onChange={(tags) => set({ tags })} />
      <PropertyEditor rows={values.properties} onChange={(properties) => set({ properties })} defs={defs} />
    </>
  );
}

export function NameField({ value, onChange }: { value: string; onChange(v: string): void }) {
  const { t } = useApp();
  return <label>{t('create.name')}<input name="name" value={value} maxLength={255} onInput={(e) => onChange((e.target as HTMLInputElement).value)} /></label>;
}
