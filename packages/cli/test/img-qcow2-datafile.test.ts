/**
 * qcow2 images with an external data file (`-o data_file=X[,data_file_raw=on]`) written by
 * `diskhub img create` / `convert`: qemu-img checks them clean, compares them identical to
 * their source, and with data_file_raw the data file alone is the disk. Reading them back
 * stays behind the DISKHUB_ALLOW_EXTERNAL_DATA opt-in.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, run, runOk, diskhub } from '@diskhub/testkit';

const ALLOW = { ...process.env, DISKHUB_ALLOW_EXTERNAL_DATA: '1' };

test('convert into qcow2 with an external data file: qemu-img check clean, compare identical', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', 'src.raw', '10M'], { cwd: dir });
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 0 3M', '-c', 'write -P 0x62 5M 100k', '-c', 'write -P 0x63 9M 4097', 'src.raw'], { cwd: dir });
  for (const [name, o] of [['plain', 'data_file=plain.data'], ['raw', 'data_file=raw.data,data_file_raw=on'], ['small', 'data_file=small.data,cluster_size=4k,extended_l2=off']]) {
    const r = await diskhub(['img', 'convert', '-O', 'qcow2', '-o', o!, 'src.raw', `${name}.qcow2`], { cwd: dir });
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    const check = await run('qemu-img', ['check', `${name}.qcow2`], { cwd: dir });
    assert.equal(check.code, 0, `${name}: ${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /No errors were found on the image/);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', 'src.raw', `${name}.qcow2`], { cwd: dir });
    assert.equal(cmp.code, 0, `${name}: ${cmp.stdout}${cmp.stderr}`);
    // Our own reading needs the opt-in, then agrees.
    const refused = await diskhub(['img', 'compare', 'src.raw', `${name}.qcow2`], { cwd: dir });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /DISKHUB_ALLOW_EXTERNAL_DATA=1/);
    const ours = await diskhub(['img', 'compare', 'src.raw', `${name}.qcow2`], { cwd: dir, env: ALLOW });
    assert.equal(ours.code, 0, ours.stdout + ours.stderr);
  }
  // data_file_raw: the data file on its own is the disk.
  assert.ok((await readFile(join(dir, 'raw.data'))).equals(await readFile(join(dir, 'src.raw'))));
});

test('create with an external data file: qemu-io writes, qemu-img and diskhub read the same', needs('qemu-img', 'qemu-io'), async (t) => {
  const dir = await tempDir(t);
  for (const [name, o] of [['a', 'data_file=a.data'], ['b', 'data_file=b.data,data_file_raw=on'], ['c', 'data_file=c.data,extended_l2=on']]) {
    const r = await diskhub(['img', 'create', '-q', '-f', 'qcow2', '-o', o!, `${name}.qcow2`, '8M'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 70k', '-c', 'write -P 0x22 3M 1M', '-c', 'write -z 3M 64k', `${name}.qcow2`], { cwd: dir });
    const check = await run('qemu-img', ['check', `${name}.qcow2`], { cwd: dir });
    assert.equal(check.code, 0, check.stdout + check.stderr);
    await runOk('qemu-img', ['convert', '-O', 'raw', `${name}.qcow2`, `${name}.q.raw`], { cwd: dir });
    const conv = await diskhub(['img', 'convert', '-O', 'raw', `${name}.qcow2`, `${name}.d.raw`], { cwd: dir, env: ALLOW });
    assert.equal(conv.code, 0, conv.stderr);
    assert.ok((await readFile(join(dir, `${name}.d.raw`))).equals(await readFile(join(dir, `${name}.q.raw`))), name);
  }
});
