/** `diskhub img probe`: the safety inspector from the command line (files and stdin). */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempDir, qemuImg, needs, diskhub } from '@diskhub/testkit';

test('img probe: json report, exit 0 for a safe image, 2 for an unsafe one', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'vhdx', join(dir, 'a.vhdx'), '10M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'a.vhdx', '-F', 'vhdx', join(dir, 'b.qcow2'));
  const safe = await diskhub(['img', 'probe', '--output=json', join(dir, 'a.vhdx')]);
  assert.equal(safe.code, 0, safe.stderr);
  const r = JSON.parse(safe.stdout);
  assert.equal(r.format, 'vhdx');
  assert.equal(r['virtual-size'], 10 << 20);
  assert.equal(r.safe, true);
  const unsafe = await diskhub(['img', 'probe', join(dir, 'b.qcow2')]);
  assert.equal(unsafe.code, 2);
  assert.match(unsafe.stdout, /^format: qcow2$/m);
  assert.match(unsafe.stdout, /backing-file: .*"a\.vhdx"/);
});

test('img probe: reads a stream from stdin and checks a declared format', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '1M');
  const input = await readFile(join(dir, 'a.qcow2'));
  const asRaw = await diskhub(['img', 'probe', '-f', 'raw', '--output=json', '-'], { input });
  assert.equal(asRaw.code, 2);
  assert.deepEqual(JSON.parse(asRaw.stdout).issues.map((i: { code: string }) => i.code), ['format-mismatch']);
  const missing = await diskhub(['img', 'probe', join(dir, 'nope')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Could not inspect/);
});
