/** Log in with user, password and project; afterwards back to the page the user wanted. */
import { useState } from 'preact/hooks';
import { login } from '../api.js';
import { useApp } from '../context.js';
import { describeError } from '../errors.js';
import { navigate } from '../router.js';
import { onEvent } from './common.js';

export function Login() {
  const { setSession, t } = useApp();
  const query = new URLSearchParams(location.search);
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [project, setProject] = useState('');
  const [domain, setDomain] = useState('Default');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      const s = await login(user.trim(), password, project.trim(), domain.trim() || 'Default');
      setSession(s);
      const next = query.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/login') ? next : '/images', true);
    } catch (err) {
      setError(describeError(t, err, 'login'));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="login card" aria-labelledby="login-heading">
      <h1 id="login-heading">{t('login.heading')}</h1>
      {query.has('expired') && <p class="notice info" role="status">{t('login.expired')}</p>}
      <p>{t('login.intro')}</p>
      <form onSubmit={onEvent(submit)}>
        <label>{t('login.user')}<input name="username" autoComplete="username" required value={user} onInput={(e) => setUser((e.target as HTMLInputElement).value)} /></label>
        <label>{t('login.password')}<input name="password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} /></label>
        <label>{t('login.project')}<input name="project" value={project} aria-describedby="project-hint" onInput={(e) => setProject((e.target as HTMLInputElement).value)} /></label>
        <small id="project-hint">{t('login.projectHint')}</small>
        <details>
          <summary>{t('login.domain')}</summary>
          <label>{t('login.domain')}<input name="domain" value={domain} onInput={(e) => setDomain((e.target as HTMLInputElement).value)} /></label>
        </details>
        {error && <p class="notice error" role="alert">{error}</p>}
        <button type="submit" class="primary" disabled={busy}>{busy ? t('login.busy') : t('login.submit')}</button>
      </form>
    </section>
  );
}
