/**
 * The dashboard: log in, then images (list, detail, create with upload, edit, sharing).
 * State lives in the URL and in the session token; every view talks to the public APIs.
 */
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { loadSession, onSessionExpired, saveSession, type Session } from './api.js';
import { AppContext, type Notice } from './context.js';
import { initialLang, storeLang, translator, type Lang } from './i18n.js';
import { match, navigate, onLinkClick, useLocation } from './router.js';
import { Header } from './views/Header.js';
import { Login } from './views/Login.js';
import { ImageList } from './views/ImageList.js';
import { ImageDetail } from './views/ImageDetail.js';
import { CreateImage } from './views/CreateImage.js';
import { EditImage } from './views/EditImage.js';
import './styles.css';

function App() {
  const [session, setSessionState] = useState<Session | null>(loadSession);
  const [lang, setLangState] = useState<Lang>(initialLang);
  const [notice, setNotice] = useState<Notice | null>(null);
  const loc = useLocation();
  const t = useMemo(() => translator(lang), [lang]);

  const setSession = (s: Session | null) => { saveSession(s); setSessionState(s); };
  const setLang = (l: Lang) => { storeLang(l); setLangState(l); };
  useEffect(() => { document.documentElement.lang = lang; document.title = t('app.title'); }, [lang]);

  // An expired or revoked token: back to the login page, remembering where the user was.
  useEffect(() => onSessionExpired(() => {
    setSession(null);
    const next = location.pathname + location.search;
    navigate(`/login?expired=1&next=${encodeURIComponent(next)}`, true);
  }), []);

  useEffect(() => {
    // (the real location, not loc: an expiry has just navigated to /login?expired=1, and loc may
    // not have caught up yet — sending the user to /login?next= then lost the expiry notice)
    if (!session && loc.path !== '/login' && location.pathname !== '/login') navigate(`/login?next=${encodeURIComponent(loc.path + (loc.query.size ? `?${loc.query}` : ''))}`, true);
    if (session && (loc.path === '/' || loc.path === '/login')) navigate(loc.query.get('next') ?? '/images', true);
  }, [session, loc.path]);

  let page = null;
  let params: Record<string, string> | null;
  if (!session) page = loc.path === '/login' ? <Login /> : null;
  else if (loc.path === '/images') page = <ImageList query={loc.query} />;
  else if (loc.path === '/images/new') page = <CreateImage />;
  else if ((params = match('/images/:id/edit', loc.path))) page = <EditImage id={params.id!} />;
  else if ((params = match('/images/:id', loc.path))) page = <ImageDetail id={params.id!} />;
  else page = <p>{t('error.notFound')}</p>;

  return (
    <AppContext.Provider value={{ session, setSession, lang, setLang, t, notify: setNotice }}>
      <a class="skip" href="#main">{t('app.skip')}</a>
      <Header />
      <main id="main" tabIndex={-1} onClick={onLinkClick}>
        {notice && notice.path === loc.path && (
          <div class={`notice ${notice.kind}`} role={notice.kind === 'error' ? 'alert' : 'status'}>
            <span>{notice.text(t)}</span>
            <button type="button" class="link" onClick={() => setNotice(null)}>{t('error.dismiss')}</button>
          </div>
        )}
        {page}
      </main>
    </AppContext.Provider>
  );
}

render(<App />, document.getElementById('app')!);
