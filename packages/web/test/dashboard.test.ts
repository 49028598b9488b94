/**
 * The dashboard end to end, in a real headless Chromium (Debian's, driven by playwright-core)
 * against a real service: log in, upload a qcow2 made by qemu-img and watch the progress bar,
 * see it active with its virtual size and allocation picture, edit it, share it with another
 * project and accept it there, be refused deleting it while protected, delete it, and read
 * the list in Chinese. Screenshots of the main screens go to test-output/screenshots/.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { needs, qemuImg, qemuIo, tempDir } from '@diskhub/testkit';
import { CHROMIUM, SHOTS, audited, launch, logIn, shot } from './browser.js';
import { ADMIN_PASSWORD, addProjectUser, api, startTestService, token } from '@diskhub/service/test-helpers';

async function logOut(page: Page): Promise<void> {
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/\/login/);
}

test('dashboard: log in, upload, inspect, edit, share, protect, delete, Chinese', needs('qemu-img', 'qemu-io', CHROMIUM), async (t) => {
  await mkdir(SHOTS, { recursive: true });
  const svc = await startTestService(t);
  const adminTok = await token(svc.url);
  const admin = api(svc.url, adminTok);
  const partner = await addProjectUser(svc.url, adminTok, 'partner', 'bob', 'bob-secret');
  // The admin user is a member of partner too, to switch projects in the header.
  const adminUser = (await admin('GET', '/identity/v3/users?name=admin')).json.users[0].id;
  const memberRole = (await admin('GET', '/identity/v3/roles?name=member')).json.roles[0].id;
  assert.equal((await admin('PUT', `/identity/v3/projects/${partner.projectId}/users/${adminUser}/roles/${memberRole}`)).status, 204);
  // Images made through the API, so the list has something to search, sort and page through.
  // (the newest first: they head the default list, newest first)
  for (let i = 0; i < 57; i++) {
    const r = await admin('POST', '/v2/images', { body: { name: `bulk-${String(i).padStart(3, '0')}`, disk_format: 'qcow2', container_format: 'bare', visibility: 'private' } });
    assert.equal(r.status, 201);
  }
  for (const name of ['alpha-server', 'beta-desktop', 'alpha-minimal']) {
    const r = await admin('POST', '/v2/images', { body: { name, disk_format: 'raw', container_format: 'bare' } });
    assert.equal(r.status, 201);
  }

  // The upload: a sparse 256 MiB qcow2 with data written by qemu-io at two places.
  const dir = await tempDir(t);
  const qcow2 = join(dir, 'cirros-e2e.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', qcow2, '256M');
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0xab 0 12M', '-c', 'write -P 0x5c 200M 4M', qcow2);
  const info = JSON.parse(await qemuImg('info', '--output=json', qcow2)) as { 'virtual-size': number };
  const fileSize = (await stat(qcow2)).size;

  const browser = await launch();
  t.after(() => browser.close());
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));

  await t.test('log in', async () => {
    await page.goto(`${svc.url}/`);
    await page.waitForURL(/\/login/);
    await shot(page, '01-login');
    // A wrong password is refused in words, not JSON.
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill('wrong');
    await page.getByLabel('Project', { exact: true }).fill('admin');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'The user name, password or project is not right.' }).waitFor();
    await logIn(page, 'admin', ADMIN_PASSWORD, 'admin');
    await page.waitForURL(/\/images$/);
    await page.getByRole('link', { name: 'alpha-server' }).waitFor();
    await shot(page, '02-image-list');
  });

  await t.test('search and sort the list', async () => {
    await page.getByLabel('Search by name').fill('alpha');
    await page.waitForURL(/q=alpha/);
    await page.getByRole('link', { name: 'beta-desktop' }).waitFor({ state: 'detached' });
    const names = await page.locator('table.images tbody tr td:first-child a').allTextContents();
    assert.deepEqual(names.sort(), ['alpha-minimal', 'alpha-server']);
    await page.getByRole('button', { name: 'Sort by Name' }).click();
    await page.waitForURL(/sort_key=name/);
    await page.waitForFunction(() => document.querySelector('table.images tbody tr td a')?.textContent === 'alpha-minimal');
    await page.getByRole('button', { name: 'Clear filters' }).click();
    await page.getByRole('link', { name: 'beta-desktop' }).waitFor();
  });

  let imageId = '';
  await t.test('page through the list', async () => {
    await page.goto(`${svc.url}/images`);
    await page.getByLabel('Search by name').fill('bulk-');
    await page.waitForURL(/q=bulk-/);
    await page.getByRole('button', { name: 'Sort by Name' }).click();
    await page.waitForURL(/sort_key=name/);
    await page.getByLabel('Per page').selectOption('25');
    const names = () => page.locator('table.images tbody tr td:first-child a').allTextContents();
    await page.getByRole('link', { name: 'bulk-000' }).waitFor();
    const seen: string[] = [...await names()];
    for (const last of ['bulk-049', 'bulk-056']) {
      await page.getByRole('button', { name: 'Next page' }).click();
      await page.getByRole('link', { name: last }).waitFor();
      seen.push(...await names());
    }
    assert.ok(await page.getByRole('button', { name: 'Next page' }).isDisabled(), 'the last page has no next');
    assert.deepEqual(seen, Array.from({ length: 57 }, (_, i) => `bulk-${String(i).padStart(3, '0')}`));
    await page.getByRole('button', { name: 'Previous page' }).click();
    await page.getByRole('link', { name: 'bulk-025' }).waitFor();
    await page.getByText('Page 2').waitFor();
    await page.getByRole('button', { name: 'Clear filters' }).click();
    await page.goto(`${svc.url}/images`);
  });

  await t.test('create an image and watch the upload progress to the end', async () => {
    await page.getByRole('link', { name: 'Create image' }).first().click();
    await page.waitForURL(/\/images\/new/);
    await page.getByLabel('Image file').setInputFiles(qcow2);
    // The browser recognised the file: qcow2, its virtual size, formats pre-filled.
    await page.getByTestId('detection').getByText('This file is qcow2').waitFor();
    assert.equal(await page.getByLabel('Disk format').inputValue(), 'qcow2');
    assert.equal(await page.getByLabel('Name').inputValue(), 'cirros-e2e');
    // Choosing a format that contradicts the file warns before anything is sent.
    await page.getByLabel('Disk format').selectOption('raw');
    await page.getByTestId('format-warning').waitFor();
    await page.getByLabel('Disk format').selectOption('qcow2');
    await page.getByTestId('format-warning').waitFor({ state: 'detached' });
    // A known property from the metadata definitions: its allowed values are offered.
    await page.getByRole('button', { name: 'Add property' }).click();
    await page.getByLabel('Key').fill('hw_disk_bus');
    await page.getByLabel('Value').selectOption('virtio');
    await shot(page, '03-create');

    // Slow the browser's uploads down so the bar is seen moving, and record every value it shows.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 4 * 1024 * 1024 });
    await page.evaluate(() => {
      const seen: number[] = [];
      (window as unknown as { progressSeen: number[] }).progressSeen = seen;
      new MutationObserver(() => {
        const p = document.querySelector('progress');
        if (p && seen[seen.length - 1] !== p.value) seen.push(p.value);
      }).observe(document.body, { subtree: true, childList: true, attributes: true });
    });
    await page.getByRole('button', { name: 'Create and upload' }).click();
    await page.getByTestId('upload').waitFor();
    await shot(page, '04-uploading');
    await page.waitForURL(/\/images\/[0-9a-f-]{36}$/, { timeout: 120_000 });
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const seen = await page.evaluate(() => (window as unknown as { progressSeen: number[] }).progressSeen);
    assert.ok(seen.length >= 2, `the progress bar moved (values seen: ${seen.join(', ')})`);
    assert.equal(seen[seen.length - 1], fileSize, 'the progress bar reached the end');
    assert.ok(seen.every((v, i) => i === 0 || v >= seen[i - 1]!), 'progress never went backwards');
    imageId = new URL(page.url()).pathname.split('/').pop()!;

    // Active, with qemu-img's virtual size and a picture that shows data.
    await page.getByTestId('status').getByText('Active').waitFor();
    const shown = await page.getByTestId('virtual-size').locator('[data-bytes]').getAttribute('data-bytes');
    assert.equal(Number(shown), info['virtual-size']);
    await page.getByTestId('allocation').waitFor();
    assert.ok(await page.locator('[data-testid=allocation] rect.alloc-data').count() > 0, 'allocation picture shows data');
    assert.match(await page.getByTestId('inspection').textContent() ?? '', /Safe/);
    await shot(page, '05-image-detail');

    const r = await admin('GET', `/v2/images/${imageId}`);
    assert.equal(r.json.status, 'active');
    assert.equal(r.json.virtual_size, info['virtual-size']);
    assert.equal(r.json.size, fileSize);
    assert.equal(r.json.disk_format, 'qcow2');
    assert.equal(r.json.hw_disk_bus, 'virtio');
  });

  await t.test('an upload can be cancelled, leaving nothing behind', async () => {
    await page.goto(`${svc.url}/images/new`);
    await page.getByLabel('Image file').setInputFiles(qcow2);
    await page.getByLabel('Name').fill('cancel-me');
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 512 * 1024 });
    await page.getByRole('button', { name: 'Create and upload' }).click();
    await page.waitForFunction(() => (document.querySelector('progress')?.value ?? 0) > 0);
    await page.getByRole('button', { name: 'Cancel upload' }).click();
    await page.getByRole('status').getByText('Upload cancelled; the unfinished image was removed.').waitFor();
    await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const left = await admin('GET', '/v2/images?name=cancel-me');
    assert.deepEqual(left.json.images, []);
    await page.goto(`${svc.url}/images/${imageId}`);
  });

  await t.test('edit a property and protect the image', async () => {
    await page.getByRole('link', { name: 'Edit' }).click();
    await page.waitForURL(/\/edit$/);
    // A reserved key is refused before it reaches the service.
    await page.getByRole('button', { name: 'Add property' }).click();
    const keys = page.getByLabel('Key');
    await keys.last().fill('checksum');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.getByRole('alert').getByText('“checksum” is a reserved name').waitFor();
    await keys.last().fill('os_distro');
    await page.getByLabel('Value').last().fill('cirros');
    await page.getByLabel('Protected').check();
    await shot(page, '06-edit');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.waitForURL(new RegExp(`/images/${imageId}$`));
    await page.getByRole('status').getByText('Changes saved.').waitFor();
    const r = await admin('GET', `/v2/images/${imageId}`);
    assert.equal(r.json.os_distro, 'cirros');
    assert.equal(r.json.protected, true);
    assert.equal(r.json.hw_disk_bus, 'virtio');
  });

  await t.test('deactivate, reactivate and download', async () => {
    await page.getByRole('button', { name: 'Deactivate' }).click();
    await page.getByTestId('status').getByText('Deactivated').waitFor();
    assert.equal((await admin('GET', `/v2/images/${imageId}`)).json.status, 'deactivated');
    await page.getByRole('button', { name: 'Reactivate' }).click();
    await page.getByTestId('status').getByText('Active').waitFor();
    const downloaded = page.waitForEvent('download');
    await page.getByRole('button', { name: 'Download' }).click();
    const file = await (await downloaded).path();
    assert.ok(file);
    assert.deepEqual(await readFile(file), await readFile(qcow2), 'the download is the uploaded file');
  });

  await t.test('share with another project', async () => {
    await page.getByRole('button', { name: 'Make it shared' }).click();
    await page.getByLabel('Project ID or name').fill('partner');
    await page.getByRole('button', { name: 'Add project' }).click();
    await page.locator(`tr[data-member="${partner.projectId}"]`).getByText('Pending').waitFor();
    const r = await admin('GET', `/v2/images/${imageId}/members`);
    assert.deepEqual(r.json.members.map((m: { member_id: string; status: string }) => [m.member_id, m.status]), [[partner.projectId, 'pending']]);
  });

  await t.test('the member project accepts it', async () => {
    await logOut(page);
    await logIn(page, 'bob', 'bob-secret', 'partner');
    // Pending shares are not in the default list; "Shared with me" shows them.
    await page.getByRole('link', { name: 'cirros-e2e' }).waitFor({ state: 'detached' });
    await page.getByLabel('Visibility').selectOption('shared-with-me');
    await page.getByRole('link', { name: 'cirros-e2e' }).click();
    await page.getByTestId('member-status').getByText('Pending').waitFor();
    await page.getByRole('button', { name: 'Accept' }).click();
    await page.getByTestId('member-status').getByText('Accepted').waitFor();
    await shot(page, '07-member-accepted');
    const r = await admin('GET', `/v2/images/${imageId}/members/${partner.projectId}`);
    assert.equal(r.json.status, 'accepted');
    // Accepted: now in the member's default list.
    await page.goto(`${svc.url}/images`);
    await page.getByRole('link', { name: 'cirros-e2e' }).waitFor();
  });

  await t.test('an expired session returns to the same page after logging in', async () => {
    await logOut(page);
    await logIn(page, 'admin', ADMIN_PASSWORD, 'admin');
    await page.goto(`${svc.url}/images/${imageId}`);
    await page.getByTestId('status').waitFor();
    // Revoke the dashboard's token behind its back, as an expiry would.
    const tok = await page.evaluate(() => JSON.parse(sessionStorage.getItem('diskhub.session')!).token as string);
    const del = await fetch(`${svc.url}/identity/v3/auth/tokens`, { method: 'DELETE', headers: { 'X-Auth-Token': adminTok, 'X-Subject-Token': tok } });
    assert.equal(del.status, 204);
    await page.reload();
    await page.waitForURL(/\/login\?expired=1/);
    await page.getByText('Your session has expired').waitFor();
    await logIn(page, 'admin', ADMIN_PASSWORD, 'admin');
    await page.waitForURL(new RegExp(`/images/${imageId}$`));
  });

  await t.test('a protected image is not deleted; unprotected, it is', async () => {
    await page.getByTestId('status').getByText('Active').waitFor();
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('alert').getByText('This image is protected and cannot be deleted').waitFor();
    await shot(page, '08-protected-refusal');
    assert.equal((await admin('GET', `/v2/images/${imageId}`)).status, 200);

    await page.getByRole('link', { name: 'Edit' }).click();
    await page.getByLabel('Protected').uncheck();
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.waitForURL(new RegExp(`/images/${imageId}$`));
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(/\/images$/);
    await page.getByRole('status').getByText('The image “cirros-e2e” was deleted.').waitFor();
    assert.equal((await admin('GET', `/v2/images/${imageId}`)).status, 404);
  });

  await t.test('the list in Chinese', async () => {
    await page.getByLabel('Language').selectOption('zh-CN');
    await page.getByRole('columnheader', { name: '名称' }).waitFor();
    await page.getByRole('heading', { name: '镜像', exact: true }).waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN');
    assert.ok(await page.getByText('排队中').count() > 0, 'statuses are translated');
    await shot(page, '09-list-zh');
    // The choice sticks across a reload.
    await page.reload();
    await page.getByRole('columnheader', { name: '名称' }).waitFor();
    await page.getByLabel('语言').selectOption('en');
  });

  await t.test('switch project', async () => {
    await page.getByLabel('Project', { exact: true }).selectOption({ label: 'partner' });
    // The partner project is not a member of the admin project's images: its list is empty.
    await page.getByRole('link', { name: 'alpha-server' }).waitFor({ state: 'detached' });
    const project = await page.evaluate(() => JSON.parse(sessionStorage.getItem('diskhub.session')!).project.name as string);
    assert.equal(project, 'partner');
    await page.getByLabel('Project', { exact: true }).selectOption({ label: 'admin' });
    await page.getByRole('link', { name: 'alpha-server' }).waitFor();
  });

  await t.test('on a phone', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${svc.url}/images`);
    await page.getByRole('link', { name: 'alpha-server' }).waitFor();
    // The table turns into one card per image: no horizontal scrolling.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px`);
    await shot(page, '10-phone-list');
  });

  await t.test('a Chinese browser gets the dashboard in Chinese', async () => {
    const zh = await browser.newContext({ locale: 'zh-CN' });
    const p = await zh.newPage();
    await p.goto(`${svc.url}/`);
    await p.getByRole('heading', { name: '登录' }).waitFor();
    await p.getByLabel('用户名').fill('admin');
    await p.getByLabel('密码').fill(ADMIN_PASSWORD);
    await p.getByLabel('项目', { exact: true }).fill('admin');
    await p.getByRole('button', { name: '登录' }).click();
    await p.getByRole('columnheader', { name: '名称' }).waitFor();
    await zh.close();
  });

  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  t.diagnostic(`screenshots (each audited for accessibility): ${audited.join(', ')} in ${SHOTS}`);
});
