/**
 * `diskhub img amend` side by side with qemu-img 7.2 on copies of the same qcow2 images (v3,
 * v2, 4 KiB clusters; with a snapshot, zero and compressed clusters): every step — compat up
 * and down (zero clusters expanded), lazy refcounts, refcount widths 1 to 64 (the refcount
 * structures rewritten), size — gives the same messages and exit code, images `qemu-img
 * compare` finds identical and `check` finds clean, and the same `info --output=json` but for
 * file names and host space; `-o help`, `-p` and option errors print what qemu-img prints.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { both } from './peer.js';

async function infoOf(path: string): Promise<unknown> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout) as Record<string, unknown>;
  delete info.filename;
  delete info['actual-size'];
  return info;
}

test('qcow2 amend: compat, lazy_refcounts, refcount_bits and size as qemu-img amends them', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const all = ['compat=0.10', 'compat=1.1', 'lazy_refcounts=on', 'compat=0.10,lazy_refcounts=on', 'lazy_refcounts=off', 'refcount_bits=8', 'refcount_bits=1',
    'refcount_bits=64', 'refcount_bits=16', 'compat=0.10', 'size=128M', 'compat=1.1,refcount_bits=2', 'size=32M,refcount_bits=16,compat=0.10',
    'compat=v3,lazy_refcounts=on', 'lazy_refcounts=off', 'refcount_bits=3', 'compat=2', 'backing_file=x.qcow2', 'cluster_size=4k', 'foo=bar', 'data_file=x'];
  const steps: Array<[string, string[], string[]]> = [
    ['v3.qcow2', [], all],
    ['c4k.qcow2', ['-o', 'cluster_size=4k'], ['refcount_bits=1', 'refcount_bits=64', 'compat=0.10', 'refcount_bits=16,compat=0.10', 'compat=1.1']],
  ];
  for (const [name, opts, amends] of steps) {
    const peer = join(dir, `peer-${name}`), ours = join(dir, `ours-${name}`);
    await qemuImg('create', '-q', '-f', 'qcow2', ...opts, peer, '64M');
    await qemuIo('-c', 'write -P 1 0 1M', '-c', 'write -z 2M 1M', '-c', 'write -c -P 3 4M 64k', peer);
    await qemuImg('snapshot', '-c', 's', peer);
    await qemuIo('-c', 'write -P 2 0 64k', '-c', 'write -z 8M 64k', peer);
    await copyFile(peer, ours);
    for (const o of amends) {
      const what = `${name}: amend -o ${o}`;
      const p = await run('qemu-img', ['amend', '-o', o, peer]);
      const d = await diskhub(['img', 'amend', '-o', o, ours]);
      assert.equal(d.code, p.code, `${what}: ${d.stderr} / ${p.stderr}`);
      assert.equal(d.stderr, p.stderr, what);
      assert.equal((await run('qemu-img', ['compare', peer, ours])).code, 0, `compare after ${what}`);
      assert.equal((await run('qemu-img', ['check', ours])).code, 0, `check after ${what}`);
      assert.deepEqual(await infoOf(ours), await infoOf(peer), `info after ${what}`);
    }
    // The snapshot survived every rewrite.
    await qemuImg('snapshot', '-a', 's', ours);
    const r = await run('qemu-io', ['-c', 'read -P 1 0 1M', '-c', 'read -P 3 4M 64k', '-c', 'read -P 0 2M 1M', ours]);
    assert.doesNotMatch(r.stdout, /verification failed/, `${name}: snapshot data`);
  }
});

test('amend: -o help, -p, and argument errors as qemu-img prints them', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'a.qcow2'), '1M');
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'r.raw'), '1M');
  for (const args of [['-o', 'help', 'a.qcow2'], ['-f', 'qcow2', '-o', 'help'], ['-f', 'raw', '-o', 'help'], ['-p', '-o', 'compat=1.1', 'a.qcow2'], ['-q', '-p', '-o', 'compat=1.1', 'a.qcow2'],
    ['a.qcow2'], ['-o', '', 'a.qcow2'], ['-o', 'compat=1.1'], ['-f', 'raw', '-o', 'size=2M', 'r.raw'], ['-o', 'lazy_refcounts=maybe', 'a.qcow2'],
    ['-t', 'bogus', '-o', 'compat=1.1', 'a.qcow2'], ['-o', 'size=1x', 'a.qcow2']]) {
    const { ours, peer } = await both(['amend', ...args], dir);
    assert.equal(ours.stdout, peer.stdout, args.join(' '));
    assert.equal(ours.stderr, peer.stderr, args.join(' '));
    assert.equal(ours.code, peer.code, args.join(' '));
  }
});
