/**
 * `diskhub img resize` beyond plain qcow2 (img-resize.test.ts), side by side with qemu-img 7.2:
 * raw, qed, luks and encrypted qcow2 resized as qemu-img resizes them (luks byte-identical), the
 * formats qemu-img cannot resize refused with its message, argument errors, and SIGKILL in the
 * middle of a qcow2 resize repaired by `qemu-img check -r all` without losing data.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { both, killedAfter, sideBySide, twoCopies } from './peer.js';

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

test('resize: luks containers byte-identical to qemu-img\'s, encrypted qcow2 the same disk', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const secret = ['--object', 'secret,id=s,data=pw'];
  await qemuImg('create', '-q', ...secret, '-f', 'luks', '-o', 'key-secret=s,iter-time=10', join(dir, 'l.luks'), '10M');
  await qemuIo(...secret, '--image-opts', '-c', 'write -P 5 0 1M', `driver=luks,file.filename=${join(dir, 'l.luks')},key-secret=s`);
  await twoCopies(dir, 'l.luks');
  const opts = (name: string) => `driver=luks,file.filename=${join(dir, name)},key-secret=s`;
  for (const args of [['+1M'], ['--preallocation=full', '+1M'], ['--preallocation=metadata', '+1M'], ['--shrink', '5M'], ['4M'], ['--preallocation=falloc', '20M']]) {
    const size = args[args.length - 1]!;
    const flags = args.slice(0, -1);
    const o = await diskhub(['img', 'resize', ...secret, '--image-opts', ...flags, opts('l-ours.luks'), size]);
    const p = await run('qemu-img', ['resize', ...secret, '--image-opts', ...flags, opts('l-peer.luks'), size]);
    assert.equal(o.code, p.code, `luks resize ${args.join(' ')}: ${o.stderr} / ${p.stderr}`);
    assert.equal(o.stderr, p.stderr.replaceAll('l-peer', 'l-ours'), `luks resize ${args.join(' ')}`);
    assert.ok((await readFile(join(dir, 'l-ours.luks'))).equals(await readFile(join(dir, 'l-peer.luks'))), `luks resize ${args.join(' ')}: same bytes`);
  }
  await qemuImg('create', '-q', ...secret, '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10', join(dir, 'e.qcow2'), '64M');
  const q = (name: string) => `driver=qcow2,file.filename=${join(dir, name)},encrypt.key-secret=s`;
  await qemuIo(...secret, '--image-opts', '-c', 'write -P 5 0 1M', q('e.qcow2'));
  await twoCopies(dir, 'e.qcow2');
  for (const size of ['+64M', '100M']) {
    const args = size === '100M' ? ['--shrink'] : [];
    assert.equal((await diskhub(['img', 'resize', ...secret, '--image-opts', ...args, q('e-ours.qcow2'), size])).code, 0);
    await qemuImg('resize', ...secret, '--image-opts', ...args, q('e-peer.qcow2'), size);
    const cmp = await run('qemu-img', ['compare', ...secret, '--image-opts', q('e-ours.qcow2'), q('e-peer.qcow2')]);
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  }
  const plain = await both(['resize', 'e-ours.qcow2', '+1M'], dir);
  assert.equal(plain.ours.stderr, plain.peer.stderr, 'resize of an encrypted image without its secret');
  assert.equal(plain.ours.code, plain.peer.code);
});
