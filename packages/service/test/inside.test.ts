/**
 * The x-diskhub/inside extension: what the dashboard's allocation picture, inspection panel
 * and partition list show, checked against qemu-img's own map and sfdisk/mkfs-built disks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, qemuImg, qemuIo, run, runOk, tempDir } from '@diskhub/testkit';
import { addProjectUser, api, startTestService, token } from './helpers.js';

async function upload(a: ReturnType<typeof api>, file: string, disk_format: string): Promise<string> {
  const r = await a('POST', '/v2/images', { body: { name: file, disk_format, container_format: 'bare' } });
  assert.equal(r.status, 201, r.text);
  const put = await a('PUT', `/v2/images/${r.json.id}/file`, { raw: await readFile(file) });
  assert.equal(put.status, 204, put.text);
  return r.json.id;
}

/** Bytes qemu-img map reports as data (and, with compressed, as compressed) for the image. */
async function mappedData(file: string): Promise<number> {
  const map = JSON.parse(await qemuImg('map', '--output=json', file)) as { length: number; data: boolean; depth: number }[];
  return map.filter((e) => e.data && e.depth === 0).reduce((n, e) => n + e.length, 0);
}

test('x-diskhub/inside: allocation, inspection and partitions of stored images', needs('qemu-img', 'qemu-io', 'sfdisk', 'mkfs.ext4'), async (t) => {
  const svc = await startTestService(t);
  const tok = await token(svc.url);
  const a = api(svc.url, tok);
  const dir = await tempDir(t);

  // qcow2 with data and zero clusters written by qemu-io.
  const q = join(dir, 'plain.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', q, '64M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x11 0 3M', '-c', 'write -z 8M 2M', '-c', 'write -P 0x22 40M 1M', q);
  const qid = await upload(a, q, 'qcow2');
  const r = await a('GET', `/v2/images/${qid}/x-diskhub/inside?buckets=64`);
  assert.equal(r.status, 200, r.text);
  const inside = r.json;
  assert.equal(inside.format, 'qcow2');
  assert.equal(inside.virtual_size, 64 << 20);
  assert.equal(inside.inspection.safe, true);
  assert.deepEqual(inside.allocation.legend, ['data', 'compressed', 'zero', 'backing', 'unallocated']);
  assert.equal(inside.allocation.buckets.length, 64);
  assert.equal(inside.allocation.bucket_size, 1 << 20);
  assert.equal(inside.allocation.totals.data, await mappedData(q));
  assert.equal(inside.allocation.totals.zero, 2 << 20);
  const sum = (o: Record<string, number>) => Object.values(o).reduce((x, y) => x + y, 0);
  assert.equal(sum(inside.allocation.totals), 64 << 20);
  // Bucket 40 (the 1 MiB at 40M) is all data, bucket 20 all unallocated.
  assert.deepEqual(inside.allocation.buckets[40], [1 << 20, 0, 0, 0, 0]);
  assert.deepEqual(inside.allocation.buckets[20], [0, 0, 0, 0, 1 << 20]);
  assert.deepEqual(inside.partitions, { table: null, entries: [], filesystem: null });

  // Compressed clusters (qemu-img convert -c) are told apart from plain data.
  const c = join(dir, 'compressed.qcow2');
  await qemuImg('convert', '-c', '-O', 'qcow2', q, c);
  const cid = await upload(a, c, 'qcow2');
  const ci = (await a('GET', `/v2/images/${cid}/x-diskhub/inside`)).json;
  assert.ok(ci.allocation.totals.compressed > 0, 'compressed clusters are reported');
  assert.equal(ci.allocation.buckets.length, 256);

  // A raw disk with a GPT and an ext4 filesystem in its first partition.
  const raw = join(dir, 'disk.raw');
  await runOk('truncate', ['-s', '32M', raw]);
  await run('sfdisk', ['-q', raw], { input: 'label: gpt\nstart=2048, size=20480, type=linux, name="root"\n' });
  await runOk('mkfs.ext4', ['-q', '-F', '-L', 'rootfs', '-E', `offset=${2048 * 512}`, raw, '10M']);
  const rid = await upload(a, raw, 'raw');
  const ri = (await a('GET', `/v2/images/${rid}/x-diskhub/inside?buckets=16`)).json;
  assert.equal(ri.format, 'raw');
  assert.equal(ri.partitions.table, 'gpt');
  assert.equal(ri.partitions.entries.length, 1);
  assert.equal(ri.partitions.entries[0].name, 'root');
  assert.equal(ri.partitions.entries[0].start, 2048 * 512);
  assert.equal(ri.partitions.entries[0].filesystem.type, 'ext4');
  assert.equal(ri.partitions.entries[0].filesystem.label, 'rootfs');
  // The stored file's holes show as holes (read through the file store): qemu-img map of the stored copy agrees.
  const stored = join(svc.dataDir, 'images', rid);
  assert.equal(ri.allocation.totals.data, await mappedData(stored));
  assert.ok(ri.allocation.totals.data < 32 << 20, `data ${ri.allocation.totals.data}`);

  // Errors in Glance's shape: bad bucket counts, no data yet, images others cannot see.
  assert.equal((await a('GET', `/v2/images/${qid}/x-diskhub/inside?buckets=0`)).status, 400);
  assert.equal((await a('GET', `/v2/images/${qid}/x-diskhub/inside?buckets=abc`)).status, 400);
  assert.equal((await a('GET', `/v2/images/${qid}/x-diskhub/inside?buckets=100000`)).status, 400);
  const queued = await a('POST', '/v2/images', { body: { name: 'empty' } });
  const q409 = await a('GET', `/v2/images/${queued.json.id}/x-diskhub/inside`);
  assert.equal(q409.status, 409);
  assert.match(q409.json.message, /has no data/);
  const { projectId } = await addProjectUser(svc.url, tok, 'elsewhere', 'eve', 'eve-pw');
  assert.ok(projectId);
  const eve = api(svc.url, await token(svc.url, 'eve', 'eve-pw', 'elsewhere'));
  const private404 = await a('PATCH', `/v2/images/${qid}`, { body: [{ op: 'replace', path: '/visibility', value: 'private' }], type: 'application/openstack-images-v2.1-json-patch' });
  assert.equal(private404.status, 200);
  assert.equal((await eve('GET', `/v2/images/${qid}/x-diskhub/inside`)).status, 404);
  assert.equal((await api(svc.url, null)('GET', `/v2/images/${qid}/x-diskhub/inside`)).status, 401);
});
