/**
 * What is inside an image (the x-diskhub/inside extension): an allocation picture (one column
 * per slice of the virtual disk, stacked by what its bytes are), the safety inspector's
 * findings, the partitions and filesystems, and the operating systems with their checklist.
 */
import { useEffect, useState } from 'preact/hooks';
import { getInside, type Filesystem, type Image, type Inside as InsideData } from '../api.js';
import { useApp } from '../context.js';
import { describeError } from '../errors.js';
import { formatBytes, percent } from '../format.js';
import { OperatingSystems } from './OperatingSystems.js';
import type { MessageKey } from '../i18n.js';

const BUCKETS = 256;
const HEIGHT = 48;

function AllocationPicture({ allocation, size }: { allocation: NonNullable<InsideData['allocation']>; size: number }) {
  const { t } = useApp();
  const total = Object.values(allocation.totals).reduce((a, b) => a + b, 0) || 1;
  const present = allocation.legend.filter((k) => (allocation.totals[k] ?? 0) > 0);
  const summary = present.map((k) => `${t(`inside.legend.${k}` as MessageKey)} ${percent(allocation.totals[k]!, total)}`).join(', ');
  const n = allocation.buckets.length;
  return (
    <figure class="allocation">
      <svg viewBox={`0 0 ${n} ${HEIGHT}`} preserveAspectRatio="none" shape-rendering="crispEdges" role="img" aria-label={t('inside.allocationLabel', { size: formatBytes(size), summary })} data-testid="allocation">
        {allocation.buckets.map((counts, i) => {
          const sum = counts.reduce((a, b) => a + b, 0) || 1;
          let y = HEIGHT;
          return counts.map((c, slot) => {
            if (!c) return null;
            const h = (c / sum) * HEIGHT;
            y -= h;
            return <rect key={`${i}-${slot}`} x={i} y={y} width={1.02} height={h} class={`alloc-${allocation.legend[slot]}`} />;
          });
        })}
      </svg>
      <figcaption>
        <ul class="legend">
          {allocation.legend.map((k) => (
            <li key={k} data-kind={k}>
              <span class={`swatch alloc-${k}`} aria-hidden="true" />
              {t(`inside.legend.${k}` as MessageKey)}: {formatBytes(allocation.totals[k] ?? 0)} ({percent(allocation.totals[k] ?? 0, total)})
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}

const fsText = (fs: Filesystem | null | undefined) => (fs ? [fs.type, fs.label && `“${fs.label}”`, fs.uuid].filter(Boolean).join(' ') : '—');

export function Inside({ image }: { image: Image }) {
  const { t } = useApp();
  const [inside, setInside] = useState<InsideData | null>(null);
  const [error, setError] = useState('');
  const hasData = image.status === 'active' || image.status === 'deactivated';
  useEffect(() => {
    if (!hasData) return;
    setError('');
    getInside(image.id, BUCKETS).then(setInside, (e) => setError(describeError(t, e)));
  }, [image.id, image.status]);

  return (
    <section class="card" aria-labelledby="inside-heading">
      <h2 id="inside-heading">{t('inside.heading')}</h2>
      {!hasData && <p>{t('inside.noData')}</p>}
      {hasData && !inside && !error && <p role="status">{t('inside.loading')}</p>}
      {error && <p class="notice error" role="alert">{error}</p>}
      {inside && (
        <>
          <h3>{t('inside.allocation')}</h3>
          {inside.allocation
            ? <AllocationPicture allocation={inside.allocation} size={inside.virtual_size ?? 0} />
            : <p>{t('inside.unavailable', { reason: inside.allocation_unavailable ?? '' })}</p>}
          <h3>{t('inside.inspection')}</h3>
          <p>{t('inside.detectedFormat')}: <strong data-testid="detected-format">{inside.inspection.format}{inside.inspection.subformat ? ` (${inside.inspection.subformat})` : ''}</strong></p>
          {inside.inspection.safe
            ? <p class="ok" data-testid="inspection">{t('inside.safe', { format: inside.inspection.format })}</p>
            : (
              <div class="notice error" data-testid="inspection">
                <p>{t('inside.unsafe')}</p>
                <ul>{inside.inspection.issues.map((i) => <li key={i.code + i.message}><code>{i.code}</code> {i.message}</li>)}</ul>
              </div>
            )}
          {inside.partitions && (
            <>
              <h3>{t('inside.partitions')}</h3>
              {inside.partitions.table ? (
                <div class="table-wrap">
                  <table>
                    <caption class="visually-hidden">{t('inside.partitions')} ({inside.partitions.table})</caption>
                    <thead><tr><th scope="col">{t('inside.number')}</th><th scope="col">{t('inside.start')}</th><th scope="col">{t('col.size')}</th><th scope="col">{t('inside.type')}</th><th scope="col">{t('inside.filesystem')}</th></tr></thead>
                    <tbody>
                      {inside.partitions.entries.map((p) => (
                        <tr key={p.number}>
                          <td>{p.number}</td>
                          <td class="num">{formatBytes(p.start)}</td>
                          <td class="num">{formatBytes(p.size)}</td>
                          <td>{p.type_name ?? p.type}{p.name ? ` “${p.name}”` : ''}</td>
                          <td>{fsText(p.filesystem)}</td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              ) : (
                <p>{inside.partitions.filesystem ? t('inside.wholeDisk', { fs: fsText(inside.partitions.filesystem) }) : t('inside.noTable')}</p>
              )}
            </>
          )}
          <OperatingSystems inside={inside} />
        </>
      )}
    </section>
  );
}
