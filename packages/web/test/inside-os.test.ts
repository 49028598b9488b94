/**
 * The image detail page's operating system panel and cloud-image checklist, in headless
 * Chromium against a real service: an image whose root is mkfs.ext4 -d of a small tree
 * (this machine's os-release and dpkg status, an ssh unit link, a persistent-net rule) shows
 * its distribution, host name and package count (dpkg-query on the tree), and every checklist
 * item with the result and evidence the API gives, in English and in Chinese.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gptExt4Disk, makeSmallOsTree, needs, runOk, tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, api, startTestService, token } from '@diskhub/service/test-helpers';
import { CHROMIUM, SHOTS, launch, logIn, shot } from './browser.js';

test('dashboard: the operating system and its cloud-image checklist on the image page', needs('qemu-img', 'sgdisk', 'mkfs.ext4', 'dpkg-query', CHROMIUM), async (t) => {
  await mkdir(SHOTS, { recursive: true });
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  await makeSmallOsTree(root, 'web-lint-host');
  const { qcow2 } = await gptExt4Disk(dir, root, 'disk');
  const svc = await startTestService(t);
  const admin = api(svc.url, await token(svc.url));
  const created = await admin('POST', '/v2/images', { body: { name: 'debian-lint', disk_format: 'qcow2', container_format: 'bare' } });
  assert.equal(created.status, 201);
  const id = created.json.id as string;
  assert.equal((await admin('PUT', `/v2/images/${id}/file`, { raw: await readFile(qcow2) })).status, 204);
  const inside = (await admin('GET', `/v2/images/${id}/x-diskhub/inside?buckets=256`)).json;
  const os = inside.operating_systems[0];
  const installed = (await runOk('dpkg-query', [`--admindir=${join(root, 'var/lib/dpkg')}`, '-W', '-f', '${db:Status-Status}\\n'])).split('\n').filter((s) => s === 'installed').length;
  assert.equal(os.application_count, installed);

  const browser = await launch();
  t.after(() => browser.close());
  const page = await (await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 1600 } })).newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${svc.url}/images/${id}`);
  await page.waitForURL(/\/login/);
  await logIn(page, 'admin', ADMIN_PASSWORD, 'admin');
  await page.waitForURL(new RegExp(`/images/${id}$`));

  await page.getByTestId('lint').waitFor();
  assert.equal(await page.getByTestId('os-hostname').textContent(), 'web-lint-host');
  assert.equal(await page.getByTestId('os-product').textContent(), os.product_name);
  assert.equal(await page.getByTestId('os-version').textContent(), `${os.distro} ${os.major_version}.${os.minor_version}`);
  assert.equal(await page.getByTestId('os-arch').textContent(), 'x86_64');
  assert.equal(await page.getByTestId('os-packages').textContent(), `${installed} installed (deb)`);
  assert.equal(await page.getByTestId('os-cloud-init').textContent(), 'not installed');
  // Every item, in the API's order, with its result and evidence.
  const rows = await page.locator('[data-testid=lint] tbody tr').evaluateAll((trs) => trs.map((tr) => ({
    id: tr.getAttribute('data-check'), result: tr.getAttribute('data-result'), title: tr.children[1]!.textContent,
    evidence: Array.from(tr.querySelectorAll('ul.evidence li'), (li) => li.textContent),
  })));
  assert.deepEqual(rows, os.lint.checks.map((c: { id: string; result: string; title: string; evidence: string[] }) => ({ id: c.id, result: c.result, title: c.title, evidence: c.evidence })));
  const row = (cid: string) => page.locator(`[data-testid=lint] tr[data-check=${cid}]`);
  assert.equal(await row('ssh-server-enabled').getAttribute('data-result'), 'pass');
  assert.equal(await row('ssh-server-enabled').locator('td').first().textContent(), 'Pass');
  assert.equal(await row('no-hardcoded-mac').locator('td').first().textContent(), 'Fail');
  assert.match(await row('no-hardcoded-mac').textContent() ?? '', /\/etc\/udev\/rules\.d\/70-persistent-net\.rules:2: SUBSYSTEM=="net".*ATTR\{address\}=="fa:16:3e:aa:bb:cc"/);
  assert.equal(await row('no-zeroconf').locator('td').first().textContent(), 'N/A');
  const { pass, fail, na } = os.lint.summary;
  assert.equal(await page.getByTestId('lint-summary').textContent(), `${pass} passed, ${fail} failed, ${na} not applicable`);
  await shot(page, '20-image-os-lint');

  // In Chinese.
  const zh = await (await browser.newContext({ locale: 'zh-CN', viewport: { width: 1280, height: 1600 } })).newPage();
  await zh.goto(`${svc.url}/images/${id}`);
  await zh.waitForURL(/\/login/);
  await zh.getByLabel('用户名').fill('admin');
  await zh.getByLabel('密码').fill(ADMIN_PASSWORD);
  await zh.getByLabel('项目', { exact: true }).fill('admin');
  await zh.getByRole('button', { name: '登录' }).click();
  await zh.getByTestId('lint').waitFor();
  assert.equal(await zh.getByTestId('lint-summary').textContent(), `通过 ${pass} 项，失败 ${fail} 项，不适用 ${na} 项`);
  assert.equal(await zh.locator('[data-testid=lint] tr[data-check=no-hardcoded-mac] td').first().textContent(), '失败');
  await shot(zh, '21-image-os-lint-zh');

  // An image with no operating system says so.
  const blank = await admin('POST', '/v2/images', { body: { name: 'blank', disk_format: 'raw', container_format: 'bare' } });
  assert.equal((await admin('PUT', `/v2/images/${blank.json.id}/file`, { raw: Buffer.alloc(1 << 20) })).status, 204);
  await page.goto(`${svc.url}/images/${blank.json.id}`);
  await page.getByTestId('os-none').waitFor();
  assert.equal(await page.getByTestId('os-none').textContent(), 'No operating system was found on the image.');
  assert.deepEqual(pageErrors, []);
});
