/**
 * `diskhub img` on parallels side by side with qemu-img 7.2: info, map and check output of
 * images qemu-img creates and qemu-io writes, and a convert to qcow2 that qemu-img compare finds
 * identical to the source.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('parallels info, map, check and convert as qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', join(dir, 'p.img'), '3M');
  await qemuIo('-c', 'write -P 0x11 1000 300000', '-c', 'write -P 0x22 2M 4k', join(dir, 'p.img'));
  const leaked = await readFile(join(dir, 'p.img'));
  await writeFile(join(dir, 'leak.img'), Buffer.concat([leaked, Buffer.alloc(70000)]));
  for (const f of ['p.img', 'leak.img']) {
    await assertSame(['info', '--output=json', f], dir);
    await assertSame(['info', f], dir);
    await assertSame(['map', '--output=json', f], dir);
    await assertSame(['map', f], dir);
    await assertSame(['check', f], dir);
    await assertSame(['check', '--output=json', f], dir);
  }
  const r = await diskhub(['img', 'convert', '-O', 'qcow2', 'p.img', 'p.qcow2'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await run('qemu-img', ['compare', 'p.img', 'p.qcow2'], { cwd: dir })).code, 0);
});
