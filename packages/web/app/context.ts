/** What every view gets from the app: the session, the language and words, and notices. */
import { createContext } from 'preact';
import { useContext } from 'preact/hooks';
import type { Session } from './api.js';
import type { Lang, Translate } from './i18n.js';

export interface Notice {
  kind: 'info' | 'error';
  /** Worded when shown, so a notice follows a change of language. */
  text: (t: Translate) => string;
  /** The page it belongs to: leaving that page drops it. */
  path: string;
}

export interface App {
  session: Session | null;
  setSession(s: Session | null): void;
  lang: Lang;
  setLang(l: Lang): void;
  t: Translate;
  /** Show a notice on `path` (default: the current page), or clear it with null. */
  notify(n: Notice | null): void;
}

export const AppContext = createContext<App>(null as unknown as App);
export const useApp = () => useContext(AppContext);

/** A notice for the page at `path` (default: the one showing now). */
export const notice = (kind: Notice['kind'], text: string | ((t: Translate) => string), path = location.pathname): Notice =>
  ({ kind, text: typeof text === 'string' ? () => text : text, path });
