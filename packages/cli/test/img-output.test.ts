/**
 * Output formatting against qemu-img's own output: qemu-img's JSON for an image goes through
 * our JSON writer and human formatter and must come out as qemu-img prints it. This checks
 * key order, indentation, the "Format specific information" dump, the snapshot table, size
 * rounding and the check report independently of which format driver produced the values.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import { truncate, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CheckResult } from '@diskhub/disk';
import { needs, tempDir, qemuImg, run } from '@diskhub/testkit';
import { qemuJson, sizeToStr } from '../src/img/output.js';
import { humanInfo } from '../src/img/info.js';
import { humanCheck, checkJson } from '../src/img/check.js';

test('info: qemu-img JSON re-serialised and rendered human match qemu-img (snapshots, bitmaps, backing)', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const opt = { cwd: dir };
  await run('qemu-img', ['create', '-f', 'qcow2', 'base.qcow2', '64M'], opt);
  await run('qemu-img', ['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on', 'top.qcow2'], opt);
  await run('qemu-img', ['snapshot', '-c', 'first', 'top.qcow2'], opt);
  for (const name of ['a much longer snapshot name', '16chars-abcdefgh', 'exactly17chars-ab']) await run('qemu-img', ['snapshot', '-c', name, 'top.qcow2'], opt);
  await run('qemu-img', ['bitmap', '--add', 'top.qcow2', 'dirty0'], opt);
  await run('qemu-img', ['bitmap', '--add', '--disable', '-g', '128k', 'top.qcow2', 'b1'], opt);
  await run('qemu-img', ['create', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1000'], opt);
  for (const args of [['top.qcow2'], ['--backing-chain', 'top.qcow2'], ['v2.qcow2'], [join(dir, 'top.qcow2')]]) {
    const json = (await run('qemu-img', ['info', '--output=json', ...args], opt)).stdout;
    const human = (await run('qemu-img', ['info', ...args], opt)).stdout;
    const parsed = JSON.parse(json);
    assert.equal(qemuJson(parsed) + '\n', json, `JSON of ${args.join(' ')}`);
    const infos = Array.isArray(parsed) ? parsed : [parsed];
    assert.equal(infos.map(humanInfo).join('\n'), human, `human info of ${args.join(' ')}`);
  }
});

test('sizes print as qemu-img prints them', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const sizes = [0, 512, 1024, 1536, 999 * 512, 1000 * 1024, 1023 * 1024, 1024 * 1024, 1000 * 1024 * 1024 - 512, 1234567 * 512, 2 ** 40, 2 ** 43 - 512, 1048050688, 1023488, 1024000];
  for (const size of sizes) {
    const f = join(dir, 's.raw');
    await writeFile(f, '');
    await truncate(f, size);
    const line = (await qemuImg('info', f)).split('\n').find((l) => l.startsWith('virtual size:'));
    assert.equal(line, `virtual size: ${sizeToStr(size)} (${size} bytes)`);
  }
});

test('check: human and JSON reports match qemu-img for leaks, corruptions and repairs', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  const base = join(dir, 'base.qcow2');
  await qemuImg('create', '-f', 'qcow2', base, '1M');
  // Refcount block of a fresh 64k-cluster image is cluster 2: leak cluster 4, zero cluster 3's refcount.
  const bytes = await readFile(base);
  const img = Buffer.alloc(5 * 65536);
  bytes.copy(img);
  img.writeUInt16BE(1, 0x20000 + 2 * 4);
  const damaged = Buffer.from(img);
  damaged.writeUInt16BE(0, 0x20000 + 2 * 3);
  const cases: [Buffer, string[]][] = [
    [bytes, []], [img, []], [damaged, []], [img, ['-r', 'leaks']], [damaged, ['-r', 'all']], [damaged, ['-q']],
  ];
  for (const [i, [content, flags]] of cases.entries()) {
    const a = join(dir, `a${i}.qcow2`);
    const b = join(dir, `b${i}.qcow2`);
    await writeFile(a, content);
    await writeFile(b, content);
    const json = await run('qemu-img', ['check', ...flags, '--output=json', a]);
    const human = await run('qemu-img', ['check', ...flags, b]);
    if (flags.includes('-q')) { assert.equal(json.stdout + human.stdout, ''); continue; }
    const parsed = JSON.parse(json.stdout) as CheckResult;
    assert.equal(qemuJson(checkJson({ ...parsed, messages: [] }, a)) + '\n', json.stdout, `JSON, case ${i}`);
    assert.equal(humanCheck({ ...parsed, messages: [] }), human.stdout, `human, case ${i}`);
  }
});
