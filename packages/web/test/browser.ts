/**
 * What the dashboard's browser tests share: Debian's Chromium driven by playwright-core (no
 * browser download), screenshots for people to look at, each audited for accessibility with
 * axe-core, and logging in through the login form.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { repoRoot } from '@diskhub/testkit';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const SHOTS = join(repoRoot, 'test-output', 'screenshots');

export async function launch(): Promise<Browser> {
  // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
/** Screens audited for accessibility (axe-core's WCAG 2 A/AA rules), by screenshot name. */
export const audited: string[] = [];

/**
 * A screenshot of the screen for people to look at, and an accessibility audit of it: labels,
 * roles, names, contrast, landmarks. Any serious or critical finding fails the test.
 */
export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  // (evaluated through the DevTools protocol: the dashboard's Content-Security-Policy refuses
  // inline scripts, so a <script> tag with axe in it would be blocked, as it should be)
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(await readFile(AXE, 'utf8'));
  const violations = await page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } })
      .axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa'] } });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id} (${v.help}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ')}`);
  });
  assert.deepEqual(violations, [], `accessibility of ${name}`);
  audited.push(name);
}

export async function logIn(page: Page, user: string, password: string, project: string): Promise<void> {
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByLabel('Project', { exact: true }).fill(project);
  // The keyboard submits the form, as a person would.
  await page.getByLabel('Project', { exact: true }).press('Enter');
  await page.waitForURL((u) => !u.pathname.startsWith('/login'));
}

