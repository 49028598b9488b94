/** `diskhub img measure -O qcow2` prints what qemu-img prints, for sizes, raw and qcow2 sources, and options. */
import test from 'node:test';
import { join } from 'node:path';
import { needs, tempDir, qemuIo, run } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('qcow2 measure agrees with qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await run('qemu-img', ['create', '-q', '-f', 'raw', 'src.raw', '64M'], { cwd: dir });
  await qemuIo('-f', 'raw', '-c', 'write -P 1 1M 5M', '-c', 'write -P 2 40M 1M', join(dir, 'src.raw'));
  await run('qemu-img', ['convert', '-O', 'qcow2', 'src.raw', 'src.qcow2'], { cwd: dir });
  // Data that starts and ends inside clusters.
  await run('qemu-img', ['create', '-q', '-f', 'raw', 'unaligned.raw', '8M'], { cwd: dir });
  await qemuIo('-f', 'raw', '-c', 'write -P 3 5000 3000', '-c', 'write -P 4 70000 100000', '-c', 'write -P 5 3000000 5', join(dir, 'unaligned.raw'));
  for (const args of [['--size', '1G'], ['--size', '1000'], ['-o', 'cluster_size=4k', '--size', '10G'], ['-o', 'preallocation=full', '--size', '1G'],
    ['src.raw'], ['src.qcow2'], ['--output=json', 'src.qcow2'], ['-o', 'compat=0.10', 'src.raw'], ['-o', 'extended_l2=on', '--size', '5G'],
    ['-o', 'foo=1', '--size', '1G'], ['-o', 'help'], ['-o', 'cluster_size=2M,refcount_bits=64', '--size', '3T'],
    ['-o', 'refcount_bits=1,cluster_size=512', '--size', '100M'], ['unaligned.raw'], ['-o', 'cluster_size=4k', 'unaligned.raw']]) {
    await assertSame(['measure', '-O', 'qcow2', ...args], dir);
  }
});
