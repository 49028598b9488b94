/**
 * `diskhub img` on the read-only formats (qcow v1, bochs, cloop) side by side with qemu-img
 * 7.2: info and map print the same, convert out of them gives what qemu-img compare calls
 * identical, and creating them fails as qemu-img fails (or, for qcow, is refused clearly).
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { needs, tempDir, qemuImg, qemuIo, run, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('qcow, bochs and cloop: info, map and convert as qemu-img; creating bochs and cloop fails and creating qcow succeeds, as in qemu-img', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-q', '-f', 'qcow', join(dir, 'a.qcow'), '3M');
  await qemuIo('-c', 'write -P 0x11 1000 300000', '-c', 'write -P 0x22 2M 4k', join(dir, 'a.qcow'));
  await qemuImg('create', '-q', '-f', 'qcow', join(dir, 'c.qcow'), '1M');
  await qemuIo('-c', 'write -c -P 0x33 0 4k', '-c', 'write -c -P 0x34 8k 4k', '-c', 'write -P 0x35 12k 4k', join(dir, 'c.qcow'));
  await qemuImg('create', '-q', '-f', 'qcow', '-b', 'a.qcow', '-F', 'qcow', join(dir, 'top.qcow'));
  // A bochs image: 2 extents of 4 KiB, the first with sectors 0 and 3 stored.
  const bochs = new Uint8Array(512 + 8 + 2 * 512 * 9);
  const v = new DataView(bochs.buffer);
  bochs.set(new TextEncoder().encode('Bochs Virtual HD Image'), 0);
  bochs.set(new TextEncoder().encode('Redolog'), 32);
  bochs.set(new TextEncoder().encode('Growing'), 48);
  v.setUint32(64, 0x00020000, true);
  v.setUint32(68, 512, true);
  v.setUint32(72, 2, true);
  v.setUint32(76, 1, true);
  v.setUint32(80, 4096, true);
  v.setBigUint64(88, 8192n, true);
  v.setUint32(512, 0, true);
  v.setUint32(516, 0xffffffff, true);
  bochs[520] = 0b1001;
  bochs.fill(0x5a, 520 + 512, 520 + 512 * 9);
  await writeFile(join(dir, 'd.bochs'), bochs);
  // A cloop image of two 4 KiB blocks.
  const blocks = [zlib.deflateSync(Buffer.alloc(4096, 3)), zlib.deflateSync(Buffer.alloc(4096, 4))];
  const head = Buffer.alloc(136 + 24);
  head.write('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n', 0, 'latin1');
  head.writeUInt32BE(4096, 128);
  head.writeUInt32BE(2, 132);
  head.writeBigUInt64BE(160n, 136);
  head.writeBigUInt64BE(BigInt(160 + blocks[0]!.length), 144);
  head.writeBigUInt64BE(BigInt(160 + blocks[0]!.length + blocks[1]!.length), 152);
  await writeFile(join(dir, 'e.cloop'), Buffer.concat([head, ...blocks]));
  for (const f of ['a.qcow', 'c.qcow', 'top.qcow', 'd.bochs', 'e.cloop']) {
    await assertSame(['info', '--output=json', f], dir);
    await assertSame(['info', f], dir);
    await assertSame(['map', '--output=json', f], dir);
    await assertSame(['map', f], dir);
    await assertSame(['check', f], dir);
    const r = await diskhub(['img', 'convert', '-O', 'qcow2', f, `${f}.qcow2`], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const cmp = await run('qemu-img', ['compare', f, `${f}.qcow2`], { cwd: dir });
    assert.equal(cmp.code, 0, `${f}: ${cmp.stdout}${cmp.stderr}`);
  }
  await assertSame(['create', '-f', 'bochs', 'new.bochs', '1M'], dir);
  await assertSame(['create', '-f', 'cloop', 'new.cloop', '1M'], dir);
  await assertSame(['create', '-f', 'qcow', 'new.qcow', '1M'], dir);
});
