/**
 * `diskhub img resize` side by side with qemu-img 7.2 on copies of the same images: the same
 * messages and exit codes; results that `qemu-img compare` finds identical, that pass
 * `qemu-img check`, and whose `qemu-img info --output=json` matches qemu-img's own result
 * (all but the file name and the host space used); a kill -9 in the middle leaves an image
 * `qemu-img check -r all` repairs with the data written before intact.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { both, killedAfter } from './peer.js';

/** qemu-img info --output=json without the keys that name the file or measure the host file. */
async function infoOf(path: string): Promise<Record<string, unknown>> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout) as Record<string, unknown>;
  delete info.filename;
  delete info['actual-size'];
  return info;
}

/**
 * Run `args` (with the image name at IMG) on two copies of `image`: qemu-img on one, diskhub on
 * the other; the same output and exit code, identical results, both clean.
 */
async function sideBySide(dir: string, image: string, args: string[], what: string, compareInfo = true): Promise<void> {
  const peer = image.replace(/(\.\w+)$/, '-peer$1');
  const ours = image.replace(/(\.\w+)$/, '-ours$1');
  const o2 = await diskhub(['img', ...args.map((a) => a === 'IMG' ? ours : a)], { cwd: dir });
  const p2 = await run('qemu-img', args.map((a) => a === 'IMG' ? peer : a), { cwd: dir });
  assert.equal(o2.code, p2.code, `exit of ${what}: ${o2.stderr} / ${p2.stderr}`);
  assert.equal(o2.stdout, p2.stdout, `stdout of ${what}`);
  assert.equal(o2.stderr.replaceAll(ours, peer), p2.stderr, `stderr of ${what}`);
  const fmt = image.endsWith('.qcow2') ? 'qcow2' : image.endsWith('.qed') ? 'qed' : 'raw';
  const cmp = await run('qemu-img', ['compare', '-f', fmt, '-F', fmt, join(dir, peer), join(dir, ours)]);
  assert.equal(cmp.code, 0, `compare after ${what}: ${cmp.stdout}${cmp.stderr}`);
  if (fmt !== 'raw') {
    const check = await run('qemu-img', ['check', join(dir, ours)]);
    assert.equal(check.code, 0, `check after ${what}: ${check.stdout}${check.stderr}`);
  }
  if (compareInfo) assert.deepEqual(await infoOf(join(dir, ours)), await infoOf(join(dir, peer)), `info after ${what}`);
}

async function twoCopies(dir: string, image: string): Promise<void> {
  await copyFile(join(dir, image), join(dir, image.replace(/(\.\w+)$/, '-peer$1')));
  await copyFile(join(dir, image), join(dir, image.replace(/(\.\w+)$/, '-ours$1')));
}

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

test('resize: raw and qed as qemu-img resizes them; other formats refused with its message; argument errors', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'disk.raw'), '10M');
  await qemuIo('-f', 'raw', '-c', 'write -P 1 0 10M', join(dir, 'disk.raw'));
  await twoCopies(dir, 'disk.raw');
  for (const args of [['-f', 'raw', 'IMG', '+10M'], ['-f', 'raw', '--preallocation=falloc', 'IMG', '30M'], ['-f', 'raw', '--preallocation=full', 'IMG', '+1M'],
    ['-f', 'raw', '--preallocation=metadata', 'IMG', '+1M'], ['-f', 'raw', 'IMG', '5M'], ['-f', 'raw', '--shrink', 'IMG', '5M'], ['IMG', '+1M']]) {
    await sideBySide(dir, 'disk.raw', ['resize', ...args], `raw resize ${args.join(' ')}`);
  }
  assert.equal((await stat(join(dir, 'disk-ours.raw'))).size, 6 << 20);

  await qemuImg('create', '-q', '-f', 'qed', join(dir, 'disk.qed'), '10M');
  await qemuIo('-c', 'write -P 1 0 1M', join(dir, 'disk.qed'));
  await twoCopies(dir, 'disk.qed');
  for (const args of [['IMG', '+100M'], ['IMG', '+1000'], ['--shrink', 'IMG', '5M'], ['--preallocation=full', 'IMG', '1G'], ['IMG', '+1T']]) {
    await sideBySide(dir, 'disk.qed', ['resize', ...args], `qed resize ${args.join(' ')}`);
  }

  for (const fmt of ['vdi', 'vpc', 'vhdx', 'vmdk']) {
    await qemuImg('create', '-q', '-f', fmt, join(dir, `disk.${fmt}`), '10M');
    for (const args of [['+1M'], ['--shrink', '1M'], ['1M']]) {
      const { ours, peer } = await both(['resize', '-f', fmt, `disk.${fmt}`, ...args], dir);
      assert.equal(ours.stderr, peer.stderr, `${fmt} resize ${args.join(' ')}`);
      assert.equal(ours.code, peer.code);
    }
  }

  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, 'args.qcow2'), '1M');
  for (const args of [['resize'], ['resize', 'args.qcow2'], ['resize', 'args.qcow2', '1x'], ['resize', 'args.qcow2', '0'], ['resize', 'args.qcow2', '--', '-2M'],
    ['resize', 'args.qcow2', '1000'], ['resize', '--preallocation=foo', 'args.qcow2', '2M'], ['resize', '--preallocation=full', 'args.qcow2', '1M'],
    ['resize', 'args.qcow2', '9E'], ['resize', 'args.qcow2', 'args.qcow2', '2M'], ['resize', 'missing.qcow2', '2M'], ['resize', '--bogus', 'args.qcow2', '2M']]) {
    const { ours, peer } = await both(args, dir);
    assert.equal(ours.stderr, peer.stderr, args.join(' '));
    assert.equal(ours.stdout, peer.stdout, args.join(' '));
    assert.equal(ours.code, peer.code, args.join(' '));
  }
});

test('qcow2 resize killed with SIGKILL at any moment: qemu-img check -r all repairs it, no committed data lost', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  // 512-byte clusters: growing to 64G rewrites a 1 MiB L1 table and adds refcount blocks.
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', base, '256M');
  await qemuIo('-c', 'write -P 7 0 4M', '-c', 'write -P 9 250M 1M', base);
  for (const [delay, args] of [[40, ['+64G']], [70, ['+64G']], [100, ['+64G']], [130, ['+64G']], [70, ['--shrink', '251M']], [100, ['--shrink', '251M']], [130, ['--shrink', '1M']]] as const) {
    const img = join(dir, `k${delay}.qcow2`);
    await copyFile(base, img);
    await killedAfter(delay, ['img', 'resize', ...args, img]);
    const repair = await run('qemu-img', ['check', '-r', 'all', img]);
    assert.ok(repair.code === 0, `check -r all after a kill at ${delay} ms: ${repair.stdout}${repair.stderr}`);
    const check = await run('qemu-img', ['check', img]);
    assert.equal(check.code, 0, check.stdout);
    const keep = args[0] === '--shrink' && args[1] === '1M' ? ['-c', 'read -P 7 0 1M'] : ['-c', 'read -P 7 0 4M', ...(args[1] === '251M' || args[0] === '+64G' ? ['-c', 'read -P 9 250M 1M'] : [])];
    const read = await run('qemu-io', [...keep, img]);
    assert.equal(read.code, 0);
    assert.doesNotMatch(read.stdout, /verification failed/, `data after a kill at ${delay} ms`);
  }
  const finished = await diskhub(['img', 'resize', join(dir, 'base.qcow2'), '+64G']);
  assert.equal(finished.code, 0, finished.stderr);
});
