/** info / map / measure / create output against qemu-img, on the same files. */
import test from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { needs, tempDir, qemuImg, diskhub } from '@diskhub/testkit';
import { assertSame } from './peer.js';

test('img info: human and json output match qemu-img for raw images', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await qemuImg('create', '-f', 'raw', join(dir, 'big.raw'), '3G');
  await writeFile(join(dir, 'odd.raw'), Buffer.alloc(1000, 1));
  await writeFile(join(dir, 'empty.raw'), Buffer.alloc(0));
  for (const f of ['big.raw', 'odd.raw', 'empty.raw']) {
    await assertSame(['info', f], dir);
    await assertSame(['info', '--output=json', f], dir);
    await assertSame(['info', '--output=json', '--backing-chain', f], dir);
    await assertSame(['info', '--backing-chain', '-U', '-f', 'raw', f], dir);
    await assertSame(['info', '--output=json', join(dir, f)], dir);
  }
});

test('img measure: sizes match qemu-img for raw', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'odd.raw'), Buffer.alloc(1000, 1));
  for (const args of [['--size', '1G'], ['--size', '1000'], ['-O', 'raw', 'odd.raw'], ['--output=json', 'odd.raw'], ['--output=json', '--size', '7k']]) {
    await assertSame(['measure', ...args], dir);
  }
});

test('img map: json and human output match qemu-img on a fully allocated raw image', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'full.raw'), Buffer.alloc(3 << 20, 9));
  for (const args of [[], ['--output=json'], ['--output=json', '--start-offset=1M'], ['--start-offset', '4k', '--max-length', '1M'], ['--output=json', '--start-offset=8M']]) {
    await assertSame(['map', ...args, 'full.raw'], dir);
  }
});

test('img create: Formatting line, sizes and options match qemu-img for raw', needs('qemu-img'), async (t) => {
  const dir = await tempDir(t);
  for (const [i, size] of ['1G', '1.5k', '100b', '100B', '0', '0x10', '+5', '1m', '1.'].entries()) {
    const ours = await diskhub(['img', 'create', '-f', 'raw', `o${i}.raw`, size], { cwd: dir });
    const peer = await qemuImg('create', '-f', 'raw', join(dir, `p${i}.raw`), size);
    assert.equal(ours.code, 0, ours.stderr);
    assert.equal(ours.stdout.replace(`o${i}.raw`, 'X'), peer.replace(join(dir, `p${i}.raw`), 'X'));
    assert.equal((await stat(join(dir, `o${i}.raw`))).size, (await stat(join(dir, `p${i}.raw`))).size);
  }
  await assertSame(['create', '-q', '-f', 'raw', 'q.raw', '1M'], dir);
  await assertSame(['create', 'q.raw', '1M'], dir);
  // What create leaves on disk: same size and allocation as qemu-img's file.
  for (const size of ['100', '4k', '1G']) {
    assert.equal((await diskhub(['img', 'create', '-q', '-f', 'raw', 'ours.raw', size], { cwd: dir })).code, 0);
    await qemuImg('create', '-q', '-f', 'raw', join(dir, 'theirs.raw'), size);
    const [a, b] = await Promise.all([stat(join(dir, 'ours.raw')), stat(join(dir, 'theirs.raw'))]);
    assert.deepEqual([a.size, a.blocks], [b.size, b.blocks], `create ${size}`);
  }
});
