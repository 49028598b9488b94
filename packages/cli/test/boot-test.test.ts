/**
 * `diskhub img boot-test`: the argument errors, the accelerator choice checked against QEMU
 * itself, an image that does not boot (fails in seconds with the firmware's words, the VM gone
 * by PID, the image unchanged), Ctrl-C in the middle of a boot, and the image service path
 * (an image id downloaded from a service started here). The diskhub process gets its own
 * TMPDIR, so every QEMU it starts can be found by its command line and every temporary file
 * it leaves would show.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { diskhub, diskhubBin, needs, repoRoot, run, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService, token } from '@diskhub/service/test-helpers';
import { chooseAccelerator, PROBE_TIMEOUT_MS, probeBootSector } from '../src/boot-test/accel.js';
import { cloudInitVerdict, growthVerdict, hostnameVerdict, markerVerdict, parseFacts } from '../src/boot-test/guest.js';
import { uploadImage } from './compute-helpers.js';
import { builtImage, EXAMPLE_RECIPE } from './built-image.js';

const QEMU = 'qemu-system-x86_64';

const sha256 = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');

/** PIDs of the QEMU processes whose command line names `dir` (the run's TMPDIR). */
async function qemuProcessesUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith(QEMU) && cmdline.includes(dir)) pids.push(Number(entry));
  }
  return pids;
}

/** A run's own TMPDIR, and the environment that gives it to diskhub. */
async function runDir(t: test.TestContext, env: NodeJS.ProcessEnv = process.env) {
  const work = await tempDir(t, 'diskhub-boot-test-t-');
  const tmp = join(work, 'tmp');
  await mkdir(tmp);
  return { work, tmp, env: { ...env, TMPDIR: tmp } };
}

/** A boot sector that halts with interrupts off: a guest that never gets anywhere, idly. */
async function haltingDisk(path: string): Promise<void> {
  const sector = new Uint8Array(512);
  sector.set([0xfa, 0xf4, 0xeb, 0xfd]); // cli; hlt; jmp $-1
  sector[510] = 0x55;
  sector[511] = 0xaa;
  await writeFile(path, sector);
  await truncate(path, 64 << 20);
}

test('boot-test: argument errors exit 2 with a message', async () => {
  const cases: [string[], RegExp][] = [
    [[], /Expecting one image/],
    [['a.img', 'b.img'], /Invalid parameter 'b.img'/],
    [['--accel', 'hvf', 'a.img'], /invalid --accel 'hvf'/],
    [['--timeout', '0', 'a.img'], /invalid --timeout '0'/],
    [['--timeout', '1.5', 'a.img'], /invalid --timeout/],
    [['--disk-size', '12Q', 'a.img'], /invalid --disk-size '12Q'/],
    [['--memory', 'lots', 'a.img'], /invalid --memory/],
    [['--ssh-user', 'root;rm', 'a.img'], /invalid --ssh-user/],
    [['--bogus', 'a.img'], /unrecognized option '--bogus'/],
    [['/nonexistent/disk.img'], /Could not open '\/nonexistent\/disk.img'/],
  ];
  for (const [args, message] of cases) {
    const r = await diskhub(['img', 'boot-test', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    assert.equal(r.stdout, '');
  }
  const help = await diskhub(['img', 'boot-test', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: diskhub img boot-test/);
});

test('boot-test: the KVM probe decides as QEMU behaves, and a missing /dev/kvm means TCG', needs(QEMU), async (t) => {
  const { work } = await runDir(t);
  const probe = join(work, 'probe.img');
  await writeFile(probe, probeBootSector());
  await truncate(probe, 1 << 20);
  /** QEMU on the probe sector; null when it was still running after `ms` (killed then). */
  const boot = (accel: string[], ms: number) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(QEMU, [...accel, '-machine', 'pc', '-m', '16', '-nodefaults', '-display', 'none', '-serial', 'stdio',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-drive', `file=${probe},format=raw,if=virtio`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString('latin1'); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.once('error', reject);
    child.once('exit', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
  // The probe is sound: under TCG it writes its byte and leaves through isa-debug-exit (status 3).
  const tcg = await boot(['-accel', 'tcg'], 60_000); // generous: TCG on a loaded machine
  assert.equal(tcg.code, 3, tcg.stderr);
  assert.equal(tcg.stdout, 'K');

  const choice = await chooseAccelerator('auto');
  const kvm = await boot(['-accel', 'kvm', '-cpu', 'host'], 4 * PROBE_TIMEOUT_MS);
  if (kvm.code === 3) {
    assert.equal(choice.accel, 'kvm', choice.reason);
  } else {
    // Here (a nested guest): -cpu host aborts on an MSR, or the guest hangs. TCG, with the reason.
    assert.equal(choice.accel, 'tcg', choice.reason);
    assert.match(choice.reason, /the KVM probe failed|is not usable/);
    assert.deepEqual(choice.qemuArgs, ['-accel', 'tcg,thread=multi', '-cpu', 'max']);
  }
  const noKvm = await chooseAccelerator('auto', { kvmDevice: join(work, 'no-kvm') });
  assert.equal(noKvm.accel, 'tcg');
  assert.match(noKvm.reason, /no-kvm is not usable/);
  assert.equal((await chooseAccelerator('kvm')).accel, 'kvm');
  assert.equal((await chooseAccelerator('tcg')).accel, 'tcg');
});

test('boot-test: an unbootable disk fails in seconds with the firmware log, the VM gone and the image unchanged', needs(QEMU, 'ssh-keygen'), async (t) => {
  const { work, tmp, env } = await runDir(t);
  const image = join(work, 'empty.raw');
  await writeFile(image, '');
  await truncate(image, 64 << 20);
  const before = await sha256(image);
  const r = await diskhub(['img', 'boot-test', '--json', '--timeout', '60', image], { env });
  assert.equal(r.code, 1, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.passed, false);
  assert.match(report.reason, /the firmware found nothing to boot: Boot failed: not a bootable disk/);
  assert.match(report.console_excerpt, /Booting from Hard Disk/);
  assert.ok(report.seconds < 60, `failed before the timeout (${report.seconds} s)`);
  assert.deepEqual(report.checks.map((c: { name: string }) => c.name), ['boot', 'cloud-init', 'ssh', 'hostname', 'user-data', 'root-filesystem']);
  assert.ok(report.checks.every((c: { passed: boolean }) => !c.passed));
  assert.equal(report.disk_size, (64 << 20) + 1024 ** 3, 'the default +1G');
  assert.match(report.accel, /^(kvm|tcg)$/);
  assert.deepEqual(await qemuProcessesUnder(tmp), [], 'no QEMU left running');
  assert.deepEqual(await readdir(tmp), [], 'no temporary files left');
  assert.equal(await sha256(image), before, 'the tested image is unchanged');

  // The human report says the same, with the console lines.
  const consoleLog = join(work, 'console.log');
  const h = await diskhub(['img', 'boot-test', '--accel', 'tcg', '--disk-size', '1G', '--console-log', consoleLog, image], { env });
  assert.equal(h.code, 1, h.stderr);
  assert.match(h.stdout, /^boot-test of .*empty\.raw under TCG \(requested \(--accel tcg\)\), disk 1073741824 bytes$/m);
  assert.match(h.stdout, /^FAIL {2}boot {13}not reached/m);
  assert.match(h.stdout, /^FAILED in [\d.]+ s: the firmware found nothing to boot/m);
  assert.match(h.stdout, /^ {2}\| No bootable device\.$/m);
  assert.equal(await readFile(consoleLog, 'utf8'), '', 'the serial console stayed silent');
  assert.match(await readFile(`${consoleLog}.firmware`, 'utf8'), /Boot failed: not a bootable disk/);
  // A disk smaller than the image is refused before anything runs.
  const small = await diskhub(['img', 'boot-test', '--disk-size', '1M', image], { env });
  assert.equal(small.code, 2);
  assert.match(small.stderr, /smaller than the image/);
});

test('boot-test: a boot that never gets anywhere times out; Ctrl-C ends the VM and removes its files', needs(QEMU, 'ssh-keygen'), async (t) => {
  const { work, tmp, env } = await runDir(t);
  const image = join(work, 'halt.raw');
  await haltingDisk(image);
  const before = await sha256(image);

  const timedOut = await diskhub(['img', 'boot-test', '--json', '--accel', 'tcg', '--timeout', '3', image], { env });
  assert.equal(timedOut.code, 1, timedOut.stderr);
  assert.match(JSON.parse(timedOut.stdout).reason, /^timed out after 3 s waiting for the kernel to start$/);
  assert.deepEqual(await qemuProcessesUnder(tmp), []);

  const child = spawn(process.execPath, [diskhubBin, 'img', 'boot-test', '--accel', 'tcg', '--timeout', '600', image], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let pids: number[] = [];
  for (let i = 0; i < 300 && pids.length === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    pids = await qemuProcessesUnder(tmp);
  }
  assert.equal(pids.length, 1, `the VM is running (${stderr})`);
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /interrupted; the VM and its files are removed/);
  assert.throws(() => process.kill(pids[0]!, 0), /ESRCH/, 'the VM process is gone');
  assert.deepEqual(await readdir(tmp), []);
  assert.equal(await sha256(image), before);
});

test('boot-test: an image id is downloaded from the image service (OS_* auth), and an unknown id is an error', needs(QEMU, 'ssh-keygen'), async (t) => {
  const svc = await startTestService(t);
  const { work, tmp, env } = await runDir(t, osEnv(svc.url));
  const image = join(work, 'empty.raw');
  await writeFile(image, '');
  await truncate(image, 64 << 20);
  const id = await uploadImage(svc.url, await token(svc.url), image, 'not-bootable', 'raw');
  const r = await diskhub(['img', 'boot-test', '--json', '--accel', 'tcg', id], { env });
  assert.equal(r.code, 1, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.image, `image ${id}`);
  assert.match(report.reason, /nothing to boot/);
  assert.deepEqual(await readdir(tmp), [], 'the download is removed too');

  const unknown = await diskhub(['img', 'boot-test', '00000000-0000-4000-8000-000000000000'], { env });
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /Image 00000000-0000-4000-8000-000000000000 could not be found/);
  const noAuth = await diskhub(['img', 'boot-test', id], { env: { ...process.env, OS_AUTH_URL: '' } });
  assert.equal(noAuth.code, 2);
  assert.match(noAuth.stderr, /no identity service: set OS_AUTH_URL/);
});

test('boot-test: an image at a URL is downloaded and inspected first (a qcow2 naming a local backing file is refused)', needs(QEMU, 'ssh-keygen', 'qemu-img'), async (t) => {
  const { work, tmp, env } = await runDir(t);
  const empty = join(work, 'empty.raw');
  await writeFile(empty, '');
  await truncate(empty, 64 << 20);
  const hostile = join(work, 'hostile.qcow2');
  await run('qemu-img', ['create', '-f', 'qcow2', '-b', '/etc/passwd', '-F', 'raw', hostile, '64M']);
  const files: Record<string, string> = { '/empty.raw': empty, '/hostile.qcow2': hostile };
  const server = createServer((req, res) => {
    const file = files[req.url ?? ''];
    if (!file) { res.writeHead(404); res.end(); return; }
    readFile(file).then((data) => { res.writeHead(200, { 'Content-Length': String(data.length) }); res.end(data); }, () => { res.writeHead(500); res.end(); });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const r = await diskhub(['img', 'boot-test', '--json', '--accel', 'tcg', `${base}/empty.raw`], { env });
  assert.equal(r.code, 1, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.image, `${base}/empty.raw`);
  assert.match(report.reason, /nothing to boot/);
  const bad = await diskhub(['img', 'boot-test', `${base}/hostile.qcow2`], { env });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /does not pass the safety inspection: .*backing/);
  const missing = await diskhub(['img', 'boot-test', `${base}/missing.raw`], { env });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot download .*: HTTP 404/);
  assert.deepEqual(await readdir(tmp), [], 'downloads are removed');
});

test('boot-test: verdicts on what the guest answered', () => {
  // A real result.json of a Debian image without en_US.UTF-8 generated (cloud-init 22.4.2).
  const localeError = JSON.stringify({ v1: { datasource: 'DataSourceConfigDrive [net,ver=2][source=/dev/sr0]', errors: [
    '(\'locale\', ProcessExecutionError("Unexpected error while running command.\\nCommand: [\'update-locale\', \'--locale-file=/etc/default/locale\', \'LANG=en_US.UTF-8\']\\nExit code: 255"))',
  ] } }, null, 1);
  const failed = cloudInitVerdict(localeError, 'Cloud-init v. 22.4.2 finished');
  assert.equal(failed.passed, false);
  assert.match(failed.detail, /cloud-init reported 1 error\(s\): \('locale', ProcessExecutionError/);
  assert.equal(cloudInitVerdict('{"v1": {"datasource": "DataSourceNone", "errors": []}}', 'x').passed, false);
  assert.equal(cloudInitVerdict('{"v1": {"datasource": "DataSourceConfigDrive", "errors": [], "recoverable_errors": {"WARNING": ["w"]}}}', 'x').passed, true);
  assert.equal(cloudInitVerdict('{"v1": {"datasource": "DataSourceConfigDrive", "errors": [], "recoverable_errors": {"ERROR": ["e"]}}}', 'x').passed, false);
  assert.match(cloudInitVerdict('cat: /run/cloud-init/result.json: No such file or directory', 'x').detail, /no readable cloud-init result.json/);

  const G = 1024 ** 3;
  const facts = (fs: number, part: number, disk: number) => parseFacts(`root=/dev/vda1\nfstype=ext4\nfssize=${fs}\nrootsize=${part}\nrootstart=2048\ndisk=vda\ndisksize=${disk}\n`);
  assert.equal(growthVerdict(facts(2.9 * G, 3 * G - (1 << 20), 3 * G), 3 * G, 2 * G).passed, true);
  assert.match(growthVerdict(facts(1.9 * G, 2 * G - (1 << 20), 3 * G), 3 * G, 2 * G).detail, /the root partition was not grown/);
  assert.match(growthVerdict(facts(1.9 * G, 3 * G - (1 << 20), 3 * G), 3 * G, 2 * G).detail, /the root filesystem was not grown to its partition/);
  assert.match(growthVerdict(facts(2.9 * G, 3 * G - (1 << 20), 4 * G), 3 * G, 2 * G).detail, /the guest's disk is 4294967296 bytes, not the 3221225472 given/);
  assert.match(growthVerdict(parseFacts('root=/dev/vda1\n'), 3 * G, 2 * G).detail, /cannot read the sizes/);

  assert.equal(hostnameVerdict({ hostname: 'boot-test-1234.novalocal' }, 'boot-test-1234').passed, true);
  assert.equal(hostnameVerdict({ hostname: 'localhost' }, 'boot-test-1234').passed, false);
  assert.equal(markerVerdict({ marker: 'abc' }, 'abc').passed, true);
  assert.match(markerVerdict({ marker: 'cat: /var/tmp/diskhub-boot-test.marker: No such file or directory' }, 'abc').detail, /did not run, or failed/);
});

const e2eNeeds = needs(QEMU, 'ssh', 'ssh-keygen', 'debootstrap');

test('boot-test: the example Debian recipe\'s image passes every check; the image is unchanged', e2eNeeds, async (t) => {
  const image = await builtImage('debian-12-minimal', await readFile(EXAMPLE_RECIPE, 'utf8'));
  const { tmp, env } = await runDir(t);
  const before = await sha256(image);
  const r = await diskhub(['img', 'boot-test', '--json', image], { env, timeoutMs: 15 * 60_000 });
  const report = JSON.parse(r.stdout || '{}');
  assert.equal(r.code, 0, `${r.stderr}\n${JSON.stringify(report, null, 2)}`);
  assert.equal(report.passed, true);
  assert.deepEqual(report.checks.map((c: { name: string; passed: boolean }) => [c.name, c.passed]),
    [['boot', true], ['cloud-init', true], ['ssh', true], ['hostname', true], ['user-data', true], ['root-filesystem', true]]);
  assert.match(report.checks[1].detail, /Datasource DataSourceConfigDrive/);
  assert.match(report.checks[2].detail, /logged in as debian/);
  assert.match(report.accel_reason, /KVM probe|requested|not usable/);
  t.diagnostic(`boot-test passed under ${report.accel} in ${report.seconds} s (${report.boot_attempts} boot(s))`);
  assert.deepEqual(await qemuProcessesUnder(tmp), []);
  assert.deepEqual(await readdir(tmp), []);
  assert.equal(await sha256(image), before, 'the tested image is unchanged');
});

// The broken recipe (cloud-init disabled) boot-tested from the image service: in ci-chain.test.ts,
// after the same build, sysprep, lint and upload as the good one.
