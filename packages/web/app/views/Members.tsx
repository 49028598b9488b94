/**
 * Sharing an image: its owner adds and removes member projects; a member project accepts or
 * rejects what was shared with it (Images v2 members API).
 */
import { useEffect, useState } from 'preact/hooks';
import { addMember, allProjects, isAdmin, listMembers, patchImage, removeMember, setMemberStatus, type Image, type Member, type Project } from '../api.js';
import { useApp } from '../context.js';
import { describeError } from '../errors.js';
import type { MessageKey } from '../i18n.js';
import { onEvent } from './common.js';

export function Members({ image, onChange }: { image: Image; onChange(img: Image): void }) {
  const { session, t } = useApp();
  const [members, setMembers] = useState<Member[] | null>(null);
  const [projects, setProjects] = useState<Project[]>([]);
  const [adding, setAdding] = useState('');
  const [error, setError] = useState('');
  const [info, setInfo] = useState('');
  const owner = !!session && (image.owner === session.project.id || isAdmin(session));
  const shared = image.visibility === 'shared';

  const reload = () => listMembers(image.id).then(setMembers, (e) => { setMembers([]); setError(describeError(t, e)); });
  useEffect(() => {
    if (shared) void reload(); else setMembers([]);
  }, [image.id, image.visibility]);
  // The project picker is a convenience: without the list, a project id can still be typed.
  useEffect(() => { if (owner) allProjects().then(setProjects, () => setProjects([])); }, [owner]);

  const act = async (f: () => Promise<unknown>, done?: string) => {
    setError('');
    setInfo('');
    try {
      await f();
      await reload();
      if (done) setInfo(done);
    } catch (e) {
      setError(describeError(t, e));
    }
  };
  const nameOf = (id: string) => projects.find((p) => p.id === id)?.name;
  const statusText = (s: string) => t(`members.status.${s}` as MessageKey);

  if (!session) return null;
  if (!owner) {
    const mine = members?.find((m) => m.member_id === session.project.id);
    if (!mine) return null;
    return (
      <section class="card" aria-labelledby="members-heading">
        <h2 id="members-heading">{t('members.heading')}</h2>
        <p data-testid="member-status">{t('members.yourStatus', { status: statusText(mine.status) })}</p>
        <div class="actions">
          <button type="button" class="primary" disabled={mine.status === 'accepted'} onClick={onEvent(() => act(() => setMemberStatus(image.id, mine.member_id, 'accepted')))}>{t('members.accept')}</button>
          <button type="button" disabled={mine.status === 'rejected'} onClick={onEvent(() => act(() => setMemberStatus(image.id, mine.member_id, 'rejected')))}>{t('members.reject')}</button>
        </div>
        {error && <p class="notice error" role="alert">{error}</p>}
      </section>
    );
  }

  return (
    <section class="card" aria-labelledby="members-heading">
      <h2 id="members-heading">{t('members.heading')}</h2>
      <p>{t('members.intro')}</p>
      {!shared ? (
        <p>
          {t('members.notShared')}{' '}
          <button type="button" onClick={onEvent(async () => {
            try { onChange(await patchImage(image.id, [{ op: 'replace', path: '/visibility', value: 'shared' }])); } catch (e) { setError(describeError(t, e)); }
          })}>{t('members.makeShared')}</button>
        </p>
      ) : (
        <>
          {members && members.length === 0 && <p>{t('members.none')}</p>}
          {members && members.length > 0 && (
            <table>
              <thead><tr><th scope="col">{t('members.project')}</th><th scope="col">{t('members.status')}</th><th><span class="visually-hidden">{t('members.remove')}</span></th></tr></thead>
              <tbody>
                {members.map((m) => (
                  <tr key={m.member_id} data-member={m.member_id}>
                    <td>{nameOf(m.member_id) ? `${nameOf(m.member_id)} (${m.member_id})` : m.member_id}</td>
                    <td>{statusText(m.status)}</td>
                    <td><button type="button" class="link" aria-label={t('members.removeLabel', { project: nameOf(m.member_id) ?? m.member_id })}
                      onClick={onEvent(() => act(() => removeMember(image.id, m.member_id)))}>{t('members.remove')}</button></td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <form class="inline-form" onSubmit={(e) => {
            e.preventDefault();
            const v = adding.trim();
            if (!v) return;
            const id = projects.find((p) => p.name === v)?.id ?? v;
            void act(async () => { await addMember(image.id, id); setAdding(''); }, t('members.added', { project: v }));
          }}>
            <label>
              {t('members.addLabel')}
              <input name="member" value={adding} list="project-names" onInput={(e) => setAdding((e.target as HTMLInputElement).value)} />
            </label>
            <datalist id="project-names">{projects.filter((p) => p.id !== image.owner).map((p) => <option key={p.id} value={p.name} />)}</datalist>
            <button type="submit">{t('members.add')}</button>
          </form>
        </>
      )}
      {info && <p class="notice info" role="status">{info}</p>}
      {error && <p class="notice error" role="alert">{error}</p>}
    </section>
  );
}
