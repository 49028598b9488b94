/** Small pieces several views share. */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { imageSchemaInfo, importMethods, listStores, type ImageSchemaInfo, type StoreInfo } from '../api.js';
import { useApp } from '../context.js';
import type { MessageKey } from '../i18n.js';

/**
 * An async function as a DOM event handler. Preact discards what a handler returns, so nobody
 * awaits the promise: each handler shows the API errors it expects itself, and anything else
 * goes to the console instead of becoming an unhandled rejection.
 */
export function onEvent<A extends unknown[]>(fn: (...args: A) => Promise<unknown>): (...args: A) => void {
  return (...args) => { fn(...args).catch((e: unknown) => console.error(e)); };
}

export function StatusBadge({ status }: { status: string }) {
  const { t } = useApp();
  return <span class={`badge status-${status}`}>{t(`status.${status}` as MessageKey) ?? status}</span>;
}

/**
 * What the service says about itself (the image schema, its stores, its import methods),
 * fetched once per page load and shared by every view; a failed fetch is tried again next time.
 */
function useServiceFact<T>(fetchIt: () => Promise<T>): T | null {
  const [value, setValue] = useState<T | null>(null);
  useEffect(() => {
    let cached = facts.get(fetchIt) as Promise<T> | undefined;
    if (!cached) facts.set(fetchIt, (cached = fetchIt()));
    cached.then(setValue, () => facts.delete(fetchIt));
  }, []);
  return value;
}
const facts = new Map<() => Promise<unknown>, Promise<unknown>>();

/** The image schema (formats, attributes). */
export const useImageSchema = (): ImageSchemaInfo | null => useServiceFact(imageSchemaInfo);
/** The stores images can live in (GET /v2/info/stores). */
export const useStores = (): StoreInfo[] | null => useServiceFact(listStores);
/** The import methods the service has enabled. */
export const useImportMethods = (): string[] | null => useServiceFact(importMethods);

/**
 * Stores to import into, as check boxes (an import can go to several stores at once; an upload
 * goes to one and uses a select instead). `choices` are the stores offered, `chosen` their ids.
 */
export function StoreChoice({ legend, choices, chosen, onChange, disabled }: {
  legend: string; choices: StoreInfo[]; chosen: string[]; onChange(ids: string[]): void; disabled?: boolean;
}) {
  const { t } = useApp();
  const toggle = (id: string, on: boolean) => onChange(choices.map((s) => s.id).filter((s) => (s === id ? on : chosen.includes(s))));
  return (
    <fieldset data-testid="store-choice">
      <legend>{legend}</legend>
      {choices.map((s) => (
        <label class="check" key={s.id}>
          <input type="checkbox" name="stores" value={s.id} checked={chosen.includes(s.id)} disabled={disabled}
            onChange={(e) => toggle(s.id, (e.target as HTMLInputElement).checked)} />
          {s.description ? `${s.id} — ${s.description}` : s.id}{s.default ? ` (${t('create.storeDefault')})` : ''}
        </label>
      ))}
    </fieldset>
  );
}

/** A modal confirmation (the native <dialog>: focus trapped, Escape cancels). */
export function Confirm({ open, message, confirmLabel, onConfirm, onCancel, danger }: {
  open: boolean; message: ComponentChildren; confirmLabel: string; onConfirm(): void; onCancel(): void; danger?: boolean;
}) {
  const { t } = useApp();
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} onCancel={(e) => { e.preventDefault(); onCancel(); }} aria-labelledby="confirm-text">
      <p id="confirm-text">{message}</p>
      <div class="actions">
        <button type="button" onClick={onCancel} autoFocus>{t('detail.cancel')}</button>
        <button type="button" class={danger ? 'danger' : 'primary'} onClick={onConfirm}>{confirmLabel}</button>
      </div>
    </dialog>
  );
}
