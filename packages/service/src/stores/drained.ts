/** Back-pressure for a store's send(): what every store's download loop waits on. */
import type { Writable } from 'node:stream';

/** Resolves when `out` wants more data, or is closed. */
export function drained(out: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (out.destroyed) { resolve(); return; }
    const done = () => { out.off('drain', done); out.off('close', done); resolve(); };
    out.on('drain', done);
    out.on('close', done);
  });
}
