/** Small pieces several views share. */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { imageSchemaInfo, type ImageSchemaInfo } from '../api.js';
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

let schemaCache: Promise<ImageSchemaInfo> | null = null;

/** The image schema (formats, attributes), fetched once per page load. */
export function useImageSchema(): ImageSchemaInfo | null {
  const [schema, setSchema] = useState<ImageSchemaInfo | null>(null);
  useEffect(() => {
    schemaCache ??= imageSchemaInfo();
    schemaCache.then(setSchema, () => { schemaCache = null; });
  }, []);
  return schema;
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
