/**
 * Structured logs: one JSON object per line on stdout (or a given stream), written by pino,
 * the logger Fastify uses, so the access log and the service's own messages are one stream.
 */
import { pino, type Logger as Pino, type DestinationStream } from 'pino';

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** The pino logger underneath (handed to Fastify). */
  readonly pino: Pino;
}

export type LogLevel = 'info' | 'warn' | 'error' | 'silent';

export function jsonLogger(out: { write(s: string): unknown } = process.stdout, level: LogLevel = 'info'): Logger {
  const p = pino({
    level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }, out as DestinationStream);
  return {
    info: (m, f) => p.info(f ?? {}, m),
    warn: (m, f) => p.warn(f ?? {}, m),
    error: (m, f) => p.error(f ?? {}, m),
    pino: p,
  };
}
