/**
 * Keeping store credentials out of what the service shows and writes. The store contract says
 * a store never puts a credential in its locations, detail or errors; this is the service's
 * own guard in case one does: the values of credential-named options of every configured
 * store (its configuration and its detail) are remembered and cut from error messages and log
 * lines, and credential-named keys are dropped from /v2/info/stores/detail.
 */

/** Option names that hold secrets (password, secret_key, token, access_key, auth_key, …). */
const CREDENTIAL_NAME = /pass(word|wd)?$|secret|token|credential|signature|(^|_)key$|access_?key|auth_?key/i;

export const isCredentialName = (name: string): boolean => CREDENTIAL_NAME.test(name);

const known = new Set<string>();

/** Remember the credential values found (at any depth) in these objects. */
export function rememberCredentials(...sources: unknown[]): void {
  const walk = (v: unknown, name: string) => {
    if (typeof v === 'string') { if (name && isCredentialName(name) && v.length >= 4) known.add(v); return; }
    if (Array.isArray(v)) { for (const x of v) walk(x, name); return; }
    if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  for (const s of sources) walk(s, '');
}

/** `text` without any remembered credential, user:password@ in URLs or key=value credentials. */
export function redactCredentials(text: string): string {
  let out = text;
  for (const secret of known) out = out.split(secret).join('***');
  return out
    .replace(/(\/\/)[^/@\s]*@/g, '$1***@')
    .replace(/((?:password|passwd|secret|token|credential|signature|access_?key|auth_?key)[\w-]*\s*[=:]\s*)[^\s&,;)]+/gi, '$1***');
}

/** A store's detail as the API shows it: credential-named keys dropped, at any depth. */
export function publicDetail(detail: Record<string, unknown>): Record<string, unknown> {
  const clean = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(clean);
    if (typeof v === 'object' && v !== null) {
      return Object.fromEntries(Object.entries(v).filter(([k]) => !isCredentialName(k)).map(([k, x]) => [k, clean(x)]));
    }
    return typeof v === 'string' ? redactCredentials(v) : v;
  };
  return clean(detail) as Record<string, unknown>;
}
