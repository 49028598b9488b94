/** What the compute tests share: images made by qemu-img, uploads, the CLI, a hostile image service. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { qemuImg, qemuIo, diskhub } from '@diskhub/testkit';
import { api } from '@diskhub/service/test-helpers';

export const sha1 = (s: string) => createHash('sha1').update(s).digest('hex');
export const md5 = (s: string) => createHash('md5').update(s).digest('hex');

/** A qcow2 of `size` with a few data runs, made by qemu-img and qemu-io. */
export async function makeQcow2(path: string, size: string, pattern: number): Promise<void> {
  await qemuImg('create', '-f', 'qcow2', path, size);
  await qemuIo('-f', 'qcow2', '-c', `write -P ${pattern} 0 1M`, '-c', `write -P ${pattern + 1} 5M 512k`, '-c', `write -P ${pattern + 2} 12M 64k`, path);
}

export async function uploadImage(url: string, tok: string, file: string, name: string, diskFormat = 'qcow2'): Promise<string> {
  const a = api(url, tok);
  const c = await a('POST', '/v2/images', { body: { name, disk_format: diskFormat, container_format: 'bare', min_ram: 128, os_distro: 'debian', hw_disk_bus: 'virtio' } });
  assert.equal(c.status, 201, c.text);
  const up = await a('PUT', `/v2/images/${c.json.id}/file`, { raw: await readFile(file) });
  assert.equal(up.status, 204, up.text);
  return c.json.id as string;
}

export const compute = (args: string[], env: NodeJS.ProcessEnv) => diskhub(['compute', ...args], { env });

/**
 * An image service whose images are hostile (the diskhub service refuses such uploads, an older
 * Glance may not): a Keystone token with an image endpoint, and one image record with its data
 * and correct hashes. Only what `fetch` asks for is answered.
 */
export async function hostileGlance(t: { after(fn: () => unknown): void }, images: Map<string, { record: Record<string, unknown>; data: Buffer; stall?: boolean }>): Promise<string> {
  const server = createServer((req, res) => {
    const url = req.url ?? '';
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    if (req.method === 'POST' && url.startsWith('/v3/auth/tokens')) {
      res.writeHead(201, { 'Content-Type': 'application/json', 'X-Subject-Token': 'tok' });
      res.end(JSON.stringify({ token: { user: { id: 'u1', name: 'admin' }, project: { id: 'p1', name: 'admin' }, catalog: [{ type: 'image', endpoints: [{ interface: 'public', region_id: 'RegionOne', url: base }] }] } }));
      return;
    }
    const m = /^\/v2\/images\/([^/]+)(\/file)?$/.exec(url);
    const image = m ? images.get(m[1]!) : undefined;
    if (!image || req.headers['x-auth-token'] !== 'tok') { res.writeHead(404); res.end(); return; }
    if (m![2]) {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(image.data.length) });
      // `stall`: half the data, then nothing more (a download still running).
      if (image.stall) res.write(image.data.subarray(0, image.data.length >> 1));
      else res.end(image.data);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(image.record));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => { server.closeAllConnections(); return new Promise((resolve) => server.close(resolve)); });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v3`;
}
