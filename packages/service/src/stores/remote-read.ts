/**
 * Reading from an object store over HTTP (Swift, S3): which failures are worth another try,
 * and a download that resumes where a broken response stopped, as glance_store's
 * swift_retry_iter does (a new GET with `Range: bytes=<received>-`), so a reset in the middle
 * of a 10 GiB image costs one request instead of the download.
 */
import type { Readable, Writable } from 'node:stream';
import { StoreError } from './store.js';

/** A failure another attempt may not have: a timeout, a dropped connection, a 5xx, throttling. */
export function isTransient(e: unknown): boolean {
  if (e instanceof StoreError) return e.kind === 'unavailable';
  const err = e as { code?: string; name?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  if (err?.$retryable) return true;
  const status = err?.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  return ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE']
    .includes(err?.code ?? '') || ['TimeoutError', 'RequestTimeout'].includes(err?.name ?? '');
}

/** Retry `attempt` on transient failures, with a short growing pause (0.2 s, 0.4 s, …). */
export async function withRetries<T>(retries: number, attempt: () => Promise<T>): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      if (n >= retries || !isTransient(e)) throw e;
      await new Promise((r) => setTimeout(r, 200 * 2 ** n));
    }
  }
}

/** The body of a ranged GET of bytes [start, end] (inclusive), or null when there are none (start past the end). */
export type OpenRange = (start: number, end: number | undefined) => Promise<Readable | null>;

/**
 * Copy bytes [start, end] (end inclusive; undefined: to the object's end) to `out` and end it,
 * reopening at the first byte not yet sent when a response breaks off (up to `retries` times
 * in a row). Stops, without error, when `out` is destroyed (the client went away).
 */
export async function sendResuming(open: OpenRange, out: Writable, start: number, end: number | undefined, retries: number): Promise<void> {
  let at = start;
  let failures = 0;
  while (!out.destroyed) {
    let body: Readable | null;
    try {
      body = await open(at, end);
    } catch (e) {
      if (failures++ >= retries || !isTransient(e)) throw e;
      continue;
    }
    if (!body) break;
    try {
      at += await pipeInto(body, out);
      break;
    } catch (e) {
      if (out.destroyed) break;
      const got = (e as { bytes?: number }).bytes ?? 0;
      at += got;
      if (got > 0) failures = 0;
      if (failures++ >= retries || !isTransient((e as { cause?: unknown }).cause ?? e)) throw (e as { cause?: unknown }).cause ?? e;
      if (end !== undefined && at > end) break;
    }
  }
  if (!out.destroyed) out.end();
}

/** Write `body` into `out` (without ending it), honouring back-pressure; resolves with the byte count. */
function pipeInto(body: Readable, out: Writable): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let settled = false;
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      out.off('drain', resume);
      out.off('close', gone);
      if (err) reject(Object.assign(new Error('download broke off'), { cause: err, bytes }));
      else resolve(bytes);
    };
    const resume = () => body.resume();
    const gone = () => { body.destroy(); settle(new Error('client went away')); };
    out.on('drain', resume);
    out.on('close', gone);
    body.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (!out.write(chunk)) body.pause();
    });
    body.on('end', () => settle());
    body.on('error', (e) => settle(e));
    body.on('close', () => { if (!body.readableEnded) settle(Object.assign(new Error('response closed early'), { code: 'ECONNRESET' })); });
  });
}

/** Collect a body into one buffer. */
export async function readAll(body: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}
