/**
 * RBD locations in glance_store's forms (glance_store/_drivers/rbd.py, StoreLocation):
 * `rbd://<fsid>/<pool>/<image>/<snapshot>`, each component percent-encoded, as Glance writes
 * them (and Nova and Cinder parse them to clone the snapshot); and the old one-component
 * `rbd://<image>` (the store's pool, the image's head), which Glance still reads.
 */

export interface RbdLocation {
  /** null for the one-component form. */
  fsid: string | null;
  pool: string | null;
  image: string;
  snapshot: string | null;
}

const PREFIX = 'rbd://';

/** The location's parts, or null when it is not a well-formed RBD location. */
export function parseRbdLocation(location: string): RbdLocation | null {
  if (!location.startsWith(PREFIX)) return null;
  const pieces = location.slice(PREFIX.length).split('/');
  if (pieces.some((p) => p === '')) return null;
  let parts: string[];
  try {
    parts = pieces.map((p) => decodeURIComponent(p));
  } catch {
    return null;
  }
  // librbd names hold neither '/' nor '@' (the image@snapshot separator), nor NUL.
  if (parts.some((p) => /[/@\0]/.test(p))) return null;
  if (parts.length === 1) return { fsid: null, pool: null, image: parts[0]!, snapshot: null };
  if (parts.length === 4) return { fsid: parts[0]!, pool: parts[1]!, image: parts[2]!, snapshot: parts[3]! };
  return null;
}

/** `rbd://<fsid>/<pool>/<image>/<snapshot>`, each part percent-encoded as Python's quote(part, ''). */
export function formatRbdLocation(fsid: string, pool: string, image: string, snapshot: string): string {
  return PREFIX + [fsid, pool, image, snapshot].map(quote).join('/');
}

/** Python's urllib.parse.quote(s, safe=''): everything but letters, digits and `_.-~` is escaped. */
function quote(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
