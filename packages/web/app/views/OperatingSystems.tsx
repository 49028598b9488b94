/**
 * The operating systems inside an image (x-diskhub/inside's `operating_systems`): what
 * `diskhub img inspect` tells (distribution, version, host name, packages, kernels, boot
 * command line, cloud-init, users) and, for Linux, the cloud-image checklist of
 * `diskhub img lint`, each item pass / fail / not applicable with its evidence.
 */
import type { Inside, OperatingSystem } from '../api.js';
import { useApp } from '../context.js';
import type { MessageKey } from '../i18n.js';

function Checklist({ lint }: { lint: NonNullable<OperatingSystem['lint']> }) {
  const { t } = useApp();
  return (
    <>
      <h4>{t('inside.lint')}</h4>
      <p data-testid="lint-summary">{t('inside.lintSummary', lint.summary)}</p>
      <div class="table-wrap">
        <table data-testid="lint">
          <caption class="visually-hidden">{t('inside.lint')}</caption>
          <thead><tr><th scope="col">{t('inside.lintResult')}</th><th scope="col">{t('inside.lintItem')}</th><th scope="col">{t('inside.lintEvidence')}</th></tr></thead>
          <tbody>
            {lint.checks.map((c) => (
              <tr key={c.id} data-check={c.id} data-result={c.result}>
                <td><span class={`badge lint-${c.result === 'n/a' ? 'na' : c.result}`}>{t(`inside.lint.${c.result}` as MessageKey)}</span></td>
                <td>{c.title}</td>
                <td><ul class="evidence">{c.evidence.map((e) => <li key={e}><code>{e}</code></li>)}</ul></td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

function System({ os }: { os: OperatingSystem }) {
  const { t } = useApp();
  const unknown = t('inside.os.unknown');
  const ci = os.cloud_init;
  const cmdlines = [...new Set(os.bootloader?.entries.map((e) => e.cmdline).filter((c) => c !== '') ?? [])];
  const row = (key: MessageKey, value: string, id: string) => (
    <><dt>{t(key)}</dt><dd data-testid={`os-${id}`}>{value}</dd></>
  );
  return (
    <article class="os" aria-label={os.product_name ?? os.distro ?? os.name}>
      <dl class="fields">
        {row('inside.os.product', os.product_name ?? os.distro ?? os.name, 'product')}
        {row('inside.os.version', os.name === 'linux' && os.distro !== null ? `${os.distro} ${os.major_version}.${os.minor_version}` : unknown, 'version')}
        {row('inside.os.hostname', os.hostname ?? unknown, 'hostname')}
        {row('inside.os.arch', os.arch ?? unknown, 'arch')}
        {row('inside.os.root', os.root, 'root')}
        {row('inside.os.packages', os.application_count === null ? unknown : t('inside.os.packageCount', { n: os.application_count, format: os.package_format ?? unknown }), 'packages')}
        {os.kernels.length > 0 && row('inside.os.kernels', os.kernels.map((k) => k.version).join(', '), 'kernels')}
        {cmdlines.length > 0 && row('inside.os.cmdline', cmdlines.join(' | '), 'cmdline')}
        {os.name === 'linux' && row('inside.os.cloudInit', !ci ? t('inside.os.cloudInitMissing') : ci.datasource_list ? t('inside.os.datasources', { list: ci.datasource_list.join(', ') }) : t('inside.os.allDatasources'), 'cloud-init')}
        {os.users.length > 0 && row('inside.os.users', os.users.map((u) => u.name).join(', '), 'users')}
      </dl>
      {os.lint ? <Checklist lint={os.lint} /> : <p>{t('inside.lintNotLinux')}</p>}
      {os.notes.length > 0 && <ul class="notes">{os.notes.map((n) => <li key={n}>{n}</li>)}</ul>}
    </article>
  );
}

export function OperatingSystems({ inside }: { inside: Inside }) {
  const { t } = useApp();
  return (
    <>
      <h3>{t('inside.os')}</h3>
      {inside.operating_systems === null
        ? <p data-testid="os-unavailable">{t('inside.osUnavailable', { reason: inside.operating_systems_unavailable ?? '' })}</p>
        : inside.operating_systems.length === 0
          ? <p data-testid="os-none">{t('inside.osNone')}</p>
          : inside.operating_systems.map((os) => <System key={os.root} os={os} />)}
    </>
  );
}
