/**
 * `diskhub img create -f qcow` and `-f parallels` side by side with qemu-img 7.2: the same
 * "Formatting" lines, `-o help`, messages and exit codes, and byte-identical files.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, run, diskhub } from '@diskhub/testkit';

const SECRET = ['--object', 'secret,id=s0,data=abc'];
const CASES: string[][] = [
  ['-f', 'qcow', 'OUT', '10000001'],
  ['-f', 'qcow', '-b', 'base.qcow2', '-F', 'qcow2', 'OUT'],
  ['-f', 'qcow', '-u', '-b', 'nothere', '-F', 'raw', 'OUT', '1M'],
  ['-f', 'qcow', 'OUT', '0'],
  ['-f', 'qcow', '-o', 'encrypt.format=luks', 'OUT', '1M'],
  ['-f', 'qcow', ...SECRET, '-o', 'encryption=on,encrypt.key-secret=s0', 'OUT', '1M'],
  ['-f', 'qcow', ...SECRET, '-o', 'encrypt.format=aes,encrypt.key-secret=s0,backing_file=base.qcow2,backing_fmt=qcow2', 'OUT', '1M'],
  ['-f', 'qcow', '-o', 'encryption=on,encrypt.format=aes', 'OUT', '1M'],
  ['-f', 'qcow', '-o', 'encryption=on', 'OUT', '1M'],
  ['-f', 'qcow', '-o', 'cluster_size=4k', 'OUT', '1M'],
  ['-f', 'qcow', 'OUT', '3T'],
  ['-f', 'qcow', '-o', 'help'],
  ['-f', 'parallels', '-o', 'help'],
  ['-f', 'parallels', 'OUT', '10000001'],
  ['-f', 'parallels', '-o', 'cluster_size=64k', 'OUT', '1G'],
  ['-f', 'parallels', '-o', 'cluster_size=1000', 'OUT', '1M'],
  ['-f', 'parallels', '-o', 'cluster_size=0', 'OUT', '1M'],
  ['-f', 'parallels', 'OUT', '5P'],
  ['-f', 'parallels', 'OUT', '0'],
  ['-f', 'parallels', '-o', 'cluster_size=3G', 'OUT', '1M'],
  ['-f', 'parallels', '-b', 'base.qcow2', '-F', 'qcow2', 'OUT', '1M'],
];

test('create -f qcow and -f parallels: output and bytes as qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '10M');
  for (const [i, c] of CASES.entries()) {
    const what = c.join(' ');
    const peerOut = `peer${i}`, ourOut = `ours${i}`;
    const peer = await run('qemu-img', ['create', ...c.map((a) => a.replace('OUT', peerOut))], { cwd: dir });
    const ours = await diskhub(['img', 'create', ...c.map((a) => a.replace('OUT', ourOut))], { cwd: dir });
    assert.equal(ours.stdout.replaceAll(ourOut, 'OUT'), peer.stdout.replaceAll(peerOut, 'OUT'), `${what}: stdout`);
    assert.equal(ours.stderr.replaceAll(ourOut, 'OUT'), peer.stderr.replaceAll(peerOut, 'OUT'), `${what}: stderr`);
    assert.equal(ours.code, peer.code, `${what}: exit code`);
    const files = await readdir(dir);
    assert.equal(files.includes(ourOut), files.includes(peerOut), `${what}: file made or not`);
    if (!files.includes(peerOut)) continue;
    assert.ok((await readFile(join(dir, ourOut))).equals(await readFile(join(dir, peerOut))), `${what}: bytes`);
  }
});

test('images made by create -f qcow / parallels are read and written by qemu', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const fmt of ['qcow', 'parallels']) {
    const f = join(dir, `d.${fmt}`);
    const r = await diskhub(['img', 'create', '-q', '-f', fmt, f, '8M']);
    assert.equal(r.code, 0, r.stderr);
    await copyFile(f, `${f}.orig`);
    const io = await run('qemu-io', ['-f', fmt, '-c', 'write -P 7 1M 1M', '-c', 'read -P 7 1M 1M', '-c', 'read -P 0 0 1M', f]);
    assert.equal(io.code, 0, io.stdout + io.stderr);
    assert.doesNotMatch(io.stdout, /Pattern verification failed/);
    assert.equal((await diskhub(['img', 'info', `${f}.orig`])).stdout.replace(/\.orig/g, '').replace(/disk size: .*\n/, ''),
      (await run('qemu-img', ['info', f])).stdout.replace(/disk size: .*\n/, ''));
  }
});
