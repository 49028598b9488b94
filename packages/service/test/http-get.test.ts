/**
 * httpGet (web-download's plain-http client) against Node's http server and raw responses: the
 * body framings of RFC 9112 (Content-Length, chunked, the connection's close) give exactly the
 * bytes sent, an interim 1xx response is skipped, a body cut short or badly framed is an error
 * (never a shorter image), and a slow reader gets every byte.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { lookup } from 'node:dns';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { httpGet } from '../src/domain/import/http-get.js';
import { GLANCE_IMPORT_FILTERING, openWebSource } from '../src/domain/import/web-download.js';

const data = Buffer.alloc((5 << 20) + 333);
for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

async function serve(t: test.TestContext): Promise<number> {
  const server: Server = createServer((q, s) => {
    const raw = (text: string | Buffer) => s.socket!.end(text);
    switch (new URL(q.url!, 'http://x').pathname) {
      case '/length': s.writeHead(200, { 'Content-Length': data.length }); s.end(data); break;
      case '/chunked': {
        s.writeHead(200);
        let at = 0;
        const more = () => { if (at >= data.length) { s.end(); return; } s.write(data.subarray(at, at += 77_777)); setImmediate(more); };
        more();
        break;
      }
      case '/early-hints': raw(Buffer.concat([Buffer.from('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'), data.subarray(0, 5)])); break;
      case '/close': raw(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\nX-A: 1\r\nX-A: 2\r\n\r\n'), data])); break;
      case '/short': raw(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length + 10}\r\n\r\n`), data])); break;
      case '/bad-chunk': raw('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nzz\r\n'); break;
      case '/cut-chunked': raw('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n'); break;
      case '/huge-head': raw(`HTTP/1.1 200 OK\r\n${'X-Pad: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n'.repeat(2000)}\r\n`); break;
      case '/not-http': raw('SSH-2.0-OpenSSH_9.2\r\n\r\n'); break;
      case '/no-content': s.writeHead(204); s.end(); break;
      case '/echo': s.writeHead(200, { 'Content-Type': 'application/json' }); s.end(JSON.stringify(q.headers)); break;
      case '/redirect': s.writeHead(302, { Location: '/length' }); s.end(); break;
      default: s.writeHead(404); s.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

async function get(port: number, path: string, slow = false) {
  const { response } = httpGet({ host: '127.0.0.1', port, path, hostHeader: `127.0.0.1:${port}`, headers: { Accept: '*/*' }, lookup, timeoutMs: 10_000, onTimeout: () => new Error('timed out') });
  const r = await response;
  const parts: Buffer[] = [];
  for await (const b of r.body) {
    parts.push(Buffer.from(b as Buffer));
    if (slow) await new Promise((res) => setTimeout(res, 1));
  }
  return { status: r.statusCode, message: r.statusMessage, headers: r.headers, body: Buffer.concat(parts), pieces: parts.length };
}

test('Content-Length, chunked and close-delimited bodies are the bytes sent; a slow reader gets them all', async (t) => {
  const port = await serve(t);
  for (const path of ['/length', '/chunked', '/close']) {
    const r = await get(port, path);
    assert.equal(r.status, 200, path);
    assert.equal(md5(r.body), md5(data), path);
  }
  const slow = await get(port, '/length', true);
  assert.equal(md5(slow.body), md5(data));
  const close = await get(port, '/close');
  assert.equal(close.headers['x-a'], '1, 2');
  const hinted = await get(port, '/early-hints');
  assert.deepEqual([hinted.status, hinted.body], [200, data.subarray(0, 5)]);
  const empty = await get(port, '/no-content');
  assert.deepEqual([empty.status, empty.message, empty.body.length], [204, 'No Content', 0]);
  const missing = await get(port, '/nothing');
  assert.equal(missing.status, 404);
});

test('a body cut short or badly framed, an oversized or non-HTTP head: errors, never less data', async (t) => {
  const port = await serve(t);
  await assert.rejects(get(port, '/short'), /ended after 5243213 of 5243223 bytes/);
  await assert.rejects(get(port, '/bad-chunk'), /malformed chunk size/);
  await assert.rejects(get(port, '/cut-chunked'), /ended before its last chunk/);
  await assert.rejects(get(port, '/huge-head'), /response head longer than/);
  await assert.rejects(get(port, '/not-http'), /not an HTTP\/1.x response/);
});

test('through openWebSource: the request\'s fields (Host, credentials from the URL as Basic authorization) and a redirect followed', async (t) => {
  const port = await serve(t);
  const filtering = { ...GLANCE_IMPORT_FILTERING, allowedPorts: [port], allowedNetworks: ['127.0.0.1/32'], maxRedirects: 10, timeoutMs: 10_000 };
  const echo = await openWebSource(`http://us%40er:p%3Ass@127.0.0.1:${port}/echo?x=1`, filtering);
  const parts: Buffer[] = [];
  for await (const b of echo.body) parts.push(Buffer.from(b as Buffer));
  const fields = JSON.parse(Buffer.concat(parts).toString()) as Record<string, string>;
  assert.equal(fields.host, `127.0.0.1:${port}`);
  assert.equal(fields.authorization, `Basic ${Buffer.from('us@er:p:ss').toString('base64')}`);
  assert.equal(fields['user-agent'], 'diskhub-web-download');
  const redirected = await openWebSource(`http://127.0.0.1:${port}/redirect`, filtering);
  assert.equal(redirected.length, data.length);
  const got: Buffer[] = [];
  for await (const b of redirected.body) got.push(Buffer.from(b as Buffer));
  assert.equal(md5(Buffer.concat(got)), md5(data));
});
