/** Structured logs: one JSON object per line on stdout (or a given stream). */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function jsonLogger(out: { write(s: string): unknown } = process.stdout, level: 'info' | 'warn' | 'error' | 'silent' = 'info'): Logger {
  const rank = { info: 0, warn: 1, error: 2, silent: 3 };
  const emit = (lvl: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => {
    if (rank[lvl] < rank[level]) return;
    out.write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }) + '\n');
  };
  return {
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}
