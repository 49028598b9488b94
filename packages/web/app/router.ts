/** A small history router: the URL is the state (path and query), so reload, back and links work. */
import { useEffect, useState } from 'preact/hooks';

export interface Location { path: string; query: URLSearchParams }

const listeners = new Set<() => void>();
const here = (): Location => ({ path: location.pathname.replace(/\/+$/, '') || '/', query: new URLSearchParams(location.search) });

export function navigate(to: string, replace = false): void {
  if (to === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', to); else history.pushState(null, '', to);
  for (const l of listeners) l();
}

export function useLocation(): Location {
  const [loc, setLoc] = useState(here);
  useEffect(() => {
    const update = () => setLoc(here());
    listeners.add(update);
    addEventListener('popstate', update);
    return () => { listeners.delete(update); removeEventListener('popstate', update); };
  }, []);
  return loc;
}

/** Match "/images/:id" against a path; the parameters, or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const p = pattern.split('/').filter(Boolean);
  const s = path.split('/').filter(Boolean);
  if (p.length !== s.length) return null;
  const out: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    if (p[i]!.startsWith(':')) out[p[i]!.slice(1)] = decodeURIComponent(s[i]!);
    else if (p[i] !== s[i]) return null;
  }
  return out;
}

/** Plain links that navigate inside the app (and still open in a new tab with a modifier). */
export function onLinkClick(e: MouseEvent): void {
  const a = (e.target as Element).closest('a');
  if (!a || a.target || a.origin !== location.origin || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.hasAttribute('download')) return;
  e.preventDefault();
  navigate(a.pathname + a.search);
}
