/**
 * The image pipeline CI runs (issue 21, "In CI"): the example recipe built by `diskhub build`
 * (cached per recipe and build code, as boot-test.test.ts caches it: built-image.ts), cleaned by
 * `diskhub img sysprep`, checked by `diskhub img lint`, uploaded with the real `openstack`
 * client to a `diskhub serve` started here, and boot-tested from the service by its image id.
 * The same chain with a broken recipe (cloud-init switched off, the NIC pinned by its MAC address)
 * fails lint on both and boot-test on cloud-init, each with that reason.
 *
 * Needs root (build, sysprep), debootstrap and Debian's mirror the first time, qemu-system-x86_64,
 * ssh and the openstack client. Time: the two builds (about 5 min each, cold) are cached;
 * with a warm cache each chain takes 2-5 min, nearly all of it the TCG boot.
 */
import test from 'node:test';
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhub, diskhubBin, hasTool, runOk, tempDir } from '@diskhub/testkit';
import { ADMIN_PASSWORD, osEnv } from '@diskhub/service/test-helpers';
import { builtImage, brokenRecipe, EXAMPLE_RECIPE } from './built-image.js';

const TOOLS = ['debootstrap', 'qemu-system-x86_64', 'qemu-img', 'ssh', 'ssh-keygen', 'openstack', 'losetup'];
const missing = TOOLS.filter((t) => !hasTool(t));
const notRoot = process.getuid?.() !== 0;
const skip = (missing.length > 0 || notRoot) && process.env.CI !== 'true' ? { skip: `needs root and ${missing.join(', ') || 'the tools'}` } : {};

interface Check { id: string; result: string; evidence: string[] }

/** `diskhub serve` on a port of its choosing (port 0): its URL is the one it prints when listening. */
async function serve(t: test.TestContext, dataDir: string): Promise<string> {
  const child = spawn(process.execPath, [diskhubBin, 'serve'], {
    env: { ...process.env, DISKHUB_DATA_DIR: dataDir, DISKHUB_PORT: '0', DISKHUB_BIND: '127.0.0.1', DISKHUB_ADMIN_PASSWORD: ADMIN_PASSWORD, DISKHUB_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  t.after(() => { child.kill('SIGTERM'); return exited; });
  let output = '';
  return await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`diskhub serve did not start in 120 s: ${output}`)), 120_000);
    const onData = (b: Buffer) => {
      output += b.toString();
      const url = /diskhub image service on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1];
      if (url) { clearTimeout(timer); resolve(url); }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`diskhub serve exited ${code}: ${output}`)); });
  });
}

/** Build (cached) -> copy -> sysprep -> lint -> upload -> boot-test, timing each step. */
async function chain(t: test.TestContext, name: string, recipe: string) {
  const steps: string[] = [];
  let last = Date.now();
  const step = (what: string) => { const now = Date.now(); steps.push(`${what} ${((now - last) / 1000).toFixed(1)} s`); last = now; };
  const built = await builtImage(name, recipe);
  step('build (cached when warm)');
  const work = await tempDir(t, 'diskhub-ci-chain-');
  const image = join(work, `${name}.qcow2`);
  await copyFile(built, image);

  const sysprep = await diskhub(['img', 'sysprep', image], { timeoutMs: 10 * 60_000 });
  assert.equal(sysprep.code, 0, sysprep.stderr);
  await runOk('qemu-img', ['check', image]);
  step('sysprep');

  const lint = await diskhub(['img', 'lint', '--output=json', image]);
  const checks = JSON.parse(lint.stdout).operatingsystems[0].checks as Check[];
  step('lint');

  const dataDir = join(work, 'service');
  await mkdir(dataDir);
  const env = osEnv(await serve(t, dataDir));
  const created = JSON.parse(await runOk('openstack', ['image', 'create', '-f', 'json', '--disk-format', 'qcow2', '--container-format', 'bare',
    '--property', 'hw_disk_bus=virtio', '--property', 'os_distro=debian', '--file', image, name], { env, timeoutMs: 5 * 60_000 }));
  // The client prints the image as created; the upload follows it.
  const shown = JSON.parse(await runOk('openstack', ['image', 'show', '-f', 'json', created.id], { env }));
  assert.equal(shown.status, 'active');
  assert.equal(shown.size, (await stat(image)).size);
  step('upload');

  const tmp = join(work, 'tmp');
  await mkdir(tmp);
  const boot = await diskhub(['img', 'boot-test', '--json', created.id], { env: { ...env, TMPDIR: tmp }, timeoutMs: 15 * 60_000 });
  const report = JSON.parse(boot.stdout || '{}');
  step('boot-test');
  assert.deepEqual(await readdir(tmp), [], 'boot-test removed its download and files');
  t.diagnostic(`${name}: ${steps.join(', ')}`);
  return { lint: { code: lint.code, checks }, boot: { code: boot.code, stderr: boot.stderr, report }, id: created.id as string };
}

test('CI chain: the example recipe, built, sysprepped, linted, uploaded and boot-tested from the image service, passes end to end', { ...skip, timeout: 40 * 60_000 }, async (t) => {
  const r = await chain(t, 'debian-12-minimal', await readFile(EXAMPLE_RECIPE, 'utf8'));
  assert.equal(r.lint.code, 0, JSON.stringify(r.lint.checks.filter((c) => c.result === 'fail')));
  assert.deepEqual(r.lint.checks.filter((c) => c.result === 'fail'), []);
  assert.equal(r.lint.checks.find((c) => c.id === 'machine-id-empty')?.result, 'pass');
  assert.equal(r.boot.code, 0, `${r.boot.stderr}\n${JSON.stringify(r.boot.report, null, 2)}`);
  assert.equal(r.boot.report.image, `image ${r.id}`);
  assert.deepEqual(r.boot.report.checks.map((c: { name: string; passed: boolean }) => [c.name, c.passed]),
    [['boot', true], ['cloud-init', true], ['ssh', true], ['hostname', true], ['user-data', true], ['root-filesystem', true]]);
});

test('CI chain: the recipe with cloud-init disabled and a MAC-pinned NIC fails lint and boot-test, each with the reason', { ...skip, timeout: 40 * 60_000 }, async (t) => {
  const r = await chain(t, 'debian-12-broken', brokenRecipe(await readFile(EXAMPLE_RECIPE, 'utf8')));
  assert.equal(r.lint.code, 1);
  assert.deepEqual(r.lint.checks.filter((c) => c.result === 'fail').map((c) => [c.id, c.evidence]), [
    ['cloud-init-enabled', ['/etc/cloud/cloud-init.disabled exists']],
    ['no-hardcoded-mac', ['/etc/netplan/50-pinned-nic.yaml:6: macaddress: "52:54:00:12:34:56"']],
  ]);
  assert.equal(r.boot.code, 1, r.boot.stderr);
  assert.equal(r.boot.report.image, `image ${r.id}`);
  assert.match(r.boot.report.reason, /^cloud-init did not run: the login prompt \('\S+ login:'\) came with no cloud-init output before it/);
  assert.match(r.boot.report.console_excerpt, /login:/);
  assert.equal(r.boot.report.checks[0].passed, true, 'it booted');
  assert.ok(r.boot.report.checks.slice(1).every((c: { passed: boolean }) => !c.passed));
});
