/**
 * `diskhub img convert -O qcow2` (plain, compressed, with options, onto a backing file, into
 * an existing image): the results pass `qemu-img check` and `qemu-img compare`.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain } from '@diskhub/disk';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';

test('qcow2 convert: raw→qcow2 (plain, -c, -o, -B, -n) passes qemu-img check and compare', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const opt = { cwd: dir };
  await run('qemu-img', ['create', '-q', '-f', 'raw', 'src.raw', '24M'], opt);
  await qemuIo('-f', 'raw', '-c', 'write -P 0x61 0 3M', '-c', 'write -P 0 3M 1M', '-c', 'write -P 0x62 6M 100k', '-c', 'write -P 0x63 20M 4M', join(dir, 'src.raw'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '24M'], opt);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0x61 0 2M', '-c', 'write -P 0x55 3M 1M', join(dir, 'base.qcow2'));
  const probe = await openImage(join(dir, 'base.qcow2'), { writable: true });
  assert.equal(typeof probe.writeCompressed, 'function', 'qcow2 images take compressed writes');
  await closeChain(probe);
  const variants: string[][] = [[], ['-o', 'cluster_size=4k'], ['-o', 'compat=0.10'], ['-o', 'extended_l2=on'], ['-p', '-m', '4', '-W'], ['-S', '0'],
    ['-B', 'base.qcow2', '-F', 'qcow2']];
  variants.push(['-c'], ['-c', '-o', 'cluster_size=4k'], ['-c', '-W', '-m', '16'], ['-c', '-o', 'compat=0.10'],
    ['-c', '-o', 'compression_type=zstd'], ['-c', '-o', 'compression_type=zstd,cluster_size=2M']);
  for (const [i, v] of variants.entries()) {
    const out = `out${i}.qcow2`;
    const r = await diskhub(['img', 'convert', '-O', 'qcow2', ...v, 'src.raw', out], opt);
    assert.equal(r.code, 0, `${v.join(' ')}: ${r.stderr}`);
    const check = await run('qemu-img', ['check', join(dir, out)]);
    assert.equal(check.code, 0, `qemu-img check after ${v.join(' ')}: ${check.stdout}${check.stderr}`);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', join(dir, 'src.raw'), join(dir, out)]);
    assert.equal(cmp.code, 0, `qemu-img compare after ${v.join(' ')}: ${cmp.stdout}`);
    if (v.includes('-c')) {
      const map = JSON.parse((await qemuImg('map', '--output=json', join(dir, out))));
      assert.ok(map.some((e: { data: boolean; offset?: number }) => e.data && e.offset === undefined), 'compressed clusters present');
    }
  }
  // -n into an existing qcow2 full of other data.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', 'existing.qcow2', '24M'], opt);
  await qemuIo('-f', 'qcow2', '-c', 'write -P 0xee 0 24M', join(dir, 'existing.qcow2'));
  const n = await diskhub(['img', 'convert', '-n', '-O', 'qcow2', 'src.raw', 'existing.qcow2'], opt);
  assert.equal(n.code, 0, n.stderr);
  assert.equal((await run('qemu-img', ['compare', '-f', 'raw', join(dir, 'src.raw'), join(dir, 'existing.qcow2')])).code, 0);
  assert.equal((await run('qemu-img', ['check', join(dir, 'existing.qcow2')])).code, 0);
  assert.deepEqual((await readdir(dir)).filter((f) => f.includes('diskhub-tmp')), []);
});
