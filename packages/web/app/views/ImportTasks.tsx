/**
 * Where an image's data lives (its `stores`, with each store's description from
 * /v2/info/stores) and its import tasks (GET /v2/images/{id}/tasks): status, method and
 * source, and the task's message — the failure reason when it failed. Tasks are read again
 * whenever the image changes, and every second while one is pending or processing. (The
 * tasks API has no progress field: a running task's message says how much it has copied, as
 * Glance's does — "Copied 120 MiB" — and its bar has no value.)
 */
import { Fragment } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { imageTasks, type Image, type ImageTask } from '../api.js';
import { useApp } from '../context.js';
import { describeError } from '../errors.js';
import { formatDate, type MessageKey } from '../i18n.js';
import { useStores } from './common.js';

const csv = (v: unknown) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : []);

export function DataLocation({ image }: { image: Image }) {
  const { t } = useApp();
  const stores = useStores();
  const held = csv(image.stores);
  const failed = csv(image.os_glance_failed_import);
  const importing = csv(image.os_glance_importing_to_stores);
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
