/**
 * `diskhub img dd` side by side with qemu-img 7.2 dd: the same messages and exit codes for every
 * operand mistake, and outputs (raw, qcow2, vmdk) that compare identical to qemu-img's, with
 * the same allocation (qemu-img dd writes every byte).
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';

test('dd: outputs and messages as qemu-img dd', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '6M');
  await qemuIo('-c', 'write -P 1 0 3M', join(dir, 'base.qcow2'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'in.qcow2'], { cwd: dir });
  await qemuIo('-c', 'write -P 2 1000000 70000', '-c', 'write -z 2M 64k', join(dir, 'in.qcow2'));
  const cases: string[][] = [
    ['if=in.qcow2', 'of=OUT.raw'],
    ['bs=4k', 'count=100', 'skip=3', 'if=in.qcow2', 'of=OUT.raw'],
    ['-f', 'qcow2', '-O', 'qcow2', 'bs=1M', 'skip=2', 'if=in.qcow2', 'of=OUT.qcow2'],
    ['-O', 'vmdk', 'bs=1000', 'count=7', 'if=in.qcow2', 'of=OUT.vmdk'],
    ['bs=1k', 'count=1k', 'if=in.qcow2', 'of=OUT.raw'],
    ['skip=100M', 'if=in.qcow2', 'of=OUT.raw'],
    ['if=in.qcow2'],
    ['bs=0', 'if=a', 'of=b'],
    ['bs=3G', 'if=a', 'of=b'],
    ['count=-1', 'if=a', 'of=b'],
    ['skip=1x', 'if=a', 'of=b'],
    ['foo', 'if=a', 'of=b'],
    ['x=1', 'if=a', 'of=b'],
    ['-O', 'nope', 'if=in.qcow2', 'of=OUT'],
    ['if=missing.qcow2', 'of=OUT'],
    ['if=in.qcow2', 'of=.'],
    ['if=.', 'of=OUT'],
  ];
  for (const [i, c] of cases.entries()) {
    const peerOut = `peer${i}`, ourOut = `ours${i}`;
    const peer = await run('qemu-img', ['dd', ...c.map((a) => a.replace('OUT', peerOut))], { cwd: dir });
    const ours = await diskhub(['img', 'dd', ...c.map((a) => a.replace('OUT', ourOut))], { cwd: dir });
    const what = c.join(' ');
    assert.equal(ours.code, peer.code, `${what}: exit code (${ours.stderr})`);
    assert.equal(ours.stderr.replaceAll(ourOut, 'OUT'), peer.stderr.replaceAll(peerOut, 'OUT'), `${what}: stderr`);
    assert.equal(ours.stdout, peer.stdout, `${what}: stdout`);
    const made = (await readdir(dir)).find((f) => f.startsWith(`${peerOut}.`) || f === peerOut);
    if (!made) continue;
    const mine = join(dir, made.replace(peerOut, ourOut));
    const cmp = await run('qemu-img', ['compare', join(dir, made), mine]);
    assert.equal(cmp.code, 0, `${what}: ${cmp.stdout}${cmp.stderr}`);
    const map = async (f: string) => (await qemuImg('map', '--output=json', f)).replace(/"offset": \d+/g, '');
    assert.equal(await map(mine), await map(join(dir, made)), `${what}: allocation`);
  }
});
