/** The top bar: where you are, which project you act in (switchable), language, log out. */
import { useEffect, useState } from 'preact/hooks';
import { logout, myProjects, rescope, type Project } from '../api.js';
import { useApp, notice } from '../context.js';
import { describeError } from '../errors.js';
import { LANGUAGES, type Lang } from '../i18n.js';
import { navigate, onLinkClick } from '../router.js';
import { onEvent } from './common.js';

export function Header() {
  const { session, setSession, lang, setLang, t, notify } = useApp();
  const [projects, setProjects] = useState<Project[]>([]);
  useEffect(() => {
    if (!session) return;
    myProjects(session).then(setProjects, () => setProjects([session.project]));
  }, [session?.user.id]);

  const switchTo = async (id: string) => {
    if (!session || id === session.project.id) return;
    try {
      setSession(await rescope(session.token, id));
      navigate('/images');
    } catch (e) {
      notify(notice('error', describeError(t, e)));
    }
  };

  return (
    <header class="top" onClick={onLinkClick}>
      <a class="brand" href="/images">{t('app.title')}</a>
      {session && (
        <nav aria-label={t('nav.images')}>
          <a href="/images">{t('nav.images')}</a>
          <a href="/images/new">{t('nav.create')}</a>
        </nav>
      )}
      <div class="tools">
        {session && (
          <span class="inline">
            <label for="project-switch">{t('nav.project')}</label>
            <select id="project-switch" value={session.project.id} onChange={onEvent((e: Event) => switchTo((e.target as HTMLSelectElement).value))}>
              {(projects.length ? projects : [session.project]).map((p) => <option value={p.id} key={p.id}>{p.name}</option>)}
            </select>
          </span>
        )}
        <span class="inline">
          <label for="language">{t('lang.label')}</label>
          <select id="language" value={lang} onChange={(e) => setLang((e.target as HTMLSelectElement).value as Lang)}>
            {LANGUAGES.map((l) => <option value={l.code} key={l.code} lang={l.code}>{l.name}</option>)}
          </select>
        </span>
        {session && (
          <>
            <span class="who">{t('nav.signedInAs', { user: session.user.name })}</span>
            <button type="button" onClick={onEvent(async () => { await logout(session); setSession(null); navigate('/login', true); })}>{t('nav.logout')}</button>
          </>
        )}
      </div>
    </header>
  );
}
