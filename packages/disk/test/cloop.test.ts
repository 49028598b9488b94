/**
 * cloop: images made by Debian's create_compressed_fs (cloop-utils) and by a small writer
 * following the format read back as `qemu-img convert -O raw` (7.2) gives them, with the same
 * virtual size; hostile headers, offsets and blocks (a block that inflates past the block
 * size) give DiskErrors, never a crash, hang or huge allocation.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { openImage, closeChain, isDiskError, getFormat } from '@diskhub/disk';
import { tempDir, qemuImg, needs, runOk } from '@diskhub/testkit';
import { mutationRounds, readAll } from './random-writes.js';

const PREAMBLE = '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n';

/** A cloop v2 image of `blocks` (each compressed with zlib), offsets after the header. */
export function cloopImage(blockSize: number, blocks: Uint8Array[]): Uint8Array {
  const compressed = blocks.map((b) => zlib.deflateSync(b));
  const head = new Uint8Array(136 + (blocks.length + 1) * 8);
  head.set(new TextEncoder().encode(PREAMBLE), 0);
  const v = new DataView(head.buffer);
  v.setUint32(128, blockSize);
  v.setUint32(132, blocks.length);
  let at = head.length;
  compressed.forEach((c, i) => { v.setBigUint64(136 + 8 * i, BigInt(at)); at += c.length; });
  v.setBigUint64(136 + 8 * blocks.length, BigInt(at));
  return new Uint8Array(Buffer.concat([head, ...compressed]));
}

async function sameAsQemu(path: string, what: string): Promise<void> {
  await qemuImg('convert', '-O', 'raw', path, `${path}.raw`);
  assert.ok(Buffer.from(await readAll(path)).equals(await readFile(`${path}.raw`)), `${what}: contents`);
  const peer = JSON.parse(await qemuImg('info', '--output=json', path));
  const img = await openImage(path);
  try {
    assert.equal(img.format, 'cloop', `${what}: probed`);
    assert.equal(img.size, peer['virtual-size'], `${what}: virtual size`);
  } finally {
    await closeChain(img);
  }
}

test('cloop read: create_compressed_fs images read back as qemu-img convert -O raw gives them', needs('qemu-img', 'create_compressed_fs'), async (t) => {
  const dir = await tempDir(t);
  const input = join(dir, 'in.iso');
  await writeFile(input, Buffer.concat([randomBytes(700000), Buffer.alloc(300000), Buffer.from('tail')]));
  for (const block of ['65536', '16384']) {
    const out = join(dir, `b${block}.cloop`);
    await runOk('create_compressed_fs', ['-q', '-B', block, input, out]);
    await sameAsQemu(out, `block ${block}`);
  }
});

test('cloop read: a hand-written image, and hostile ones refused with typed errors', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const blocks = [Buffer.alloc(4096, 1), randomBytes(4096), Buffer.alloc(4096), Buffer.alloc(4096, 7)];
  const good = join(dir, 'good.cloop');
  await writeFile(good, cloopImage(4096, blocks));
  await sameAsQemu(good, 'hand-written');
  const patched = (patch: (v: DataView, b: Uint8Array) => Uint8Array | void) => {
    const b = cloopImage(4096, blocks);
    return patch(new DataView(b.buffer, b.byteOffset, b.byteLength), b) ?? b;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ['block size 1000', patched((v) => v.setUint32(128, 1000)), /block_size 1000 must be a multiple of 512/],
    ['block size 0', patched((v) => v.setUint32(128, 0)), /block_size cannot be zero/],
    ['block size 128M', patched((v) => v.setUint32(128, 128 << 20)), /must be 64 MB or less/],
    ['absurd block count', patched((v) => v.setUint32(132, 0x3fffffff)), /n_blocks \d+ must be \d+ or less|too many offsets/],
    ['many blocks', patched((v) => v.setUint32(132, 0x1000000)), /too many offsets|larger than the engine's limit/],
    ['offsets past the end', patched((v) => v.setUint32(132, 0x100000)), /cloop offsets .* extends past the end of the file/],
    ['decreasing offsets', patched((v) => v.setBigUint64(136 + 16, 10n)), /offsets not monotonically increasing at index 2/],
    ['huge compressed block', patched((v) => { v.setBigUint64(136 + 32, 1n << 40n); }), /invalid compressed block size at index 4/],
  ];
  for (const [name, bytes, message] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.cloop`);
    await writeFile(path, bytes);
    await assert.rejects(openImage(path, { format: 'cloop' }), (e) => isDiskError(e) && message.test(e.message), name);
  }
  // A decompression bomb: a block that inflates far past the block size; and one that falls short.
  for (const [name, block, message] of [['bomb', Buffer.alloc(64 << 20), /does not inflate to 4096 bytes/], ['short', Buffer.alloc(100), /inflates to 100 bytes, not 4096/]] as const) {
    const path = join(dir, `${name}.cloop`);
    await writeFile(path, cloopImage(4096, [block]));
    const img = await openImage(path, { format: 'cloop' });
    await assert.rejects(img.read(new Uint8Array(4096), 0), (e) => isDiskError(e) && message.test(e.message), name);
    await closeChain(img);
  }
});

test('cloop mutations: damaged copies only ever give DiskErrors', async () => {
  const bytes = cloopImage(4096, [Buffer.alloc(4096, 1), Buffer.alloc(4096, 2), Buffer.from(randomBytes(4096))]);
  const r = await mutationRounds(getFormat('cloop'), bytes, 1500, [0, 200], 127);
  assert.ok(r.opened > 0 && r.refused > 0, `both outcomes seen: ${JSON.stringify(r)}`);
});
