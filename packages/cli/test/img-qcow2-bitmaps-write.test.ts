/**
 * Persistent dirty bitmaps stay correct when diskhub writes a qcow2 image: the same writes
 * through qemu-io on one copy and through the engine (or `diskhub img convert -n`, `resize`) on
 * another give the same bitmaps, as qemu-nbd exports them (nbdinfo --map=qemu:dirty-bitmap:NAME),
 * the same `qemu-img info` (flags, granularity) and a clean `qemu-img check`.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage } from '@diskhub/disk';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { killedAfter } from './peer.js';

async function bitmapMap(path: string, name: string): Promise<string> {
  const r = await run('nbdinfo', [`--map=qemu:dirty-bitmap:${name}`, '--', '[', 'qemu-nbd', '-r', '-f', 'qcow2', '-B', name, path, ']']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

async function infoOf(path: string): Promise<unknown> {
  const info = JSON.parse((await run('qemu-img', ['info', '--output=json', path])).stdout) as Record<string, unknown>;
  delete info.filename;
  delete info['actual-size'];
  return info;
}

test('qcow2 bitmaps: writes, zero writes, discards and resize set and size them as QEMU does', needs('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const peer = join(dir, 'peer.qcow2'), ours = join(dir, 'ours.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', peer, '64M');
  await qemuImg('bitmap', '--add', peer, 'b64k');
  await qemuImg('bitmap', '--add', '-g', '512', peer, 'b512');
  await qemuImg('bitmap', '--add', '-g', '128k', '--disable', peer, 'off');
  await qemuImg('bitmap', '--add', '-g', '1M', peer, 'b1m');
  await qemuIo('-c', 'write -P 1 0 64k', peer);
  await copyFile(peer, ours);
  const writes: Array<['write' | 'zero' | 'discard', number, number]> = [
    ['write', 1 << 20, 100 * 1024], ['write', 10 * 2 ** 20 + 513, 1000], ['write', 20 * 2 ** 20 - 512, 1024], ['zero', 30 << 20, 3 << 20], ['discard', 0, 64 * 1024],
    ['write', 63 * 2 ** 20 + 65536 * 7, 65536],
  ];
  await qemuIo(...writes.flatMap(([kind, off, len]) => ['-c', kind === 'write' ? `write -P 7 ${off} ${len}` : kind === 'zero' ? `write -z ${off} ${len}` : `discard ${off} ${len}`]), peer);
  const image = await openImage(ours, { writable: true });
  try {
    for (const [kind, off, len] of writes) {
      if (kind === 'write') await image.write!(new Uint8Array(len).fill(7), off);
      else if (kind === 'zero') await image.writeZeroes!(off, len);
      else await image.discard!(off, len);
    }
  } finally {
    await image.close();
  }
  for (const name of ['b64k', 'b512', 'off', 'b1m']) assert.equal(await bitmapMap(ours, name), await bitmapMap(peer, name), `bitmap ${name} after writes`);
  assert.equal((await run('qemu-img', ['check', ours])).code, 0);
  assert.equal((await run('qemu-img', ['compare', peer, ours])).code, 0);
  assert.deepEqual(await infoOf(ours), await infoOf(peer));

  // A resize keeps every bitmap, at the new size.
  for (const size of ['+3M', '--shrink']) {
    const args = size === '--shrink' ? ['resize', '--shrink', 'X', '40M'] : ['resize', 'X', size];
    assert.equal((await diskhub(['img', ...args.map((a) => a === 'X' ? ours : a)])).code, 0);
    await qemuImg(...args.map((a) => a === 'X' ? peer : a));
    for (const name of ['b64k', 'b512', 'off', 'b1m']) assert.equal(await bitmapMap(ours, name), await bitmapMap(peer, name), `bitmap ${name} after resize ${size}`);
    assert.equal((await run('qemu-img', ['check', ours])).code, 0);
    assert.deepEqual(await infoOf(ours), await infoOf(peer));
  }
  // convert -n into an image with bitmaps (every byte written) marks everything.
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'src.raw'), '40M');
  assert.equal((await diskhub(['img', 'convert', '-n', '-f', 'raw', '-O', 'qcow2', join(dir, 'src.raw'), ours])).code, 0);
  await qemuImg('convert', '-n', '-f', 'raw', '-O', 'qcow2', join(dir, 'src.raw'), peer);
  for (const name of ['b64k', 'off']) assert.equal(await bitmapMap(ours, name), await bitmapMap(peer, name), `bitmap ${name} after convert -n`);
  assert.equal((await run('qemu-img', ['check', ours])).code, 0);
});

test('bitmap --add/--remove/--clear/--enable/--disable/--merge as qemu-img does them', needs('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo'), async (t) => {
  const dir = await tempDir(t);
  const peer = join(dir, 'peer.qcow2'), ours = join(dir, 'ours.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', peer, '64M');
  await qemuIo('-c', 'write 0 64k', peer);
  await copyFile(peer, ours);
  const step = async (name: string, ...args: string[]): Promise<void> => {
    const p = await run('qemu-img', ['bitmap', ...args, peer, name]);
    const o = await diskhub(['img', 'bitmap', ...args, ours, name]);
    const what = `bitmap ${args.join(' ')} ${name}`;
    assert.equal(o.code, p.code, `${what}: ${o.stderr} / ${p.stderr}`);
    assert.equal(o.stderr, p.stderr.replaceAll(peer, ours), what);
    assert.equal((await run('qemu-img', ['check', ours])).code, 0, `check after ${what}`);
    assert.deepEqual(await infoOf(ours), await infoOf(peer), `info after ${what}`);
  };
  await step('b', '--add');
  await step('b', '--add');
  await step('g', '--add', '-g', '128k', '--disable');
  await step('x', '--remove');
  await step('x', '--clear');
  await step('b', '--merge', 'x');
  await step('g', '--add', '-g', '1000');
  await step('b', '-g', '4k', '--remove');
  await step('b');
  await step('d', '--add', '-g', '1M');
  await step('d', '--remove', '--add');
  await step('s', '--add', '-g', '512');
  for (const f of [ours, peer]) await qemuIo('-c', 'write 1M 64k', '-c', 'write 10M 1000', f);
  await step('g', '--merge', 'b');
  await step('d', '--merge', 's');
  for (const name of ['b', 'g', 'd', 's']) assert.equal(await bitmapMap(ours, name), await bitmapMap(peer, name), `bitmap ${name} after merges`);
  await step('g', '--enable');
  await step('b', '--clear');
  await step('b', '--disable');
  for (const f of [ours, peer]) await qemuIo('-c', 'write 20M 64k', f);
  for (const name of ['b', 'g', 'd', 's']) assert.equal(await bitmapMap(ours, name), await bitmapMap(peer, name), `bitmap ${name} after enable/clear/disable`);
  // --merge from another image (-b, -F): its bitmap's dirty bytes.
  const other = join(dir, 'other.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', other, '64M');
  await qemuImg('bitmap', '--add', '-g', '256k', other, 'o');
  await qemuIo('-c', 'write 40M 300k', '-c', 'write 50M 512', other);
  await step('s', '--merge', 'o', '-b', other, '-F', 'qcow2');
  await step('s', '--merge', 'nosuch', '-b', other);
  for (const name of ['s', 'b']) assert.equal(await bitmapMap(ours, name), await bitmapMap(peer, name), `bitmap ${name} after a merge from another image`);
  for (const name of ['d', 'b', 'g', 's']) await step(name, '--remove');
  await step('z', '--enable', '--add');
  // Other formats and v2 images: refused (QEMU names its internal node where we name the file).
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'r.raw'), '1M');
  const raw = await diskhub(['img', 'bitmap', '--add', '-f', 'raw', join(dir, 'r.raw'), 'b']);
  assert.equal(raw.code, 1);
  assert.match(raw.stderr, /^qemu-img: Operation add on bitmap b failed: Can't store persistent bitmaps to .*: Operation not supported\n$/);
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', join(dir, 'v2.qcow2'), '1M');
  const v2 = await diskhub(['img', 'bitmap', '--add', join(dir, 'v2.qcow2'), 'b']);
  assert.match(v2.stderr, /Cannot store dirty bitmaps in qcow2 v2 files\n$/);
});

test('a write killed with SIGKILL leaves bitmaps QEMU accepts: in use (inconsistent) once changed, check clean after -r all', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.raw');
  await qemuImg('create', '-q', '-f', 'raw', src, '64M');
  await qemuIo('-f', 'raw', '-c', 'write -P 9 0 64M', src);
  for (const delay of [80, 150, 250, 400]) {
    const img = join(dir, `k${delay}.qcow2`);
    await qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    await qemuImg('bitmap', '--add', img, 'b');
    await killedAfter(delay, ['img', 'convert', '-n', '-f', 'raw', '-O', 'qcow2', src, img]);
    const repair = await run('qemu-img', ['check', '-r', 'all', img]);
    assert.equal(repair.code, 0, `check -r all after a kill at ${delay} ms: ${repair.stdout}${repair.stderr}`);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', img])).stdout) as { 'format-specific': { data: { bitmaps?: Array<{ name: string; flags: string[] }> } } };
    const bitmaps = info['format-specific'].data.bitmaps ?? [];
    assert.equal(bitmaps.length, 1, `the bitmap is still there after a kill at ${delay} ms`);
    assert.equal(bitmaps[0]!.name, 'b');
  }
});
