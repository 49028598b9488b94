/** `measure` of a qcow2 source with persistent dirty bitmaps reports their size as qemu-img does. */
import test from 'node:test';
import { needs, tempDir, runOk } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('measure counts the persistent dirty bitmaps of a qcow2 source', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', 'bm.qcow2', '3G'], { cwd: dir });
  await runOk('qemu-img', ['bitmap', '--add', 'bm.qcow2', 'first'], { cwd: dir });
  await runOk('qemu-img', ['bitmap', '--add', '-g', '512', 'bm.qcow2', 'a-rather-longer-bitmap-name-to-grow-the-directory'], { cwd: dir });
  await runOk('qemu-img', ['bitmap', '--add', '-g', '2M', '--disable', 'bm.qcow2', 'off'], { cwd: dir });
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', 'one.qcow2', '100M'], { cwd: dir });
  await runOk('qemu-img', ['bitmap', '--add', 'one.qcow2', 'b'], { cwd: dir });
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', 'none.qcow2', '100M'], { cwd: dir });
  for (const args of [['bm.qcow2'], ['--output=json', 'bm.qcow2'], ['-o', 'cluster_size=4k', 'bm.qcow2'], ['-o', 'cluster_size=2M', 'bm.qcow2'],
    ['-o', 'compat=0.10', 'bm.qcow2'], ['one.qcow2'], ['--output=json', 'one.qcow2'], ['none.qcow2']]) {
    await assertSame(['measure', '-O', 'qcow2', ...args], dir);
  }
});
