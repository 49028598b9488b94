/**
 * Create an image and upload its data. The chosen file is inspected in the browser (its
 * format, virtual size and anything the service would refuse) to pre-fill the formats and
 * warn before a long upload; the upload shows bytes, rate and time left, and can be cancelled.
 * With several stores the upload goes to the one picked (X-Image-Meta-Store); where the
 * service offers web-download, the data can come from a URL instead: the image is created,
 * then imported into the stores ticked (all of them, or with "keep the image if some fail",
 * Glance's all_stores_must_succeed=false, those that worked), and its page follows the task.
 */
import type { JSX } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { createImage, deleteImage, getImage, importImage, uploadData, type Image } from '../api.js';
import { notice, useApp } from '../context.js';
import { checkDeclaredFormat, inspectBlob, suggestedFormats, type InspectionReport } from '../detect.js';
import { describeError } from '../errors.js';
import { formatBytes, formatDuration } from '../format.js';
import type { MessageKey } from '../i18n.js';
import { navigate } from '../router.js';
import { StoreChoice, onEvent, useImageSchema, useImportMethods, useStores } from './common.js';
import { EMPTY_FIELDS, ImageFields, NameField, validateFields, type ImageFieldValues } from './ImageFields.js';
import { usePropertyDefs } from './PropertyEditor.js';

interface Upload { loaded: number; total: number; started: number; rate: number }

const ARCHIVE_CONTAINERS = new Set(['ova', 'docker', 'compressed']);

export function CreateImage() {
  const { session, t, notify } = useApp();
  const schema = useImageSchema();
  const defs = usePropertyDefs();
  const [file, setFile] = useState<File | null>(null);
  const [report, setReport] = useState<InspectionReport | null>(null);
  const [detecting, setDetecting] = useState(false);
  const [values, setValues] = useState<ImageFieldValues>(EMPTY_FIELDS);
  const [diskFormat, setDiskFormat] = useState('raw');
  const [containerFormat, setContainerFormat] = useState('bare');
  const [errors, setErrors] = useState<string[]>([]);
  const [upload, setUpload] = useState<Upload | null>(null);
  const abort = useRef<(() => void) | null>(null);
  const stores = useStores();
  const methods = useImportMethods();
  const [store, setStore] = useState('');
  const [source, setSource] = useState<'file' | 'url'>('file');
  const [url, setUrl] = useState('');
  const [importStores, setImportStores] = useState<string[]>([]);
  const [allowFailure, setAllowFailure] = useState(false);
  // The default store is preselected once the list arrives (for an upload and for an import).
  useEffect(() => {
    if (!stores || store) return;
    const first = stores.find((s) => s.default)?.id ?? stores[0]?.id ?? '';
    setStore(first);
    setImportStores(first ? [first] : []);
  }, [stores]);
  const severalStores = !!stores && stores.length > 1;
  const fromUrl = source === 'url' && !!methods?.includes('web-download');
  // Leaving the page mid-upload cancels it.
  useEffect(() => () => abort.current?.(), []);

  const choose = async (f: File | null) => {
    setFile(f);
    setReport(null);
    if (!f) return;
    if (!values.name) setValues({ ...values, name: f.name.replace(/\.(qcow2|img|raw|vmdk|vdi|vhdx?|iso|ova|qed)$/i, '') });
    setDetecting(true);
    try {
      const r = await inspectBlob(f, f.name);
      setReport(r);
      const s = suggestedFormats(r);
      setDiskFormat(s.disk);
      setContainerFormat(s.container);
    } catch {
      setReport(null);
    } finally {
      setDetecting(false);
    }
  };

  // What the service will say about this file with the chosen formats (the same inspector).
  const verdict = report && !ARCHIVE_CONTAINERS.has(containerFormat) ? checkDeclaredFormat(report, diskFormat) : report;
  const mismatch = verdict?.issues.find((i) => i.code === 'format-mismatch');
  const otherIssues = verdict?.issues.filter((i) => i.code !== 'format-mismatch') ?? [];

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!session) return;
    const problems = validateFields(t, values, defs, schema);
    if (fromUrl) {
      if (!/^https?:\/\/[^/?#]+/i.test(url.trim())) problems.unshift(t('create.needUrl'));
      if (severalStores && !importStores.length) problems.unshift(t('create.needStore'));
    } else if (!file) problems.unshift(t('create.needFile'));
    setErrors(problems);
    if (problems.length) return;
    const body: Record<string, unknown> = {
      name: values.name.trim() || (file ? file.name : url.trim().replace(/[?#].*$/, '').split('/').pop() || null), disk_format: diskFormat, container_format: containerFormat, visibility: values.visibility,
      protected: values.protected, min_disk: Number(values.minDisk), min_ram: Number(values.minRam), tags: values.tags,
    };
    for (const r of values.properties) body[r.key.trim()] = r.value;
    let image: Image;
    try {
      image = await createImage(body);
    } catch (err) {
      setErrors([describeError(t, err)]);
      return;
    }
    if (fromUrl) {
      try {
        await importImage(image.id, {
          method: { name: 'web-download', uri: url.trim() },
          ...(severalStores ? { stores: importStores, all_stores_must_succeed: !(allowFailure && importStores.length > 1) } : {}),
        });
      } catch (err) {
        // Refused before any task ran (a URL the service does not allow): nothing half-made stays.
        await deleteImage(image.id).catch(() => {});
        setErrors([describeError(t, err)]);
        return;
      }
      navigate(`/images/${image.id}`);
      notify(notice('info', (tr) => tr('create.importStarted'), `/images/${image.id}`));
      return;
    }
    if (!file) return;
    const started = performance.now();
    setUpload({ loaded: 0, total: file.size, started, rate: 0 });
    const transfer = uploadData(image.id, file, (p) => {
      const seconds = (performance.now() - started) / 1000;
      setUpload({ loaded: p.loaded, total: p.total, started, rate: seconds > 0 ? p.loaded / seconds : 0 });
    }, severalStores ? store : undefined);
    abort.current = transfer.abort;
    try {
      await transfer.done;
      abort.current = null;
      const done = await getImage(image.id);
      if (done.status !== 'active') throw new Error(t('create.failed', { status: t(`status.${done.status}` as MessageKey) }));
      navigate(`/images/${image.id}`);
      notify(notice('info', (tr) => tr('create.done', { name: done.name ?? done.id }), `/images/${image.id}`));
    } catch (err) {
      abort.current = null;
      setUpload(null);
      // Nothing half-made is left behind: the image without data is removed.
      await deleteImage(image.id).catch(() => {});
      if ((err as Error).name === 'AbortError') notify(notice('info', (tr) => tr('create.cancelled')));
      else setErrors([describeError(t, err)]);
    }
  };

  const f = (key: string, label: MessageKey, input: JSX.Element) => <label key={key}>{t(label)}{input}</label>;
  const left = upload && upload.rate > 0 ? (upload.total - upload.loaded) / upload.rate : Infinity;

  return (
    <section aria-labelledby="create-heading">
      <h1 id="create-heading">{t('create.heading')}</h1>
      <form class="card form" onSubmit={onEvent(submit)} noValidate aria-busy={!!upload}>
        {methods?.includes('web-download') && (
          <fieldset>
            <legend>{t('create.source')}</legend>
            <label class="check"><input type="radio" name="source" value="file" checked={!fromUrl} disabled={!!upload} onChange={() => setSource('file')} />{t('create.sourceFile')}</label>
            <label class="check"><input type="radio" name="source" value="url" checked={fromUrl} disabled={!!upload} onChange={() => { setSource('url'); setFile(null); setReport(null); }} />{t('create.sourceUrl')}</label>
          </fieldset>
        )}
        {fromUrl ? (
          <label>{t('create.url')}
            <input type="url" name="url" value={url} placeholder="https://" onInput={(e) => setUrl((e.target as HTMLInputElement).value)} />
            <span class="hint">{t('create.urlHint')}</span>
          </label>
        ) : (
          <label>{t('create.file')}
            <input type="file" name="file" disabled={!!upload} onChange={onEvent((e: Event) => choose((e.target as HTMLInputElement).files?.[0] ?? null))} />
          </label>
        )}
        {fromUrl && severalStores && (
          <>
            <StoreChoice legend={t('create.importStores')} choices={stores} chosen={importStores} onChange={setImportStores} />
            {importStores.length > 1 && (
              <label class="check"><input type="checkbox" name="allow_failure" checked={allowFailure} onChange={(e) => setAllowFailure((e.target as HTMLInputElement).checked)} />{t('create.allowFailure')}</label>
            )}
          </>
        )}
        {!fromUrl && severalStores && (
          <label>{t('create.store')}
            <select name="store" value={store} disabled={!!upload} onChange={(e) => setStore((e.target as HTMLSelectElement).value)}>
              {stores.map((s) => <option key={s.id} value={s.id}>{s.description ? `${s.id} — ${s.description}` : s.id}{s.default ? ` (${t('create.storeDefault')})` : ''}</option>)}
            </select>
          </label>
        )}
        <div aria-live="polite" data-testid="detection">
          {detecting && <p>{t('create.detecting')}</p>}
          {report && (
            <p class="ok">{t('create.detected', {
              format: report.format, subformat: report.subformat ? ` (${report.subformat})` : '', size: formatBytes(report.virtualSize),
            })}</p>
          )}
          {mismatch && <p class="notice warn" role="alert" data-testid="format-warning">{t('create.mismatch', { chosen: diskFormat, detected: report!.format })}</p>}
          {otherIssues.length > 0 && <p class="notice error" role="alert">{t('create.unsafe', { issues: otherIssues.map((i) => i.message).join('; ') })}</p>}
        </div>
        <NameField value={values.name} onChange={(name) => setValues({ ...values, name })} />
        <div class="pair">
          {f('disk', 'create.diskFormat', (
            <select name="disk_format" value={diskFormat} onChange={(e) => setDiskFormat((e.target as HTMLSelectElement).value)}>
              {(schema?.diskFormats ?? [diskFormat]).map((v) => <option key={v} value={v}>{v}</option>)}
            </select>
          ))}
          {f('container', 'create.containerFormat', (
            <select name="container_format" value={containerFormat} onChange={(e) => setContainerFormat((e.target as HTMLSelectElement).value)}>
              {(schema?.containerFormats ?? [containerFormat]).map((v) => <option key={v} value={v}>{v}</option>)}
            </select>
          ))}
        </div>
        <ImageFields values={values} onChange={setValues} defs={defs} />
        {errors.length > 0 && <div class="notice error" role="alert"><ul>{errors.map((m) => <li key={m}>{m}</li>)}</ul></div>}
        {upload ? (
          <div class="upload" data-testid="upload">
            <label for="upload-progress">{t('create.uploading')}</label>
            <progress id="upload-progress" max={upload.total || 1} value={upload.loaded} aria-valuemin={0} aria-valuemax={upload.total} aria-valuenow={upload.loaded} />
            <p aria-live="polite">{upload.loaded >= upload.total
              ? t('create.progressDone', { total: formatBytes(upload.total) })
              : t('create.progress', { loaded: formatBytes(upload.loaded), total: formatBytes(upload.total), rate: formatBytes(Math.round(upload.rate)), left: formatDuration(t, left) })}</p>
            {/* preventDefault: the re-render after an abort must not turn this click into a submit. */}
            <button type="button" key="cancel" class="danger" onClick={(e) => { e.preventDefault(); abort.current?.(); }} disabled={upload.loaded >= upload.total}>{t('create.cancel')}</button>
          </div>
        ) : (
          <div class="actions">
            <a class="button" href="/images">{t('detail.cancel')}</a>
            <button type="submit" key="submit" class="primary">{t(fromUrl ? 'create.submitImport' : 'create.submit')}</button>
          </div>
        )}
      </form>
    </section>
  );
}
