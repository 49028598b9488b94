/**
 * The dashboard with several stores and image import, in a real headless Chromium against a
 * real service configured with two file stores and web-download allowed to reach loopback:
 * an upload into the store that is not the default lands there (the file in that store's
 * directory is the uploaded file, and the image page says where it lives); an image created
 * from a URL served by a local HTTP server is imported by a task the page follows, without a
 * reload, from processing (the server holds back half the data) to success (the data
 * qemu-img reads back is the served file); an import from a URL into both stores ticked lands
 * in both; an admin copies an image into the store it is not in (copy-image), the page
 * following the task; and an import from a URL that answers 404 shows the task's failure
 * reason as the service words it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { needs, qemuImg, qemuIo, tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, api, startTestService, token } from '@diskhub/service/test-helpers';
import { CHROMIUM, SHOTS, launch, logIn, shot } from './browser.js';

test('dashboard: upload into a chosen store, create from a URL, a failed import', needs('qemu-img', 'qemu-io', CHROMIUM), async (t) => {
  await mkdir(SHOTS, { recursive: true });
  const dir = await tempDir(t);

  // Two images made by qemu-img: one to upload, one the local web server hands out.
  const upload = join(dir, 'upload-me.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', upload, '64M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x3c 0 3M', upload);
  const served = join(dir, 'served.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', served, '128M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x7e 1M 5M', served);
  const servedBytes = await readFile(served);

  // The web server a web-download reads from: the image at /images/served.qcow2, 404 elsewhere.
  // It sends the first half at once and the rest only when the test says, so the page is seen
  // following a task that is still running.
  let releaseRest = () => {};
  const rest = new Promise<void>((resolve) => { releaseRest = resolve; });
  const web = createServer((req, res) => {
    if (req.url === '/images/served.qcow2') {
      const half = servedBytes.length >> 1;
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': servedBytes.length });
      res.write(servedBytes.subarray(0, half));
      void rest.then(() => res.end(servedBytes.subarray(half)));
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not here');
    }
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  t.after(() => { releaseRest(); web.closeAllConnections(); return new Promise<void>((resolve) => web.close(() => resolve())); });
  const webUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;

  // Two file stores with descriptions, `fast` the default; loopback allowed for web-download.
  const config = join(dir, 'diskhub.json');
  const fastDir = join(dir, 'fast');
  const cheapDir = join(dir, 'cheap');
  await writeFile(config, JSON.stringify({
    stores: {
      fast: { type: 'file', path: fastDir, description: 'NVMe pool' },
      cheap: { type: 'file', path: cheapDir, description: 'Spinning disks' },
    },
    defaultStore: 'fast',
    importAllowedNetworks: '127.0.0.1/32',
    importAllowedPorts: String((web.address() as AddressInfo).port),
  }));
  const svc = await startTestService(t, { DISKHUB_CONFIG: config });
  const admin = api(svc.url, await token(svc.url));

  const browser = await launch();
  t.after(() => browser.close());
  const page = await (await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 } })).newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${svc.url}/`);
  await page.waitForURL(/\/login/);
  await logIn(page, 'admin', ADMIN_PASSWORD, 'admin');

  const imageIdOfPage = () => new URL(page.url()).pathname.split('/').pop()!;
  const storesOf = async (id: string) => String((await admin('GET', `/v2/images/${id}`)).json.stores).split(',').sort();
  let uploadedId = '';

  await t.test('upload into the store that is not the default', async () => {
    await page.goto(`${svc.url}/images/new`);
    const picker = page.getByRole('combobox', { name: /^Store\b/ });
    // The stores from /v2/info/stores, the default one chosen.
    await picker.waitFor();
    assert.deepEqual(await picker.locator('option').allTextContents(), ['fast — NVMe pool (default)', 'cheap — Spinning disks']);
    assert.equal(await picker.inputValue(), 'fast');
    await page.getByLabel('Image file').setInputFiles(upload);
    await page.getByTestId('detection').getByText('This file is qcow2').waitFor();
    await picker.selectOption('cheap');
    await shot(page, '11-create-store');
    await page.getByRole('button', { name: 'Create and upload' }).click();
    await page.waitForURL(/\/images\/[0-9a-f-]{36}$/);
    const id = uploadedId = imageIdOfPage();
    await page.getByTestId('status').getByText('Active').waitFor();
    // The page says where the data lives, with the store's description.
    const where = page.getByTestId('stores');
    await where.locator('dd[data-store=cheap]').getByText('Spinning disks').waitFor();
    assert.equal(await where.locator('dd[data-store]').count(), 1);
    await shot(page, '12-detail-store');

    const r = await admin('GET', `/v2/images/${id}`);
    assert.equal(r.json.stores, 'cheap');
    // The data is in the chosen store's directory, byte for byte, and not in the default one.
    assert.deepEqual(await readFile(join(cheapDir, id)), await readFile(upload));
    await assert.rejects(readFile(join(fastDir, id)), { code: 'ENOENT' });
    assert.match(await qemuImg('check', join(cheapDir, id)), /No errors were found/);
  });

  await t.test('create from a URL: the import task succeeds and the image is active', async () => {
    await page.goto(`${svc.url}/images/new`);
    await page.getByLabel('Download from a URL (web-download)').check();
    // An import can go to several stores: check boxes, the default store ticked (no upload select).
    assert.equal(await page.getByRole('combobox', { name: /^Store\b/ }).count(), 0);
    const choice = page.getByRole('group', { name: 'Import into the stores' });
    assert.equal(await choice.getByRole('checkbox', { name: 'fast — NVMe pool (default)' }).isChecked(), true);
    assert.equal(await choice.getByRole('checkbox', { name: 'cheap — Spinning disks' }).isChecked(), false);
    // None ticked is refused on the page, before anything is created.
    await choice.getByRole('checkbox', { name: 'fast — NVMe pool (default)' }).uncheck();
    await page.getByRole('button', { name: 'Create and import' }).click();
    await page.getByRole('alert').getByText('Choose at least one store to import into.').waitFor();
    await choice.getByRole('checkbox', { name: 'fast — NVMe pool (default)' }).check();
    await page.getByLabel('Image URL').fill(`${webUrl}/images/served.qcow2`);
    await page.getByLabel('Disk format').selectOption('qcow2');
    await page.getByLabel('Name').fill('from-the-web');
    await shot(page, '13-create-from-url');
    await page.getByRole('button', { name: 'Create and import' }).click();
    await page.waitForURL(/\/images\/[0-9a-f-]{36}$/);
    const id = imageIdOfPage();
    const task = page.getByTestId('tasks').locator('tbody tr');
    // Half the data sent: the task is running, and the page shows it so, with its bar.
    await task.and(page.locator('[data-status=processing]')).getByText('Processing').waitFor({ timeout: 30_000 });
    await task.getByRole('progressbar', { name: 'Running…' }).waitFor();
    await page.getByTestId('status').getByText('Importing').waitFor();
    await page.getByTestId('importing-to').getByText('Being imported into fast.').waitFor();
    await shot(page, '14-detail-importing');
    releaseRest();
    // The rest sent: the page, not reloaded, follows the task to its end.
    await task.and(page.locator('[data-status=success]')).getByText('Succeeded').waitFor({ timeout: 30_000 });
    await page.getByTestId('status').getByText('Active').waitFor();
    assert.equal(await task.count(), 1);
    assert.match(await task.textContent() ?? '', new RegExp(`web-download.*${webUrl.replace(/[.]/g, '\\.')}/images/served\\.qcow2`));
    await page.getByTestId('stores').locator('dd[data-store=fast]').getByText('NVMe pool').waitFor();
    assert.equal(await page.getByTestId('importing-to').count(), 0, 'no import under way once it succeeded');
    await shot(page, '15-detail-imported');

    const r = await admin('GET', `/v2/images/${id}`);
    assert.equal(r.json.status, 'active');
    assert.equal(r.json.stores, 'fast');
    assert.equal(r.json.checksum, createHash('md5').update(servedBytes).digest('hex'));
    const tasks = (await admin('GET', `/v2/images/${id}/tasks`)).json.tasks;
    assert.deepEqual(tasks.map((x: { status: string; id: string }) => [x.status, x.id]), [['success', await task.getAttribute('data-task')]]);
    // What the store holds is the served image, as qemu-img sees it.
    assert.match(await qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', join(fastDir, id), served), /Images are identical/);
  });

  await t.test('create from a URL into both stores: the data lands in each', async () => {
    await page.goto(`${svc.url}/images/new`);
    await page.getByLabel('Download from a URL (web-download)').check();
    await page.getByLabel('Image URL').fill(`${webUrl}/images/served.qcow2`);
    await page.getByLabel('Disk format').selectOption('qcow2');
    await page.getByLabel('Name').fill('in-both-stores');
    await page.getByRole('group', { name: 'Import into the stores' }).getByRole('checkbox', { name: 'cheap — Spinning disks' }).check();
    // With two stores ticked, whether a failure in one of them keeps the image is asked.
    assert.equal(await page.getByLabel('Keep the image if the import into some of the stores fails').isChecked(), false);
    await page.getByRole('button', { name: 'Create and import' }).click();
    await page.waitForURL(/\/images\/[0-9a-f-]{36}$/);
    const id = imageIdOfPage();
    await page.getByTestId('tasks').locator('tbody tr[data-status=success]').waitFor({ timeout: 30_000 });
    await page.getByTestId('stores').locator('dd[data-store=cheap]').getByText('Spinning disks').waitFor();
    await page.getByTestId('stores').locator('dd[data-store=fast]').getByText('NVMe pool').waitFor();
    // Every store is held, so there is nothing to copy to.
    assert.equal(await page.getByTestId('copy-image').count(), 0);
    assert.deepEqual(await storesOf(id), ['cheap', 'fast']);
    const [task] = (await admin('GET', `/v2/images/${id}/tasks`)).json.tasks;
    assert.deepEqual(task.input.import_req.stores, ['fast', 'cheap']);
    assert.equal(task.input.import_req.all_stores_must_succeed, true);
    for (const store of [fastDir, cheapDir]) {
      assert.match(await qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', join(store, id), served), /Images are identical/);
    }
  });

  await t.test('copy an image into the store it is not in (copy-image), the page following the task', async () => {
    assert.ok(uploadedId, 'the upload test ran');
    await page.goto(`${svc.url}/images/${uploadedId}`);
    const form = page.getByTestId('copy-image');
    const choice = form.getByRole('group', { name: 'Copy to other stores' });
    // Only the stores the image is not in are offered.
    await choice.waitFor();
    assert.deepEqual(await choice.getByRole('checkbox').evaluateAll((boxes) => boxes.map((b) => (b as HTMLInputElement).value)), ['fast']);
    await form.getByRole('button', { name: 'Copy' }).click();
    await form.getByRole('alert').getByText('Choose at least one store to copy into.').waitFor();
    await choice.getByRole('checkbox', { name: 'fast — NVMe pool (default)' }).check();
    await shot(page, '17-detail-copy');
    await form.getByRole('button', { name: 'Copy' }).click();
    // The task, followed without a reload, and the image then in both stores.
    const task = page.getByTestId('tasks').locator('tbody tr');
    await task.and(page.locator('[data-status=success]')).getByText('Succeeded').waitFor({ timeout: 30_000 });
    assert.match(await task.textContent() ?? '', /copy-image/);
    await page.getByTestId('stores').locator('dd[data-store=fast]').getByText('NVMe pool').waitFor();
    assert.equal(await page.getByTestId('copy-image').count(), 0, 'nothing left to copy to');
    await shot(page, '18-detail-copied');
    assert.deepEqual(await storesOf(uploadedId), ['cheap', 'fast']);
    assert.deepEqual(await readFile(join(fastDir, uploadedId)), await readFile(upload));
    const r = await admin('GET', `/v2/images/${uploadedId}`);
    assert.equal(r.json.status, 'active');
    assert.equal(r.json.os_glance_importing_to_stores, '');
    assert.equal(r.json.os_glance_failed_import, '');
  });

  await t.test('an import from a URL that fails shows the reason', async () => {
    await page.goto(`${svc.url}/images/new`);
    await page.getByLabel('Download from a URL (web-download)').check();
    await page.getByLabel('Image URL').fill(`${webUrl}/images/missing.qcow2`);
    await page.getByLabel('Name').fill('not-there');
    await page.getByRole('button', { name: 'Create and import' }).click();
    await page.waitForURL(/\/images\/[0-9a-f-]{36}$/);
    const id = imageIdOfPage();
    const task = page.getByTestId('tasks').locator('tbody tr[data-status=failure]');
    await task.getByText('Failed', { exact: true }).waitFor({ timeout: 30_000 });
    // The reason on the page is the task's message from the service.
    const [failed] = (await admin('GET', `/v2/images/${id}/tasks`)).json.tasks;
    assert.equal(failed.status, 'failure');
    assert.match(failed.message, /404/);
    assert.equal((await task.getByTestId('task-message').textContent())?.trim(), failed.message);
    await page.getByTestId('status').getByText('Queued').waitFor();
    await page.getByTestId('failed-import').getByText('The last import into fast failed.').waitFor();
    await shot(page, '16-detail-import-failed');
    const r = await admin('GET', `/v2/images/${id}`);
    assert.equal(r.json.status, 'queued');
    assert.equal(r.json.os_glance_failed_import, 'fast');
  });

  await t.test('a URL the service does not allow is refused before anything is left behind', async () => {
    await page.goto(`${svc.url}/images/new`);
    await page.getByLabel('Download from a URL (web-download)').check();
    // Port 9 is not in the allowed ports: Glance's filtering refuses it with 400.
    await page.getByLabel('Image URL').fill('http://127.0.0.1:9/x.qcow2');
    await page.getByLabel('Name').fill('refused-url');
    await page.getByRole('button', { name: 'Create and import' }).click();
    await page.getByRole('alert').getByText('URI for web-download does not pass filtering: http://127.0.0.1:9/x.qcow2').waitFor();
    assert.match(page.url(), /\/images\/new$/);
    assert.deepEqual((await admin('GET', '/v2/images?name=refused-url')).json.images, []);
  });

  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
});
