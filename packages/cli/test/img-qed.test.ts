/**
 * `diskhub img` on qed side by side with qemu-img 7.2: create (options, "Formatting" line, the
 * same bytes), info, map, check and measure output, and converts to and from qed that
 * qemu-img check passes and qemu-img compare finds identical to the source.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('qed create: options, output and bytes as qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await assertSame(['create', '-f', 'qed', '-o', 'help'], dir);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'base.raw'), '4M');
  const cases: [string, string[], string][] = [
    ['d', [], '3000001'],
    ['s', ['-o', 'cluster_size=4k,table_size=2'], '1G'],
    ['b', ['-b', 'base.raw', '-F', 'raw', '-o', 'cluster_size=16k'], '4M'],
    ['e', [], '0'],
  ];
  for (const [name, opts, size] of cases) {
    await assertSame(['create', '-f', 'qed', ...opts, `${name}.qed`, size], dir);
    const ours = await readFile(join(dir, `${name}.qed`));
    await run('qemu-img', ['create', '-q', '-f', 'qed', ...opts, `${name}-peer.qed`, size], { cwd: dir });
    assert.ok(ours.equals(await readFile(join(dir, `${name}-peer.qed`))), `${name}: bytes`);
  }
  for (const bad of [['-o', 'cluster_size=3k'], ['-o', 'table_size=3'], ['-o', 'cluster_size=4k,table_size=2']]) {
    await assertSame(['create', '-f', 'qed', ...bad, 'bad.qed', '8G'], dir);
  }
});

test('qed info, map, check and measure print what qemu-img prints', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'base.raw'), '7M');
  await qemuIo('-f', 'raw', '-c', 'write -P 9 0 7M', join(dir, 'base.raw'));
  await run('qemu-img', ['create', '-q', '-f', 'qed', '-b', 'base.raw', '-F', 'raw', 'o.qed', '7M'], { cwd: dir });
  await qemuImg('create', '-q', '-f', 'qed', join(dir, 'p.qed'), '7M');
  for (const f of ['o.qed', 'p.qed']) {
    await qemuIo('-f', 'qed', '-c', 'write -P 0x11 1000 3000000', '-c', 'write -z 4M 128k', '-c', 'write -P 0x22 6291456 7', join(dir, f));
    await assertSame(['info', f], dir);
    await assertSame(['info', '--output=json', f], dir);
    await assertSame(['map', '--output=json', f], dir);
    await assertSame(['map', f], dir);
    await assertSame(['check', f], dir);
    await assertSame(['check', '--output=json', f], dir);
  }
  await assertSame(['measure', '-O', 'qed', '--size', '1G'], dir);
});

test('qed convert: to and from qed, identical by qemu-img compare, clean by qemu-img check', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', src, '9M');
  await qemuIo('-c', 'write -P 0x31 0 1M', '-c', 'write -P 0x32 3000000 2000000', '-c', 'write -z 6M 1M', '-c', 'write -P 0x33 9436160 1024', src);
  for (const opts of [[], ['-o', 'cluster_size=4k,table_size=2'], ['-o', 'cluster_size=2M']]) {
    const out = join(dir, 'out.qed');
    const r = await diskhub(['img', 'convert', '-O', 'qed', ...opts, src, out]);
    assert.equal(r.code, 0, r.stderr);
    const check = await run('qemu-img', ['check', out]);
    assert.equal(check.code, 0, `${opts.join(' ')}: ${check.stdout}${check.stderr}`);
    const cmp = await run('qemu-img', ['compare', src, out]);
    assert.equal(cmp.code, 0, `${opts.join(' ')}: ${cmp.stdout}`);
    const back = join(dir, 'back.raw');
    assert.equal((await diskhub(['img', 'convert', '-O', 'raw', out, back])).code, 0);
    assert.equal((await run('qemu-img', ['compare', src, back])).code, 0);
  }
});
