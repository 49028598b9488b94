/**
 * A mostly empty raw image uploaded with the openstack client is stored with its zero runs as
 * holes (the file store skips whole zero blocks): the stored file allocates about its data,
 * `image save` gives back the very bytes, and the checksums are those of the whole image.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, runOk, tempDir } from '@diskhub/testkit';
import { osEnv, startTestService } from './helpers.js';

const MiB = 1 << 20;

test('sparse raw upload: zero runs are not written, and the image reads back byte-exact', needs('openstack', 'qemu-img'), async (t) => {
  const svc = await startTestService(t);
  const dir = await tempDir(t);
  const env = osEnv(svc.url);
  // A 128 MiB raw disk made by qemu-img, with 2 MiB of data in three places.
  const image = join(dir, 'disk.raw');
  await runOk('qemu-img', ['create', '-f', 'raw', image, '128M']);
  const fh = await open(image, 'r+');
  try {
    await fh.write(randomBytes(MiB / 2 + 1000), 0, MiB / 2 + 1000, 0);
    await fh.write(randomBytes(MiB / 2 + 1000), 0, MiB / 2 + 1000, 50 * MiB + 4096);
    await fh.write(randomBytes(MiB / 2), 0, MiB / 2, 128 * MiB - MiB / 2);
  } finally {
    await fh.close();
  }
  const bytes = await readFile(image);
  await runOk('openstack', ['image', 'create', '--file', image, '--disk-format', 'raw', '--container-format', 'bare', 'sparse'], { env });
  const created = JSON.parse(await runOk('openstack', ['image', 'show', '-f', 'json', 'sparse'], { env }));
  assert.equal(created.status, 'active');
  assert.equal(created.size, 128 * MiB);
  assert.equal(created.checksum, createHash('md5').update(bytes).digest('hex'));

  const stored = await stat(join(svc.dataDir, 'images', created.id));
  assert.equal(stored.size, 128 * MiB);
  // About 1.5 MiB of data in 64 KiB blocks: far below the 128 MiB that were sent.
  assert.ok(stored.blocks * 512 <= 4 * MiB, `stored file allocates ${stored.blocks * 512} bytes`);

  const saved = join(dir, 'saved.raw');
  await runOk('openstack', ['image', 'save', '--file', saved, 'sparse'], { env });
  assert.ok((await readFile(saved)).equals(bytes), 'download is byte-identical');
});
