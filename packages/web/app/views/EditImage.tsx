/** Edit an image's attributes, tags and custom properties; saved as one JSON patch. */
import { useEffect, useState } from 'preact/hooks';
import { getImage, patchImage, type Image, type PatchOp } from '../api.js';
import { notice, useApp } from '../context.js';
import { describeError } from '../errors.js';
import { navigate } from '../router.js';
import { onEvent, useImageSchema } from './common.js';
import { EMPTY_FIELDS, ImageFields, NameField, validateFields, type ImageFieldValues } from './ImageFields.js';
import { usePropertyDefs } from './PropertyEditor.js';

/** Glance's JSON pointer escaping for a property name in a patch path (RFC 6901). */
const pointer = (key: string) => `/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;

export function EditImage({ id }: { id: string }) {
  const { session, t, notify } = useApp();
  const schema = useImageSchema();
  const defs = usePropertyDefs();
  const [image, setImage] = useState<Image | null>(null);
  const [values, setValues] = useState<ImageFieldValues>(EMPTY_FIELDS);
  const [errors, setErrors] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    getImage(id).then(setImage, (e) => setErrors([describeError(t, e)]));
  }, [id]);
  // Properties are whatever is not the image's own attribute: known once the schema is.
  useEffect(() => {
    if (!image || !schema) return;
    setValues({
      name: image.name ?? '', visibility: image.visibility, protected: image.protected,
      minDisk: String(image.min_disk), minRam: String(image.min_ram), tags: image.tags,
      properties: Object.entries(image).filter(([k]) => !schema.attributes.has(k)).map(([key, value]) => ({ key, value: String(value) })),
    });
  }, [image, schema]);

  if (!image || !session || !schema) return errors.length ? <p class="notice error" role="alert">{errors[0]}</p> : <p role="status">{t('list.loading')}</p>;

  const save = async (e: Event) => {
    e.preventDefault();
    const problems = validateFields(t, values, defs, schema);
    setErrors(problems);
    if (problems.length) return;
    const ops: PatchOp[] = [];
    const replace = (path: string, before: unknown, after: unknown) => { if (before !== after) ops.push({ op: 'replace', path, value: after }); };
    replace('/name', image.name ?? '', values.name.trim());
    replace('/visibility', image.visibility, values.visibility);
    replace('/protected', image.protected, values.protected);
    replace('/min_disk', image.min_disk, Number(values.minDisk));
    replace('/min_ram', image.min_ram, Number(values.minRam));
    if ([...values.tags].sort().join('\n') !== [...image.tags].sort().join('\n')) ops.push({ op: 'replace', path: '/tags', value: values.tags });
    const after = new Map(values.properties.map((r) => [r.key.trim(), r.value]));
    for (const k of Object.keys(image)) {
      if (!schema.attributes.has(k) && !after.has(k)) ops.push({ op: 'remove', path: pointer(k) });
    }
    for (const [k, v] of after) {
      if (!(k in image)) ops.push({ op: 'add', path: pointer(k), value: v });
      else if (String(image[k]) !== v) ops.push({ op: 'replace', path: pointer(k), value: v });
    }
    if (!ops.length) { notify(notice('info', (tr) => tr('edit.noChanges'))); return; }
    setBusy(true);
    try {
      await patchImage(image.id, ops);
      navigate(`/images/${image.id}`);
      notify(notice('info', (tr) => tr('edit.saved'), `/images/${image.id}`));
    } catch (err) {
      setErrors([describeError(t, err)]);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="edit-heading">
      <p><a href={`/images/${image.id}`}>← {image.name || t('detail.unnamed')}</a></p>
      <h1 id="edit-heading">{t('edit.heading')}</h1>
      <form class="card form" onSubmit={onEvent(save)} noValidate>
        <NameField value={values.name} onChange={(name) => setValues({ ...values, name })} />
        <ImageFields values={values} onChange={setValues} defs={defs} currentVisibility={image.visibility} />
        {errors.length > 0 && <div class="notice error" role="alert"><ul>{errors.map((m) => <li key={m}>{m}</li>)}</ul></div>}
        <div class="actions">
          <a class="button" href={`/images/${image.id}`}>{t('detail.cancel')}</a>
          <button type="submit" class="primary" disabled={busy}>{t('edit.save')}</button>
        </div>
      </form>
    </section>
  );
}
