/**
 * `diskhub img bench` side by side with qemu-img 7.2 bench: the same lines (the run time
 * aside), messages and exit codes, and after write runs (patterns, steps, flushes with and
 * without draining, a run that fails part-way) images that compare identical to qemu-img's.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, run, diskhub } from '@diskhub/testkit';

const CASES = [
  '-c 1000 IMG',
  '-c 2000 -d 8 -s 64k -S 1M -o 3M IMG',
  '-w -c 3000 -d 4 --pattern=0x2a -s 4k -S 12k --flush-interval=16 IMG',
  '-w -c 500 -d 3 --pattern=011 -s 1000 -S 70000 --flush-interval=7 --no-drain -o 60M IMG',
  '-w -c 300 -d 4 --pattern=7 -s 512 --flush-interval=16 --no-drain -o 100M IMG',
  '-w -c 100 -d 32 --flush-interval=16 IMG',
  '-c 100 --flush-interval=16 IMG',
  '-c 0 -q -t none -i threads -n IMG',
  '-c x IMG', '-c -1 IMG', '-d 0x10 -c 010 -q IMG', '--pattern=256 IMG', '-t bogus IMG', '-i bogus IMG',
  '-s 3G IMG', '-S 1x IMG', '-o -5 IMG', 'IMG IMG', '-c 5 missing.qcow2',
];

test('bench: output, messages and written data as qemu-img bench', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'peer.qcow2'), '64M');
  await copyFile(join(dir, 'peer.qcow2'), join(dir, 'ours.qcow2'));
  const timeless = (s: string) => s.replace(/completed in \d+\.\d{3} seconds/, 'completed in T seconds');
  for (const c of CASES) {
    const peer = await run('qemu-img', ['bench', ...c.replaceAll('IMG', 'peer.qcow2').split(' ')], { cwd: dir });
    const ours = await diskhub(['img', 'bench', ...c.replaceAll('IMG', 'ours.qcow2').split(' ')], { cwd: dir });
    assert.equal(timeless(ours.stdout), timeless(peer.stdout), `${c}: stdout`);
    assert.equal(ours.stderr.replaceAll('ours.qcow2', 'IMG'), peer.stderr.replaceAll('peer.qcow2', 'IMG'), `${c}: stderr`);
    assert.equal(ours.code, peer.code, `${c}: exit code`);
    if (c.startsWith('-c 1000')) assert.match(ours.stdout, /Run completed in \d+\.\d{3} seconds\.\n$/);
    const cmp = await run('qemu-img', ['compare', join(dir, 'peer.qcow2'), join(dir, 'ours.qcow2')]);
    assert.equal(cmp.code, 0, `${c}: ${cmp.stdout}`);
  }
  assert.equal((await run('qemu-img', ['check', join(dir, 'ours.qcow2')])).code, 0);
});
