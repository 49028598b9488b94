/**
 * `diskhub img snapshot -c/-a/-d` side by side with qemu-img 7.2 on copies of the same qcow2
 * images (v3, v2, compressed clusters, extended L2): the same messages and exit codes, images
 * `qemu-img compare` finds identical after every step, `qemu-img check` clean, the same
 * `info --output=json` but for file names, host space and dates; snapshots each tool made
 * applied by the other and read back with qemu-io; SIGKILL in the middle repaired by
 * `qemu-img check -r all` without losing data.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, runOk, diskhub } from '@diskhub/testkit';
import { both, killedAfter } from './peer.js';

async function infoOf(path: string): Promise<unknown> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout) as Record<string, unknown>;
  delete info.filename;
  delete info['actual-size'];
  for (const s of (info.snapshots ?? []) as Array<Record<string, unknown>>) { delete s['date-sec']; delete s['date-nsec']; }
  return info;
}

async function readsBack(path: string, commands: string[], what: string): Promise<void> {
  const r = await run('qemu-io', [...commands.flatMap((c) => ['-c', c]), path]);
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
  assert.doesNotMatch(r.stdout, /verification failed/, what);
}

test('qcow2 snapshot -c/-a/-d: the same results as qemu-img at every step', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, opts] of [['v3.qcow2', []], ['v2.qcow2', ['-o', 'compat=0.10']], ['ext.qcow2', ['-o', 'extended_l2=on,cluster_size=128k']]] as const) {
    const peer = join(dir, `peer-${name}`), ours = join(dir, `ours-${name}`);
    await qemuImg('create', '-q', '-f', 'qcow2', ...opts, peer, '256M');
    await qemuIo('-c', 'write -P 7 0 3M', '-c', 'write -c -P 8 4M 128k', '-c', 'write -P 9 200M 2M', peer);
    await copyFile(peer, ours);
    const step = async (args: string[], write?: string[]): Promise<void> => {
      const o = await diskhub(['img', 'snapshot', ...args, ours]);
      const p = await run('qemu-img', ['snapshot', ...args, peer]);
      const what = `${name}: snapshot ${args.join(' ')}`;
      assert.equal(o.code, p.code, `${what}: ${o.stderr} / ${p.stderr}`);
      assert.equal(o.stderr, p.stderr.replaceAll(peer, ours), what);
      assert.equal(o.stdout, p.stdout, what);
      if (write) for (const f of [ours, peer]) await qemuIo(...write.flatMap((c) => ['-c', c]), f);
      const cmp = await run('qemu-img', ['compare', peer, ours]);
      assert.equal(cmp.code, 0, `compare after ${what}: ${cmp.stdout}`);
      const check = await run('qemu-img', ['check', ours]);
      assert.equal(check.code, 0, `check after ${what}: ${check.stdout}`);
      assert.deepEqual(await infoOf(ours), await infoOf(peer), `info after ${what}`);
    };
    await step(['-c', 's1'], ['write -P 1 0 1M', 'write -P 2 200M 64k', 'write -z 4M 128k']);
    await step(['-c', 's2'], ['write -P 3 100M 1M']);
    await step(['-c', 's1']); // a second snapshot of the same name, as qemu-img allows
    await step(['-a', 's1']);
    await readsBack(ours, ['read -P 7 0 3M', 'read -P 8 4M 128k', 'read -P 9 200M 2M', 'read -P 0 100M 1M'], `${name} after -a s1`);
    await step(['-a', '2'], ['write -P 4 50M 1M']);
    await readsBack(ours, ['read -P 1 0 1M', 'read -P 2 200M 64k', 'read -P 0 4M 128k', 'read -P 4 50M 1M'], `${name} after -a 2`);
    await step(['-d', 's1']);
    await step(['-d', '2']); // -d looks up names only
    await step(['-a', 'nosuch']);
    await step(['-c', '']);
    await step(['-d', 's2']);
    await step(['-d', 's1']);
    await step(['-d', '']);
    await step(['-l']);
    await readsBack(ours, ['read -P 1 0 1M', 'read -P 4 50M 1M'], `${name} at the end`);
  }
});

test('snapshots interoperate with qemu-img; other formats and bad arguments fail as in qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const img = join(dir, 'x.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  await qemuIo('-c', 'write -P 1 0 1M', img);
  assert.equal((await diskhub(['img', 'snapshot', '-c', 'ours', img])).code, 0);
  await qemuIo('-c', 'write -P 2 0 1M', img);
  await qemuImg('snapshot', '-c', 'theirs', img);
  await qemuIo('-c', 'write -P 3 0 1M', img);
  await qemuImg('snapshot', '-a', 'ours', img);
  await readsBack(img, ['read -P 1 0 1M'], 'qemu-img applied our snapshot');
  assert.equal((await diskhub(['img', 'snapshot', '-a', 'theirs', img])).code, 0);
  await readsBack(img, ['read -P 2 0 1M'], 'we applied qemu-img\'s snapshot');
  const list = await both(['snapshot', '-l', 'x.qcow2'], dir);
  assert.equal(list.ours.stdout.replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE'), list.peer.stdout.replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE'));
  assert.equal((await run('qemu-img', ['check', img])).code, 0);

  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'r.raw'), '1M');
  // qemu-img creates a relative data file in its working directory: the test's own.
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=x.data', 'd.qcow2', '1M'], { cwd: dir });
  for (const args of [['-c', 's', 'r.raw'], ['-a', 's', 'r.raw'], ['-d', 's', 'r.raw'], ['-l', 'r.raw'], ['-c', 's', '-d', 's', 'x.qcow2'], ['x.qcow2', 'r.raw'], ['-c'], ['-x', 'x.qcow2'],
    ['-c', 's', 'missing.qcow2']]) {
    const { ours, peer } = await both(['snapshot', ...args], dir);
    assert.equal(ours.stderr, peer.stderr, args.join(' '));
    assert.equal(ours.code, peer.code, args.join(' '));
  }
  const data = await both(['snapshot', '-c', 's', 'd.qcow2'], dir);
  const ours = await run(process.execPath, [(await import('@diskhub/testkit')).diskhubBin, 'img', 'snapshot', '-c', 's', 'd.qcow2'], { cwd: dir, env: { ...process.env, DISKHUB_ALLOW_EXTERNAL_DATA: '1' } });
  assert.equal(ours.stderr, data.peer.stderr, 'snapshot of an image with an external data file');
  assert.equal(ours.code, data.peer.code);
});

test('qcow2 snapshot killed with SIGKILL at any moment: qemu-img check -r all repairs it, no data lost', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  // 4 KiB clusters and 64 MiB of data: thousands of refcounts to change per snapshot.
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '128M');
  await qemuIo('-c', 'write -P 7 0 64M', base);
  await qemuImg('snapshot', '-c', 'old', base);
  await qemuIo('-c', 'write -P 8 0 1M', base);
  for (const [delay, args] of [[60, ['-c', 'new']], [90, ['-c', 'new']], [120, ['-c', 'new']], [60, ['-d', 'old']], [90, ['-d', 'old']], [120, ['-d', 'old']], [80, ['-a', 'old']], [110, ['-a', 'old']], [140, ['-a', 'old']]] as const) {
    const img = join(dir, `k-${args[0]}-${delay}.qcow2`);
    await copyFile(base, img);
    await killedAfter(delay, ['img', 'snapshot', ...args, img]);
    const repair = await run('qemu-img', ['check', '-r', 'all', img]);
    assert.equal(repair.code, 0, `check -r all after a kill at ${delay} ms of ${args.join(' ')}: ${repair.stdout}${repair.stderr}`);
    assert.equal((await run('qemu-img', ['check', img])).code, 0);
    // Either before or after the operation: the disk is one of the two states, never a mix.
    const r = await run('qemu-io', ['-c', 'read -P 8 0 1M', '-c', 'read -P 7 1M 63M', img]);
    const applied = await run('qemu-io', ['-c', 'read -P 7 0 64M', img]);
    assert.ok(!/verification failed/.test(r.stdout) || (args[0] === '-a' && !/verification failed/.test(applied.stdout)), `data after a kill at ${delay} ms of ${args.join(' ')}`);
  }
});
