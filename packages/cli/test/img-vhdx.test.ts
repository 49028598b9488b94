/**
 * `diskhub img` on vhdx side by side with qemu-img 7.2: create (options, "Formatting" line,
 * errors, the same layout apart from random GUIDs), info and check output, the read-only
 * refusal and `check -r all` replay of an image with a pending log, map (qemu-img 7.2 has no
 * block status for vhdx and reports everything as data; ours comes from the BAT), and
 * converts to and from vhdx that qemu-img check passes and qemu-img compare finds identical.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32c } from '@diskhub/disk';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub, diskhubBin, vhdxCrafting } from '@diskhub/testkit';
import { assertSame } from './peer.js';

const { makeDirtyVhdx } = vhdxCrafting(crc32c);

test('vhdx create: options, messages and layout as qemu-img', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await assertSame(['create', '-f', 'vhdx', '-o', 'help'], dir);
  for (const bad of ['block_size=3M', 'log_size=0', 'subformat=sparse', 'block_size=1G']) {
    await assertSame(['create', '-f', 'vhdx', '-o', bad, 'bad.vhdx', '10M'], dir);
  }
  await assertSame(['create', '-f', 'vhdx', 'big.vhdx', '65T'], dir);
  for (const [name, opts, size] of [
    ['d', [], '300M'], ['f', ['-o', 'subformat=fixed,block_size=1M'], '10M'], ['n', ['-o', 'block_state_zero=off,log_size=3M'], '3000001'],
    ['g', ['-o', 'block_size=2M'], '5G'],
  ] as const) {
    await assertSame(['create', '-f', 'vhdx', ...opts, `${name}.vhdx`, size], dir);
    await run('qemu-img', ['create', '-q', '-f', 'vhdx', ...opts, `${name}-peer.vhdx`, size], { cwd: dir });
    const ours = await readFile(join(dir, `${name}.vhdx`));
    const peer = await readFile(join(dir, `${name}-peer.vhdx`));
    assert.equal(ours.length, peer.length, `${name}: file length`);
    // Random in both: the creator string (0x8..), the headers' sequence number and GUIDs
    // (+8..+64 and the checksum at +4), the page 83 data (16 bytes after the first 32 bytes
    // of metadata items, and so the region tables' and headers' checksums.
    const mask = (b: Buffer) => {
      const c = Buffer.from(b);
      c.fill(0, 8, 0x10000);
      for (const h of [0x10000, 0x20000]) c.fill(0, h + 4, h + 64);
      const metaAt = Number(c.readBigUInt64LE(0x30000 + 16 + 32 + 16));
      c.fill(0, metaAt + 65536 + 16, metaAt + 65536 + 32);
      return c;
    };
    assert.ok(mask(ours).equals(mask(peer)), `${name}: same layout`);
    await assertSame(['info', '--output=json', `${name}.vhdx`], dir);
    await assertSame(['check', `${name}.vhdx`], dir);
  }
});

test('vhdx info, check and map agree with qemu-img; converts round-trip', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', join(dir, 'd.vhdx'), '7M');
  await qemuIo('-c', 'write -P 0x11 1000 3000000', '-c', 'write -P 0x22 6291456 7', join(dir, 'd.vhdx'));
  for (const args of [['info', '--output=json', 'd.vhdx'], ['info', 'd.vhdx'], ['check', 'd.vhdx'], ['check', '--output=json', 'd.vhdx']]) {
    await assertSame(args, dir);
  }
  // qemu-img 7.2 maps all of a vhdx as data; ours: data exactly where the BAT has blocks.
  const peerMap = JSON.parse((await run('qemu-img', ['map', '--output=json', 'd.vhdx'], { cwd: dir })).stdout);
  assert.deepEqual(peerMap.map((e: { data: boolean }) => e.data), [true]);
  const ours = await diskhub(['img', 'map', '--output=json', 'd.vhdx'], { cwd: dir });
  assert.equal(ours.code, 0, ours.stderr);
  const map = JSON.parse(ours.stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
  assert.deepEqual(map.map((e) => [e.start, e.length, e.data, e.zero]), [[0, 3 * 1048576, true, false], [3 * 1048576, 3 * 1048576, false, true], [6 * 1048576, 1048576, true, false]]);
  // convert to and from vhdx (dynamic and fixed).
  await qemuImg('convert', '-O', 'raw', join(dir, 'd.vhdx'), join(dir, 'd.raw'));
  for (const opts of [[], ['-o', 'subformat=fixed'], ['-o', 'block_size=1M,block_state_zero=off']]) {
    const r = await diskhub(['img', 'convert', '-O', 'vhdx', ...opts, 'd.raw', 'out.vhdx'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const check = await run('qemu-img', ['check', 'out.vhdx'], { cwd: dir });
    assert.equal(check.code, 0, check.stdout + check.stderr);
    const cmp = await run('qemu-img', ['compare', 'out.vhdx', 'd.raw'], { cwd: dir });
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  }
  const back = await diskhub(['img', 'convert', '-O', 'qcow2', 'd.vhdx', 'd.qcow2'], { cwd: dir });
  assert.equal(back.code, 0, back.stderr);
  assert.equal((await run('qemu-img', ['compare', 'd.qcow2', 'd.raw'], { cwd: dir })).code, 0);
});

test('vhdx with a pending log: info refuses as qemu-img does, check -r all replays it as qemu-img does', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const dirty = await makeDirtyVhdx(dir);
  await copyFile(dirty, join(dir, 'a.vhdx'));
  await copyFile(dirty, join(dir, 'b.vhdx'));
  await assertSame(['info', 'a.vhdx'], dir);
  await assertSame(['check', 'a.vhdx'], dir);
  // The replay: ours on a.vhdx, qemu-img's on b.vhdx, same report.
  const ours = await diskhub(['img', 'check', '-r', 'all', 'a.vhdx'], { cwd: dir });
  const peer = await run('qemu-img', ['check', '-r', 'all', 'b.vhdx'], { cwd: dir });
  assert.equal(ours.stdout, peer.stdout);
  assert.equal(ours.code, peer.code);
  await assertSame(['compare', 'a.vhdx', 'b.vhdx'], dir);
  await assertSame(['check', 'a.vhdx'], dir);
});

test('convert -O vhdx: under the default cache=unsafe no more fsyncs than qemu-img (none per block), more with -t writeback; both pass qemu-img check and compare', needs('qemu-img', 'strace'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await qemuImg('create', '-q', '-f', 'raw', src, '96M');
  await qemuIo('-f', 'raw', '-c', 'write -P 3 0 40M', '-c', 'write -P 4 64M 8M', src);
  /** fsync-family calls the whole process tree of `cmd` made, counted by strace. */
  const syncs = async (cmd: string[]) => {
    const log = join(dir, 'strace.log');
    const r = await run('strace', ['-f', '-qq', '-e', 'trace=fsync,fdatasync,sync_file_range', '-o', log, ...cmd], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    return (await readFile(log, 'utf8')).split('\n').filter((l) => /\b(fsync|fdatasync|sync_file_range)\(/.test(l)).length;
  };
  const peer = await syncs(['qemu-img', 'convert', '-O', 'vhdx', src, join(dir, 'peer.vhdx')]);
  const counts: number[] = [];
  for (const cache of [[], ['-t', 'writeback']]) {
    const out = join(dir, `out-${cache.length}.vhdx`);
    counts.push(await syncs([process.execPath, diskhubBin, 'img', 'convert', ...cache, '-O', 'vhdx', src, out]));
    await qemuImg('check', out);
    await qemuImg('compare', '-q', src, out);
  }
  assert.ok(counts[0]! <= peer, `default cache: ${counts[0]} syncs, qemu-img ${peer}`);
  assert.ok(counts[1]! > counts[0]!, `-t writeback: ${counts[1]} syncs, default ${counts[0]}`);
});
