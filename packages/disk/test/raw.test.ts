import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, closeChain } from '@diskhub/disk';
import { tempDir, qemuImg, needs } from '@diskhub/testkit';

test('raw: reads back what was written and reports virtual size', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'a.raw');
  const data = new Uint8Array(3 * 65536).map((_, i) => (i * 7) & 0xff);
  await writeFile(path, data);
  const img = await openImage(path);
  try {
    assert.equal(img.format, 'raw');
    assert.equal(img.size, data.length);
    const buf = new Uint8Array(1000);
    await img.read(buf, 65000);
    assert.deepEqual(buf, data.subarray(65000, 66000));
  } finally {
    await closeChain(img);
  }
});

test('raw: virtual size agrees with qemu-img info', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'b.raw');
  await qemuImg('create', '-f', 'raw', path, '5M');
  const peer = JSON.parse(await qemuImg('info', '--output=json', path));
  const img = await openImage(path);
  try {
    assert.equal(img.size, peer['virtual-size']);
  } finally {
    await closeChain(img);
  }
});
