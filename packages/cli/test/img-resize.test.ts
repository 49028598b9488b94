/**
 * `diskhub img resize` side by side with qemu-img 7.2 on copies of the same images: the same
 * messages and exit codes; results that `qemu-img compare` finds identical, that pass
 * `qemu-img check`, and whose `qemu-img info --output=json` matches qemu-img's own result
 * (all but the file name and the host space used); a kill -9 in the middle leaves an image
 * `qemu-img check -r all` repairs with the data written before intact (img-resize-formats.test.ts
 * has raw, qed, luks, the refused formats, argument errors and the SIGKILL runs).
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run } from '@diskhub/testkit';
import { sideBySide, twoCopies } from './peer.js';

test('qcow2 resize: grow (L1 and refcount growth), shrink with --shrink, the same refusals as qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const variants: Array<[string, string[]]> = [
    ['v3.qcow2', []],
    ['v2.qcow2', ['-o', 'compat=0.10']],
    ['ext.qcow2', ['-o', 'extended_l2=on']],
    ['r1.qcow2', ['-o', 'refcount_bits=1,cluster_size=4k']],
  ];
  for (const [name, opts] of variants) {
    await qemuImg('create', '-q', '-f', 'qcow2', ...opts, join(dir, name), '1G');
    await qemuIo('-c', 'write -P 7 0 3M', '-c', 'write -c -P 8 4M 64k', '-c', 'write -P 9 1000M 2M', '-c', 'write -z 1020M 1M', join(dir, name));
    await twoCopies(dir, name);
    // qemu-img itself takes minutes to shrink images of 512-byte clusters: that one only grows.
    const steps = name === 'r1.qcow2' ? [['+1G'], ['-q', '+10G'], ['1G'], ['--shrink', '--', '-1000']]
      : [['+1G'], ['1G'], ['--shrink', '1000M'], ['--shrink', '1003M'], ['-q', name === 'v3.qcow2' ? '+1T' : '+10G'], ['--shrink', '1G'], ['--', '-512']];
    for (const args of steps) {
      await sideBySide(dir, name, ['resize', 'IMG', ...args], `${name} resize ${args.join(' ')}`);
    }
    await run('qemu-io', ['-c', 'read -P 7 0 3M', '-c', 'read -P 8 4M 64k', join(dir, name.replace('.qcow2', '-ours.qcow2'))]).then((r) => {
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /Pattern verification failed/);
    });
  }
  // Preallocated growth: every new cluster mapped (and for falloc/full, backed by the file).
  for (const mode of ['metadata', 'falloc', 'full']) {
    const name = `pre-${mode}.qcow2`;
    await qemuImg('create', '-q', '-f', 'qcow2', join(dir, name), '64M');
    await qemuIo('-c', 'write -P 5 0 1M', join(dir, name));
    await twoCopies(dir, name);
    await sideBySide(dir, name, ['resize', `--preallocation=${mode}`, 'IMG', '200M'], `${name} grow`);
    const map = JSON.parse((await run('qemu-img', ['map', '--output=json', join(dir, name.replace('.qcow2', '-ours.qcow2'))])).stdout) as Array<{ start: number; data: boolean }>;
    assert.ok(map.filter((e) => e.start >= 64 << 20).every((e) => e.data), `${mode}: the new range is allocated`);
    if (mode !== 'metadata') assert.ok((await stat(join(dir, name.replace('.qcow2', '-ours.qcow2')))).blocks * 512 >= 136 << 20, `${mode}: host space reserved`);
  }
  // Snapshots: v3 images resize (each snapshot keeps its own size), v2 ones are refused.
  for (const compat of ['1.1', '0.10']) {
    const name = `snap-${compat}.qcow2`;
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, join(dir, name), '100M');
    await qemuIo('-c', 'write -P 3 0 1M', '-c', 'write -P 4 90M 1M', join(dir, name));
    await qemuImg('snapshot', '-c', 'before', join(dir, name));
    await twoCopies(dir, name);
    await sideBySide(dir, name, ['resize', 'IMG', '+100M'], `${name} grow`);
    await sideBySide(dir, name, ['resize', '--shrink', 'IMG', '50M'], `${name} shrink`);
  }
  const snapped = join(dir, 'snap-1.1-ours.qcow2');
  const r = await run('qemu-io', ['-c', 'read -P 3 0 1M', snapped]);
  assert.doesNotMatch(r.stdout, /verification failed/);
  // The snapshot still has its data past the new end (qemu-img reads it back).
  await qemuImg('snapshot', '-a', 'before', snapped);
  const tail = await run('qemu-io', ['-c', 'read -P 3 0 1M', '-c', 'read -P 4 90M 1M', snapped]);
  assert.equal((JSON.parse((await run('qemu-img', ['info', '--output=json', snapped])).stdout) as { 'virtual-size': number })['virtual-size'], 100 << 20);
  assert.doesNotMatch(tail.stdout, /verification failed/);
});

