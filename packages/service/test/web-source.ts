/**
 * A web-download source on loopback for import tests: serves one body, the first
 * `slowRequests` answers trickled (64 KiB every 100 ms) so that a test can stop a node while
 * the body is still flowing, later answers at full speed. `sent[n]` counts the bytes written
 * to the n-th request: the proof that a node was mid-transfer.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface WebSource { url: string; port: number; requests(): number; sent: number[] }

/** Send `body` 64 KiB every 100 ms, telling `sent` the bytes written so far. */
function trickle(res: ServerResponse, body: Buffer, sent: (bytes: number) => void): void {
  let off = 0;
  const timer = setInterval(() => {
    if (res.destroyed) { clearInterval(timer); return; }
    const piece = body.subarray(off, off + 65536);
    off += piece.length;
    sent(off);
    if (off >= body.length) { clearInterval(timer); res.end(piece); } else res.write(piece);
  }, 100);
  res.on('close', () => clearInterval(timer));
}

export async function slowServer(t: { after(fn: () => unknown): void }, data: Buffer, slowRequests: number, name = 'disk.raw'): Promise<WebSource> {
  let requests = 0;
  const sent: number[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((_req, res: ServerResponse) => {
    const n = requests++;
    sent[n] = 0;
    res.writeHead(200, { 'Content-Length': String(data.length) });
    if (n >= slowRequests) { res.end(data); sent[n] = data.length; return; }
    trickle(res, data, (off) => { sent[n] = off; });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/${name}`, port, requests: () => requests, sent };
}

/**
 * A loopback HTTP proxy in front of `target` (another image service: a remote region's Glance)
 * whose answers to image data downloads (`…/file`) trickle as slowServer's first answers do;
 * everything else passes at once. `sent` counts the data bytes passed on, per download.
 */
export async function trickleProxy(t: { after(fn: () => unknown): void }, target: () => string): Promise<WebSource> {
  let requests = 0;
  const sent: number[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k !== 'host' && k !== 'connection')) as Record<string, string>;
    const data = (req.url ?? '').endsWith('/file');
    const n = data ? requests++ : -1;
    if (data) sent[n] = 0;
    fetch(`${target()}${req.url}`, { method: req.method, headers }).then(async (upstream) => {
      const body = Buffer.from(await upstream.arrayBuffer());
      res.writeHead(upstream.status, { 'Content-Type': upstream.headers.get('content-type') ?? 'application/octet-stream', 'Content-Length': String(body.length) });
      if (!data) { res.end(body); return; }
      trickle(res, body, (off) => { sent[n] = off; });
    }, () => { res.writeHead(502).end(); });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => server.close(() => r())); });
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, port, requests: () => requests, sent };
}
