/**
 * In-place writes to qcow2 images with an external data file: data clusters go to the data
 * file at their guest offsets, unrefcounted (and with data_file_raw the data file stays the
 * disk), so qemu-img checks the image clean and reads what we wrote.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImage, isDiskError } from '@diskhub/disk';
import { tempDir, runOk, needs } from '@diskhub/testkit';
import { randomWrites } from './random-writes.js';

test('random writes to qcow2 with an external data file land where qemu-img reads them', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, o] of [['plain', 'data_file=plain.data'], ['raw', 'data_file=raw.data,data_file_raw=on'], ['ext', 'data_file=ext.data,extended_l2=on'], ['small', 'data_file=small.data,cluster_size=4k']]) {
    const path = join(dir, `${name}.qcow2`);
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', o!, path, '4M'], { cwd: dir });
    await assert.rejects(openImage(path, { writable: true }), (e: unknown) => isDiskError(e, 'EUNSAFE'));
    const img = await openImage(path, { writable: true, allowExternalData: true });
    const reference = new Uint8Array(img.size);
    try {
      await randomWrites(img, reference, 11, 60, 200_000, 2 << 20);
      await img.discard!(1 << 20, 128 << 10);
      reference.fill(0, 1 << 20, (1 << 20) + (128 << 10));
    } finally {
      await img.close();
    }
    // qemu-img opens a relative data_file name from its working directory.
    await runOk('qemu-img', ['check', path], { cwd: dir });
    const out = join(dir, `${name}.raw`);
    await runOk('qemu-img', ['convert', '-O', 'raw', path, out], { cwd: dir });
    const back = await readFile(out);
    const diff = reference.findIndex((b, i) => b !== back[i]);
    assert.equal(diff, -1, `${name}: qemu-img reads what we wrote (first difference at ${diff})`);
    if (name === 'raw') assert.ok(Buffer.from(reference).equals(await readFile(join(dir, 'raw.data'))), 'the raw data file is the disk');
  }
});
