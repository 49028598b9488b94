/**
 * Where an image's data lives (its `stores`, with each store's description from
 * /v2/info/stores), copying it into other stores (the copy-image import: offered to admins, as
 * Glance's default policy allows copy_image to them only; a service that refuses still answers
 * with its reason), and its import tasks (GET /v2/images/{id}/tasks): status, method and
 * source, and the task's message — the failure reason when it failed. Tasks are read again
 * whenever the image changes, and every second while one is pending or processing. (The
 * tasks API has no progress field: a running task's message says how much it has copied, as
 * Glance's does — "Copied 120 MiB" — and its bar has no value.)
 */
import { Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { importImage, imageTasks, isAdmin, type Image, type ImageTask } from '../api.js';
import { notice, useApp } from '../context.js';
import { describeError } from '../errors.js';
import { formatDate, type MessageKey } from '../i18n.js';
import { StoreChoice, onEvent, useImportMethods, useStores } from './common.js';

const csv = (v: unknown) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : []);

export function DataLocation({ image, onImportStarted }: { image: Image; onImportStarted(): void }) {
  const { t, session, notify } = useApp();
  const stores = useStores();
  const methods = useImportMethods();
  const held = csv(image.stores);
  const failed = csv(image.os_glance_failed_import);
  const importing = csv(image.os_glance_importing_to_stores);
  const elsewhere = stores?.filter((s) => !held.includes(s.id)) ?? [];
  const [copyTo, setCopyTo] = useState<string[]>([]);
  const [copyError, setCopyError] = useState('');
  const [copying, setCopying] = useState(false);
  const mayCopy = !!session && isAdmin(session) && image.status === 'active' && !importing.length
    && !!methods?.includes('copy-image') && elsewhere.length > 0;

  const copy = async (e: Event) => {
    e.preventDefault();
    if (!copyTo.length) { setCopyError(t('detail.copyNeedStore')); return; }
    setCopyError('');
    setCopying(true);
    try {
      await importImage(image.id, { method: { name: 'copy-image' }, stores: copyTo });
      notify(notice('info', (tr) => tr('detail.copyStarted', { stores: copyTo.join(', ') })));
      setCopyTo([]);
      onImportStarted();
    } catch (err) {
      setCopyError(describeError(t, err));
    } finally {
      setCopying(false);
    }
  };
  return (
    <section class="card" aria-labelledby="stores-heading">
      <h2 id="stores-heading">{t('detail.stores')}</h2>
      {held.length ? (
        <dl data-testid="stores">
          {held.map((id) => <Fragment key={id}><dt><code>{id}</code></dt><dd data-store={id}>{stores?.find((s) => s.id === id)?.description ?? ''}</dd></Fragment>)}
        </dl>
      ) : <p>{t('detail.noStores')}</p>}
      {importing.length > 0 && <p data-testid="importing-to">{t('detail.importingTo', { stores: importing.join(', ') })}</p>}
      {failed.length > 0 && <p class="notice warn" data-testid="failed-import">{t('detail.failedImport', { stores: failed.join(', ') })}</p>}
      {mayCopy && (
        <form class="form" data-testid="copy-image" onSubmit={onEvent(copy)} noValidate aria-busy={copying}>
          <StoreChoice legend={t('detail.copyTo')} choices={elsewhere} chosen={copyTo} onChange={(ids) => { setCopyTo(ids); setCopyError(''); }} disabled={copying} />
          {copyError && <p class="notice error" role="alert">{copyError}</p>}
          <div class="actions"><button type="submit" disabled={copying}>{t('detail.copy')}</button></div>
        </form>
      )}
    </section>
  );
}

export function ImportTasks({ image }: { image: Image }) {
  const { t, lang } = useApp();
  // (the rows' times are UTC without a zone, microseconds: oslo's way)
  const [tasks, setTasks] = useState<ImageTask[] | null>(null);
  const [error, setError] = useState('');
  const running = !!tasks?.some((task) => task.status === 'pending' || task.status === 'processing');

  useEffect(() => {
    let live = true;
    imageTasks(image.id).then((list) => { if (live) { setTasks(list); setError(''); } }, (e) => { if (live) setError(describeError(t, e)); });
    return () => { live = false; };
  }, [image.id, image.status, image.updated_at]);
  // While a task runs, follow it: its status and message change before the image's do.
  useEffect(() => {
    if (!running) return;
    const timer = setTimeout(() => imageTasks(image.id).then(setTasks, () => {}), 1000);
    return () => clearTimeout(timer);
  }, [tasks]);

  return (
    <section class="card" aria-labelledby="tasks-heading">
      <h2 id="tasks-heading">{t('detail.tasks')}</h2>
      {error && <p class="notice error" role="alert">{error}</p>}
      {tasks && !tasks.length && <p>{t('detail.noTasks')}</p>}
      {tasks && tasks.length > 0 && (
        <table class="tasks" data-testid="tasks">
          <thead><tr><th>{t('task.col.status')}</th><th>{t('task.col.method')}</th><th>{t('task.col.started')}</th><th>{t('task.col.message')}</th></tr></thead>
          <tbody>
            {tasks.map((task) => {
              const method = task.input?.import_req?.method;
              const active = task.status === 'pending' || task.status === 'processing';
              return (
                <tr key={task.id} data-task={task.id} data-status={task.status}>
                  <td><span class={`badge task-${task.status}`}>{t(`task.${task.status}` as MessageKey)}</span></td>
                  <td>{method?.name ?? task.type}{method?.uri && <><br /><code class="uri">{method.uri}</code></>}</td>
                  <td>{formatDate(lang, `${task.created_at.slice(0, 23)}Z`)}</td>
                  <td data-testid="task-message">
                    {task.message}
                    {active && <progress aria-label={t('task.running')} />}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}
