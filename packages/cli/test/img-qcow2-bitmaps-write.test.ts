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
