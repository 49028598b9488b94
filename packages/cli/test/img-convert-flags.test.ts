/**
 * convert's -r, -C, --salvage, --bitmaps and --skip-broken-bitmaps side by side with qemu-img
 * 7.2: the same refusals, the same results (bitmaps read back through qemu-nbd and nbdinfo, a
 * salvaged image byte for byte), and a rate limit that holds; and how a convert replaces an
 * existing destination.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, readdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { release } from 'node:os';
import { needs, tempDir, qemuImg, qemuIo, run, runOk, diskhub, diskhubBin } from '@diskhub/testkit';
import { assertSame, killedAfter } from './peer.js';

/** A qcow2 with three bitmaps: enabled with bits, disabled with bits (128 KiB granules), enabled. */
async function imageWithBitmaps(dir: string, name = 'bm.qcow2'): Promise<string> {
  const f = join(dir, name);
  await qemuImg('create', '-q', '-f', 'qcow2', f, '64M');
  await qemuImg('bitmap', '--add', f, 'b1');
  await qemuImg('bitmap', '--add', '-g', '128k', f, 'b2');
  await qemuIo('-c', 'write -P 1 1M 300k', '-c', 'write -P 2 40M 64k', f);
  await qemuImg('bitmap', '--disable', f, 'b2');
  await qemuImg('bitmap', '--add', f, 'b3');
  await qemuIo('-c', 'write -P 1 20M 4k', '-c', 'write -z 30M 1M', f);
  return f;
}

/** The bitmap as qemu-nbd exports it (nbdinfo's map of qemu:dirty-bitmap:NAME). */
const bitmapMap = (file: string, name: string) =>
  runOk('nbdinfo', [`--map=qemu:dirty-bitmap:${name}`, '--', '[', 'qemu-nbd', '-r', '-f', 'qcow2', '-B', name, file, ']']);

const infoWithoutName = async (file: string) => (await qemuImg('info', file)).replace(/^image: .*\n/, '');

test('convert refuses flag combinations as qemu-img does', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await imageWithBitmaps(dir);
  for (const args of [
    ['convert', '-C', '-c', '-O', 'qcow2', 'bm.qcow2', 'x.qcow2'],
    ['convert', '-C', '-S', '4k', '-O', 'raw', 'bm.qcow2', 'x.raw'],
    ['convert', '-C', '--salvage', '-O', 'raw', 'bm.qcow2', 'x.raw'],
    ['convert', '--skip-broken-bitmaps', '-O', 'qcow2', 'bm.qcow2', 'x.qcow2'],
    ['convert', '--bitmaps', '-O', 'qcow2', 'bm.qcow2', 'bm.qcow2', 'x.qcow2'],
    ['convert', '--bitmaps', '-O', 'raw', 'bm.qcow2', 'x.raw'],
    ['convert', '--bitmaps', '-O', 'qcow2', '-o', 'compat=0.10', 'bm.qcow2', 'x.qcow2'],
    ['convert', '-r', '1x', '-O', 'raw', 'bm.qcow2', 'x.raw'],
  ]) {
    await assertSame(args, dir);
  }
});

test('convert --bitmaps copies persistent bitmaps qcow2→qcow2 as qemu-img does', needs('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const src = await imageWithBitmaps(dir);
  const peer = join(dir, 'peer.qcow2'), ours = join(dir, 'ours.qcow2');
  await qemuImg('convert', '--bitmaps', '-O', 'qcow2', '-o', 'cluster_size=16k', src, peer);
  const r = await diskhub(['img', 'convert', '--bitmaps', '-O', 'qcow2', '-o', 'cluster_size=16k', src, ours]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(await infoWithoutName(ours), await infoWithoutName(peer));
  for (const b of ['b1', 'b2', 'b3']) {
    const expected = await bitmapMap(src, b);
    assert.match(expected, /dirty/, `${b} has dirty bits in the source`);
    assert.equal(await bitmapMap(ours, b), expected, `bitmap ${b}`);
  }
  assert.equal((await run('qemu-img', ['check', ours])).code, 0);
  assert.equal((await run('qemu-img', ['compare', src, ours])).code, 0);
  // A source without bitmaps: nothing to copy, and no complaint.
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'plain.raw'), '1M');
  await assertSame(['convert', '--bitmaps', '-O', 'qcow2', 'plain.raw', 'p.qcow2'], dir);
});

test('convert --bitmaps with a bitmap left in use: refused, or skipped with --skip-broken-bitmaps', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const src = await imageWithBitmaps(dir);
  // qemu-io marks the enabled bitmaps in use while it has the image open; killed, it leaves them so.
  const io = spawn('qemu-io', ['-c', 'sleep 60000', src], { stdio: 'ignore' });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  io.kill('SIGKILL');
  await new Promise((resolve) => io.on('exit', resolve));
  assert.match(await qemuImg('info', src), /in-use/);
  await assertSame(['convert', '--bitmaps', '-O', 'qcow2', 'bm.qcow2', 'x.qcow2'], dir);
  await assertSame(['convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', 'bm.qcow2', 'ours.qcow2'], dir);
  await qemuImg('convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', src, join(dir, 'peer.qcow2'));
  assert.equal(await infoWithoutName(join(dir, 'ours.qcow2')), await infoWithoutName(join(dir, 'peer.qcow2')));
});

/** Overwrite the start of compressed cluster `index` of a qcow2 (64 KiB clusters), so that it no longer inflates. */
async function spoilCompressedCluster(file: string, index: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const head = Buffer.alloc(104);
    await fh.read(head, 0, 104, 0);
    const l1 = Number(head.readBigUInt64BE(40));
    const e = Buffer.alloc(8);
    await fh.read(e, 0, 8, l1);
    const l2 = Number(e.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    await fh.read(e, 0, 8, l2 + index * 8);
    const at = Number(e.readBigUInt64BE(0) & ((1n << 54n) - 1n));
    await fh.write(Buffer.alloc(64, 0xff), 0, 64, at);
  } finally {
    await fh.close();
  }
}

test('convert --salvage: unreadable sectors become zeroes, with qemu-img\'s warnings', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 's.raw'), '1M');
  await qemuIo('-f', 'raw', '-c', 'write -P 5 0 1M', join(dir, 's.raw'));
  await qemuImg('convert', '-c', '-O', 'qcow2', join(dir, 's.raw'), join(dir, 's.qcow2'));
  await spoilCompressedCluster(join(dir, 's.qcow2'), 3);
  const failed = await diskhub(['img', 'convert', '-O', 'raw', 's.qcow2', 'fail.raw'], { cwd: dir });
  assert.equal(failed.code, 1, 'without --salvage the read error ends the convert');
  await assertSame(['convert', '--salvage', '-O', 'raw', 's.qcow2', 'ours.raw'], dir);
  await qemuImg('convert', '--salvage', '-O', 'raw', join(dir, 's.qcow2'), join(dir, 'peer.raw'));
  const [ours, peer] = [await readFile(join(dir, 'ours.raw')), await readFile(join(dir, 'peer.raw'))];
  assert.ok(ours.equals(peer), 'salvaged bytes as qemu-img salvages them');
  assert.ok(ours.subarray(196608, 262144).every((b) => b === 0) && ours[0] === 5);
});

/** The copy_file_range calls a command makes (strace -f), and its exit code. */
async function copyRangeCalls(dir: string, command: string[]): Promise<number> {
  const log = join(dir, 'cfr.log');
  const r = await run('strace', ['-f', '-o', log, '-e', 'trace=copy_file_range', ...command], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  return (await readFile(log, 'utf8')).split('\n').filter((l) => /copy_file_range\(/.test(l) && !/= -1/.test(l)).length;
}

const mapWithoutOffsets = async (file: string, format: string) => (await qemuImg('map', '-f', format, '--output=json', file)).replace(/, "offset": \d+/g, '');

test('convert -C copies data ranges with copy_file_range where qemu-img does, and falls back where it falls back', needs('qemu-img', 'qemu-io', 'strace'), async (t) => {
  const dir = await tempDir(t);
  // 4 MiB of data with a zero MiB inside it: a copy keeps that MiB as data, a fallback
  // (read and write with -S detection) makes it a hole.
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'z.raw'), '4M');
  await qemuIo('-f', 'raw', '-c', 'write -P 7 0 4M', '-c', 'write -P 0 1M 1M', join(dir, 'z.raw'));
  await qemuImg('convert', '-O', 'qcow2', join(dir, 'z.raw'), join(dir, 'z.qcow2'));
  await qemuImg('convert', '-O', 'vdi', join(dir, 'z.raw'), join(dir, 'z.vdi'));
  await qemuImg('convert', '-c', '-O', 'qcow2', join(dir, 'z.raw'), join(dir, 'zc.qcow2'));
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'z.qcow2', '-F', 'qcow2', join(dir, 'top.qcow2'));
  await qemuIo('-c', 'write -P 9 3M 64k', join(dir, 'top.qcow2'));
  const cases: [string, string, string][] = [
    ['z.raw', 'raw', 'raw'], ['z.raw', 'raw', 'qcow2'], ['z.raw', 'raw', 'vdi'],
    ['z.qcow2', 'qcow2', 'raw'], ['z.qcow2', 'qcow2', 'qcow2'], ['z.vdi', 'vdi', 'raw'],
    ['zc.qcow2', 'qcow2', 'raw'], ['top.qcow2', 'qcow2', 'raw'],
  ];
  for (const [src, from, to] of cases) {
    const what = `${src} (${from}) -> ${to}`;
    const peer = await copyRangeCalls(dir, ['qemu-img', 'convert', '-C', '-f', from, '-O', to, src, `peer.${to}`]);
    const ours = await copyRangeCalls(dir, [process.execPath, diskhubBin, 'img', 'convert', '-C', '-f', from, '-O', to, src, `ours.${to}`]);
    assert.equal(ours > 0, peer > 0, `${what}: copy_file_range used by qemu-img ${peer} times, by diskhub ${ours} times`);
    assert.equal(await mapWithoutOffsets(join(dir, `ours.${to}`), to), await mapWithoutOffsets(join(dir, `peer.${to}`), to), what);
    assert.equal((await run('qemu-img', ['compare', '-f', to, '-F', to, join(dir, `ours.${to}`), join(dir, `peer.${to}`)])).code, 0, what);
  }
  // The zero MiB inside the data: copied, it stays data; without -C (and where -C falls back) a hole.
  assert.ok(await copyRangeCalls(dir, [process.execPath, diskhubBin, 'img', 'convert', '-C', '-f', 'raw', '-O', 'raw', 'z.raw', 'copied.raw']) > 0);
  assert.doesNotMatch(await mapWithoutOffsets(join(dir, 'copied.raw'), 'raw'), /"zero": true/);
  assert.equal((await diskhub(['img', 'convert', '-f', 'raw', '-O', 'raw', 'z.raw', 'plain.raw'], { cwd: dir })).code, 0);
  assert.match(await mapWithoutOffsets(join(dir, 'plain.raw'), 'raw'), /"zero": true/);
});

test('convert -r limits the rate', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'r.raw'), '12M');
  await qemuIo('-f', 'raw', '-c', 'write -P 3 0 12M', join(dir, 'r.raw'));
  const started = performance.now();
  const r = await diskhub(['img', 'convert', '-r', '8M', '-O', 'raw', 'r.raw', 'r2.raw'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const seconds = (performance.now() - started) / 1000;
  assert.ok(seconds >= 1.2, `12 MiB at 8 MiB/s took only ${seconds} s`);
  assert.equal((await run('qemu-img', ['compare', join(dir, 'r.raw'), join(dir, 'r2.raw')])).code, 0);
});

test('convert onto an existing destination: names exchanged, not renamed over; a failure keeps the old image', needs('qemu-img', 'qemu-io', 'strace', 'fincore'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'a.raw'), '8M');
  await qemuIo('-f', 'raw', '-c', 'write -P 1 0 8M', join(dir, 'a.raw'));
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'b.raw'), '4M');
  await qemuIo('-f', 'raw', '-c', 'write -P 2 0 4M', join(dir, 'b.raw'));
  assert.equal((await diskhub(['img', 'convert', '-O', 'qcow2', 'a.raw', 'out.qcow2'], { cwd: dir })).code, 0);
  // The second run, traced: the finished image and the old one swap names in one call
  // (RENAME_EXCHANGE), then the old one goes; no rename replaces a file (ext4 would flush the
  // new image before such a rename).
  const log = join(dir, 'strace.log');
  const r = await run('strace', ['-f', '-o', log, '-e', 'trace=rename,renameat,renameat2,unlink,unlinkat', process.execPath, diskhubBin, 'img', 'convert', '-O', 'qcow2', 'b.raw', 'out.qcow2'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const calls = (await readFile(log, 'utf8')).split('\n').filter((l) => /rename|unlink/.test(l) && !l.includes('ENOENT'));
  const renames = calls.filter((l) => l.includes('rename'));
  assert.equal(renames.length, 1, calls.join('\n'));
  assert.match(renames[0]!, /renameat2\(AT_FDCWD, "\.out\.qcow2\..*diskhub-tmp", AT_FDCWD, "out\.qcow2", RENAME_EXCHANGE\) = 0/);
  assert.ok(calls.some((l) => /unlink(at)?\(.*"\.out\.qcow2\..*diskhub-tmp"/.test(l)), calls.join('\n'));
  assert.equal((await run('qemu-img', ['compare', join(dir, 'b.raw'), join(dir, 'out.qcow2')])).code, 0);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), [], 'nothing left aside');
  // A convert that fails half-way (a cluster it cannot read) leaves the previous image in place.
  await qemuImg('convert', '-c', '-O', 'qcow2', join(dir, 'a.raw'), join(dir, 'bad.qcow2'));
  await spoilCompressedCluster(join(dir, 'bad.qcow2'), 100);
  await runOk('sync', []);
  await readFile(join(dir, 'out.qcow2')); // (all of it in the page cache, clean)
  const failed = await diskhub(['img', 'convert', '-O', 'qcow2', 'bad.qcow2', 'out.qcow2'], { cwd: dir });
  assert.match(failed.stderr, /error while reading/);
  // The old image's clean cached pages were dropped before the writes (the memory qemu-img's
  // truncation frees), its content kept: fincore counts its resident pages. Needs cachestat
  // (Linux 6.5); before it, the pages are left alone.
  const [major, minor] = release().split('.').map(Number) as [number, number];
  if (major > 6 || (major === 6 && minor >= 5)) {
    const resident = (await runOk('fincore', ['-b', '-n', '-o', 'RES', join(dir, 'out.qcow2')])).trim();
    assert.equal(resident, '0', 'the old image\'s pages are no longer cached');
  }
  assert.equal((await run('qemu-img', ['compare', join(dir, 'b.raw'), join(dir, 'out.qcow2')])).code, 0);
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), [], 'nothing left aside');
});

test('convert onto an existing destination killed with SIGKILL: the name holds the old image or the new one, whole', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'old.raw'), '192M');
  await qemuIo('-f', 'raw', '-c', 'write -P 1 0 192M', join(dir, 'old.raw'));
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'new.raw'), '192M');
  await qemuIo('-f', 'raw', '-c', 'write -P 2 0 96M', '-c', 'write -P 3 96M 96M', join(dir, 'new.raw'));
  const out = join(dir, 'out.qcow2');
  const outcomes = new Set<string>();
  for (const delay of [100, 250, 400, 550, 700, 900, 1200, 3000]) {
    await qemuImg('convert', '-O', 'qcow2', join(dir, 'old.raw'), out);
    await killedAfter(delay, ['img', 'convert', '-O', 'qcow2', join(dir, 'new.raw'), out]);
    const check = await run('qemu-img', ['check', out]);
    assert.equal(check.code, 0, `after a kill at ${delay} ms: ${check.stdout}${check.stderr}`);
    const isOld = (await run('qemu-img', ['compare', '-q', join(dir, 'old.raw'), out])).code === 0;
    const isNew = !isOld && (await run('qemu-img', ['compare', '-q', join(dir, 'new.raw'), out])).code === 0;
    assert.ok(isOld || isNew, `after a kill at ${delay} ms the destination is neither image`);
    outcomes.add(isOld ? 'old' : 'new');
  }
  // (The temporary file a kill leaves is the caller's to remove, as after qemu-img's own kill.)
  t.diagnostic(`outcomes: ${[...outcomes].join(', ')}`);
});
