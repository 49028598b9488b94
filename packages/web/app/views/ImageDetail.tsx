/** One image: every attribute and property, checksums, tags, what is inside, sharing, actions. */
import { Fragment, type ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { deleteImage, downloadUrl, getImage, imageAction, isAdmin, type Image } from '../api.js';
import { notice, useApp } from '../context.js';
import { describeError } from '../errors.js';
import { formatBytes } from '../format.js';
import { formatDate, type MessageKey } from '../i18n.js';
import { navigate } from '../router.js';
import { Confirm, StatusBadge, onEvent, useImageSchema } from './common.js';
import { DataLocation, ImportTasks } from './ImportTasks.js';
import { Inside } from './Inside.js';
import { Members } from './Members.js';

export function ImageDetail({ id }: { id: string }) {
  const { session, t, lang, notify } = useApp();
  const schema = useImageSchema();
  const [image, setImage] = useState<Image | null>(null);
  const [error, setError] = useState('');
  const [confirming, setConfirming] = useState(false);

  const load = () => getImage(id).then(setImage, (e) => setError(describeError(t, e)));
  useEffect(() => { setImage(null); setError(''); void load(); }, [id]);
  // An image on its way to active (an upload being verified, an import) is followed until it
  // settles, and so is an active one being copied into other stores (copy-image).
  useEffect(() => {
    if (!image || (!['saving', 'importing', 'uploading'].includes(image.status) && !image.os_glance_importing_to_stores)) return;
    const timer = setTimeout(load, 1000);
    return () => clearTimeout(timer);
  }, [image]);

  if (error) return <p class="notice error" role="alert">{error}</p>;
  if (!image || !session) return <p role="status">{t('list.loading')}</p>;
  const mayEdit = image.owner === session.project.id || isAdmin(session);
  const name = image.name || t('detail.unnamed');
  const properties = Object.entries(image).filter(([k]) => schema && !schema.attributes.has(k)).sort(([a], [b]) => a.localeCompare(b));

  const run = async (f: () => Promise<unknown>, context?: 'delete') => {
    setError('');
    try { await f(); } catch (e) { notify(notice('error', describeError(t, e, context))); }
  };
  const remove = () => run(async () => {
    setConfirming(false);
    await deleteImage(image.id);
    navigate('/images');
    notify(notice('info', (tr) => tr('detail.deleted', { name }), '/images'));
  }, 'delete');
  const download = () => run(async () => {
    const { url } = await downloadUrl(image.id);
    const a = document.createElement('a');
    a.href = url;
    a.download = '';
    a.click();
  });

  const row = (label: string, value: ComponentChildren, testid?: string) => (
    <><dt>{label}</dt><dd data-testid={testid}>{value}</dd></>
  );
  const yesNo = (b: boolean) => (b ? t('detail.yes') : t('detail.no'));

  return (
    <article aria-labelledby="image-heading" data-image-id={image.id}>
      <p><a href="/images">← {t('detail.back')}</a></p>
      <div class="title-row">
        <h1 id="image-heading">{name}</h1>
        <StatusBadge status={image.status} />
      </div>
      <div class="actions" role="group" aria-label={t('detail.overview')}>
        {mayEdit && <a class="button" href={`/images/${image.id}/edit`}>{t('detail.edit')}</a>}
        {mayEdit && image.status === 'active' && <button type="button" onClick={onEvent(() => run(async () => { await imageAction(image.id, 'deactivate'); await load(); }))}>{t('detail.deactivate')}</button>}
        {mayEdit && image.status === 'deactivated' && <button type="button" onClick={onEvent(() => run(async () => { await imageAction(image.id, 'reactivate'); await load(); }))}>{t('detail.reactivate')}</button>}
        {image.status === 'active' && <button type="button" onClick={onEvent(download)}>{t('detail.download')}</button>}
        {mayEdit && <button type="button" class="danger" onClick={() => setConfirming(true)}>{t('detail.delete')}</button>}
      </div>
      <Confirm open={confirming} danger message={t('detail.deleteConfirm', { name })} confirmLabel={t('detail.delete')} onConfirm={onEvent(remove)} onCancel={() => setConfirming(false)} />

      <div class="grid">
        <section class="card" aria-labelledby="overview-heading">
          <h2 id="overview-heading">{t('detail.overview')}</h2>
          <dl>
            {row(t('detail.id'), <code>{image.id}</code>)}
            {row(t('col.status'), t(`status.${image.status}` as MessageKey), 'status')}
            {row(t('col.visibility'), t(`visibility.${image.visibility}` as MessageKey), 'visibility')}
            {row(t('detail.protected'), yesNo(image.protected), 'protected')}
            {row(t('detail.hidden'), yesNo(image.os_hidden))}
            {row(t('col.diskFormat'), image.disk_format ?? '—', 'disk-format')}
            {row(t('col.containerFormat'), image.container_format ?? '—')}
            {row(t('col.size'), image.size === null ? '—' : <span title={`${image.size} bytes`}>{formatBytes(image.size)}</span>, 'size')}
            {row(t('col.virtualSize'), image.virtual_size === null ? '—' : <span data-bytes={image.virtual_size}>{formatBytes(image.virtual_size)} ({image.virtual_size.toLocaleString(lang)} B)</span>, 'virtual-size')}
            {row(t('detail.minDisk'), t('detail.gb', { n: image.min_disk }))}
            {row(t('detail.minRam'), t('detail.mb', { n: image.min_ram }))}
            {row(t('col.owner'), <code>{image.owner ?? '—'}</code>)}
            {row(t('col.created'), formatDate(lang, image.created_at))}
            {row(t('col.updated'), formatDate(lang, image.updated_at))}
          </dl>
        </section>
        <section class="card" aria-labelledby="checksums-heading">
          <h2 id="checksums-heading">{t('detail.checksums')}</h2>
          <dl class="hashes">
            {row('md5', <code>{image.checksum ?? '—'}</code>, 'checksum')}
            {row(image.os_hash_algo ?? 'os_hash_value', <code>{image.os_hash_value ?? '—'}</code>)}
          </dl>
          <h2>{t('detail.tags')}</h2>
          {image.tags.length ? <ul class="tags">{image.tags.map((tag) => <li key={tag}>{tag}</li>)}</ul> : <p>{t('detail.noTags')}</p>}
          <h2>{t('detail.properties')}</h2>
          {properties.length ? (
            <dl data-testid="properties">
              {properties.map(([k, v]) => <Fragment key={k}><dt><code>{k}</code></dt><dd>{String(v)}</dd></Fragment>)}
            </dl>
          ) : <p>{t('detail.noProperties')}</p>}
        </section>
      </div>
      <div class="grid">
        <DataLocation image={image} onImportStarted={() => void load()} />
        <ImportTasks image={image} />
      </div>
      <Inside image={image} />
      <Members image={image} onChange={setImage} />
    </article>
  );
}
