/**
 * The real glance client (Debian's python3-glanceclient) against image import and tasks:
 * image-create-via-import (web-download from a local web server the test starts, and
 * glance-direct), task-list, task-show, image-tasks, import-info and usage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { needs, run, runOk, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService, toJson, token } from './helpers.js';

test('glance client: image-create-via-import (web-download, glance-direct), image-tasks, task-list/show, import-info, usage', needs('glance'), async (t) => {
  const data = randomBytes(1_500_000);
  const web = createServer((req, res) => {
    if (req.url === '/disk.raw') { res.writeHead(200, { 'Content-Length': String(data.length) }); res.end(data); } else { res.writeHead(404); res.end(); }
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => web.close(() => r())));
  const port = (web.address() as AddressInfo).port;
  const svc = await startTestService(t, { DISKHUB_IMPORT_ALLOWED_NETWORKS: '127.0.0.1/32', DISKHUB_IMPORT_ALLOWED_PORTS: String(port), DISKHUB_TASK_POLL_SECONDS: '1' });
  const env = osEnv(svc.url);
  // (stdin closed: glanceclient takes an open non-tty stdin for image data, which web-download refuses)
  const glance = (...args: string[]) => runOk('sh', ['-c', 'exec glance --os-image-api-version 2 "$@" <&-', 'glance', ...args], { env });
  const md5 = createHash('md5').update(data).digest('hex');

  // (glanceclient wraps a long value over several rows of the table: join its Value cells)
  const info = (await glance('import-info')).split('\n').filter((l) => l.startsWith('| ')).slice(1).map((l) => l.split('|')[2]!.slice(1).trimEnd()).join('');
  assert.deepEqual(JSON.parse(info).value, ['glance-direct', 'web-download', 'copy-image']);
  const viaWeb = JSON.parse(toJson(await glance('image-create-via-import', '--name', 'from-web', '--disk-format', 'raw', '--container-format', 'bare',
    '--import-method', 'web-download', '--uri', `http://127.0.0.1:${port}/disk.raw`)));
  assert.ok(viaWeb.id);
  const dir = await tempDir(t);
  const file = join(dir, 'up.raw');
  await writeFile(file, data);
  const viaStage = JSON.parse(toJson(await glance('image-create-via-import', '--name', 'staged', '--disk-format', 'raw', '--container-format', 'bare',
    '--import-method', 'glance-direct', '--file', file)));
  for (const id of [viaWeb.id, viaStage.id]) {
    let shown: Record<string, string> = {};
    for (let i = 0; i < 200 && shown.status !== 'active'; i++) {
      shown = JSON.parse(toJson(await glance('image-show', id)));
      if (shown.status !== 'active') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(shown.status, 'active');
    assert.equal(shown.checksum, md5);
  }

  // The image's tasks: glanceclient asks only a server that lists API 2.12, which Glance lists
  // with several stores (enabled_backends) only; with one store it refuses, as against Glance.
  const versions = ((await (await fetch(`${svc.url}/versions`)).json()) as any).versions.map((v: { id: string }) => v.id);
  const imageTasks = await run('sh', ['-c', 'exec glance --os-image-api-version 2 "$@" <&-', 'glance', 'image-tasks', viaWeb.id], { env });
  if (versions.includes('v2.12')) assert.match(imageTasks.stdout, /success/);
  else assert.match(imageTasks.stderr, /Server does not support image tasks API \(v2\.12\)/);
  const byImage = ((await (await fetch(`${svc.url}/v2/images/${viaWeb.id}/tasks`, { headers: { 'X-Auth-Token': await token(svc.url) } })).json()) as any).tasks;
  const taskId: string = byImage[0].id;
  const list = await glance('task-list', '--sort-dir', 'asc');
  assert.match(list, new RegExp(`${taskId}\\s*\\|\\s*api_image_import\\s*\\|\\s*success`));
  const show = JSON.parse(toJson(await glance('task-show', taskId)));
  assert.equal(show.status, 'success');
  assert.equal(show.type, 'api_image_import');
  assert.equal(show.image_id, viaWeb.id);
  assert.ok(show.input.startsWith(`{"image_id": "${viaWeb.id}"`), show.input);
  const failed = await glance('task-list', '--status', 'failure');
  assert.match(failed, /\|\s*ID\s*\|/);
  assert.doesNotMatch(failed, new RegExp(taskId));
  // Paging: one task per request, both imports listed, sorted by id.
  const paged = await glance('task-list', '--page-size', '1', '--sort-key', 'id');
  assert.equal((paged.match(/api_image_import/g) ?? []).length, 2);

  // Quota usage as glance usage prints it.
  const usage = await glance('usage');
  assert.match(usage, /image_count_total\s*\|\s*-1\s*\|\s*2\s*\|/);
  assert.match(usage, /image_size_total\s*\|\s*-1\s*\|\s*2\s*\|/);
});
