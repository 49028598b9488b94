/**
 * The image list: server-side search (the x-diskhub-name-contains extension), Glance's
 * filters and sorting, and keyset pagination with the API's markers, so thousands of images
 * cost one page of rows each time. The filters live in the URL.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { allProjects, listImages, myProjects, type Image } from '../api.js';
import { useApp } from '../context.js';
import { describeError } from '../errors.js';
import { formatBytes } from '../format.js';
import { formatDate, type MessageKey } from '../i18n.js';
import { navigate } from '../router.js';
import { StatusBadge, useImageSchema } from './common.js';

const COLUMNS: { key: string; label: MessageKey; sortable: boolean }[] = [
  { key: 'name', label: 'col.name', sortable: true },
  { key: 'status', label: 'col.status', sortable: true },
  { key: 'visibility', label: 'col.visibility', sortable: false },
  { key: 'disk_format', label: 'col.diskFormat', sortable: true },
  { key: 'container_format', label: 'col.containerFormat', sortable: true },
  { key: 'size', label: 'col.size', sortable: true },
  { key: 'virtual_size', label: 'col.virtualSize', sortable: false },
  { key: 'owner', label: 'col.owner', sortable: false },
  { key: 'created_at', label: 'col.created', sortable: true },
  { key: 'updated_at', label: 'col.updated', sortable: true },
];
const STATUSES = ['active', 'queued', 'saving', 'importing', 'uploading', 'deactivated', 'killed'];
const VISIBILITIES = ['public', 'private', 'shared', 'community'];
const PAGE_SIZES = ['25', '50', '100', '200'];
const FILTER_KEYS = ['q', 'status', 'visibility', 'disk_format', 'tag', 'owner'];

/** The Images API query for the dashboard's URL query. */
function apiQuery(q: URLSearchParams, projectId: string): URLSearchParams {
  const out = new URLSearchParams();
  out.set('limit', q.get('limit') ?? '25');
  out.set('sort_key', q.get('sort_key') ?? 'created_at');
  out.set('sort_dir', q.get('sort_dir') ?? 'desc');
  if (q.get('q')) out.set('x-diskhub-name-contains', q.get('q')!);
  for (const k of ['status', 'disk_format', 'tag']) if (q.get(k)) out.set(k, q.get(k)!);
  const vis = q.get('visibility');
  if (vis === 'shared-with-me') { out.set('visibility', 'shared'); out.set('member_status', 'all'); }
  else if (vis) out.set('visibility', vis);
  if (q.get('owner') === 'mine') out.set('owner', projectId);
  if (q.get('marker')) out.set('marker', q.get('marker')!);
  return out;
}

export function ImageList({ query }: { query: URLSearchParams }) {
  const { session, t, lang } = useApp();
  const schema = useImageSchema();
  const [images, setImages] = useState<Image[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState('');
  const [names, setNames] = useState<Map<string, string>>(new Map());
  const [search, setSearch] = useState(query.get('q') ?? '');
  /** Markers of the pages before this one (for "Previous"). */
  const [previous, setPrevious] = useState<string[]>([]);
  const debounce = useRef<number>();

  const update = (changes: Record<string, string | null>, keepPage = false) => {
    const q = new URLSearchParams(query);
    for (const [k, v] of Object.entries(changes)) if (v) q.set(k, v); else q.delete(k);
    if (!keepPage) { q.delete('marker'); setPrevious([]); }
    navigate(`/images${q.size ? `?${q}` : ''}`, true);
  };

  useEffect(() => {
    if (!session) return;
    const ctl = new AbortController();
    setError('');
    listImages(apiQuery(query, session.project.id), ctl.signal).then((page) => {
      setImages(page.images);
      setNext(page.next ? new URL(page.next, location.origin).searchParams.get('marker') : null);
    }, (e: Error) => { if (e.name !== 'AbortError') setError(describeError(t, e)); });
    return () => ctl.abort();
  }, [query.toString(), session?.token]);

  useEffect(() => {
    if (!session) return;
    // Owner names: the projects this user is in, and (for admins) every project.
    // Without them (a listing the user may not make), owners show as ids.
    Promise.all([myProjects(session).catch(() => []), allProjects()]).then(([mine, all]) =>
      setNames(new Map([...all, ...mine].map((p) => [p.id, p.name]))), () => {});
  }, [session?.token]);

  const onSearch = (value: string) => {
    setSearch(value);
    clearTimeout(debounce.current);
    debounce.current = window.setTimeout(() => update({ q: value.trim() || null }), 300);
  };
  const sortKey = query.get('sort_key') ?? 'created_at';
  const sortDir = query.get('sort_dir') ?? 'desc';
  const sortBy = (key: string) => update({ sort_key: key, sort_dir: key === sortKey && sortDir === 'asc' ? 'desc' : 'asc' });
  const select = (key: string, label: MessageKey, options: { value: string; label: string }[]) => (
    <label>
      {t(label)}
      <select value={query.get(key) ?? ''} onChange={(e) => update({ [key]: (e.target as HTMLSelectElement).value || null })} name={key}>
        <option value="">{t('list.any')}</option>
        {options.map((o) => <option value={o.value} key={o.value}>{o.label}</option>)}
      </select>
    </label>
  );
  const page = previous.length + 1;
  const filtered = FILTER_KEYS.some((k) => query.get(k));

  return (
    <section aria-labelledby="list-heading">
      <div class="title-row">
        <h1 id="list-heading">{t('list.heading')}</h1>
        <a class="button primary" href="/images/new">{t('nav.create')}</a>
      </div>
      <form class="filters" role="search" onSubmit={(e) => { e.preventDefault(); update({ q: search.trim() || null }); }}>
        <label class="grow">
          {t('list.search')}
          <input type="search" name="q" value={search} onInput={(e) => onSearch((e.target as HTMLInputElement).value)} />
        </label>
        {select('status', 'list.status', STATUSES.map((s) => ({ value: s, label: t(`status.${s}` as MessageKey) })))}
        {select('visibility', 'list.visibility', [...VISIBILITIES.map((v) => ({ value: v, label: t(`visibility.${v}` as MessageKey) })), { value: 'shared-with-me', label: t('list.sharedWithMe') }])}
        {select('disk_format', 'list.diskFormat', (schema?.diskFormats ?? []).map((f) => ({ value: f, label: f })))}
        {select('owner', 'list.owner', [{ value: 'mine', label: t('list.ownerMine') }])}
        <label>
          {t('list.tag')}
          <input name="tag" value={query.get('tag') ?? ''} size={10} onChange={(e) => update({ tag: (e.target as HTMLInputElement).value.trim() || null })} />
        </label>
        {filtered && <button type="button" class="link" onClick={() => { setSearch(''); update(Object.fromEntries(FILTER_KEYS.map((k) => [k, null]))); }}>{t('list.clear')}</button>}
      </form>
      {error && <p class="notice error" role="alert">{error}</p>}
      {!images && !error && <p role="status">{t('list.loading')}</p>}
      {images && (
        <>
          <div class="table-wrap">
            <table class="images">
              <caption class="visually-hidden">{t('list.count', { n: images.length })}</caption>
              <thead>
                <tr>
                  {COLUMNS.map((c) => (
                    <th scope="col" key={c.key} aria-sort={c.key === sortKey ? (sortDir === 'asc' ? 'ascending' : 'descending') : undefined}>
                      {c.sortable ? (
                        <button type="button" class="sort" onClick={() => sortBy(c.key)} aria-label={t('col.sortBy', { col: t(c.label) })}>
                          {t(c.label)}{c.key === sortKey ? (sortDir === 'asc' ? ' ▲' : ' ▼') : ''}
                        </button>
                      ) : t(c.label)}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {images.map((img) => (
                  <tr key={img.id} data-image-id={img.id}>
                    <td data-label={t('col.name')}><a href={`/images/${img.id}`}>{img.name || t('detail.unnamed')}</a></td>
                    <td data-label={t('col.status')}><StatusBadge status={img.status} /></td>
                    <td data-label={t('col.visibility')}>{t(`visibility.${img.visibility}` as MessageKey)}</td>
                    <td data-label={t('col.diskFormat')}>{img.disk_format ?? '—'}</td>
                    <td data-label={t('col.containerFormat')}>{img.container_format ?? '—'}</td>
                    <td data-label={t('col.size')} class="num">{formatBytes(img.size)}</td>
                    <td data-label={t('col.virtualSize')} class="num">{formatBytes(img.virtual_size)}</td>
                    <td data-label={t('col.owner')} title={img.owner ?? ''}>{img.owner ? names.get(img.owner) ?? img.owner.slice(0, 8) : '—'}</td>
                    <td data-label={t('col.created')}><time dateTime={img.created_at}>{formatDate(lang, img.created_at)}</time></td>
                    <td data-label={t('col.updated')}><time dateTime={img.updated_at}>{formatDate(lang, img.updated_at)}</time></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {images.length === 0 && <p>{t('list.empty')}</p>}
          <nav class="pager" aria-label={t('list.page', { n: page })}>
            <button type="button" disabled={page === 1 && !query.get('marker')} onClick={() => {
              const prev = previous.slice(0, -1);
              setPrevious(prev);
              update({ marker: previous[previous.length - 1] || null }, true);
            }}>{t('list.previous')}</button>
            <span>{t('list.page', { n: page })}</span>
            <button type="button" disabled={!next} onClick={() => { setPrevious([...previous, query.get('marker') ?? '']); update({ marker: next }, true); }}>{t('list.next')}</button>
            <label class="inline">
              {t('list.perPage')}
              <select value={query.get('limit') ?? '25'} onChange={(e) => update({ limit: (e.target as HTMLSelectElement).value })}>
                {PAGE_SIZES.map((n) => <option key={n} value={n}>{n}</option>)}
              </select>
            </label>
          </nav>
        </>
      )}
    </section>
  );
}
